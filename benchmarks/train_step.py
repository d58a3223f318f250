"""Seconds per training step in fp32 and under bf16 autocast (`--precision`), side by side.

One forward and backward pass of the tokenizer (L2 + quantizer losses) and of the transformer
(cross-entropy over the video tokens) of a preset, on random data, alternating the two
precisions in one process; the median of `--repeats` is reported, with the ratio. Prints JSON.

    .venv/bin/python benchmarks/train_step.py [--config default] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.decode import timed  # noqa: E402
from models.config import get_config  # noqa: E402
from models.pipeline import build_tokenizer, build_transformer, resolve_device  # noqa: E402
from training.common import autocast_for  # noqa: E402


def _steps(cfg, batch_tok: int, batch_tr: int, device: torch.device) -> dict:
    tokenizer, transformer = build_tokenizer(cfg).to(device), build_transformer(cfg).to(device)
    video = torch.rand(batch_tok, 3, *cfg.video_shape, device=device)
    k = cfg.vocab.codebook_size
    ids = torch.randint(0, k, (batch_tr, cfg.sequence_length), device=device)
    segments = torch.zeros_like(ids)

    def tokenizer_step(precision: str) -> None:
        with autocast_for(device, precision):
            out = tokenizer(video)
            loss = F.mse_loss(out.reconstruction.float(), video) + out.losses["quantizer"]
        loss.backward()

    def transformer_step(precision: str) -> None:
        with autocast_for(device, precision):
            logits = transformer(ids, segments, first=2, vocab=k).float()
            loss = F.cross_entropy(logits.reshape(-1, k), ids[:, 2:].reshape(-1))
        loss.backward()

    return {"tokenizer": tokenizer_step, "transformer": transformer_step}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="default")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tokenizer-batch", type=int, default=8)
    p.add_argument("--transformer-batch", type=int, default=16)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    steps = _steps(get_config(args.config), args.tokenizer_batch, args.transformer_batch, device)
    report: dict = {
        "config": args.config,
        "device": str(device),
        "host": platform.machine(),
        "torch": torch.__version__,
        "repeats": args.repeats,
    }
    for name, step in steps.items():
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for precision in times:  # warm-up
            step(precision)
        for _ in range(args.repeats):
            for precision in times:
                times[precision].append(timed(lambda s=step, q=precision: s(q), device))
        fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
        report[name] = {"fp32_s": fp32, "bf16_s": bf16, "speedup": fp32 / bf16}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
