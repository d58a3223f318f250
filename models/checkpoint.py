"""Checkpoint format: a directory that describes itself. No pickle anywhere.

    config.json             {"format_version", "model": ModelConfig, "tasks", "metadata"}
    tokenizer.safetensors   VQTokenizer state dict
    transformer.safetensors BidirectionalTransformer state dict (absent in a tokenizer-only one)

One loader serves the trainer, the CLI and the server. This is the only module of `models/` that
touches files. Reading a config (`read_config`) needs no torch: an API-only server calls it; the
functions that handle weights import torch and safetensors themselves.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.config import ModelConfig

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.safetensors"
TRANSFORMER_FILE = "transformer.safetensors"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete or of an unknown format."""


@dataclass
class Checkpoint:
    config: ModelConfig
    tokenizer_state: dict[str, torch.Tensor]
    transformer_state: dict[str, torch.Tensor] | None
    metadata: dict[str, Any] = field(default_factory=dict)


def default_checkpoint_dir() -> Path:
    """$MAGVIT_CHECKPOINT, else the checkpoint shipped in the repository."""
    env = os.environ.get("MAGVIT_CHECKPOINT")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "checkpoints" / "default"


def _contiguous(state: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict:
    out = {}
    for name, tensor in state.items():
        tensor = tensor.detach().cpu()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        out[name] = tensor.contiguous()
    return out


def encoding_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> str | None:
    """The first tensor outside the decoder in which two tokenizer states differ, or None when
    they turn every video into the same tokens (their decoders may differ)."""
    import torch

    for name in sorted(set(a) | set(b)):
        if name.startswith("decoder."):
            continue
        x, y = a.get(name), b.get(name)
        if x is None or y is None or x.shape != y.shape or not torch.equal(x.double(), y.double()):
            return name
    return None


def save_checkpoint(
    directory: str | Path,
    config: ModelConfig,
    tokenizer_state: dict[str, torch.Tensor],
    transformer_state: dict[str, torch.Tensor] | None = None,
    metadata: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a checkpoint; `dtype` (e.g. torch.float16) casts floating-point weights to save
    space. Files are written under temporary names and renamed, so a reader never sees half."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {TOKENIZER_FILE: tokenizer_state}
    if transformer_state is not None:
        files[TRANSFORMER_FILE] = transformer_state
    elif (directory / TRANSFORMER_FILE).exists():
        (directory / TRANSFORMER_FILE).unlink()
    for name, state in files.items():
        tmp = directory / f".{name}.tmp"
        save_file(_contiguous(state, dtype), str(tmp))
        tmp.replace(directory / name)
    doc = {
        "format_version": FORMAT_VERSION,
        "model": config.to_dict(),
        "tasks": list(config.tasks),
        "metadata": metadata or {},
    }
    tmp = directory / f".{CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    tmp.replace(directory / CONFIG_FILE)
    return directory


def read_config(directory: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The model config and metadata of a checkpoint, without loading weights."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a checkpoint: {CONFIG_FILE} not found")
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from None
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported format_version {version!r}")
    try:
        config = ModelConfig.from_dict(doc["model"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: {err}") from None
    return config, doc.get("metadata", {})


def load_checkpoint(directory: str | Path, require_transformer: bool = False) -> Checkpoint:
    from safetensors.torch import load_file

    directory = Path(directory)
    config, metadata = read_config(directory)
    tok_path = directory / TOKENIZER_FILE
    if not tok_path.is_file():
        raise CheckpointError(f"{directory}: {TOKENIZER_FILE} not found")
    tr_path = directory / TRANSFORMER_FILE
    if require_transformer and not tr_path.is_file():
        raise CheckpointError(f"{directory} holds a tokenizer only: {TRANSFORMER_FILE} not found")
    try:
        tokenizer_state = load_file(str(tok_path))
        transformer_state = load_file(str(tr_path)) if tr_path.is_file() else None
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{directory}: corrupt weights: {err}") from None
    return Checkpoint(config, tokenizer_state, transformer_state, metadata)


# ------------------------------------------------------------- checkpoints of the official code
_MSGPACK_NDARRAY, _MSGPACK_NPSCALAR = 1, 3  # Flax's msgpack extension type codes


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("/"): tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}/"))
    return out


def _read_msgpack(path: Path) -> dict[str, Any]:
    import msgpack
    import numpy as np

    def ext_hook(code: int, data: bytes):
        if code == _MSGPACK_NDARRAY:
            shape, dtype, buffer = msgpack.unpackb(data)
            return np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape)
        if code == _MSGPACK_NPSCALAR:
            dtype, buffer = msgpack.unpackb(data)
            return np.frombuffer(buffer, dtype=np.dtype(dtype))[0]
        raise CheckpointError(f"{path}: unsupported msgpack extension type {code}")

    with open(path, "rb") as f:
        return msgpack.unpackb(f.read(), ext_hook=ext_hook, raw=False, strict_map_key=False)


def read_flax_tree(path: str | Path, marker: str) -> dict[str, Any]:
    """A flat parameter tree ("a/b/kernel" -> array) from a checkpoint of the official code:
    Flax msgpack state (`flax.serialization.to_bytes`) or a flattened npz. In a training state,
    the sub-tree holding `marker` (e.g. "encoder" or "BertEmbed_0") is taken, preferring EMA
    parameters where the state has them. Never unpickles."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"not found: {path}")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                flat = {k: data[k] for k in data.files}
        else:
            flat = _flatten(_read_msgpack(path))
    except CheckpointError:
        raise
    except Exception as err:  # any decoding failure of a foreign file is the file's fault
        raise CheckpointError(f"cannot read {path}: {err}") from None
    prefixes = sorted(
        {k.split(f"{marker}/")[0] for k in flat if f"/{marker}/" in f"/{k}"},
        key=lambda p: (0 if "ema" in p else 1, len(p)),
    )
    if not prefixes:
        raise CheckpointError(f"{path}: no parameters under a '{marker}' module")
    prefix = prefixes[0]
    return {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
