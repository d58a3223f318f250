"""The playground's bundled sample clips (`service/static/samples/`, made by `docs/samples.py`)."""

from __future__ import annotations

import json
from pathlib import Path

from media.decode import decode_video, frame_step
from models.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "service" / "static" / "samples"


def test_every_sample_is_a_clip_that_the_shipped_model_takes_whole():
    index = json.loads((SAMPLES / "index.json").read_text())
    assert index and {p.name for p in SAMPLES.glob("*.webm")} == {s["file"] for s in index}
    config = load_checkpoint(ROOT / "checkpoints" / "default").config
    t, h, w = config.video_shape
    for sample in index:
        assert sample["name"], sample
        video = decode_video(SAMPLES / sample["file"])
        assert (video.width, video.height) == (w, h), sample
        # Read at the model's frame rate, as the service reads it, a sample is one window.
        assert frame_step(video.fps, config.frame_rate) == 1, (sample, video.fps)
        assert len(video.frames) == t, sample
        assert video.frames.std() > 20, sample  # footage, not a flat picture


def test_samples_are_held_out_footage_with_credits():
    import docs.samples as made

    assert [s.file for s in made.SAMPLES] == [
        s["file"] for s in json.loads((SAMPLES / "index.json").read_text())
    ]
    for sample in made.SAMPLES:
        if sample.source == "bbb":
            assert "Big Buck Bunny" in sample.name and "CC-BY" in sample.name
