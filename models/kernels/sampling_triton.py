"""The decoding step over logits as one Triton program per row (spec section 7).

Shapes: N positions (batch x tokens, flattened), V codebook size; a row of V logits fits in one
block (V <= MAX_VOCAB), so each logit is read once and no probability is written.

Per row: Gumbel-max sampling at a temperature, the sampled token's log-probability
(log-softmax of the untempered logits), and the choice score log_prob + choice_temperature * g.
Known rows read nothing and keep their id, log-probability 0 and score +inf, as in the reference
`models.kernels.sampling.sampling_step`. The noise comes either from the caller (tensors, so tests
compare token for token) or from Philox inside the program (`tl.rand`), keyed per row.

Layering: `_sampling_step_kernel` -> `triton_sampling_step` (the launcher); the dispatch and the
PyTorch reference live in `sampling.py`. TRITON_INTERPRET=1 must be set before triton is first
imported (see attention_triton.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

MAX_VOCAB = 16384
# Smallest uniform draw: keeps the Gumbel noise finite (at most -log(2^-32) ~ 22.2).
MIN_UNIFORM = tl.constexpr(2.0**-32)


@triton.jit
def _sampling_step_kernel(
    Logits,  # [N, V] fp32 / fp16 / bf16
    Tokens,  # [N] int64, current ids
    Known,  # [N] int8, 1 = keep the current id
    NoiseSample,  # [N, V] fp32 Gumbel noise (explicit noise only)
    NoiseChoice,  # [N] fp32 Gumbel noise (explicit noise only)
    Seeds,  # [N] int64 Philox keys (seeded only)
    Offsets,  # [N] int64 stream positions (seeded only)
    OutIds,  # [N] int64
    OutLogProb,  # [N] fp32
    OutScore,  # [N] fp32
    vocab_size,
    stride_logits,
    stride_noise,
    inv_temperature,
    choice_temperature,
    SEEDED: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_V)
    known = tl.load(Known + row) != 0
    live = cols < tl.where(known, 0, vocab_size)  # a known row reads no logits and no noise
    x = tl.load(Logits + row * stride_logits + cols, mask=live, other=float("-inf"))
    x = x.to(tl.float32)

    if SEEDED:
        seed = tl.load(Seeds + row)
        # One Philox call per row (sampling.PhiloxStream): word 0 of counter base + j is token
        # j's sampling noise, word 1 of counter base is the row's choice noise.
        base = tl.load(Offsets + row) * vocab_size
        w0, w1, _, _ = tl.randint4x(seed, base + cols.to(tl.int64))
        u = tl.maximum(tl.uint_to_uniform_float(w0), MIN_UNIFORM)  # [BLOCK_V], as tl.rand
        uc = tl.sum(tl.where(cols == 0, tl.uint_to_uniform_float(w1), 0.0), 0)
        uc = tl.maximum(uc, MIN_UNIFORM)
        # -log(-log1p(-u)) keeps the heavy right tail (see sampling.py). log1p is not in the
        # interpreter, so it is computed as log(w) * (-u) / (w - 1) with w = 1 - u (Goldberg),
        # which is accurate to a few ulps and exact where w rounds to 1.
        w = 1.0 - u
        exact = w == 1.0
        lp = tl.where(exact, -u, tl.log(w) * (-u) / tl.where(exact, 1.0, w - 1.0))
        g = -tl.log(-lp)
        wc = 1.0 - uc
        exact_c = wc == 1.0
        lpc = tl.where(exact_c, -uc, tl.log(wc) * (-uc) / tl.where(exact_c, 1.0, wc - 1.0))
        gc = -tl.log(-lpc)
    else:
        g = tl.load(NoiseSample + row * stride_noise + cols, mask=live, other=0.0)
        gc = tl.load(NoiseChoice + row)

    # Gumbel-max at temperature T samples from softmax(x / T); x * (1/T) in fp32, as the
    # reference computes it, so both pick the same token for the same noise.
    y = tl.where(live, x * inv_temperature + g, float("-inf"))
    sampled = tl.argmax(y, 0)  # ties -> lowest index, like torch.argmax

    m = tl.max(x, 0)
    m_safe = tl.where(m == float("-inf"), 0.0, m)  # known rows: all -inf, no NaN from -inf - -inf
    # The sum is >= 1 on a live row (its max contributes exp(0)); the floor only spares known
    # rows a log(0).
    lse = m_safe + tl.log(tl.maximum(tl.sum(tl.exp(x - m_safe), 0), 1.0))
    log_prob = tl.sum(tl.where(cols == sampled, x, 0.0), 0) - lse
    score = log_prob + choice_temperature * gc

    token = tl.load(Tokens + row)
    tl.store(OutIds + row, tl.where(known, token, sampled.to(tl.int64)))
    tl.store(OutLogProb + row, tl.where(known, 0.0, log_prob))
    tl.store(OutScore + row, tl.where(known, float("inf"), score))


def interpreting() -> bool:
    """Whether the kernel runs in the Triton interpreter (fixed when triton was imported)."""
    return isinstance(_sampling_step_kernel, InterpretedFunction)


def _num_warps(block_v: int) -> int:
    # About 8-16 logits per thread: enough to hide latency without spilling registers.
    return max(1, min(16, block_v // 256))


def triton_sampling_step(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    known: torch.Tensor,
    temperature: float,
    choice_temperature: float,
    gumbel_sample: torch.Tensor | None = None,
    gumbel_choice: torch.Tensor | None = None,
    seeds: torch.Tensor | None = None,
    offsets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused `sampling_step`: logits [N, V]; tokens [N]; known [N] bool.

    Noise: either both `gumbel_sample` [N, V] and `gumbel_choice` [N], or both `seeds` and
    `offsets` [N] int64 (Philox, see `sampling.PhiloxStream`). Returns (ids [N] int64,
    log_prob [N] fp32, score [N] fp32).
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V], got {tuple(logits.shape)}")
    n, v = logits.shape
    if not 1 <= v <= MAX_VOCAB:
        raise ValueError(f"vocabulary size must be in [1, {MAX_VOCAB}], got {v}")
    seeded = seeds is not None
    if seeded == (gumbel_sample is not None) or (gumbel_sample is None) != (gumbel_choice is None):
        raise ValueError("pass either gumbel_sample and gumbel_choice, or seeds and offsets")
    if seeded and offsets is None:
        raise ValueError("seeds need offsets")
    device = logits.device
    ids = torch.empty(n, dtype=torch.int64, device=device)
    log_prob = torch.empty(n, dtype=torch.float32, device=device)
    score = torch.empty(n, dtype=torch.float32, device=device)
    if n == 0:
        return ids, log_prob, score

    if logits.stride(1) != 1:
        logits = logits.contiguous()
    tokens = tokens.to(device, torch.int64).contiguous()
    known8 = known.to(device, torch.int8).contiguous()
    if seeded:
        seeds = seeds.to(device, torch.int64).contiguous()
        offsets = offsets.to(device, torch.int64).contiguous()
        noise, noise_c, stride_noise = logits, logits, 0  # placeholders, never read
    else:
        noise = gumbel_sample.to(device, torch.float32)
        if noise.stride(1) != 1:
            noise = noise.contiguous()
        noise_c = gumbel_choice.to(device, torch.float32).contiguous()
        seeds = offsets = tokens  # placeholders, never read
        stride_noise = noise.stride(0)

    block_v = triton.next_power_of_2(v)
    t = max(float(temperature), 1e-6)
    _sampling_step_kernel[(n,)](
        logits,
        tokens,
        known8,
        noise,
        noise_c,
        seeds,
        offsets,
        ids,
        log_prob,
        score,
        v,
        logits.stride(0),
        stride_noise,
        1.0 / t,
        float(choice_temperature),
        SEEDED=seeded,
        BLOCK_V=block_v,
        num_warps=_num_warps(block_v),
    )
    return ids, log_prob, score
