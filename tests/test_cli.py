"""The `magvit` command line: info, generate, and clear errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from cli.main import main


def _write_clip(path: Path, frames: int = 10, size: int = 32) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.zeros((size, size, 3), np.uint8)
            img[:, (i * 2) % size : (i * 2) % size + 6] = 255
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    return path


def test_info_json_lists_presets_and_tasks(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["configs"]) >= {"tiny", "default", "magvit-b", "magvit-l"}
    assert [t["code"] for t in info["tasks"]] == [
        "fp",
        "fi",
        "opc",
        "opv",
        "oph",
        "opd",
        "ipc",
        "ipd",
        "cg",
        "cfp",
    ]
    b = info["configs"]["magvit-b"]
    assert b["video"] == [16, 128, 128] and b["tokens"] == [4, 16, 16]
    assert b["codebook_size"] == 1024
    assert abs(b["params"]["total"] / 128e6 - 1) < 0.05
    assert abs(info["configs"]["magvit-l"]["params"]["total"] / 464e6 - 1) < 0.05
    d = info["configs"]["default"]
    assert d["params"]["total"] == d["params"]["tokenizer"] + d["params"]["transformer"]


@pytest.mark.parametrize("ext", ["mp4", "npz"])
def test_generate_writes_a_video(tmp_path, ext, capsys):
    clip = _write_clip(tmp_path / "in.mp4")
    out = tmp_path / f"out.{ext}"
    args = [
        "generate",
        "opc",
        "--input",
        str(clip),
        "--output",
        str(out),
        "--steps",
        "2",
        "--config",
        "tiny",
        "--random-init",
    ]
    assert main(args) == 0
    assert out.is_file() and out.stat().st_size > 0
    if ext == "npz":
        video = np.load(out, allow_pickle=False)["video"]
        assert video.shape == (8, 16, 16, 3) and video.dtype == np.uint8


def test_generate_class_task_without_input(tmp_path):
    out = tmp_path / "cg.gif"
    args = [
        "generate",
        "cg",
        "--class-id",
        "1",
        "--output",
        str(out),
        "--steps",
        "2",
        "--config",
        "tiny",
        "--random-init",
    ]
    assert main(args) == 0 and out.stat().st_size > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input", "missing.mp4"], "input not found"),
        (["--input", "{garbage}"], "video"),
        (["--input", "{clip}", "--output", "{tmp}/x.txt"], "unsupported output format"),
        (["--input", "{clip}", "--steps", "0"], "steps"),
        (["--input", "{clip}", "--checkpoint", "{tmp}"], "not a checkpoint"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, capsys, extra, message):
    clip = _write_clip(tmp_path / "in.mp4")
    (tmp_path / "garbage.mp4").write_bytes(np.random.bytes(5000))
    subs = {"clip": str(clip), "garbage": str(tmp_path / "garbage.mp4"), "tmp": str(tmp_path)}
    extra = [e.format(**subs) for e in extra]
    args = ["generate", "fp", "--output", str(tmp_path / "o.mp4"), *extra]
    if "--checkpoint" not in extra:
        args += ["--config", "tiny", "--random-init"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_console_script_reports_errors_without_traceback(tmp_path):
    exe = Path(sys.executable).with_name("magvit")
    proc = subprocess.run(
        [
            str(exe),
            "generate",
            "cg",
            "--output",
            str(tmp_path / "o.mp4"),
            "--config",
            "tiny",
            "--random-init",
            "--steps",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "needs a class id" in proc.stderr and "Traceback" not in proc.stderr


def test_generate_continues_the_input_for_many_frames(tmp_path):
    clip = _write_clip(tmp_path / "in.mp4", frames=10)
    out = tmp_path / "long.npz"
    args = [
        "generate",
        "fp",
        "--input",
        str(clip),
        "--output",
        str(out),
        "--steps",
        "1",
        "--frames",
        "20",
        "--config",
        "tiny",
        "--random-init",
    ]
    assert main(args) == 0
    video = np.load(out, allow_pickle=False)["video"]
    assert video.shape == (20, 16, 16, 3)
    # The result begins with the input's last frame: the bar, far right in a 32-pixel frame.
    first = video[0].astype(int).mean(axis=(0, 2))
    assert first[first.size // 2 :].sum() > first[: first.size // 2].sum()
    start = tmp_path / "start.npz"
    assert main([*args[:5], str(start), *args[6:], "--start", "0"]) == 0
    first = np.load(start, allow_pickle=False)["video"][0].astype(int).mean(axis=(0, 2))
    assert first[: first.size // 2].sum() > first[first.size // 2 :].sum()


def test_generate_start_out_of_range(tmp_path, capsys):
    clip = _write_clip(tmp_path / "in.mp4", frames=10)
    args = [
        "generate",
        "fp",
        "--input",
        str(clip),
        "--output",
        str(tmp_path / "o.mp4"),
        "--start",
        "10",
        "--config",
        "tiny",
        "--random-init",
    ]
    assert main(args) == 2
    assert "--start must be in [0, 9]" in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_generate_runs_in_the_precision_asked_for(tmp_path, precision, monkeypatch):
    import torch

    import models.pipeline

    seen = []
    real = models.pipeline.MagvitPipeline.random_init

    def spy(*args, **kwargs):
        pipe = real(*args, **kwargs)
        seen.append(pipe.dtype)
        return pipe

    monkeypatch.setattr(models.pipeline.MagvitPipeline, "random_init", spy)
    out = tmp_path / "cg.npz"
    args = [
        "generate",
        "cg",
        "--class-id",
        "1",
        "--output",
        str(out),
        "--steps",
        "1",
        "--config",
        "tiny",
        "--random-init",
        "--precision",
        precision,
    ]
    assert main(args) == 0 and out.is_file()
    assert seen == [{"fp32": torch.float32, "bf16": torch.bfloat16}[precision]]
    with pytest.raises(SystemExit):  # argparse refuses what is not a precision
        main(["generate", "cg", "--output", str(out), "--precision", "fp8"])


@pytest.fixture(scope="module")
def rate_checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint that learnt motion at 4 fps, conditioned on 3 frames."""
    import dataclasses

    from models.checkpoint import save_checkpoint
    from models.pipeline import MagvitPipeline

    pipe = MagvitPipeline.random_init("tiny", seed=0)
    path = tmp_path_factory.mktemp("rate-ckpt")
    config = dataclasses.replace(pipe.config, frame_rate=4.0, cond_frames=3)
    save_checkpoint(path, config, pipe.tokenizer.state_dict(), pipe.transformer.state_dict())
    return path


