"""The benchmark scripts run and print the JSON their docs promise (timings not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_step_benchmark_compares_precisions():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--config", "tiny",
         "--repeats", "1", "--tokenizer-batch", "1", "--transformer-batch", "1"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    report = json.loads(out.stdout)
    assert report["config"] == "tiny" and report["device"] == "cpu"
    for part in ("tokenizer", "transformer"):
        fig = report[part]
        assert fig["fp32_s"] > 0 and fig["bf16_s"] > 0
        assert abs(fig["speedup"] - fig["fp32_s"] / fig["bf16_s"]) < 1e-9
