"""`magvit export`: a checkpoint made ready to serve.

Copies a complete checkpoint (tokenizer and transformer), optionally in half precision, and
optionally with the tokenizer of another run — one whose encoder and codebook are bit for bit
those the transformer was trained on, such as a decoder trained further with
`magvit train tokenizer --init DIR --decoder-only`. Any other tokenizer is refused: it would
give the transformer tokens that mean something else. A run snapshot (`magvit train
snapshot`), which keeps the transformer's EMA in its training state rather than as a checkpoint
file, exports too: the EMA at the state's step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.main import CliError


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a checkpoint for serving (fp16, a new decoder)")
    p.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="a complete checkpoint, or a run snapshot (its transformer's EMA)",
    )
    p.add_argument("--tokenizer", type=Path, help="take the tokenizer from this checkpoint")
    p.add_argument("--out", type=Path, required=True, help="output checkpoint directory")
    p.add_argument("--fp16", action="store_true", help="store weights in half precision")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from models.checkpoint import (
        CheckpointError,
        encoding_difference,
        load_checkpoint,
        save_checkpoint,
    )
    from training.common import ema_from_training_state

    inputs = {args.checkpoint.resolve()} | ({args.tokenizer.resolve()} if args.tokenizer else set())
    if args.out.resolve() in inputs:
        raise CliError("--out must be another directory than the inputs")
    try:
        ckpt = load_checkpoint(args.checkpoint)
        tokenizer_state, metadata = ckpt.tokenizer_state, dict(ckpt.metadata)
        transformer_state = ckpt.transformer_state
        if transformer_state is None:
            snapshot = ema_from_training_state(args.checkpoint, "transformer")
            if snapshot is None:
                raise CliError(
                    f"{args.checkpoint} holds a tokenizer only: no transformer checkpoint and "
                    "no transformer EMA in a training state"
                )
            transformer_state, metadata["transformer_steps"] = snapshot
        if args.tokenizer is not None:
            tok = load_checkpoint(args.tokenizer)
            if tok.config.tokenizer != ckpt.config.tokenizer:
                raise CliError(f"the tokenizer in {args.tokenizer} has another configuration")
            differs = encoding_difference(ckpt.tokenizer_state, tok.tokenizer_state)
            if differs is not None:
                raise CliError(
                    f"the tokenizer in {args.tokenizer} encodes differently from the one the "
                    f"transformer was trained on ({differs} differs)"
                )
            tokenizer_state = tok.tokenizer_state
            metadata["decoder"] = tok.metadata
    except CheckpointError as err:
        raise CliError(str(err)) from None
    save_checkpoint(
        args.out,
        ckpt.config,
        tokenizer_state,
        transformer_state,
        metadata,
        dtype=torch.float16 if args.fp16 else None,
    )
    print(f"wrote {args.out}")
    return 0
