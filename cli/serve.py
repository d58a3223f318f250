"""`magvit serve`: the HTTP service (uvicorn + FastAPI) on a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.main import CliError


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="run the HTTP service")
    p.add_argument("--host", default=None, help="default 127.0.0.1 (MAGVIT_HOST)")
    p.add_argument("--port", type=int, default=None, help="default 8000 (MAGVIT_PORT)")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped one")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default=None,
        help="default auto: fp16 on CUDA, bf16 on a CPU that has it, else fp32",
    )
    p.add_argument(
        "--queue",
        default=None,
        help="sqlite:///PATH (default: in --data-dir) or redis://HOST:PORT/DB",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the transformer at start-up (MAGVIT_COMPILE; slower start)",
    )
    p.add_argument("--workers", type=int, default=None, help="1: the model here; 0: API only")
    p.add_argument("--data-dir", type=Path, default=None, help="jobs, inputs and results")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from models.checkpoint import CheckpointError
    from service.app import create_app, serve
    from service.runtime import QueueNotDurable
    from service.settings import Settings

    overrides = {
        "host": args.host,
        "port": args.port,
        "checkpoint": args.checkpoint,
        "device": args.device,
        "precision": args.precision,
        "compile": True if args.compile else None,
        "queue_url": args.queue,
        "workers": args.workers,
        "data_dir": args.data_dir,
    }
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
        app = create_app(settings)
    except ValidationError as err:
        raise CliError(f"invalid settings: {err}") from None
    except (CheckpointError, QueueNotDurable) as err:
        raise CliError(str(err)) from None
    serve(app, settings)
    return 0
