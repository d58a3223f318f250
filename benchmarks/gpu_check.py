"""Everything a CUDA machine must show, in one command and one JSON file.

    python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json [--wheels .whl] [--budget-s 420]

On a fresh CUDA machine it
1. makes sure what it imports is there: torch, triton, numpy, safetensors, pytest (and scipy for
   the tests); a missing one is installed from `--wheels DIR` (pip, no index) when given;
2. runs the `gpu`-marked tests (`tests/kernels/test_gpu.py`, compiled kernels, TRITON_INTERPRET=0);
3. times, in bf16, the fused attention kernel against PyTorch SDPA (flash) at L 1024 / 2048,
   head dim 64 / 128, and the fused sampling step against the unfused PyTorch sequence
   (`benchmarks/kernels.py`);
4. times a 12-step `magvit-b` token decode at batch 1 and 8, in fp16 and bf16, eager, with the
   transformer's forward pass in a CUDA graph, and under `torch.compile` (its compilation timed
   apart), with the peak memory of each;
and writes all of it to `--out`, section by section, so that a run cut short keeps what it
finished. Sections stop being started once `--budget-s` has passed. Every failure is recorded
in the JSON and the run goes on.

Without CUDA it writes and prints {"skipped": true, "reason": ...} and exits 0 (CI runs it so).
`--dry-run` checks the environment and prints the plan without running anything.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

COMMAND = "python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json"
NEEDED = ("torch", "triton", "numpy", "safetensors", "pytest", "scipy")
SECTIONS = ("tests", "attention", "sampling", "decode")
# The goals the figures are read against.
GOALS = {
    "attention_vs_sdpa_flash_at_L1024_D64": 1.0,
    "fused_sampling_speedup": 3.0,
    "magvit_b_12_steps_batch1_seconds": 0.25,
}


def missing_packages() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def install_from_wheels(wheels: Path, names: list[str]) -> dict:
    """pip-install the wheels in `wheels` (no index, no dependencies) into a folder on sys.path."""
    target = Path(os.environ.get("TMPDIR", "/tmp")) / "gpu-check-site"
    files = sorted(str(p) for p in wheels.glob("*.whl"))
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-index",
        "--no-deps",
        "--no-compile",
        "--target",
        str(target),
        *files,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])
    importlib.invalidate_caches()
    return {
        "asked_for": names,
        "wheels": len(files),
        "returncode": done.returncode,
        "stderr": done.stderr[-2000:],
        "still_missing": missing_packages(),
    }


def run_gpu_tests(timeout_s: float) -> dict:
    env = os.environ | {
        "TRITON_INTERPRET": "0",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "gpu",
        "tests/kernels",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "--timeout",
        str(int(timeout_s)),
    ]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s + 30
        )
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        return {"passed": False, "timed_out": True, "tail": out[-3000:]}
    lines = done.stdout.strip().splitlines()
    return {
        "passed": done.returncode == 0,
        "returncode": done.returncode,
        "summary": lines[-1] if lines else "",
        "seconds": time.perf_counter() - start,
        "tail": (done.stdout + done.stderr)[-3000:],
    }


class GraphedForward:
    """A transformer's forward pass captured in a CUDA graph for one input shape: calls copy the
    inputs into static buffers and replay. The output is the graph's own buffer, valid until the
    next call (the decoding loop copies it into fp32 logits at once)."""

    def __init__(self, model, ids, segments) -> None:
        import torch

        self.ids, self.segments = ids.clone(), segments.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(3):  # warm-up outside the graph: autotuning, allocations
                model(self.ids, self.segments)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.out = model(self.ids, self.segments)

    def __call__(self, ids, segments, key_padding_mask=None):
        self.ids.copy_(ids)
        self.segments.copy_(segments)
        self.graph.replay()
        return self.out


def bench_decode_modes(repeats: int, budget_left: Callable[[], float]) -> list[dict]:
    import torch

    from models.config import get_config
    from models.decoding import decode
    from models.options import DecodeOptions
    from models.sequence import NUM_PREFIX_TOKENS
    from models.transformer import BidirectionalTransformer

    cfg = get_config("magvit-b")
    vocab, n = cfg.vocab, cfg.num_video_tokens
    device = torch.device("cuda")
    rows = []
    for dtype in (torch.float16, torch.bfloat16):
        torch.manual_seed(0)
        base = BidirectionalTransformer(cfg.transformer, vocab.size, cfg.sequence_length)
        base = base.to(device, dtype).eval()
        for batch in (1, 8):
            cond = torch.zeros(batch, n, dtype=torch.long, device=device)
            no_cond = torch.zeros(batch, n, dtype=torch.bool, device=device)
            length = n + NUM_PREFIX_TOKENS
            example = torch.zeros(batch, length, dtype=torch.long, device=device)
            for mode in ("eager", "cuda_graph", "compile"):
                row: dict = {
                    "dtype": str(dtype).removeprefix("torch."),
                    "batch": batch,
                    "mode": mode,
                    "tokens": n,
                    "steps": 12,
                }
                rows.append(row)
                if budget_left() <= 0:
                    row["skipped"] = "time budget spent"
                    continue
                try:
                    torch.cuda.reset_peak_memory_stats(device)
                    start = time.perf_counter()
                    if mode == "eager":
                        model = base
                    elif mode == "cuda_graph":
                        model = GraphedForward(base, example, torch.zeros_like(example))
                    else:
                        model = torch.compile(base)
                    options = DecodeOptions(steps=12)

                    def run(model=model, batch=batch, cond=cond, no_cond=no_cond, options=options):
                        decode(
                            model, vocab, 8, [0] * batch, cond, no_cond, list(range(batch)), options
                        )

                    run()  # warm-up (and compilation)
                    torch.cuda.synchronize(device)
                    row["setup_seconds"] = time.perf_counter() - start
                    times = []
                    for _ in range(repeats):
                        torch.cuda.synchronize(device)
                        t0 = time.perf_counter()
                        run()
                        torch.cuda.synchronize(device)
                        times.append(time.perf_counter() - t0)
                    row["seconds"] = statistics.median(times)
                    row["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
                except Exception as err:  # recorded; the other modes still run
                    row["error"] = f"{type(err).__name__}: {err}"[:2000]
    return rows


def summarize(result: dict) -> dict:
    """The figures the goals are about, each with whether it is met."""
    out: dict = {}
    dense = (result.get("attention") or {}).get("dense", [])
    for row in dense:
        if row.get("seq_len") == 1024 and row.get("head_dim") == 64:
            ratio = row["triton_tflops"] / row["sdpa_flash_tflops"]
            out["attention_vs_sdpa_flash_at_L1024_D64"] = ratio
    sampling = result.get("sampling") or []
    if sampling:
        out["fused_sampling_speedup"] = min(r["speedup_noise_given"] for r in sampling)
    for row in result.get("decode") or []:
        if row.get("batch") == 1 and "seconds" in row:
            best = out.get("magvit_b_12_steps_batch1_seconds")
            if best is None or row["seconds"] < best:
                out["magvit_b_12_steps_batch1_seconds"] = row["seconds"]
    met = {}
    for name, goal in GOALS.items():
        if name in out:
            lower_is_better = name.endswith("seconds")
            met[name] = out[name] <= goal if lower_is_better else out[name] >= goal
    return {"figures": out, "goals": GOALS, "met": met}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--wheels", type=Path, default=None, help="wheels for missing packages")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no section after")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--dry-run", action="store_true", help="check and print the plan only")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    def budget_left() -> float:
        return args.budget_s - (time.perf_counter() - start)

    result: dict = {"command": COMMAND, "host": platform.machine(), "sections": args.sections}

    def write() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    missing = missing_packages()
    if missing and args.wheels is not None and not args.dry_run:
        result["install"] = install_from_wheels(args.wheels, missing)
        missing = missing_packages()
    result["missing_packages"] = missing
    import torch  # needed for the answer below; the CPU CI image has it

    result["torch"] = torch.__version__
    if not torch.cuda.is_available():
        result |= {
            "skipped": True,
            "reason": "CUDA is not available: this check times compiled "
            "kernels and CUDA graphs on a GPU (on a CPU the kernels run in the Triton "
            "interpreter for correctness only: pytest tests/kernels)",
        }
    elif "triton" in missing:
        result |= {"skipped": True, "reason": "Triton is missing (pass --wheels DIR)"}
    if args.dry_run or result.get("skipped"):
        result["plan"] = args.sections
        write()
        print(json.dumps(result, indent=2))
        return 0

    import kernels as kernel_bench
    import triton

    device = torch.device("cuda")
    result |= {
        "device": torch.cuda.get_device_name(device),
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
    }
    steps: dict[str, Callable[[], object]] = {
        "tests": lambda: run_gpu_tests(timeout_s=max(60.0, min(240.0, budget_left()))),
        "attention": lambda: kernel_bench.bench_attention(device),
        "sampling": lambda: kernel_bench.bench_sampling(device),
        "decode": lambda: bench_decode_modes(args.repeats, budget_left),
    }
    for name in args.sections:
        if budget_left() <= 0:
            result[name] = {"skipped": "time budget spent"}
            continue
        t0 = time.perf_counter()
        try:
            result[name] = steps[name]()
        except Exception:  # recorded; the next section still runs
            result[name] = {"error": traceback.format_exc()[-3000:]}
        result.setdefault("seconds", {})[name] = time.perf_counter() - t0
        result["summary"] = summarize(result)
        write()
    result["total_seconds"] = time.perf_counter() - start
    result["summary"] = summarize(result)
    write()
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
