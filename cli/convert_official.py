"""`magvit convert-official`: checkpoints trained with the official code -> a checkpoint here.

Reads Flax msgpack states (`flax.serialization.to_bytes`) or flattened npz trees of parameters,
maps them through `models.official`, and writes a checkpoint directory that `magvit serve` and
`magvit generate` load.

Two sources of the model's definition:
- `--official-config`: the official experiment config (videogvt/configs/maskgvt_*.py as JSON,
  e.g. `get_config('B').to_json_best_effort()`, its VQ config under vq_model_from.config). The
  transformer's vocabulary, positions and segments are remapped from the official layout.
- `--preset`: trees already in this project's layout, for a preset of this project.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.main import CliError


def add_parser(sub) -> None:
    from models.config import CONFIGS

    p = sub.add_parser("convert-official", help="convert official (Flax) checkpoints")
    p.add_argument("--tokenizer", type=Path, required=True, help="Flax msgpack or npz")
    p.add_argument("--transformer", type=Path, required=True, help="Flax msgpack or npz")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--official-config", type=Path, help="the official MaskGVT experiment config as JSON"
    )
    source.add_argument(
        "--preset", choices=sorted(CONFIGS), help="trees in this project's layout, for this preset"
    )
    p.add_argument("--out", type=Path, required=True, help="output checkpoint directory")
    p.add_argument("--fp16", action="store_true", help="store weights in half precision")
    p.set_defaults(run=run)


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CliError(f"cannot read {path}: {err}") from None
    if not isinstance(doc, dict):
        raise CliError(f"{path}: an official config is a JSON object")
    return doc


def run(args: argparse.Namespace) -> int:
    import torch

    from models.checkpoint import CheckpointError, read_flax_tree, save_checkpoint
    from models.config import get_config
    from models.official import (
        TreeMismatch,
        UnsupportedOfficialModel,
        flax_to_state_dict,
        official_model_config,
        official_transformer_state,
    )
    from models.pipeline import build_tokenizer, build_transformer

    metadata: dict = {
        "source": "official",
        "tokenizer": str(args.tokenizer),
        "transformer": str(args.transformer),
    }
    try:
        official = None
        if args.official_config is not None:
            official = _read_json(args.official_config)
            config, layout = official_model_config(official)
            metadata["official_config"] = str(args.official_config)
            metadata["official_layout"] = {
                "multi_task": layout.multi_task,
                "segments": layout.segments,
                "task_tokens": layout.task_tokens,
            }
            if isinstance(official.get("sampling"), dict):
                metadata["official_sampling"] = official["sampling"]
        else:
            config = get_config(args.preset)
        tok_tree = read_flax_tree(args.tokenizer, "encoder")
        tr_tree = read_flax_tree(args.transformer, "BertEmbed_0")
        with torch.device("meta"):  # shapes only; the converted tensors are real
            tokenizer = build_tokenizer(config)
        tok_state = flax_to_state_dict(tok_tree, tokenizer)
        if official is not None:
            tr_state = official_transformer_state(tr_tree, config, layout)
        else:
            with torch.device("meta"):
                transformer = build_transformer(config)
            tr_state = flax_to_state_dict(tr_tree, transformer)
    except (CheckpointError, TreeMismatch, UnsupportedOfficialModel) as err:
        raise CliError(str(err)) from None
    save_checkpoint(
        args.out,
        config,
        tok_state,
        tr_state,
        metadata,
        dtype=torch.float16 if args.fp16 else None,
    )
    print(f"wrote {args.out}")
    return 0
