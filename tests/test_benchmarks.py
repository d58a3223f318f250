"""The benchmark scripts run and print the JSON their docs promise (timings not checked)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_train_step_benchmark_compares_precisions():
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "train_step.py"),
            "--config",
            "tiny",
            "--repeats",
            "1",
            "--tokenizer-batch",
            "1",
            "--transformer-batch",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report = json.loads(out.stdout)
    assert report["config"] == "tiny" and report["device"] == "cpu"
    for part in ("tokenizer", "transformer"):
        fig = report[part]
        assert fig["fp32_s"] > 0 and fig["bf16_s"] > 0
        assert abs(fig["speedup"] - fig["fp32_s"] / fig["bf16_s"]) < 1e-9


def _gpu_check(*args: str) -> subprocess.CompletedProcess:
    script = str(ROOT / "benchmarks" / "gpu_check.py")
    return subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, timeout=120
    )


def test_gpu_check_skips_cleanly_without_cuda(tmp_path):
    out = tmp_path / "gpu.json"
    done = _gpu_check("--out", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["skipped"] is True and "CUDA" in report["reason"]
    assert report["missing_packages"] == [] and report["plan"] == list(
        ("tests", "attention", "sampling", "decode")
    )
    dry = _gpu_check("--dry-run", "--sections", "decode", "--out", str(tmp_path / "d.json"))
    assert dry.returncode == 0 and json.loads(dry.stdout)["plan"] == ["decode"]
    assert _gpu_check("--sections", "nonsense").returncode == 2  # argparse refuses


def test_gpu_check_reads_its_figures_against_the_goals():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_check import summarize

    result = {
        "attention": {
            "dense": [
                {
                    "seq_len": 1024,
                    "head_dim": 64,
                    "triton_tflops": 400.0,
                    "sdpa_flash_tflops": 380.0,
                },
                {"seq_len": 2048, "head_dim": 64, "triton_tflops": 1.0, "sdpa_flash_tflops": 9.0},
            ]
        },
        "sampling": [{"speedup_noise_given": 4.0}, {"speedup_noise_given": 2.5}],
        "decode": [
            {"batch": 1, "mode": "eager", "seconds": 0.4},
            {"batch": 1, "mode": "cuda_graph", "seconds": 0.2},
            {"batch": 1, "mode": "compile", "error": "x"},
            {"batch": 8, "mode": "eager", "seconds": 0.1},
        ],
    }
    summary = summarize(result)
    assert summary["figures"] == {
        "attention_vs_sdpa_flash_at_L1024_D64": 400.0 / 380.0,
        "fused_sampling_speedup": 2.5,  # the worst size
        "magvit_b_12_steps_batch1_seconds": 0.2,  # the best mode at batch 1
    }
    assert summary["met"] == {
        "attention_vs_sdpa_flash_at_L1024_D64": True,
        "fused_sampling_speedup": False,
        "magvit_b_12_steps_batch1_seconds": True,
    }


def test_cpu_inference_scaling_prints_rows():
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "cpu_inference.py"),
            "--scaling",
            "--tokens",
            "256",
            "--batches",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    report = json.loads(out.stdout[out.stdout.index("{\n") :])
    [row] = report["scaling"]
    assert row["tokens"] == 256 and row["batch"] == 1 and row["seconds"] > 0
    assert row["tokenizer_seconds"] > 0 and row["transformer_seconds"] >= 0


def test_cpu_inference_times_emulated_bf16_on_a_small_product(monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "cpu_inference", ROOT / "benchmarks" / "cpu_inference.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    calls = []
    monkeypatch.setattr(
        bench, "matmul_peak", lambda dtype, n=2048, repeats=5: calls.append((dtype, n, repeats))
    )
    bench.matmul_peaks(native_bf16=True)
    bench.matmul_peaks(native_bf16=False)
    assert calls == [
        (torch.float32, 2048, 5),
        (torch.bfloat16, 2048, 5),  # native: the full product, best of 5
        (torch.float32, 2048, 5),
        (torch.bfloat16, 512, 1),  # emulated: minutes otherwise
    ]
