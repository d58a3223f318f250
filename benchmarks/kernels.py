"""Fused Triton kernels against PyTorch on a CUDA GPU. Prints JSON.

    .venv/bin/python benchmarks/kernels.py [--repeats 5] [--sections attention sampling decode]

- attention: TFLOP/s (4·B·H·L²·D per call) of the fused kernel against PyTorch SDPA restricted to
  its flash backend, bf16, L in {1024, 2048}, D in {64, 128}, 16k tokens a batch; then a batch of
  requests of different lengths, the kernel with a key-padding mask against SDPA with the same
  mask as a dense [B, 1, 1, L] tensor (which rules the flash backend out).
- sampling: one decoding step over fp32 logits [N, 1024], the fused kernel (caller's noise and
  Philox noise) against the unfused PyTorch reference `sampling_step`.
- decode: a full 12-step `magvit-b` token decode (`models.decoding.decode`, random weights, fp16)
  at batch 1 and 8 with both backends switched together (MAGVIT_ATTENTION / MAGVIT_SAMPLING).

Without CUDA (or without Triton) it prints {"skipped": true, "reason": ...} and exits 0: the
interpreter runs the kernels for correctness only, and its timings mean nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

COMMAND = "python benchmarks/kernels.py"


def _bench_ms(fn: Callable[[], object]) -> float:
    """Median milliseconds per call (Triton's do_bench: warm-up, L2 flush between calls)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=25, rep=200, return_mode="median"))


def bench_attention(device: torch.device) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from models.kernels.attention import sdpa_attention
    from models.kernels.attention_triton import triton_masked_attention

    dtype = torch.bfloat16
    dense = []
    for l in (1024, 2048):
        for d in (64, 128):
            b, h = 16384 // l, 2048 // d  # 16k tokens, model width 2048, as FlashAttention reports
            q, k, v = (torch.randn(b, h, l, d, device=device, dtype=dtype) for _ in range(3))
            flops = 4 * b * h * l * l * d

            def flash(q=q, k=k, v=v):
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    return F.scaled_dot_product_attention(q, k, v)

            t_triton = _bench_ms(lambda q=q, k=k, v=v: triton_masked_attention(q, k, v))
            t_flash = _bench_ms(flash)
            dense.append(
                {
                    "batch": b,
                    "heads": h,
                    "seq_len": l,
                    "head_dim": d,
                    "triton_ms": t_triton,
                    "sdpa_flash_ms": t_flash,
                    "triton_tflops": flops / t_triton / 1e9,
                    "sdpa_flash_tflops": flops / t_flash / 1e9,
                }
            )

    # Requests of different lengths padded to one L: the kernel stops each row's key loop at its
    # length; dense-masked SDPA computes every key. "useful" counts only valid query-key pairs.
    b, h, l, d = 8, 16, 2048, 64
    lengths = torch.linspace(256, l, b).round().long()
    mask = (torch.arange(l)[None, :] < lengths[:, None]).to(device)  # [B, L]
    q, k, v = (torch.randn(b, h, l, d, device=device, dtype=dtype) for _ in range(3))
    useful = sum(4 * h * int(n) ** 2 * d for n in lengths)
    t_triton = _bench_ms(lambda: triton_masked_attention(q, k, v, mask))
    t_sdpa = _bench_ms(lambda: sdpa_attention(q, k, v, mask))

    def flash_per_request():
        # The unpadded ideal: one flash call per request at its own length.
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            for i, n in enumerate(lengths.tolist()):
                F.scaled_dot_product_attention(
                    q[i : i + 1, :, :n], k[i : i + 1, :, :n], v[i : i + 1, :, :n]
                )

    t_loop = _bench_ms(flash_per_request)
    mixed = {
        "batch": b,
        "heads": h,
        "seq_len": l,
        "head_dim": d,
        "lengths": lengths.tolist(),
        "triton_masked_ms": t_triton,
        "sdpa_dense_mask_ms": t_sdpa,
        "sdpa_flash_per_request_ms": t_loop,
        "triton_useful_tflops": useful / t_triton / 1e9,
        "sdpa_dense_mask_useful_tflops": useful / t_sdpa / 1e9,
        "speedup_vs_dense_mask": t_sdpa / t_triton,
    }
    return {"dtype": "bfloat16", "dense": dense, "mixed_lengths": mixed}


def bench_sampling(device: torch.device) -> list[dict]:
    from models.kernels.sampling import PhiloxStream, gumbel_noise, sampling_step
    from models.kernels.sampling_triton import triton_sampling_step

    out = []
    v = 1024
    for n in (1024, 8192):  # one magvit-b video (1024 tokens), then a batch of 8
        g = torch.Generator(device).manual_seed(0)
        logits = torch.randn(n, v, device=device, generator=g)
        tokens = torch.zeros(n, dtype=torch.long, device=device)
        known = torch.rand(n, device=device, generator=g) < 0.5
        noise, noise_c = gumbel_noise((n, v), g, device), gumbel_noise((n,), g, device)
        stream = PhiloxStream(torch.full((n,), 7, device=device), torch.arange(n, device=device))
        args = (logits, tokens, known, 1.0, 4.5)
        t_fused = _bench_ms(lambda: triton_sampling_step(*args, noise, noise_c))  # noqa: B023
        t_seeded = _bench_ms(
            lambda: triton_sampling_step(*args, seeds=stream.seeds, offsets=stream.offsets)  # noqa: B023
        )
        t_ref = _bench_ms(lambda: sampling_step(*args, noise, noise_c))  # noqa: B023
        t_ref_gen = _bench_ms(lambda: sampling_step(*args, generator=g))  # noqa: B023
        # The fused pass reads logits and noise once: 2 x N x V x 4 bytes dominate.
        moved = 2 * n * v * 4
        out.append(
            {
                "rows": n,
                "vocab": v,
                "fused_noise_given_us": 1e3 * t_fused,
                "fused_philox_us": 1e3 * t_seeded,
                "torch_noise_given_us": 1e3 * t_ref,
                "torch_noise_drawn_us": 1e3 * t_ref_gen,
                "fused_noise_given_gb_per_s": moved / t_fused / 1e6,
                "speedup_noise_given": t_ref / t_fused,
                "speedup_philox_vs_torch_drawn": t_ref_gen / t_seeded,
            }
        )
    return out


def bench_decode(device: torch.device, repeats: int) -> list[dict]:
    from models.config import get_config
    from models.decoding import DecodeOptions, decode
    from models.transformer import BidirectionalTransformer

    cfg = get_config("magvit-b")
    vocab, n = cfg.vocab, cfg.num_video_tokens
    torch.manual_seed(0)
    model = BidirectionalTransformer(cfg.transformer, vocab.size, cfg.sequence_length)
    model = model.to(device, torch.float16).eval()
    backends = {"pytorch": ("sdpa", "torch"), "triton": ("triton", "triton")}
    out = []
    for batch in (1, 8):
        cond = torch.zeros(batch, n, dtype=torch.long, device=device)
        no_cond = torch.zeros(batch, n, dtype=torch.bool, device=device)

        def run(batch=batch, cond=cond, no_cond=no_cond):
            decode(
                model,
                vocab,
                8,
                [0] * batch,
                cond,
                no_cond,
                list(range(batch)),
                DecodeOptions(steps=12),
            )

        row: dict = {"batch": batch, "tokens": n, "steps": 12}
        for name, (attn, samp) in backends.items():
            os.environ["MAGVIT_ATTENTION"], os.environ["MAGVIT_SAMPLING"] = attn, samp
            run()  # warm-up: autotuning and compilation
            times = []
            for _ in range(repeats):
                torch.cuda.synchronize(device)
                start = time.perf_counter()
                run()
                torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
            row[f"{name}_seconds"] = statistics.median(times)
        row["speedup"] = row["pytorch_seconds"] / row["triton_seconds"]
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="decode runs (median)")
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["attention", "sampling", "decode"],
        choices=["attention", "sampling", "decode"],
    )
    args = parser.parse_args()
    if not torch.cuda.is_available() or importlib.util.find_spec("triton") is None:
        why = "CUDA is not available" if not torch.cuda.is_available() else "Triton is missing"
        print(
            json.dumps(
                {
                    "skipped": True,
                    "reason": f"{why}: these benchmarks time compiled Triton kernels on a "
                    "GPU; on CPU the kernels run only in the Triton interpreter, for "
                    "correctness (pytest tests/kernels)",
                    "command": COMMAND,
                    "host": platform.machine(),
                    "torch": torch.__version__,
                },
                indent=2,
            )
        )
        return

    import triton

    device = torch.device("cuda")
    torch.manual_seed(0)
    result: dict = {
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "triton": triton.__version__,
    }
    if "attention" in args.sections:
        result["attention"] = bench_attention(device)
    if "sampling" in args.sections:
        result["sampling"] = bench_sampling(device)
    if "decode" in args.sections:
        result["decode_magvit_b"] = bench_decode(device, args.repeats)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
