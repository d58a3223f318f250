"""One decoding step over logits: sample, score, and choose what to re-mask (spec section 7).

Shapes: N positions (batch x tokens, flattened), V codebook size, B batch.
`sampling_step` is the reference in PyTorch; `fused_sampling_step` is what the decoding loop calls:
the fused Triton kernel (`sampling_triton.py`, one pass per row, no probabilities written) on CUDA,
the reference elsewhere. `MAGVIT_SAMPLING=auto|triton|torch` overrides the choice; `triton` with
TRITON_INTERPRET=1 runs the kernel on CPU tensors.

Gumbel noise is -log(-log1p(-u)) rather than -log(-log(u)): the latter caps near 16.6 in fp32.
Noise comes from one of three places: tensors from the caller (`gumbel_sample`, `gumbel_choice`;
tests use them so that backends agree token for token, the decoding loop so that a request's
sample does not depend on its batch mates), a torch.Generator, or a `PhiloxStream` (counter-based
noise drawn inside the kernel, reproduced exactly by `philox_uniform` in PyTorch).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

SAMPLING_BACKENDS = ("auto", "triton", "torch")
# Kept in step with sampling_triton.MAX_VOCAB and MIN_UNIFORM (that module imports Triton).
_MAX_FUSED_VOCAB = 16384
_MIN_UNIFORM = 2.0**-32


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    # The lower clamp keeps u = 0 (probability 2^-24) from giving infinite noise.
    return -torch.log(-torch.log1p(-u.clamp(min=_MIN_UNIFORM, max=1 - 1e-7)))


# Philox-4x32-10 as Triton computes it (triton/language/random.py): key = the 64-bit seed,
# counter = (offset low 32 bits, offset high 32 bits, 0, 0); four 32-bit words out.
_PHILOX_ROUND_A = 0xD2511F53
_PHILOX_ROUND_B = 0xCD9E8D57
_PHILOX_KEY_A = 0x9E3779B9
_PHILOX_KEY_B = 0xBB67AE85
_MASK32 = 0xFFFFFFFF
_TL_RAND_SCALE = 4.6566127342e-10  # tl.rand's int -> [0, 1) scale, just under 2^-31


def _mul32(a: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of a * x (a a 32-bit constant, x int64 in [0, 2^32)), exactly:
    16-bit halves keep every product below 2^49, inside int64."""
    p_hi = a * (x >> 16)
    p_lo = a * (x & 0xFFFF)
    mid = p_hi + (p_lo >> 16)  # floor(a * x / 2^16)
    return mid >> 16, ((mid & 0xFFFF) << 16) | (p_lo & 0xFFFF)


