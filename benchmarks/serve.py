"""Serving throughput: dynamic batching against max_batch_size=1, side by side in one run.

Starts `magvit serve` in a subprocess for each setting, drives it with concurrent HTTP clients
(frame prediction on a small uploaded clip) and prints JSON: requests per second, p50 / p95
latency, and the share of request time spent outside the model (HTTP, queueing aside, video
decode and encode).

    .venv/bin/python benchmarks/serve.py [--checkpoint DIR] [--requests 32] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from media import encode_video  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clip(frames: int, size: int) -> bytes:
    video = np.zeros((frames, size, size, 3), np.uint8)
    for i in range(frames):
        video[i, size // 3 : size // 2, (2 * i) % size : (2 * i) % size + 8] = 255
    return encode_video(video, "mp4")


def run_setting(args, batch: int) -> dict:
    port = _port()
    env = os.environ | {
        "MAGVIT_MAX_BATCH_SIZE": str(batch),
        "MAGVIT_MAX_WAIT_MS": "100",
        "MAGVIT_MAX_QUEUE": "1000",
    }
    cmd = [
        sys.executable,
        "-m",
        "cli.main",
        "serve",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--data-dir",
        tempfile.mkdtemp(prefix="magvit-bench-"),
    ]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        clip = _clip(16, 64)
        # One pooled client for all threads, as a batch client keeps its connections: a new
        # client per request would time the benchmark's own TLS-context set-up (tens of ms of
        # its GIL each), not the service.
        client = httpx.Client(base_url=url, timeout=600)

        def one(i: int) -> tuple[float, float]:
            start = time.perf_counter()
            data = {"seed": str(i), "steps": str(args.steps)}
            files = {"video": ("clip.mp4", clip, "video/mp4")}
            r = client.post("/v1/tasks/fp", data=data, files=files)
            r.raise_for_status()
            latency = time.perf_counter() - start
            return latency, float(r.headers["x-inference-seconds"])

        wall = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - wall
        metrics = client.get("/metrics").text
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    latencies = sorted(r[0] for r in results)

    def total(name: str) -> float:
        return float(re.search(rf"magvit_{name} (\S+)", metrics).group(1))

    model = total("inference_seconds_sum")
    batches = total("batch_size_count")
    sizes = total("batch_size_sum")
    return {
        "max_batch_size": batch,
        "requests": args.requests,
        "throughput_rps": args.requests / wall,
        "latency_p50_s": statistics.median(latencies),
        "latency_p95_s": latencies[int(0.95 * (len(latencies) - 1))],
        "mean_batch_size": sizes / batches if batches else 0.0,
        # Model busy time against wall time: what is left is HTTP, video I/O and idling.
        "share_outside_model": max(0.0, 1 - model / wall),
        # Where the rest goes, per request (seconds): the service's own work on each side of
        # the model, and the wait from enqueue to the start of its batch.
        "upload_decode_s": total("video_decode_seconds_sum") / args.requests,
        "result_encode_s": total("video_encode_seconds_sum") / args.requests,
        "queue_wait_s": total("queue_wait_seconds_sum") / args.requests,
        "model_s_per_batch": model / batches if batches else 0.0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=12)
    args = p.parse_args()
    batched = run_setting(args, args.batch)
    single = run_setting(args, 1)
    print(
        json.dumps(
            {
                "batched": batched,
                "unbatched": single,
                "throughput_ratio": batched["throughput_rps"] / single["throughput_rps"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
