"""`magvit train tokenizer|transformer`: train and write checkpoints.

Data-parallel: launch with `torchrun --nproc-per-node N -m cli.main train ...`.
"""

from __future__ import annotations

import argparse
import dataclasses

from cli.main import CliError

_HELP = {"tokenizer": "train the 3D-VQ tokenizer", "transformer": "train the transformer"}


def _add_fields(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...]) -> None:
    """One --flag per field of a training config dataclass, with its default."""
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        if field.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
        else:
            base = str(field.type).split("|")[0].strip()  # "float | None" -> "float"
            kind = {"int": int, "float": float}.get(base, str)
            help = f"default: {field.default}"
            parser.add_argument(flag, type=kind, default=field.default, help=help)


def add_parser(sub) -> None:
    from training.configs import TokenizerTrainConfig, TransformerTrainConfig

    p = sub.add_parser("train", help="train the tokenizer or the transformer")
    kinds = p.add_subparsers(dest="kind", required=True)
    for kind, cls in (("tokenizer", TokenizerTrainConfig), ("transformer", TransformerTrainConfig)):
        k = kinds.add_parser(kind, help=_HELP[kind])
        _add_fields(k, cls, skip=())
        k.set_defaults(run=run, config_cls=cls)
    snap = kinds.add_parser("snapshot", help="a small resumable copy of a run (fp16, no optimizer)")
    snap.add_argument("--from", dest="source", required=True, help="the run's output directory")
    snap.add_argument("--out", required=True, help="where to write it (replaces what is there)")
    snap.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="MODULE",
        help="leave out a module the run has not trained yet (e.g. discriminator)",
    )
    snap.set_defaults(run=run_snapshot)


def run_snapshot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from training.common import write_snapshot

    try:
        out = write_snapshot(Path(args.source), Path(args.out), tuple(args.drop))
    except FileNotFoundError as err:
        raise CliError(str(err)) from None
    print(f"wrote {out}: copy it into a run directory and run the same command to resume")
    return 0


def run(args: argparse.Namespace) -> int:
    from models.checkpoint import CheckpointError

    names = {f.name for f in dataclasses.fields(args.config_cls)}
    cfg = args.config_cls(**{k: v for k, v in vars(args).items() if k in names})
    try:
        if args.kind == "tokenizer":
            from training.tokenizer_trainer import train_tokenizer

            out = train_tokenizer(cfg)
        else:
            from training.transformer_trainer import train_transformer

            out = train_transformer(cfg)
    except (CheckpointError, KeyError, ValueError, FileNotFoundError) as err:
        raise CliError(str(err)) from None
    print(f"wrote {out}")
    return 0
