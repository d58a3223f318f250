"""The CPU decoding loop's sampler: inverse-CDF sampling (`categorical_sampling_step`) draws
from the same distribution and reports the same confidence as the Gumbel-max reference."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from models.kernels.sampling import categorical_sampling_step, sampling_filter, sampling_step

ROW = torch.tensor([0.4, 0.1, -0.2, 0.3, -0.4, 0.0, -1.5, 1.0])


def _draw(n: int, temperature: float, allowed=None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = ROW.expand(n, len(ROW))
    tokens = torch.zeros(n, dtype=torch.long)
    known = torch.zeros(n, dtype=torch.bool)
    choice = torch.randn(n, generator=g)
    out = categorical_sampling_step(
        logits, tokens, known, temperature, 2.0, torch.rand(n, generator=g), choice, allowed
    )
    return out, choice


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_samples_follow_the_tempered_softmax(temperature):
    n = 4000
    (ids, log_prob, score), choice = _draw(n, temperature)
    counts = torch.bincount(ids, minlength=len(ROW)).double().numpy()
    expected = torch.softmax(ROW.double() / temperature, 0).numpy() * n
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    wrong = torch.softmax(ROW.double() / (temperature * 2), 0).numpy() * n
    assert stats.chisquare(counts, wrong).pvalue < 1e-3  # the test can tell
    # The confidence is the log-prob under the full, untempered softmax, plus choice noise.
    torch.testing.assert_close(log_prob, torch.log_softmax(ROW, 0)[ids])
    torch.testing.assert_close(score, log_prob + 2.0 * choice)


def test_top_k_and_top_p_restrict_the_draw_but_not_the_confidence():
    n = 4000
    logits = ROW.expand(n, len(ROW))
    for allowed in (sampling_filter(logits, 1.0, 3, None), sampling_filter(logits, 1.0, None, 0.6)):
        (ids, log_prob, _), _ = _draw(n, 1.0, allowed)
        keep = allowed[0]
        assert keep[ids].all()  # only allowed tokens are drawn
        counts = torch.bincount(ids, minlength=len(ROW)).double()[keep].numpy()
        expected = torch.softmax(ROW.double()[keep], 0).numpy() * n  # renormalised
        assert stats.chisquare(counts, expected).pvalue > 1e-3
        torch.testing.assert_close(log_prob, torch.log_softmax(ROW, 0)[ids])


def test_known_positions_are_left_alone_as_in_the_reference():
    g = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(50, 30, generator=g)
    tokens = torch.randint(0, 30, (50,), generator=g)
    known = torch.rand(50, generator=g) < 0.4
    choice = torch.randn(50, generator=g)
    ids, log_prob, score = categorical_sampling_step(
        logits, tokens, known, 0.7, 1.5, torch.rand(50, generator=g), choice
    )
    _, ref_log_prob, ref_score = sampling_step(logits, tokens, known, 0.7, 1.5, generator=g)
    assert torch.equal(ids[known], tokens[known])
    assert (log_prob[known] == 0).all() and torch.isinf(score[known]).all()
    assert torch.equal(ref_log_prob[known], log_prob[known])
    assert torch.equal(ref_score[known], score[known])


def test_one_uniform_picks_by_the_cdf():
    # u just below the first token's mass picks token 0; just above it, token 1.
    logits = torch.log(torch.tensor([[0.25, 0.5, 0.25]]))
    tokens, known, choice = (
        torch.zeros(1, dtype=torch.long),
        torch.zeros(1, dtype=torch.bool),
        torch.zeros(1),
    )
    pick = [
        categorical_sampling_step(logits, tokens, known, 1.0, 0.0, torch.tensor([u]), choice)[0]
        for u in (0.2499, 0.2501, 0.7499, 0.7501, 0.9999999)
    ]
    assert [int(p) for p in pick] == [0, 1, 1, 2, 2]


@pytest.mark.parametrize("top_k", [None, 5])
def test_the_loop_samples_only_undecided_tokens_and_gives_the_full_steps_answer(top_k):
    # The decoding loop hands the step only its undecided rows (in bf16, made fp32 there) and
    # fills in the decided ones; the result is bit for bit that of the step over every row.
    from models.decoding import _sample
    from models.kernels.sampling import gumbel_noise
    from models.options import DecodeOptions

    b, n, v = 3, 40, 16
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(b, n, v, generator=g).to(torch.bfloat16)
    tokens = torch.randint(0, v, (b, n), generator=g)
    known = torch.rand(b, n, generator=g) < 0.6
    options = DecodeOptions(steps=12, temperature=0.8, top_k=top_k)
    allowed = sampling_filter(logits, options.temperature, top_k, None)
    seeds = [5, 6, 7]

    def generators():
        return [torch.Generator().manual_seed(s) for s in seeds]

    got = _sample(logits, tokens, known, options, 1.5, allowed, seeds, generators(), 0)
    gens = generators()
    uniform = torch.cat([torch.rand(n, generator=x) for x in gens])
    choice = torch.cat([gumbel_noise((n,), x, "cpu") for x in gens])
    flat_allowed = None if allowed is None else allowed.reshape(b * n, v)
    want = categorical_sampling_step(
        logits.float().reshape(b * n, v),
        tokens.reshape(-1),
        known.reshape(-1),
        0.8,
        1.5,
        uniform,
        choice,
        flat_allowed,
    )
    for x, y in zip(got, want, strict=True):
        assert torch.equal(x, y)
    assert torch.equal(got[0][known.reshape(-1)], tokens[known])  # decided tokens stay
    assert torch.isinf(got[2][known.reshape(-1)]).all()
