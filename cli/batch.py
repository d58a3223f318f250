"""`magvit batch --server URL --task fp --input DIR --output DIR`: one job per input video through
a server's job queue, results and a manifest written to the output folder.

Each job's Idempotency-Key is a digest of the input's content and the parameters, so running the
same command again creates no job: finished outputs that the manifest records with the same key
are skipped, and the other inputs re-attach to the jobs made before (`--retry-failed` submits
failed ones again, as new jobs). Busy answers (429, 503) are retried after their Retry-After, for
--max-wait seconds per request. An input the server refuses (not a video, too long, ...) is a
failed entry of the manifest; the exit status is 1 when any input failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cli.main import CliError

OUTPUT_FORMATS = ("mp4", "webm", "gif", "npz")  # media.FORMATS (not imported: it loads PyAV)
MANIFEST = "manifest.jsonl"
# Task form fields the command passes on: (flag, API field, type, help).
FIELDS: tuple[tuple[str, str, type, str], ...] = (
    ("--seed", "seed", int, "random seed (default: one per job, chosen by the server)"),
    ("--steps", "steps", int, "decoding steps"),
    ("--class-id", "class_id", int, "class (cfp)"),
    ("--frames", "frames", int, "fp, cfp: frames to make, by sliding the model's window"),
    ("--start", "start", int, "fp, cfp: the first condition frame (default: the clip's last)"),
    (
        "--frame-step",
        "frame_step",
        int,
        "read one frame of each video in this many (default: the server's choice, from the "
        "model's frame rate)",
    ),
    ("--temperature", "temperature", float, "sampling temperature"),
    ("--choice-temperature", "choice_temperature", float, "re-masking noise"),
    ("--schedule", "schedule", str, "mask schedule: cosine, exp, linear, log, uniform or powP"),
    ("--guidance-scale", "guidance_scale", float, "classifier-free guidance (cfp)"),
    ("--top-k", "top_k", int, "sample among the k likeliest tokens"),
    ("--top-p", "top_p", float, "nucleus sampling mass"),
    ("--webhook", "webhook", str, "a URL the server POSTs each job's final state to"),
)

# Fields added since the first manifests: in the Idempotency-Keys only when given.
LATER_FIELDS = ("frame_step",)


def add_parser(sub) -> None:
    p = sub.add_parser("batch", help="run a task on many videos through a server's job queue")
    p.add_argument("--server", required=True, help="the API, e.g. http://127.0.0.1:8000")
    p.add_argument("--task", required=True, help="a task that takes a video, e.g. fp")
    p.add_argument(
        "--input",
        required=True,
        nargs="+",
        type=Path,
        help="videos, or folders of videos (their files, not sub-folders)",
    )
    p.add_argument(
        "--output",
        required=True,
        type=Path,
        help=f"folder of the results (<input stem>.<task>.<format>) and {MANIFEST}",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("MAGVIT_API_KEY"),
        help="Bearer key (default: MAGVIT_API_KEY)",
    )
    p.add_argument("--concurrency", type=int, default=4, help="jobs in flight at once")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default="mp4")
    p.add_argument(
        "--max-wait",
        type=float,
        default=300.0,
        help="seconds to keep retrying a busy server per request (default 300)",
    )
    p.add_argument(
        "--timeout", type=float, default=None, help="seconds to wait for each job (default: none)"
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="submit inputs whose job failed again, as new jobs",
    )
    for flag, name, kind, text in FIELDS:
        p.add_argument(flag, dest=name, type=kind, default=None, help=text)
    p.set_defaults(run=run)


@dataclass(frozen=True)
class Entry:
    """One line of the manifest."""

    input: str
    output: str | None
    key: str | None  # the Idempotency-Key of its job
    job_id: str | None = None
    status: str = "pending"  # completed or failed once done
    seed: int | None = None
    seconds_queued: float | None = None
    seconds_running: float | None = None
    error: str | None = None
    attempt: int = 1  # --retry-failed counts up

    @classmethod
    def from_json(cls, line: str) -> Entry:
        data = json.loads(line)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _inputs(paths: list[Path], output: Path) -> list[Path]:
    """The files named and the files of the folders named (sorted, no hidden ones, nothing
    under the output folder), each once."""
    found: list[Path] = []
    out = output.resolve()
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        else:
            files = [path]
        for f in files:
            if out not in f.resolve().parents and f not in found:
                found.append(f)
    return found


def _key(content_digest: str, task: str, fields: dict[str, Any], attempt: int) -> str:
    """The Idempotency-Key of an input's job: sha256 of its content and the parameters. Fields
    added since the manifests of earlier versions count only when given, so that their keys
    stay the same."""
    fields = {k: v for k, v in fields.items() if v is not None or k not in LATER_FIELDS}
    h = hashlib.sha256()
    h.update(json.dumps({"task": task, "fields": fields}, sort_keys=True).encode())
    h.update(bytes.fromhex(content_digest))
    if attempt > 1:
        h.update(f"attempt {attempt}".encode())
    return f"magvit-batch-{h.hexdigest()}"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_manifest(path: Path) -> dict[Path, Entry]:
    """Earlier entries by input (its resolved path, however it was named)."""
    entries: dict[Path, Entry] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = Entry.from_json(line)
            except (ValueError, TypeError):
                continue  # a line cut short by an interrupted run
            entries[Path(entry.input).resolve()] = entry
    return entries


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


class Progress:
    """A tqdm bar of jobs done of total; its postfix shows the decoding step of running jobs."""

    def __init__(self, total: int, done: int, desc: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=done, desc=desc, unit="job")
        self.lock = threading.Lock()
        self.running: dict[str, str] = {}

    def step(self, name: str, text: str) -> None:
        with self.lock:
            self.running[name] = text
            self._show()

    def finish(self, name: str) -> None:
        with self.lock:
            self.running.pop(name, None)
            self.bar.update(1)
            self._show()

    def _show(self) -> None:
        text = ", ".join(f"{n} {s}" for n, s in sorted(self.running.items()))
        self.bar.set_postfix_str(text[:100], refresh=True)

    def close(self) -> None:
        self.bar.close()


def run(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from service.client import ApiError, Client, JobEvent

    if args.concurrency < 1:
        raise CliError("--concurrency must be at least 1")
    fields = {name: getattr(args, name) for _, name, _, _ in FIELDS}
    fields = {k: v for k, v in fields.items() if v is not None} | {"format": args.format}
    client = Client(args.server, args.api_key, max_wait_s=args.max_wait)
    try:
        tasks = {t["code"]: t for t in client.tasks()["tasks"]}
    except ApiError as err:
        client.close()
        raise CliError(f"the server at {args.server} answered {err}") from None
    except httpx.HTTPError as err:
        client.close()
        raise CliError(f"cannot reach the server at {args.server}: {err}") from None
    if args.task not in tasks or not tasks[args.task]["needs_video"]:
        client.close()
        video_tasks = ", ".join(c for c, t in tasks.items() if t["needs_video"])
        raise CliError(f"--task: this server runs these tasks on videos: {video_tasks}")

    args.output.mkdir(parents=True, exist_ok=True)
    manifest = args.output / MANIFEST
    earlier = _read_manifest(manifest)
    inputs = _inputs(args.input, args.output)
    if not inputs:
        client.close()
        raise CliError("no input files")
    outputs: dict[Path, Path] = {}
    for path in inputs:
        out = args.output / f"{path.stem}.{args.task}.{args.format}"
        if out in outputs.values():
            other = next(p for p, o in outputs.items() if o == out)
            client.close()
            raise CliError(f"{other} and {path} would both write {out.name}")
        outputs[path] = out

    # What each input needs: nothing (written before, same key), or its job.
    entries: dict[Path, Entry] = {}
    todo: list[Path] = []
    for path in inputs:
        out = outputs[path]
        try:
            digest = _digest(path)
        except OSError as err:
            entries[path] = Entry(str(path), None, None, status="failed", error=_os_error(err))
            continue
        before = earlier.get(path.resolve())
        attempt = 1
        if before and before.key == _key(digest, args.task, fields, before.attempt):
            # The same content and parameters as before.
            if before.status == "completed" and out.is_file():
                entries[path] = before
                continue
            attempt = before.attempt + (before.status == "failed" and args.retry_failed)
        key = _key(digest, args.task, fields, attempt)
        entries[path] = Entry(str(path), str(out), key, attempt=attempt)
        todo.append(path)

    lock = threading.RLock()
    names = {p.resolve() for p in inputs}

    def save() -> None:
        """The manifest: this run's entries, and earlier ones of other inputs."""
        with lock:
            kept = [e for k, e in earlier.items() if k not in names]
            lines = [asdict(e) for e in [*kept, *entries.values()]]
            text = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines)
            _write_atomic(manifest, text.encode())

    progress = Progress(len(inputs), len(inputs) - len(todo), f"{args.task} jobs")

    def one(path: Path) -> None:
        entry = entries[path]
        name = path.name

        def on_event(event: JobEvent) -> None:
            if event.step and event.num_steps:
                progress.step(name, f"{event.step}/{event.num_steps}")
            else:
                progress.step(name, event.status)

        try:
            job, _ = client.submit(
                args.task, path, idempotency_key=entry.key, filename=path.name, **fields
            )
            entry = replace(entry, job_id=job.id, seed=job.seed)
            job = client.wait(job.id, on_event, args.timeout)
            entry = replace(
                entry,
                status=job.status,
                seconds_queued=job.seconds_queued,
                seconds_running=job.seconds_running,
            )
            if job.status == "completed":
                result = client.result(job.id)
                _write_atomic(Path(entry.output or ""), result.content)
            else:
                reason = job.error or f"the job was {job.status}"
                entry = replace(entry, status="failed", error=f"{job.error_type}: {reason}")
        except ApiError as err:
            entry = replace(entry, status="failed", error=str(err))
        except httpx.HTTPError as err:
            entry = replace(entry, status="failed", error=f"the server did not answer: {err}")
        except (OSError, TimeoutError) as err:
            entry = replace(entry, status="failed", error=_os_error(err))
        with lock:
            entries[path] = entry
        save()
        progress.finish(name)

    try:
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, todo))
    finally:
        progress.close()
        client.close()
        save()
    failed = [e for e in entries.values() if e.status != "completed"]
    done = len(entries) - len(failed)
    print(f"{done} of {len(entries)} inputs completed; manifest: {manifest}")
    if failed:
        for e in failed:
            print(f"failed: {e.input}: {e.error}", file=sys.stderr)
        return 1
    return 0


def _os_error(err: BaseException) -> str:
    return str(err) or type(err).__name__
