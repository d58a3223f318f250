"""Entry point of the `magvit` console script.

Each subcommand lives in `cli/<name>.py` with `add_parser(subparsers)` and `run(args) -> int`.
Those modules import their heavy packages inside `run`, so `magvit info` never loads FastAPI
and `magvit serve` never loads the trainer.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Module names under cli/, in the order `magvit --help` lists them.
COMMANDS: tuple[str, ...] = (
    "info",
    "generate",
    "batch",
    "serve",
    "worker",
    "train",
    "eval",
    "parity",
    "convert_official",
    "export",
    "data",
)


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="magvit", description="MAGVIT video generation")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except CliError as err:
        print(f"magvit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
