"""`magvit batch` against a real server with the tiny model: every result written, a failed
entry for a non-video, and a second run that makes no job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.batch import _key
from cli.main import main
from media.npz import read_npz
from service.client import Client
from tests.service.conftest import Server, make_settings
from tests.support import videos

KEY = "batch-key"


@pytest.fixture(scope="module")
def keyed(tiny_checkpoint, tmp_path_factory) -> Iterator[Server]:
    settings = make_settings(
        tiny_checkpoint, tmp_path_factory.mktemp("batch"), api_keys=[KEY, "other-key"]
    )
    srv = Server(settings).start()
    yield srv
    srv.stop()


def _clips(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for n, fmt in enumerate(("mp4", "webm", "gif")):
        path = folder / f"clip{n}.{fmt}"
        path.write_bytes(videos.clip(fmt, frames=6 + n))
        paths.append(path)
    (folder / "notes.txt").write_text("not a video")
    return paths


def _count(srv: Server, key: str = KEY) -> int:
    with Client(srv.url, key) as client:
        return sum(1 for _ in client.iter_jobs(page_size=2))


def _manifest(out: Path) -> dict[str, dict]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    return {Path(e["input"]).name: e for e in map(json.loads, lines)}


def test_a_folder_of_clips_then_the_same_run_again(keyed, tmp_path, capsys):
    clips = _clips(tmp_path / "in")
    out = tmp_path / "out"
    args = [
        "batch",
        "--server",
        keyed.url,
        "--api-key",
        KEY,
        "--task",
        "fp",
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(out),
        "--format",
        "npz",
        "--steps",
        "1",
        "--frames",
        "12",
        "--concurrency",
        "2",
    ]
    assert main(args) == 1  # the text file failed
    err = capsys.readouterr().err
    assert "failed:" in err and "notes.txt" in err and "unsupported_media" in err
    for clip in clips:
        result = out / f"{clip.stem}.fp.npz"
        assert read_npz(result.read_bytes()).shape == (12, 16, 16, 3)
    entries = _manifest(out)
    assert {n: e["status"] for n, e in entries.items()} == {
        "clip0.mp4": "completed",
        "clip1.webm": "completed",
        "clip2.gif": "completed",
        "notes.txt": "failed",
    }
    done = entries["clip0.mp4"]
    assert done["job_id"] and done["seed"] is not None and done["error"] is None
    assert done["seconds_queued"] >= 0 and done["seconds_running"] >= 0
    assert done["output"] == str(out / "clip0.fp.npz")
    assert entries["notes.txt"]["job_id"] is None and entries["notes.txt"]["error"]
    jobs = _count(keyed)
    assert jobs == 3 and _count(keyed, "other-key") == 0
    written = {p: p.stat().st_mtime_ns for p in out.glob("*.npz")}

    # The same command again: no new job, nothing rewritten.
    assert main(args) == 1
    assert _count(keyed) == jobs
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.npz")} == written
    assert _manifest(out)["clip1.webm"] == entries["clip1.webm"]

    # An output gone: fetched again from the job made before, still no new job.
    (out / "clip1.fp.npz").unlink()
    assert main(args) == 1
    assert _count(keyed) == jobs
    assert (out / "clip1.fp.npz").read_bytes()
    assert _manifest(out)["clip1.webm"]["job_id"] == entries["clip1.webm"]["job_id"]

    # Other parameters are other jobs.
    assert main([*args, "--seed", "4"]) == 1
    assert _count(keyed) == jobs + 3
    assert {e["seed"] for n, e in _manifest(out).items() if n != "notes.txt"} == {4}


def test_a_frame_step_goes_to_every_job(keyed, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(videos.clip("mp4", frames=16))
    out = tmp_path / "out"
    args = ["batch", "--server", keyed.url, "--api-key", KEY, "--task", "opc"]
    args += ["--input", str(folder), "--output", str(out), "--format", "npz", "--steps", "1"]
    assert main([*args, "--frame-step", "2"]) == 0
    entry = _manifest(out)["a.mp4"]
    with Client(keyed.url, KEY) as client:
        job = client.job(entry["job_id"])
    assert job.frame_step == 2 and job.frame_rate == 4.0
    # Keys of runs without the field are those of the versions before it.
    fields = {"seed": 1, "start": None}
    assert _key("00", "fp", fields | {"frame_step": None}, 1) == _key("00", "fp", fields, 1)
    assert _key("00", "fp", fields | {"frame_step": 2}, 1) != _key("00", "fp", fields, 1)


def test_bad_arguments_are_clear_errors(keyed, tmp_path, capsys):
    clip = tmp_path / "a.mp4"
    clip.write_bytes(videos.clip("mp4"))
    base = ["batch", "--server", keyed.url, "--api-key", KEY, "--output", str(tmp_path / "o")]
    assert main([*base, "--task", "cg", "--input", str(clip)]) == 2
    assert "runs these tasks on videos" in capsys.readouterr().err
    twin = tmp_path / "a.webm"
    twin.write_bytes(videos.clip("webm"))
    assert main([*base, "--task", "fp", "--input", str(clip), str(twin)]) == 2
    assert "would both write a.fp.mp4" in capsys.readouterr().err
    assert main([*base[:3], "--task", "fp", "--input", str(clip), "--output", "x"]) == 2
    assert "unauthorized" in capsys.readouterr().err
    # A field the server refuses fails the input, with the server's message.
    assert main([*base, "--task", "fp", "--input", str(clip), "--frames", "100000"]) == 1
    assert "invalid_input: frames" in capsys.readouterr().err


def test_failed_jobs_stay_failed_unless_retried(tiny_checkpoint, tmp_path, capsys):
    # No workers: jobs wait in the queue, so --timeout fails their inputs.
    srv = Server(make_settings(tiny_checkpoint, tmp_path / "data", workers=0)).start()
    try:
        (tmp_path / "in").mkdir()
        (tmp_path / "in" / "a.mp4").write_bytes(videos.clip("mp4"))
        out = tmp_path / "out"
        args = [
            "batch",
            "--server",
            srv.url,
            "--task",
            "fp",
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(out),
            "--steps",
            "1",
            "--timeout",
            "0.5",
        ]
        assert main(args) == 1
        assert "still queued" in capsys.readouterr().err
        [job] = _manifest(out).values()
        with Client(srv.url) as client:
            client.cancel(job["job_id"])
            assert main(args) == 1  # re-attached: its job was cancelled, no new job
            assert "cancelled" in _manifest(out)["a.mp4"]["error"]
            assert [j.id for j in client.iter_jobs()] == [job["job_id"]]
            assert main([*args, "--retry-failed"]) == 1  # a new job, still waiting
            again = _manifest(out)["a.mp4"]
            assert again["attempt"] == 2 and again["job_id"] != job["job_id"]
            assert len(list(client.iter_jobs())) == 2
    finally:
        srv.stop()
