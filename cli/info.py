"""`magvit info`: presets (parameter counts, video and token shapes), the ten tasks, and the
checkpoint that would be served (its preset and what its class ids mean)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="list model presets and tasks")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--checkpoint", default=None, help="checkpoint to describe (default: the shipped one)"
    )
    p.set_defaults(run=run)


def describe_checkpoint(directory) -> dict:
    """A checkpoint's preset, geometry and class names, from its config.json alone."""
    from models.checkpoint import read_config

    cfg, meta = read_config(directory)
    return {
        "path": str(directory),
        "preset": cfg.name,
        "video": list(cfg.video_shape),
        "frame_size": list(cfg.frame_size),
        "tokens": list(cfg.token_shape),
        "frame_stride": cfg.frame_stride,
        "frame_rate": cfg.frame_rate,
        "tasks": list(cfg.tasks),
        "classes": [cfg.class_name(i) for i in range(cfg.num_classes)],
    }


def describe(checkpoint=None) -> dict:
    import torch

    from models.checkpoint import CheckpointError, default_checkpoint_dir
    from models.config import CONFIGS
    from models.pipeline import build_tokenizer, build_transformer
    from models.tasks import TASKS

    configs = {}
    for name, cfg in CONFIGS.items():
        # The meta device allocates nothing: counting magvit-l's parameters is instant.
        with torch.device("meta"):
            n_tok = sum(p.numel() for p in build_tokenizer(cfg).parameters())
            n_tr = sum(p.numel() for p in build_transformer(cfg).parameters())
        configs[name] = {
            "params": {"tokenizer": n_tok, "transformer": n_tr, "total": n_tok + n_tr},
            "video": list(cfg.video_shape),
            "frame_size": list(cfg.frame_size),
            "tokens": list(cfg.token_shape),
            "codebook_size": cfg.tokenizer.codebook_size,
            "num_classes": cfg.num_classes,
            "image_tokenizer": cfg.tokenizer.conv_dim == 2,
        }
    tasks = [
        {"code": t.code, "name": t.name, "needs_video": t.needs_video, "needs_class": t.needs_class}
        for t in TASKS.values()
    ]
    try:
        served = describe_checkpoint(checkpoint or default_checkpoint_dir())
    except CheckpointError as err:
        if checkpoint is not None:
            raise
        served = {"error": str(err)}
    return {"configs": configs, "tasks": tasks, "checkpoint": served}


def run(args: argparse.Namespace) -> int:
    from cli.main import CliError
    from models.checkpoint import CheckpointError

    try:
        info = describe(args.checkpoint)
    except CheckpointError as err:
        raise CliError(str(err)) from None
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for name, c in info["configs"].items():
        p = c["params"]
        print(
            f"{name:10s} video {'x'.join(map(str, c['video'])):>12s} -> tokens "
            f"{'x'.join(map(str, c['tokens'])):>8s}  params {p['total'] / 1e6:7.1f}M "
            f"(tokenizer {p['tokenizer'] / 1e6:.1f}M, transformer {p['transformer'] / 1e6:.1f}M)"
        )
    for t in info["tasks"]:
        print(f"{t['code']:4s} {t['name']}")
    ckpt = info["checkpoint"]
    if "error" in ckpt:
        print(f"checkpoint: {ckpt['error']}")
        return 0
    print(
        f"checkpoint {ckpt['path']}: preset {ckpt['preset']}, video "
        f"{'x'.join(map(str, ckpt['video']))}, tokens {'x'.join(map(str, ckpt['tokens']))}"
    )
    for i, name in enumerate(ckpt["classes"]):
        print(f"  class {i}: {name}")
    return 0