def _ramp(path: Path, frames: int = 12, fps: int = 8) -> Path:
    """Flat grey frames, frame i at 16 + 16 i."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.full((32, 32, 3), 16 + 16 * i, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    return path


def _first_frames(path: Path, n: int = 3) -> list[int]:
    """Which ramp frames a result begins with (fp pastes its condition frames)."""
    video = np.load(path, allow_pickle=False)["video"]
    return [round((float(f[6:10, 6:10].mean()) - 16) / 16) for f in video[:n]]


def test_generate_reads_the_input_at_the_models_rate(tmp_path, rate_checkpoint, capsys):
    from media import read_video

    clip = _ramp(tmp_path / "in.mp4")
    base = ["generate", "fp", "--input", str(clip), "--steps", "1"]
    base += ["--checkpoint", str(rate_checkpoint)]
    out = tmp_path / "auto.npz"
    assert main([*base, "--output", str(out)]) == 0
    assert _first_frames(out) == [7, 9, 11]  # the last frame and every second before it
    assert "(4 fps, the input read one frame in 2)" in capsys.readouterr().out
    assert main([*base, "--output", str(out), "--start", "1"]) == 0
    assert _first_frames(out) == [1, 3, 5]
    assert main([*base, "--output", str(out), "--frame-step", "3"]) == 0
    assert _first_frames(out) == [5, 8, 11]
    mp4 = tmp_path / "auto.mp4"
    assert main([*base, "--output", str(mp4)]) == 0
    assert read_video(mp4).fps == 4  # played back at the rate it was read at
    assert main([*base, "--output", str(mp4), "--fps", "10"]) == 0
    assert read_video(mp4).fps == 10
    cg = ["generate", "cg", "--class-id", "1", "--steps", "1", "--output", str(mp4)]
    assert main([*cg, "--checkpoint", str(rate_checkpoint)]) == 0
    assert read_video(mp4).fps == 4  # the model's rate
    assert main([*cg, "--config", "tiny", "--random-init"]) == 0
    assert read_video(mp4).fps == 8  # a model whose rate is unknown


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--frame-step", "0"], "--frame-step is a step in [1, 16]"),
        (["--frame-step", "17"], "--frame-step"),
        (["--fps", "0"], "--fps must be in"),
        (
            ["--start", "8"],
            "--start must be in [0, 7]: the input has 12 frames and the condition "
            "takes 3 at a frame step of 2",
        ),
    ],
)
def test_generate_checks_the_step_and_rate(tmp_path, rate_checkpoint, capsys, extra, message):
    clip = _ramp(tmp_path / "in.mp4")
    args = ["generate", "fp", "--input", str(clip), "--output", str(tmp_path / "o.mp4")]
    assert main([*args, "--checkpoint", str(rate_checkpoint), *extra]) == 2
    assert message in capsys.readouterr().err