def philox(seeds: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`tl.randint4x(seeds, offsets)` in PyTorch, bit for bit: four words, int64 in [0, 2^32).

    seeds, offsets: int64 tensors (broadcast). About 60 int64 ops an element: for tests and for
    CPU callers of a `PhiloxStream`, not for a GPU's hot path.
    """
    seeds, offsets = torch.broadcast_tensors(seeds.long(), offsets.long())
    k0, k1 = seeds & _MASK32, (seeds >> 32) & _MASK32
    c0, c1 = offsets & _MASK32, (offsets >> 32) & _MASK32
    c2 = c3 = torch.zeros_like(c0)
    for _ in range(10):
        hi_b, lo_b = _mul32(_PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mul32(_PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _PHILOX_KEY_A) & _MASK32, (k1 + _PHILOX_KEY_B) & _MASK32
    return c0, c1, c2, c3


def uniform_from_word(word: torch.Tensor) -> torch.Tensor:
    """`tl.uint_to_uniform_float`: a 32-bit word to fp32 in [0, 1). The word is read as int32
    and negatives are folded with ~x, so x lies in [0, 2^31)."""
    x = torch.where(word >= 2**31, _MASK32 - word, word)
    return x.to(torch.float32) * torch.tensor(_TL_RAND_SCALE, dtype=torch.float32)


def philox_uniform(seeds: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """`tl.rand(seeds, offsets)` in PyTorch, bit for bit."""
    return uniform_from_word(philox(seeds, offsets)[0])


@dataclass(frozen=True)
class PhiloxStream:
    """Counter-based noise: row n draws with key `seeds[n]` at counters offsets[n] * V + j;
    word 0 of counter j is token j's sampling noise, word 1 of the first counter the row's choice
    noise. Rows with distinct (seed, offset) pairs get independent noise, and nothing depends on
    which rows share a batch."""

    seeds: torch.Tensor  # [N] int64
    offsets: torch.Tensor  # [N] int64

    @classmethod
    def for_requests(
        cls, seeds: Sequence[int], num_tokens: int, step: int, device=None
    ) -> PhiloxStream:
        """Request b's token i at decoding step s: key seeds[b], offset s * num_tokens + i."""
        b = len(seeds)
        keys = torch.tensor(list(seeds), dtype=torch.int64, device=device)
        keys = keys[:, None].expand(b, num_tokens).reshape(b * num_tokens)  # [B*N]
        offsets = step * num_tokens + torch.arange(num_tokens, device=device)
        return cls(keys, offsets.repeat(b))

    def gumbel(self, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The stream's noise in PyTorch: (sampling noise [N, V], choice noise [N])."""
        base = self.offsets.long()[:, None] * vocab_size  # [N, 1]
        counters = base + torch.arange(vocab_size, device=base.device)  # [N, V]
        word0, word1, _, _ = philox(self.seeds.long()[:, None], counters)
        u = uniform_from_word(word0).clamp(min=_MIN_UNIFORM)  # [N, V]
        uc = uniform_from_word(word1[:, 0]).clamp(min=_MIN_UNIFORM)  # [N]
        return -torch.log(-torch.log1p(-u)), -torch.log(-torch.log1p(-uc))


def sampling_filter(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None
) -> torch.Tensor | None:
    """Which tokens top-k / top-p sampling may draw: bool [..., V], or None for all.

    top-k keeps the k largest logits; top-p the smallest set of most likely tokens whose
    probability under softmax(logits / T) reaches p (always at least the most likely one)."""
    v = logits.shape[-1]
    allowed = None
    if top_k is not None and top_k < v:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        allowed = logits >= kth
    if top_p is not None and top_p < 1:
        t = max(float(temperature), 1e-6)
        probs = torch.softmax(logits.float() * (1.0 / t), dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep a token while the mass of the tokens before it is still below p.
        keep_sorted = (sorted_probs.cumsum(-1) - sorted_probs) < top_p
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        allowed = keep if allowed is None else allowed & keep
    return allowed


def restrict_noise(gumbel_sample: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """Sampling noise with -inf where a token may not be drawn: Gumbel-max then samples from
    the truncated, renormalised distribution, while the logits (and so the confidence used for
    re-masking) stay those of the full distribution."""
    if allowed is None:
        return gumbel_sample
    return gumbel_sample.masked_fill(~allowed, float("-inf"))


def sampling_step(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    known: torch.Tensor,
    temperature: float,
    choice_temperature: float,
    gumbel_sample: torch.Tensor | None = None,
    gumbel_choice: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    allowed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample every unknown position and score it; known positions are left untouched.

    logits [N, V]; tokens [N] (current ids); known [N] bool; `allowed` [N, V] bool restricts
    what is drawn (top-k / top-p, `sampling_filter`) but not the log-prob: the confidence is
    always under the full softmax(logits).
    `choice_temperature` is already annealed by the caller (c * (1 - (s+1)/S)).
    Returns (ids [N], log_prob [N], score [N]): known positions keep their id, log_prob 0 and
    score +inf so that they are never re-masked.
    """
    n, v = logits.shape
    logits = logits.float()
    if gumbel_sample is None:
        gumbel_sample = gumbel_noise((n, v), generator, logits.device)
    if gumbel_choice is None:
        gumbel_choice = gumbel_noise((n,), generator, logits.device)
    gumbel_sample = restrict_noise(gumbel_sample, allowed)
    # Gumbel-max with temperature T samples from softmax(logits / T).
    t = max(float(temperature), 1e-6)
    # x * (1/T), not x / T: the fused kernel does the same fp32 multiply, token for token.
    sampled = torch.argmax(logits * (1.0 / t) + gumbel_sample, dim=-1)  # [N]
    log_probs = torch.log_softmax(logits, dim=-1)  # [N, V]
    log_prob = log_probs.gather(1, sampled[:, None]).squeeze(1)  # [N]
    ids = torch.where(known, tokens, sampled)
    score = log_prob + choice_temperature * gumbel_choice
    inf = torch.full_like(score, float("inf"))
    return (
        ids,
        torch.where(known, torch.zeros_like(log_prob), log_prob),
        torch.where(known, inf, score),
    )


def categorical_sampling_step(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    known: torch.Tensor,
    temperature: float,
    choice_temperature: float,
    uniform: torch.Tensor,
    gumbel_choice: torch.Tensor,
    allowed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`sampling_step` by inverse CDF: one uniform number a row (`uniform` [N] in [0, 1))
    instead of one Gumbel number a token. The same distribution, softmax(logits / T) restricted
    to `allowed` and renormalised, and the same confidence (log-prob under the full softmax
    plus choice noise), in under half the passes over [N, V]: the CPU's decoding loop uses it.
    """
    n, v = logits.shape
    logits = logits.float()
    t = max(float(temperature), 1e-6)
    scaled = logits if t == 1.0 else logits * (1.0 / t)
    if allowed is not None:
        scaled = scaled.masked_fill(~allowed, float("-inf"))
    top = scaled.amax(-1, keepdim=True)  # [N, 1]
    mass = (scaled - top).exp_()  # [N, V], unnormalised probabilities
    cdf = mass.cumsum_(-1)
    sampled = torch.searchsorted(cdf, (uniform.float() * cdf[:, -1])[:, None], right=True)
    sampled = sampled.squeeze(1).clamp_(max=v - 1)
    if allowed is not None:  # rounding at the very top of the cdf must not pick a banned token
        sampled = torch.where(
            allowed.gather(1, sampled[:, None]).squeeze(1), sampled, scaled.argmax(-1)
        )
    picked = logits.gather(1, sampled[:, None]).squeeze(1)
    if scaled is logits:  # T = 1, nothing filtered: the cdf's total is the softmax's sum
        log_prob = picked - (top.squeeze(1) + cdf[:, -1].log())
    else:
        log_prob = picked - torch.logsumexp(logits, dim=-1)
    ids = torch.where(known, tokens, sampled)
    score = log_prob + choice_temperature * gumbel_choice
    return (
        ids,
        torch.where(known, torch.zeros_like(log_prob), log_prob),
        torch.where(known, torch.full_like(score, float("inf")), score),
    )


def remask_lowest(score: torch.Tensor, num_to_mask: torch.Tensor) -> torch.Tensor:
    """True at the `num_to_mask[b]` lowest scores of each row. score [B, N]; returns [B, N] bool."""
    b, n = score.shape
    order = torch.argsort(score, dim=1)  # ascending: least confident first
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(n, device=score.device).expand(b, n))
    return ranks < num_to_mask[:, None]


def sampling_backend() -> str:
    backend = os.environ.get("MAGVIT_SAMPLING", "auto").lower()
    if backend not in SAMPLING_BACKENDS:
        raise ValueError(f"MAGVIT_SAMPLING must be one of {SAMPLING_BACKENDS}, not {backend!r}")
    return backend


def _use_triton(logits: torch.Tensor) -> bool:
    backend = sampling_backend()
    if backend == "torch":
        return False
    if backend == "triton":
        return True
    fits = logits.dim() == 2 and logits.shape[1] <= _MAX_FUSED_VOCAB
    return logits.is_cuda and fits and importlib.util.find_spec("triton") is not None


def fused_sampling_step(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    known: torch.Tensor,
    temperature: float,
    choice_temperature: float,
    gumbel_sample: torch.Tensor | None = None,
    gumbel_choice: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    stream: PhiloxStream | None = None,
    allowed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`sampling_step` on the backend `MAGVIT_SAMPLING` picks (the fused kernel on CUDA).

    Same arguments and results as `sampling_step`, plus `stream`: noise from a `PhiloxStream`
    instead of tensors or `generator`; both backends then draw the same numbers. Missing noise
    tensors are drawn from `generator`, as the reference does. `allowed` (top-k / top-p) is
    folded into the sampling noise as -inf, so the kernel itself needs no filter.
    """
    if stream is not None and (gumbel_sample is not None or gumbel_choice is not None):
        raise ValueError("pass noise tensors or a stream, not both")
    n, v = logits.shape
    if not _use_triton(logits):
        if stream is not None:
            gumbel_sample, gumbel_choice = stream.gumbel(v)
        return sampling_step(
            logits,
            tokens,
            known,
            temperature,
            choice_temperature,
            gumbel_sample,
            gumbel_choice,
            generator,
            allowed,
        )

    from models.kernels.sampling_triton import interpreting, triton_sampling_step

    if not logits.is_cuda and not interpreting():
        raise RuntimeError("MAGVIT_SAMPLING=triton on CPU tensors needs TRITON_INTERPRET=1")
    if stream is not None and allowed is None:
        return triton_sampling_step(
            logits,
            tokens,
            known,
            temperature,
            choice_temperature,
            seeds=stream.seeds,
            offsets=stream.offsets,
        )
    if stream is not None:  # the same numbers, drawn in PyTorch so that they can be filtered
        gumbel_sample, gumbel_choice = stream.gumbel(v)
    if gumbel_sample is None:
        gumbel_sample = gumbel_noise((n, v), generator, logits.device)
    if gumbel_choice is None:
        gumbel_choice = gumbel_noise((n,), generator, logits.device)
    gumbel_sample = restrict_noise(gumbel_sample, allowed)
    return triton_sampling_step(
        logits, tokens, known, temperature, choice_temperature, gumbel_sample, gumbel_choice
    )
