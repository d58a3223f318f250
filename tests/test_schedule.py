"""The cosine schedule and COMMIT masking (spec sections 6 and 7)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.schedule import MaskSchedule, commit_mask


def test_decoding_ratios_match_official(reference):
    got = MaskSchedule().decoding_ratios(12)
    np.testing.assert_allclose(got, reference["schedule/cosine_12"], rtol=1e-6, atol=1e-7)


def test_num_to_remask_bounds():
    s = MaskSchedule()
    unknown = torch.tensor([64, 3, 1])
    assert s.num_to_remask(0, 12, 64, unknown).tolist() == [
        math.floor(math.cos(math.pi / 24) * 64),
        2,  # at most unknown - 1
        0,
    ]
    assert s.num_to_remask(11, 12, 64, unknown).tolist() == [0, 0, 0]  # last step decides all
    assert s.num_to_remask(10, 12, 4, torch.tensor([4])).tolist() == [1]  # at least one


def test_training_ratios_follow_cosine_of_uniform():
    r = MaskSchedule().training_ratio(20000, torch.Generator().manual_seed(0))
    assert r.min() > 0 and r.max() <= 1
    # E[cos(pi/2 u)] = 2/pi for u ~ U[0, 1).
    assert abs(r.mean().item() - 2 / math.pi) < 0.01


def test_commit_mask_replacement_rules():
    g = torch.Generator().manual_seed(1)
    b, n, mask_id = 256, 32, 99
    tokens = torch.randint(0, 50, (b, n), generator=g)
    cond_tokens = torch.randint(50, 90, (b, n), generator=g)
    cond_mask = torch.zeros(b, n, dtype=torch.bool)
    cond_mask[:, :8] = True
    out = commit_mask(tokens, cond_tokens, cond_mask, mask_id, generator=g)
    m = out.masked
    # Unmasked positions keep the real tokens.
    assert torch.equal(out.input_ids[~m], tokens[~m])
    # Masked positions in the condition region hold condition tokens with segment 1.
    assert torch.equal(out.input_ids[m & cond_mask], cond_tokens[m & cond_mask])
    assert (out.segment_ids[m & cond_mask] == 1).all()
    # Masked positions elsewhere hold [MASK] with segment 0.
    assert (out.input_ids[m & ~cond_mask] == mask_id).all()
    assert (out.segment_ids[~(m & cond_mask)] == 0).all()
    # The count per row is floor(r * N) with r = cos(pi/2 u): the mean ratio is near 2/pi.
    ratios = m.float().mean(1)
    assert abs(ratios.mean().item() - 2 / math.pi) < 0.05
    assert set(m.sum(1).tolist()) <= set(range(n + 1))


def test_commit_mask_is_seeded():
    tokens = torch.randint(0, 50, (4, 16))
    a = commit_mask(
        tokens,
        tokens,
        torch.zeros(4, 16, dtype=torch.bool),
        99,
        generator=torch.Generator().manual_seed(3),
    )
    b = commit_mask(
        tokens,
        tokens,
        torch.zeros(4, 16, dtype=torch.bool),
        99,
        generator=torch.Generator().manual_seed(3),
    )
    assert torch.equal(a.masked, b.masked)


@pytest.mark.parametrize(
    ("method", "x", "want"),
    [
        ("cosine", 0.5, math.cos(math.pi / 4)),
        ("uniform", 0.25, 0.75),
        ("linear", 0.25, 0.75),
        ("pow2", 0.5, 0.75),
        ("pow2.5", 0.5, 1 - 0.5**2.5),
        ("log", 0.5, 1 / 8),  # -log2(0.5) / log2(256)
        ("exp", 0.5, 1 - 2**-4),  # 1 - 2^(-8 * 0.5)
        ("log", 0.0, 1.0),  # inf, clipped
        ("exp", 1.0, 1e-6),  # 0, clipped at the official floor
    ],
)
def test_official_schedules(method, x, want):
    assert MaskSchedule(method).ratio(x, 256) == pytest.approx(want, rel=1e-9)


def test_unknown_schedule_and_missing_token_count_are_refused():
    with pytest.raises(ValueError):
        MaskSchedule("square")
    with pytest.raises(ValueError):
        MaskSchedule("exp").ratio(0.5)


def test_commit_mask_follows_its_schedule():
    tokens = torch.zeros(2000, 64, dtype=torch.long)
    none = torch.zeros(2000, 64, dtype=torch.bool)
    counts = {}
    for method in ("cosine", "exp"):
        g = torch.Generator().manual_seed(0)
        m = commit_mask(tokens, tokens, none, 99, MaskSchedule(method), generator=g)
        counts[method] = m.masked.float().sum(1).mean().item() / 64
    # E[cos(pi/2 u)] = 2/pi; E[1 - 2^(-6 (1 - u))] = 1 - (1 - 2^-6) / (6 ln 2).
    assert counts["cosine"] == pytest.approx(2 / math.pi, abs=0.02)
    assert counts["exp"] == pytest.approx(1 - (1 - 2**-6) / (6 * math.log(2)), abs=0.02)
