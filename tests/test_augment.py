"""Colour augmentation of the tokenizer's training clips (`training/augment.py`)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from models.config import CONFIGS
from models.pipeline import build_tokenizer
from training.augment import JITTERED_SHARE, ColourJitter, ColourTransform
from training.datasets import make_dataset
from training.evaluate import flat_colour_errors
from training.tokenizer_trainer import TokenizerTrainConfig, train_tokenizer


def _clip(seed: int = 0) -> torch.Tensor:
    return torch.rand(3, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_identity_and_full_turn_keep_the_clip():
    clip = _clip()
    assert torch.allclose(ColourTransform().apply(clip), clip, atol=1e-6)
    assert torch.allclose(ColourTransform(hue=2 * math.pi).apply(clip), clip, atol=1e-6)


def test_hue_and_saturation_act_on_chroma_only():
    grey = torch.full((3, 2, 4, 4), 0.6)
    # Grey has no chroma: any hue or saturation leaves it as it is.
    assert torch.allclose(ColourTransform(hue=1.0, saturation=2.0).apply(grey), grey, atol=1e-6)
    clip = _clip()
    turned = ColourTransform(hue=math.pi / 2).apply(clip)
    assert (turned - clip).abs().mean() > 0.05  # colours change ...
    luma = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1, 1)
    unclipped = ((turned > 0) & (turned < 1)).all(0)
    a, b = (luma * clip).sum(0), (luma * turned).sum(0)
    assert torch.allclose(a[unclipped], b[unclipped], atol=1e-5)  # ... brightness does not
    flat = ColourTransform(saturation=0.0).apply(clip)  # no chroma: grey
    assert torch.allclose(flat[0], flat[1], atol=1e-5) and torch.allclose(
        flat[1], flat[2], atol=1e-5
    )


def test_contrast_saturates_highlights_into_flat_regions():
    clip = _clip()
    out = ColourTransform(contrast=2.0, brightness=0.2).apply(clip)
    assert out.min() >= 0 and out.max() <= 1
    assert (out == 1.0).float().mean() > 0.3


def test_jitter_is_a_function_of_the_index_and_touches_half_the_clips():
    data = make_dataset("synthetic", CONFIGS["tiny"], "train", num_clips=64)
    jittered = ColourJitter(data, 1.0, seed=3)
    a, b = jittered[5][0], jittered[5][0]
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    assert jittered[5][1] == data[5][1]
    changed = [jittered.transform(i) != ColourTransform() for i in range(400)]
    assert abs(sum(changed) / 400 - JITTERED_SHARE) < 0.08
    off = ColourJitter(data, 0.0)
    assert all(torch.equal(off[i][0], data[i][0]) for i in range(8))
    with pytest.raises(ValueError, match="strength"):
        ColourJitter(data, 1.5)


def test_the_tokenizer_trainer_takes_colour_jitter(tmp_path):
    base = dict(config="tiny", steps=1, batch_size=4, adv_start=1, log_every=1, lr=1e-3)
    losses = {}
    for jitter in (0.0, 1.0):
        out = tmp_path / f"j{jitter}"
        train_tokenizer(TokenizerTrainConfig(out=str(out), colour_jitter=jitter, **base))
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        losses[jitter] = next(r["recon"] for r in records if "recon" in r)
    assert losses[0.0] != losses[1.0]  # the same clips, other colours


class _Exact(torch.nn.Module):
    """A stand-in tokenizer that reconstructs exactly, or shifts every colour by `shift`."""

    def __init__(self, shift: float = 0.0) -> None:
        super().__init__()
        self.cfg = CONFIGS["tiny"].tokenizer
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.shift = shift

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[2] == 2 * self.cfg.temporal_factor  # a whole number of latent frames
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.shift


def test_flat_colour_error_measures_the_colour_shift():
    assert flat_colour_errors(_Exact())["flat_colour_error"] == pytest.approx(0.0, abs=1e-7)
    shifted = flat_colour_errors(_Exact(0.04))
    assert shifted["flat_colour_error"] == pytest.approx(0.04, abs=1e-6)
    assert shifted["flat_colour_worst"] == pytest.approx(0.04, abs=1e-6)
    # A real (untrained) tokenizer gets a report in [0, 1].
    report = flat_colour_errors(build_tokenizer(CONFIGS["tiny"]).eval())
    assert 0 <= report["flat_colour_error"] <= report["flat_colour_worst"] <= 1
