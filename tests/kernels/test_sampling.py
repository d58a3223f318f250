"""The fused decoding-step kernel against the PyTorch reference, through the Triton interpreter.

Given the same noise the kernel must pick the same token as the reference at every position;
its own Philox noise must match `philox_uniform` bit for bit and sample from softmax(x / T).
"""

from __future__ import annotations

import pytest
import torch
from scipy import stats

pytest.importorskip("triton")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from models.config import Vocabulary  # noqa: E402
from models.decoding import DecodeOptions, decode  # noqa: E402
from models.kernels.sampling import (  # noqa: E402
    PhiloxStream,
    fused_sampling_step,
    gumbel_noise,
    philox_uniform,
    remask_lowest,
    sampling_filter,
    sampling_step,
)
from models.kernels.sampling_triton import MAX_VOCAB, triton_sampling_step  # noqa: E402

pytestmark = pytest.mark.usefixtures("interpreter")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _inputs(n: int, v: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, v, generator=g)).to(dtype)
    tokens = torch.randint(0, v, (n,), generator=g)
    known = torch.rand(n, generator=g) < 0.3
    return logits, tokens, known, g


def _assert_same_step(got, want, known):
    ids, log_prob, score = got
    ids_r, log_prob_r, score_r = want
    assert torch.equal(ids, ids_r)  # token for token
    torch.testing.assert_close(log_prob, log_prob_r, rtol=0, atol=2e-5)
    assert torch.equal(score[known], score_r[known])  # +inf: never re-masked
    torch.testing.assert_close(score[~known], score_r[~known], rtol=0, atol=2e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("n", "v", "temperature"), [(1, 1, 1.0), (37, 100, 0.7), (20, 257, 3.0)])
def test_explicit_noise_token_for_token(dtype, n, v, temperature):
    logits, tokens, known, g = _inputs(n, v, dtype, seed=v)
    noise, noise_c = gumbel_noise((n, v), g, "cpu"), gumbel_noise((n,), g, "cpu")
    got = triton_sampling_step(logits, tokens, known, temperature, 2.5, noise, noise_c)
    want = sampling_step(logits, tokens, known, temperature, 2.5, noise, noise_c)
    _assert_same_step(got, want, known)
    assert torch.equal(got[0][known], tokens[known])


def test_zero_temperature_top_k_and_strided_logits():
    # Temperature 0 is greedy; -inf (top-k filtered) logits are never drawn; a strided view of
    # [B, N, K] logits (the decoding loop's slice) is read in place.
    full, tokens, known, g = _inputs(24, 70, torch.float32, seed=3)
    logits = full[:, :50]
    kth = logits.topk(5, dim=-1).values[:, -1:]
    logits = logits.masked_fill(logits < kth, float("-inf"))
    noise, noise_c = gumbel_noise((24, 50), g, "cpu"), gumbel_noise((24,), g, "cpu")
    for t in (0.0, 1.0):
        got = triton_sampling_step(logits, tokens, known, t, 1.0, noise, noise_c)
        _assert_same_step(got, sampling_step(logits, tokens, known, t, 1.0, noise, noise_c), known)
        assert torch.isfinite(logits[~known].gather(1, got[0][~known, None])).all()
    greedy = triton_sampling_step(logits, tokens, known, 0.0, 0.0, noise, noise_c)[0]
    assert torch.equal(greedy[~known], logits.argmax(1)[~known])


def test_top_k_top_p_same_on_both_backends(monkeypatch):
    # The filter is folded into the noise for both backends: same tokens, and the log-prob is
    # that of the full distribution, not the truncated one.
    logits, tokens, known, g = _inputs(12, 40, torch.float32, seed=5)
    allowed = sampling_filter(logits, 0.8, 6, 0.7)
    noise, noise_c = gumbel_noise((12, 40), g, "cpu"), gumbel_noise((12,), g, "cpu")
    out = {}
    for backend in ("torch", "triton"):
        monkeypatch.setenv("MAGVIT_SAMPLING", backend)
        out[backend] = fused_sampling_step(
            logits, tokens, known, 0.8, 1.5, noise, noise_c, allowed=allowed
        )
    _assert_same_step(out["triton"], out["torch"], known)
    ids = out["triton"][0]
    assert allowed[~known].gather(1, ids[~known, None]).all()
    full = torch.log_softmax(logits, -1).gather(1, ids[:, None]).squeeze(1)
    torch.testing.assert_close(out["triton"][1][~known], full[~known], rtol=0, atol=2e-5)
    # With a stream the filtered noise is the stream's own numbers on both backends.
    stream = PhiloxStream.for_requests([3], 12, 0)
    for backend in ("torch", "triton"):
        monkeypatch.setenv("MAGVIT_SAMPLING", backend)
        out[backend] = fused_sampling_step(
            logits, tokens, known, 0.8, 1.5, stream=stream, allowed=allowed
        )
    _assert_same_step(out["triton"], out["torch"], known)


