"""`magvit info`: presets (parameter counts, video and token shapes) and the ten tasks."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="list model presets and tasks")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def describe() -> dict:
    import torch

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
            "tokens": list(cfg.token_shape),
            "codebook_size": cfg.tokenizer.codebook_size,
            "num_classes": cfg.num_classes,
        }
    tasks = [
        {"code": t.code, "name": t.name, "needs_video": t.needs_video, "needs_class": t.needs_class}
        for t in TASKS.values()
    ]
    return {"configs": configs, "tasks": tasks}


def run(args: argparse.Namespace) -> int:
    info = describe()
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
    return 0
