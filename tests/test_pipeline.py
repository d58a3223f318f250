"""The pipeline on the tiny preset: input preparation, all ten tasks, conditions kept."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models.config import CONFIGS, ModelConfig
from models.options import DecodeOptions
from models.pipeline import InvalidInput, MagvitPipeline, build_transformer
from models.tasks import TASK_CODES, get_task

FAST = DecodeOptions(steps=3)


@pytest.fixture(scope="module")
def pipe() -> MagvitPipeline:
    return MagvitPipeline.random_init("tiny", seed=0)


def test_prepare_resizes_crops_and_takes_first_frames(pipe):
    t, h, w = pipe.config.video_shape
    frames = np.zeros((t + 5, 24, 48, 3), np.uint8)
    frames[:, :, 12:36] = 255  # a white central band, 24 wide: survives the centre crop
    frames[t:] = 128  # frames past the model's length must be ignored
    clip = pipe.prepare_video(frames, "fp")
    assert clip.shape == (3, t, h, w) and clip.dtype == torch.float32
    assert clip.min() >= 0 and clip.max() <= 1
    assert clip[:, :, :, 2:-2].min() > 0.99  # the crop keeps the centre of the wide frame


def test_prepare_checks_frame_counts(pipe):
    t, h, w = pipe.config.video_shape
    short = np.full((pipe.config.cond_frames, h, w, 3), 200, np.uint8)
    clip = pipe.prepare_video(short, "fp")  # enough for frame prediction: padded
    assert clip.shape[1] == t
    with pytest.raises(InvalidInput, match="needs at least"):
        pipe.prepare_video(short, "opc")
    with pytest.raises(InvalidInput, match="expected frames"):
        pipe.prepare_video(np.zeros((t, h, w)), "opc")
    with pytest.raises(InvalidInput, match="unknown task"):
        pipe.prepare_video(short, "nope")


@pytest.mark.parametrize("code", TASK_CODES)
def test_every_task_generates_and_keeps_its_condition(pipe, code):
    task = get_task(code)
    t, h, w = pipe.config.video_shape
    video = torch.rand(2, 3, t, h, w) if task.needs_video else None
    classes = [1, 2] if task.needs_class else None
    out = pipe.generate(code, video, classes, [0, 1], FAST)
    assert out.shape == (2, 3, t, h, w) and out.min() >= 0 and out.max() <= 1
    if task.needs_video:
        mask = task.pixel_mask(t, h, w, pipe.config.cond_frames)
        assert torch.equal(out[..., mask], video[..., mask])


def test_seeded_and_reported(pipe):
    steps = []
    a = pipe.generate("cg", None, [1], [3], FAST, progress=steps.append)
    b = pipe.generate("cg", None, [1], [3], FAST)
    c = pipe.generate("cg", None, [1], [4], FAST)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert [s.step for s in steps] == [1, 2, 3]
    preview = pipe.decode_tokens(steps[0].tokens.view(1, *pipe.config.token_shape))
    assert preview.shape == a.shape
    assert pipe.video_to_uint8(a).shape == (1, *pipe.config.video_shape, 3)


def test_bad_requests(pipe):
    with pytest.raises(InvalidInput, match="needs a class"):
        pipe.generate("cg", None, None, [0], FAST)
    with pytest.raises(InvalidInput, match="out of range"):
        pipe.generate("cg", None, [pipe.config.num_classes], [0], FAST)
    with pytest.raises(InvalidInput, match="needs a video"):
        pipe.generate("fp", None, None, [0], FAST)


def test_a_model_without_task_token_reads_class_and_video_only():
    cfg = CONFIGS["tiny"]
    cfg = dataclasses.replace(
        cfg, transformer=dataclasses.replace(cfg.transformer, task_token=False)
    )
    model = build_transformer(cfg).eval()
    assert model.position_embeddings.num_embeddings == cfg.sequence_length - 1
    ids = torch.randint(0, cfg.tokenizer.codebook_size, (2, cfg.sequence_length))
    ids[:, 1] = cfg.vocab.class_token(None)
    with torch.no_grad():
        logits = model(ids)
        other_task = model(torch.cat([ids[:, :1] + 3, ids[:, 1:]], dim=1))
    assert torch.equal(logits, other_task)  # the task slot is not read
    assert not logits[:, 0].any()
    assert logits[:, 1:].abs().max() > 0
    # Configs written before the field existed still load, with a task token.
    data = cfg.to_dict()
    assert ModelConfig.from_dict(data).transformer.task_token is False
    del data["transformer"]["task_token"]
    assert ModelConfig.from_dict(data).transformer.task_token is True


def test_guidance_unconditional_branch_uses_the_full_generation_task(pipe, monkeypatch):
    import models.pipeline

    seen = {}
    real = models.pipeline.decode

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(models.pipeline, "decode", spy)
    pipe.generate("cg", None, [0], [0], DecodeOptions(steps=1, guidance_scale=1.0))
    assert seen["unconditional_task"] == TASK_CODES.index("cg")
    without_cg = dataclasses.replace(pipe.config, tasks=("fp",))
    fp_only = MagvitPipeline(without_cg, pipe.tokenizer, pipe.transformer)
    t, h, w = pipe.config.video_shape
    fp_only.generate("fp", torch.rand(1, 3, t, h, w), None, [0], DecodeOptions(steps=1))
    assert seen["unconditional_task"] is None  # the task keeps its own token


def test_long_videos_slide_the_window(pipe):
    from models.pipeline import window_count, window_seed

    cfg = pipe.config
    t, h, w = cfg.video_shape
    c = cfg.cond_frames
    video = torch.rand(2, 3, t, h, w)
    steps = []
    frames = 2 * t + 3
    out = pipe.generate_frames("fp", video, None, [5, 6], FAST, frames, steps.append)
    windows = window_count(cfg, frames)
    assert out.shape == (2, 3, frames, h, w) and windows == 3
    assert [s.step for s in steps] == list(range(1, windows * FAST.steps + 1))
    assert {s.num_steps for s in steps} == {windows * FAST.steps}
    # The first window is the single-window result; the second continues from its last frames.
    first = pipe.generate("fp", video, None, [5, 6], FAST)
    assert torch.equal(out[:, :, :t], first)
    cond = first[:, :, -c:]
    second = pipe.generate(
        "fp",
        torch.cat([cond, cond[:, :, -1:].expand(-1, -1, t - c, -1, -1)], 2),
        None,
        [window_seed(5, 1), window_seed(6, 1)],
        FAST,
    )
    assert torch.equal(out[:, :, t : 2 * t - c], second[:, :, c:])
    assert torch.equal(pipe.generate_frames("fp", video, None, [5, 6], FAST), first)
    short = pipe.generate_frames("cfp", video, [1, 2], [5, 6], FAST, c + 1)
    assert short.shape[2] == c + 1


def test_long_videos_are_for_frame_prediction(pipe):
    t, h, w = pipe.config.video_shape
    video = torch.rand(1, 3, t, h, w)
    with pytest.raises(InvalidInput, match="fp and cfp"):
        pipe.generate_frames("opc", video, None, [0], FAST, 2 * t)
    with pytest.raises(InvalidInput, match="more than"):
        pipe.generate_frames("fp", video, None, [0], FAST, pipe.config.cond_frames)
    still = MagvitPipeline.random_init("tiny-2d")  # a one-frame window cannot slide
    with pytest.raises(InvalidInput, match="cannot slide"):
        still.generate_frames("fp", torch.rand(1, 3, 1, h, w), None, [0], FAST, 4)