def test_philox_matches_tl_rand_bit_for_bit():
    def draw(Seeds, Offsets, Out, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        tl.store(Out + i, tl.rand(tl.load(Seeds + i), tl.load(Offsets + i)))

    g = torch.Generator().manual_seed(4)
    seeds = torch.tensor([0, 1, -1, 2**40 + 7, -(2**62), 12345, 99, 2**31])
    seeds = seeds.repeat(8)  # [64]
    offsets = torch.randint(0, 2**62, (64,), generator=g)
    offsets[:4] = torch.tensor([0, 1, 2**32 - 1, 2**32])  # the low / high word boundary
    out = torch.empty(64)
    triton.jit(draw)[(1,)](seeds, offsets, out, BLOCK=64)
    assert torch.equal(out, philox_uniform(seeds, offsets))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_seeded_stream_same_on_both_backends(monkeypatch, dtype):
    logits, tokens, known, _ = _inputs(30, 64, dtype, seed=5)
    stream = PhiloxStream.for_requests([11, 2**33 + 5], num_tokens=15, step=3)
    monkeypatch.setenv("MAGVIT_SAMPLING", "triton")
    got = fused_sampling_step(logits, tokens, known, 0.9, 4.5, stream=stream)
    monkeypatch.setenv("MAGVIT_SAMPLING", "torch")
    want = fused_sampling_step(logits, tokens, known, 0.9, 4.5, stream=stream)
    _assert_same_step(got, want, known)


def test_stream_does_not_depend_on_batch_mates():
    logits, tokens, _, _ = _inputs(12, 40, torch.float32, seed=6)
    known = torch.zeros(12, dtype=torch.bool)
    alone = PhiloxStream.for_requests([7], num_tokens=4, step=1)
    together = PhiloxStream.for_requests([3, 7, 9], num_tokens=4, step=1)
    a = triton_sampling_step(
        logits[:4], tokens[:4], known[:4], 1.0, 1.0, seeds=alone.seeds, offsets=alone.offsets
    )
    b = triton_sampling_step(
        logits[[4, 5, 6, 7, 0, 1, 2, 3, 8, 9, 10, 11]],
        tokens,
        known,
        1.0,
        1.0,
        seeds=together.seeds,
        offsets=together.offsets,
    )
    assert torch.equal(a[0], b[0][4:8]) and torch.equal(a[2], b[2][4:8])
    other_step = PhiloxStream.for_requests([7], num_tokens=4, step=2)
    c = triton_sampling_step(
        logits[:4],
        tokens[:4],
        known[:4],
        1.0,
        1.0,
        seeds=other_step.seeds,
        offsets=other_step.offsets,
    )
    assert not torch.equal(a[2], c[2])


def test_seeded_samples_follow_the_tempered_softmax():
    # 600 rows of the same 6 logits, each with its own Philox offset: the sampled counts must
    # fit softmax(x / T), and score - log_prob must be choice_temperature * Gumbel(0, 1).
    n, temperature, choice = 600, 0.5, 2.0
    row = torch.tensor([0.4, 0.1, -0.2, 0.3, -0.4, 0.0])
    logits = row.expand(n, 6)
    tokens = torch.zeros(n, dtype=torch.long)
    known = torch.zeros(n, dtype=torch.bool)
    stream = PhiloxStream(torch.full((n,), 2024), torch.arange(n))
    ids, log_prob, score = triton_sampling_step(
        logits, tokens, known, temperature, choice, seeds=stream.seeds, offsets=stream.offsets
    )
    counts = torch.bincount(ids, minlength=6).double().numpy()
    expected = torch.softmax(row.double() / temperature, 0).numpy() * n
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    # The untempered softmax must be rejected, or the test above could not fail.
    untempered = torch.softmax(row.double(), 0).numpy() * n
    assert stats.chisquare(counts, untempered).pvalue < 1e-3
    torch.testing.assert_close(log_prob, torch.log_softmax(row, 0)[ids])
    gumbel = ((score - log_prob) / choice).numpy()
    assert stats.kstest(gumbel, "gumbel_r").pvalue > 1e-3
    assert stats.kstest(gumbel, "gumbel_l").pvalue < 1e-3


def test_dispatch(monkeypatch):
    logits, tokens, known, g = _inputs(8, 16, torch.float32, seed=7)
    noise, noise_c = gumbel_noise((8, 16), g, "cpu"), gumbel_noise((8,), g, "cpu")

    def forbidden(*args, **kwargs):
        raise AssertionError("the Triton kernel must not run for CPU tensors under auto")

    monkeypatch.setenv("MAGVIT_SAMPLING", "auto")
    monkeypatch.setattr("models.kernels.sampling_triton.triton_sampling_step", forbidden)
    want = sampling_step(logits, tokens, known, 1.0, 1.0, noise, noise_c)
    got = fused_sampling_step(logits, tokens, known, 1.0, 1.0, noise, noise_c)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    monkeypatch.undo()

    monkeypatch.setenv("MAGVIT_SAMPLING", "triton")
    got = fused_sampling_step(logits, tokens, known, 1.0, 1.0, noise, noise_c)
    _assert_same_step(got, want, known)
    # Noise drawn from a generator: the same generator state gives the same tokens.
    a = fused_sampling_step(
        logits, tokens, known, 1.0, 1.0, generator=torch.Generator().manual_seed(1)
    )
    monkeypatch.setenv("MAGVIT_SAMPLING", "torch")
    b = fused_sampling_step(
        logits, tokens, known, 1.0, 1.0, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(a[0], b[0])

    with pytest.raises(ValueError, match="not both"):
        fused_sampling_step(
            logits,
            tokens,
            known,
            1.0,
            1.0,
            noise,
            noise_c,
            stream=PhiloxStream.for_requests([0], 8, 0),
        )
    monkeypatch.setenv("MAGVIT_SAMPLING", "cuda")
    with pytest.raises(ValueError, match="MAGVIT_SAMPLING"):
        fused_sampling_step(logits, tokens, known, 1.0, 1.0, noise, noise_c)
    with pytest.raises(ValueError, match="vocabulary"):
        triton_sampling_step(
            torch.zeros(1, MAX_VOCAB + 1), tokens[:1], known[:1], 1.0, 1.0, noise[:1], noise_c[:1]
        )


def test_remask_lowest_picks_the_least_confident():
    score = torch.tensor([[0.5, -1.0, float("inf"), 2.0, -3.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    remask = remask_lowest(score, torch.tensor([2, 0]))
    assert remask.tolist() == [[False, True, False, False, True], [False] * 5]


class _TableModel(torch.nn.Module):
    """Logits that depend on the input ids, so every decoding step sees new logits."""

    def __init__(self, vocab: Vocabulary, length: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.tok = torch.nn.Parameter(torch.randn(vocab.size, vocab.size, generator=g))
        self.pos = torch.nn.Parameter(torch.randn(length, vocab.size, generator=g))

    def forward(self, ids, segments=None, key_padding_mask=None):
        return 3 * (self.tok[ids] + self.pos[None] + self.tok[ids].mean(1, keepdim=True))


def test_decoding_loop_same_tokens_on_both_backends(monkeypatch):
    vocab = Vocabulary(codebook_size=16, num_classes=3, num_tasks=10)
    n = 20
    model = _TableModel(vocab, n + 2)
    cond = torch.arange(n).remainder(16).expand(2, n).clone()
    cond_mask = torch.zeros(2, n, dtype=torch.bool)
    cond_mask[:, :5] = True
    args = (model, vocab, 0, [None, 1], cond, cond_mask, [4, 5], DecodeOptions(steps=6))
    # The loop's counter-based (Philox) noise, as on CUDA: the PyTorch reference draws the
    # kernel's numbers, so both backends decode the same tokens.
    monkeypatch.setattr("models.decoding.counter_based_noise", lambda device: True)
    monkeypatch.setenv("MAGVIT_SAMPLING", "torch")
    want = decode(*args)
    monkeypatch.setenv("MAGVIT_SAMPLING", "triton")
    assert torch.equal(decode(*args), want)
