"""Pieces shared by both trainers: learning-rate schedule, EMA, batches, resumable state, and
data-parallel set-up (DDP under torchrun: NCCL on GPUs, gloo on CPUs).

Resumable state is safetensors + JSON, never pickle: model, EMA and optimizer tensors go into one
safetensors file under prefixed names; scalars and param-group settings into JSON.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from models.pipeline import cpu_has_native_bf16

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio=0.0) -> float:
    """Linear warm-up to base_lr, then cosine decay to min_ratio * base_lr."""
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return base_lr * (min_ratio + (1 - min_ratio) * cosine)


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].lerp_(v.detach(), 1 - self.decay)
            else:
                self.shadow[k].copy_(v)


def batch_indices(seed: int, step: int, global_batch: int, dataset_size: int) -> list[int]:
    """The clips of one global batch: a function of (seed, step) alone, so a resumed run sees
    exactly the batches an uninterrupted one would."""
    rng = np.random.default_rng([seed, step])
    return rng.integers(0, dataset_size, size=global_batch).tolist()


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This rank's part of a global batch (the global batch size divides evenly)."""
        if len(items) % self.world_size:
            raise ValueError(f"batch {len(items)} does not split over {self.world_size} ranks")
        return items[self.rank :: self.world_size]


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that torchrun describes, or run as a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return DistInfo(rank, world, torch.device("cuda", local))
    return DistInfo(rank, world, torch.device(device))


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """ "bf16" or "fp32": what a training setting means on `device`. "auto" is bf16 on CUDA and
    on a CPU that computes bf16 natively (AVX-512 BF16 or AMX), fp32 elsewhere: a CPU without it
    emulates bf16 products, measured 77x slower than fp32 for a 1024-square matmul and 420x for
    a 3D convolution of the video64 tokenizer on a 2-core AVX2 machine. Asking for bf16 there
    still gets it, with a warning."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, not {precision!r}")
    native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    if precision == "auto":
        return "bf16" if native else "fp32"
    if precision == "bf16" and device.type == "cpu" and not native:
        warnings.warn(
            "bf16 asked for on a CPU without native bf16 (no AVX-512 BF16 or AMX): its products "
            "are emulated and run many times slower than fp32; --precision auto picks fp32 here",
            RuntimeWarning,
            stacklevel=2,
        )
    return precision


def autocast_for(device: torch.device, precision: str = "auto"):
    """Mixed precision for a training step (`resolve_precision`); "bf16" asks for bf16 autocast
    on any device (on a CPU with AVX-512 BF16 the default preset's tokenizer steps run 1.9x
    faster, `benchmarks/train_step.py`)."""
    enabled = resolve_precision(device, precision) == "bf16"
    return torch.autocast(device.type, torch.bfloat16, enabled=enabled)


def wrap_ddp(module: nn.Module, info: DistInfo) -> nn.Module:
    if info.world_size == 1:
        return module
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.world_size > 1:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= info.world_size
    return value


# ------------------------------------------------------------------------- resumable state
def _optimizer_tensors(name: str, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim/{name}/state/{idx}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}/{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(name: str, opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim/{name}/state/"
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, field = key[len(prefix) :].split("/", 1)
            state.setdefault(int(idx), {})[field] = value
    for key, value in meta["scalars"].items():
        idx, field = key.split("/", 1)
        state.setdefault(int(idx), {})[field] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_training_state(
    directory: Path,
    step: int,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    emas: dict[str, EMA],
    extra: dict[str, Any] | None = None,
) -> None:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"step": step, "optimizers": {}, "extra": extra or {}}
    for name, module in modules.items():
        for k, v in module.state_dict().items():
            tensors[f"module/{name}/{k}"] = v.detach().cpu().contiguous()
    for name, ema in emas.items():
        for k, v in ema.shadow.items():
            tensors[f"ema/{name}/{k}"] = v.detach().cpu().contiguous()
    for name, opt in optimizers.items():
        opt_tensors, opt_meta = _optimizer_tensors(name, opt)
        tensors.update(opt_tensors)
        meta["optimizers"][name] = opt_meta
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / f".{STATE_TENSORS}.tmp"))
    (directory / f".{STATE_TENSORS}.tmp").replace(directory / STATE_TENSORS)
    (directory / f".{STATE_JSON}.tmp").write_text(json.dumps(meta, indent=1))
    (directory / f".{STATE_JSON}.tmp").replace(directory / STATE_JSON)


def load_training_state(
    directory: Path,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    emas: dict[str, EMA],
) -> dict[str, Any]:
    """Restore what `save_training_state` wrote; returns its JSON (with "step")."""
    meta = json.loads((directory / STATE_JSON).read_text())
    tensors = load_file(str(directory / STATE_TENSORS))
    for name, module in modules.items():
        prefix = f"module/{name}/"
        if not any(k.startswith(prefix) for k in tensors):  # left out of a snapshot: afresh
            continue
        module.load_state_dict(
            {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        )
    for name, ema in emas.items():
        prefix = f"ema/{name}/"
        for k, v in ema.shadow.items():
            ema.shadow[k] = tensors[prefix + k].to(v.device, v.dtype)
    for name, opt in optimizers.items():
        if name in meta["optimizers"]:  # a snapshot has none: the optimizer starts afresh
            _load_optimizer(name, opt, tensors, meta["optimizers"][name])
    return meta


def write_snapshot(run: Path, out: Path, drop: tuple[str, ...] = ()) -> Path:
    """A small copy of a run to carry to another machine: its files (checkpoint, metrics,
    pictures) and a training state whose weights and EMA are fp16 and which holds no optimizer
    state. Copied back into a run directory, the trainer resumes from it at the same step, with
    fresh optimizer moments. Modules in `drop` (one the run has not trained yet, such as a
    discriminator before its GAN phase) are left out and start afresh."""
    if not has_training_state(run):
        raise FileNotFoundError(f"{run} holds no training state")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():  # one snapshot replaces the last
        if old.is_file():
            old.unlink()
    for f in run.iterdir():
        if f.is_file() and f.name not in (STATE_TENSORS, STATE_JSON) and not f.name.startswith("."):
            if f.suffix == ".safetensors":  # the run's checkpoint weights, in fp16 too
                weights = load_file(str(f))
                save_file(
                    {k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
                    str(out / f.name),
                )
            else:
                shutil.copy2(f, out / f.name)
    tensors = load_file(str(run / STATE_TENSORS))
    small = {
        k: (v.half() if v.is_floating_point() else v)
        for k, v in tensors.items()
        if not k.startswith("optim/") and k.split("/")[1] not in drop
    }
    save_file(small, str(out / STATE_TENSORS))
    meta = json.loads((run / STATE_JSON).read_text())
    meta["optimizers"] = {}
    (out / STATE_JSON).write_text(json.dumps(meta, indent=1))
    return out


def ema_from_training_state(
    directory: Path, name: str
) -> tuple[dict[str, torch.Tensor], int] | None:
    """The EMA weights of module `name` in `directory`'s training state and its step, or None
    when it holds none (a run snapshot keeps them there, not as a checkpoint file)."""
    if not has_training_state(directory):
        return None
    prefix = f"ema/{name}/"
    with safe_open(str(directory / STATE_TENSORS), framework="pt") as f:  # the EMA alone
        names = [k for k in f.keys() if k.startswith(prefix)]  # noqa: SIM118 (not a dict)
        weights = {k[len(prefix) :]: f.get_tensor(k) for k in names}
    if not weights:
        return None
    return weights, int(json.loads((directory / STATE_JSON).read_text())["step"])


def has_training_state(directory: Path) -> bool:
    return (directory / STATE_JSON).is_file() and (directory / STATE_TENSORS).is_file()
