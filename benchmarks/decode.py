"""Seconds per generation: MAGVIT's 12-step decoding vs an autoregressive baseline.

Both models have the preset's transformer width, depth, heads and MLP, and generate the same
number of video tokens; they run side by side in one process, alternating, and the median of
`--repeats` runs is reported. Prints JSON.

    .venv/bin/python benchmarks/decode.py [--configs default] [--repeats 3] [--batch 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from models.autoregressive import AutoregressiveTransformer
from models.config import get_config
from models.decoding import DecodeOptions, decode
from models.pipeline import MagvitPipeline, resolve_device


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_config(name: str, device: torch.device, repeats: int, batch: int, steps: int) -> dict:
    cfg = get_config(name)
    pipe = MagvitPipeline.random_init(cfg, device)
    n = cfg.num_video_tokens
    ar = AutoregressiveTransformer(cfg.transformer, cfg.vocab.size, cfg.sequence_length)
    ar = ar.to(device, pipe.dtype).eval()
    vocab = cfg.vocab
    cond = torch.zeros(batch, n, dtype=torch.long, device=device)
    no_cond = torch.zeros(batch, n, dtype=torch.bool, device=device)
    prefix = torch.tensor([[vocab.task_token(8), vocab.class_token(0)]] * batch, device=device)
    options = DecodeOptions(steps=steps)

    def magvit_tokens():
        decode(pipe.transformer, vocab, 8, [0] * batch, cond, no_cond, list(range(batch)), options)

    def ar_tokens():
        ar.generate(prefix, n, vocab.codebook_size)

    def magvit_video():
        pipe.generate("cg", None, [0] * batch, list(range(batch)), options)

    magvit_tokens(), ar_tokens()  # warm-up
    times: dict[str, list[float]] = {
        "magvit_tokens": [],
        "autoregressive_tokens": [],
        "magvit_video": [],
    }
    for _ in range(repeats):
        times["magvit_tokens"].append(timed(magvit_tokens, device))
        times["autoregressive_tokens"].append(timed(ar_tokens, device))
        times["magvit_video"].append(timed(magvit_video, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "video": list(cfg.video_shape),
        "tokens": n,
        "batch": batch,
        "steps": steps,
        "seconds_per_generation": {
            "magvit_12_step": med["magvit_tokens"],
            "autoregressive": med["autoregressive_tokens"],
            "magvit_with_tokenizer": med["magvit_video"],
        },
        "speedup_vs_autoregressive": med["autoregressive_tokens"] / med["magvit_tokens"],
        "runs": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    device = resolve_device(args.device)
    configs = args.configs or (["default", "magvit-b"] if device.type == "cuda" else ["default"])
    torch.manual_seed(0)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "host": platform.machine(),
        "torch": torch.__version__,
        "results": {
            c: bench_config(c, device, args.repeats, args.batch, args.steps) for c in configs
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
