"""The CPU inference path against plain fp32 eager and this CPU's matmul peaks. Prints JSON.

    .venv/bin/python benchmarks/cpu_inference.py [--checkpoint DIR] [--batch 8] [--repeats 3]
    .venv/bin/python benchmarks/cpu_inference.py --scaling [--batches 1 2 4 8 16]

Default mode, in one process, the variants alternating (this machine is shared and noisy):
- `fp32_eager`: `MagvitPipeline.from_checkpoint(path, "cpu", torch.float32)`;
- `default`: `MagvitPipeline.from_checkpoint(path, "cpu")`, what the CLI and the server run
  (bf16 weights and activations where the CPU has native bf16, `models.pipeline.default_dtype`);
- `default_compiled` (with `--compile`): the default with `MagvitPipeline.compile()` (the
  transformer under `torch.compile`, weights frozen), its compilation counted apart as
  `compile_seconds`.
Each runs a batch of frame predictions (12 steps). FLOPs are counted once with
`torch.utils.flop_counter.FlopCounterMode`; GFLOP/s = FLOPs / median seconds; the peaks are the best
square matmul rates (fp32, bf16) measured in the same run. The time splits into the tokenizer
(encode + decode) and the transformer (the rest).

`--scaling`: seconds per generation of the default path against batch size and token count: 256
tokens (the `default` preset), 1024 (`video64`), 4096 (`video64` at 128x128), random weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from models.config import ModelConfig, get_config
from models.options import DecodeOptions
from models.pipeline import MagvitPipeline, cpu_has_native_bf16

COMMAND = "python benchmarks/cpu_inference.py"
OPTIONS = DecodeOptions(steps=12)


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """The best GFLOP/s of an n x n x n matrix product in `dtype`."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    best = min(seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def matmul_peaks(native_bf16: bool) -> dict[str, float]:
    """The fp32 and bf16 peaks. Where bf16 is only emulated a 2048-cube product takes minutes
    (0.14 GFLOP/s on a 2-core AVX2 machine, against 34 in fp32): a 512 cube, once, measures the
    same rate."""
    small = {} if native_bf16 else {"n": 512, "repeats": 1}
    return {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16, **small)}


def frame_prediction(pipe: MagvitPipeline, videos: torch.Tensor) -> Callable[[], object]:
    seeds = list(range(videos.shape[0]))

    def run() -> object:
        with torch.inference_mode():
            return pipe.generate("fp", videos, None, seeds, OPTIONS)

    return run


def tokenizer_only(pipe: MagvitPipeline, videos: torch.Tensor) -> Callable[[], object]:
    """What the tokenizer does in one generation: encode the condition video, decode tokens."""

    def run() -> object:
        with torch.inference_mode():
            return pipe.decode_tokens(pipe.encode(videos))

    return run


def count_flops(fn: Callable[[], object]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def compare(checkpoint: Path | None, batch: int, repeats: int, compile_: bool) -> dict:
    pipes = {
        "fp32_eager": MagvitPipeline.from_checkpoint(checkpoint, "cpu", torch.float32),
        "default": MagvitPipeline.from_checkpoint(checkpoint, "cpu"),
    }
    compile_seconds = None
    if compile_:
        pipes["default_compiled"] = MagvitPipeline.from_checkpoint(checkpoint, "cpu").compile()
    cfg = pipes["default"].config
    t, h, w = cfg.video_shape
    videos = torch.rand(batch, 3, t, h, w, generator=torch.Generator().manual_seed(0))
    runs = {name: frame_prediction(p, videos) for name, p in pipes.items()}
    tok_runs = {name: tokenizer_only(p, videos) for name, p in pipes.items()}
    for name, run in runs.items():  # warm-up (and compilation)
        took = seconds(run)
        if name == "default_compiled":
            compile_seconds = took
        tok_runs[name]()
    times: dict[str, list[float]] = {name: [] for name in runs}
    tok_times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name in runs:
            times[name].append(seconds(runs[name]))
            tok_times[name].append(seconds(tok_runs[name]))
    flops = count_flops(runs["fp32_eager"])
    peaks = matmul_peaks(cpu_has_native_bf16())
    variants = {}
    for name, pipe in pipes.items():
        total, tok = statistics.median(times[name]), statistics.median(tok_times[name])
        gflops = flops / total / 1e9
        variants[name] = {
            "dtype": str(pipe.dtype).removeprefix("torch."),
            "seconds": total,
            "tokenizer_seconds": tok,
            "transformer_seconds": max(total - tok, 0.0),
            "gflop_per_s": gflops,
            "share_of_bf16_peak": gflops / peaks["bf16"],
            "share_of_fp32_peak": gflops / peaks["fp32"],
        }
    base = variants["fp32_eager"]["seconds"]
    for v in variants.values():
        v["speedup_vs_fp32_eager"] = base / v["seconds"]
    return {
        "model": cfg.name,
        "tokens": cfg.num_video_tokens,
        "batch": batch,
        "task": "fp",
        "steps": OPTIONS.steps,
        "gflop_per_generation_batch": flops / 1e9,
        "matmul_peak_gflop_per_s": peaks,
        "compile_seconds": compile_seconds,
        "variants": variants,
    }


def _scaling_configs() -> dict[int, ModelConfig]:
    video64 = get_config("video64")
    return {
        256: get_config("default"),
        1024: video64,
        4096: dataclasses.replace(video64, name="video64-128", frame_size=(128, 128)),
    }


def scaling(batches: list[int], token_counts: list[int]) -> list[dict]:
    rows = []
    for tokens, cfg in _scaling_configs().items():
        if tokens not in token_counts:
            continue
        pipe = MagvitPipeline.random_init(cfg, "cpu")
        t, h, w = cfg.video_shape
        for batch in batches:
            videos = torch.rand(batch, 3, t, h, w, generator=torch.Generator().manual_seed(0))
            run, tok = frame_prediction(pipe, videos), tokenizer_only(pipe, videos)
            tok()  # warm-up at this shape
            total, tok_s = seconds(run), seconds(tok)
            rows.append(
                {
                    "tokens": tokens,
                    "model": cfg.name,
                    "batch": batch,
                    "seconds": total,
                    "seconds_per_video": total / batch,
                    "tokenizer_seconds": tok_s,
                    "transformer_seconds": max(total - tok_s, 0.0),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped one")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--scaling", action="store_true", help="the batch x tokens table")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 1024, 4096])
    args = parser.parse_args()
    result: dict = {
        "command": COMMAND,
        "host": platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(),
    }
    if args.scaling:
        result["scaling"] = scaling(args.batches, args.tokens)
    else:
        result |= compare(args.checkpoint, args.batch, args.repeats, args.compile)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
