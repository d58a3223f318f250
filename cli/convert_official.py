"""`magvit convert-official`: checkpoints trained with the official code -> a checkpoint here.

Reads Flax msgpack states (`flax.serialization.to_bytes`) or flattened npz trees of parameters,
maps them through `models.official`, and writes a checkpoint directory that `magvit serve` and
`magvit generate` load.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.main import CliError


def add_parser(sub) -> None:
    from models.config import CONFIGS

    p = sub.add_parser("convert-official", help="convert official (Flax) checkpoints")
    p.add_argument("--tokenizer", type=Path, required=True, help="Flax msgpack or npz")
    p.add_argument("--transformer", type=Path, required=True, help="Flax msgpack or npz")
    p.add_argument("--preset", choices=sorted(CONFIGS), required=True,
                   help="the preset whose definitions the official run used")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="output checkpoint directory")
    p.add_argument("--fp16", action="store_true", help="store weights in half precision")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from models.checkpoint import CheckpointError, read_flax_tree, save_checkpoint
    from models.config import get_config
    from models.official import TreeMismatch, flax_to_state_dict
    from models.pipeline import build_tokenizer, build_transformer

    config = get_config(args.preset)
    try:
        tok_tree = read_flax_tree(args.tokenizer, "encoder")
        tr_tree = read_flax_tree(args.transformer, "BertEmbed_0")
        with torch.device("meta"):  # shapes only; the converted tensors are real
            tokenizer, transformer = build_tokenizer(config), build_transformer(config)
        tok_state = flax_to_state_dict(tok_tree, tokenizer)
        tr_state = flax_to_state_dict(tr_tree, transformer)
    except (CheckpointError, TreeMismatch) as err:
        raise CliError(str(err)) from None
    save_checkpoint(
        args.out, config, tok_state, tr_state,
        {"source": "official", "tokenizer": str(args.tokenizer),
         "transformer": str(args.transformer)},
        dtype=torch.float16 if args.fp16 else None,
    )  # fmt: skip
    print(f"wrote {args.out}")
    return 0
