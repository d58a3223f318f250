"""Queue throughput with one `magvit worker` and with two, side by side in one run.

Starts a private Redis server, enqueues the same jobs (class-conditional generation) for each
setting, starts N worker processes (each with cores / N threads) and times until every job is
complete. Prints JSON: jobs per second per setting and the ratio.

    .venv/bin/python benchmarks/workers.py [--checkpoint DIR | --config tiny] [--jobs 24]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from models.options import DecodeOptions  # noqa: E402
from service.jobs import JobSpec  # noqa: E402
from service.redis_queue import RedisQueue  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402


def _checkpoint(args) -> str | None:
    if args.checkpoint or not args.config:
        return args.checkpoint
    from models.checkpoint import save_checkpoint
    from models.pipeline import MagvitPipeline

    pipe = MagvitPipeline.random_init(args.config, seed=0)
    path = tempfile.mkdtemp(prefix="magvit-bench-ckpt-")
    save_checkpoint(
        Path(path), pipe.config, pipe.tokenizer.state_dict(), pipe.transformer.state_dict()
    )
    return path


def run_setting(url: str, checkpoint: str | None, workers: int, args) -> dict:
    queue = RedisQueue(url)
    queue.r.flushall()
    threads = max(1, (os.cpu_count() or 1) // workers)
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [
        sys.executable,
        "-m",
        "cli.main",
        "worker",
        "--queue",
        url,
        "--device",
        "cpu",
        "--metrics-port",
        "0",
        "--max-batch-size",
        str(args.batch),
    ]
    if checkpoint:
        cmd += ["--checkpoint", checkpoint]
    logs = [
        Path(tempfile.mkstemp(prefix="magvit-worker-", suffix=".log")[1]) for _ in range(workers)
    ]
    out = subprocess.STDOUT
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=out) for log in logs
    ]
    try:
        deadline = time.monotonic() + 300
        while not all(b" ready on " in log.read_bytes() for log in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"workers did not start; see {logs}")
            time.sleep(0.1)
        start = time.perf_counter()
        ids = []
        for i in range(args.jobs):
            spec = JobSpec(
                task="cg",
                seed=i,
                class_id=i % 10,
                format="npz",
                options=DecodeOptions(steps=args.steps),
            )
            ids.append(queue.enqueue(spec)[0].id)
        while any((job := queue.get(i)) is None or not job.done for i in ids):
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        per_worker: dict[str, int] = {}
        for i in ids:
            name = queue.get(i).worker or "?"
            per_worker[name] = per_worker.get(name, 0) + 1
        return {
            "workers": workers,
            "threads_per_worker": threads,
            "jobs": args.jobs,
            "seconds": round(seconds, 3),
            "jobs_per_second": round(args.jobs / seconds, 3),
            "jobs_per_worker": sorted(per_worker.values()),
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped one")
    parser.add_argument("--config", default=None, help="a random-init preset instead")
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    checkpoint = _checkpoint(args)
    server = RedisServer().start()
    try:
        one = run_setting(server.url, checkpoint, 1, args)
        two = run_setting(server.url, checkpoint, 2, args)
    finally:
        server.stop()
    speedup = round(two["jobs_per_second"] / one["jobs_per_second"], 3)
    report = {
        "benchmark": "workers",
        "cpu_count": os.cpu_count(),
        "one": one,
        "two": two,
        "speedup_two_over_one": speedup,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
