"""Fused bidirectional attention forward in Triton: flash-attention tiling with a key-padding mask.

Shapes: B batch, H heads, L sequence length, D head dim; a program owns BLOCK_M query rows of one
(batch, head) and walks the keys BLOCK_N at a time with an online softmax, so the [L, L] score
matrix never reaches memory.

Layering: `_attn_fwd_kernel` (the Triton program) -> `_launch` (grid, strides, block sizes) ->
`triton_masked_attention` (checks and layout); `models.kernels.attention.masked_attention` switches
between it and the PyTorch reference.

Masks. The key loop of batch element b stops at `kv_end[b]` = 1 + the last position its mask
keeps, so a prefix mask (requests of different lengths padded to one L) costs each row only its
valid length. Keys inside that range are masked element by element, so any mask is handled
correctly. A row with no valid key returns zeros, as PyTorch's SDPA does since 2.5.

TRITON_INTERPRET=1 (the interpreter, CPU tensors) must be set before triton is first imported:
`triton.jit` reads it when it wraps a function, triton's own library (tl.max, tl.sum) included.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256
_LOG2E = 1.4426950408889634


@triton.jit
def _attn_fwd_kernel(
    Q,
    K,
    V,
    Out,
    Mask,  # [B, L] int8, 1 = attend; unused without HAS_MASK
    KvEnd,  # [B] int32, 1 + last attended position; unused without HAS_MASK
    qk_scale,  # log2(e) / sqrt(D): the softmax runs on exp2
    stride_qb,
    stride_qh,
    stride_ql,
    stride_kb,
    stride_kh,
    stride_kl,
    stride_vb,
    stride_vh,
    stride_vl,
    stride_ob,
    stride_oh,
    stride_ol,
    stride_mb,
    num_heads,
    seq_len,
    head_dim,
    HAS_MASK: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    # The interpreter's bf16 tl.dot is wrong (Triton issue 11584): it computes in fp32 instead.
    DOT_FP32: tl.constexpr,
    # "ieee" for fp32 inputs: TF32 would be ~1e-3 off, far more than PyTorch's fp32 SDPA.
    INPUT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // num_heads
    h = pid_bh % num_heads

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    d_ok = dims < head_dim  # D is padded to a power of two inside the program
    row_ok = rows < seq_len

    q_ptrs = Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_ql + dims[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh

    if HAS_MASK:  # noqa: SIM108 (a static branch on a constexpr, as Triton compiles it)
        kv_end = tl.load(KvEnd + b)
    else:
        kv_end = seq_len

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running row max (log2 units)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running softmax denominator
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start in range(0, kv_end, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        valid = cols < kv_end
        if HAS_MASK:
            keep = tl.load(Mask + b * stride_mb + cols, mask=valid, other=0)
            valid = valid & (keep != 0)
        kv_mask = valid[:, None] & d_ok[None, :]
        k = tl.load(k_base + cols[:, None] * stride_kl + dims[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + cols[:, None] * stride_vl + dims[None, :], mask=kv_mask, other=0.0)
        if DOT_FP32:
            k = k.to(tl.float32)
            v = v.to(tl.float32)

        s = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION) * qk_scale  # [M, N]
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A block whose keys are all masked leaves m_new at -inf; shifting by 0 instead keeps
        # exp2(-inf - -inf) = NaN out of p and alpha (both become 0).
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=INPUT_PRECISION)
        m_i = m_new

    # Rows with no valid key have l_i = 0 and acc = 0: the output is 0, not 0 / 0.
    out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    o_ptrs = Out + b * stride_ob + h * stride_oh + rows[:, None] * stride_ol + dims[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


def interpreting() -> bool:
    """Whether the kernel runs in the Triton interpreter (fixed when triton was imported)."""
    return isinstance(_attn_fwd_kernel, InterpretedFunction)


# Tried on the GPU by the autotuner, per (L, D, dtype); the interpreter uses one fixed tile.
_GPU_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
    for bm, bn, w, s in [(128, 64, 4, 3), (128, 128, 8, 3), (64, 64, 4, 3), (128, 32, 4, 4)]
]
_attn_fwd_tuned = triton.autotune(configs=_GPU_CONFIGS, key=["seq_len", "head_dim"])(
    _attn_fwd_kernel
)


def _launch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    mask: torch.Tensor | None,
    kv_end: torch.Tensor | None,
    block_m: int | None,
    block_n: int | None,
) -> None:
    b, h, l, d = q.shape
    interpret = interpreting()
    block_d = max(16, triton.next_power_of_2(d))  # tl.dot needs every dim >= 16
    explicit = block_m is not None or block_n is not None
    tuned = not interpret and not explicit
    args = (
        q,
        k,
        v,
        out,
        mask if mask is not None else q,  # a placeholder pointer, never read
        kv_end if kv_end is not None else q,
        _LOG2E / math.sqrt(d),
        q.stride(0),
        q.stride(1),
        q.stride(2),
        k.stride(0),
        k.stride(1),
        k.stride(2),
        v.stride(0),
        v.stride(1),
        v.stride(2),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        mask.stride(0) if mask is not None else 0,
        h,
        l,
        d,
    )
    meta = {
        "HAS_MASK": mask is not None,
        "BLOCK_D": block_d,
        "DOT_FP32": interpret and q.dtype == torch.bfloat16,
        "INPUT_PRECISION": "ieee" if q.dtype == torch.float32 else "tf32",
    }
    if tuned:
        _attn_fwd_tuned[lambda cfg: (triton.cdiv(l, cfg["BLOCK_M"]), b * h)](*args, **meta)
        return
    # Interpreter: programs run one after another in Python, so few large tiles are fastest.
    bm = block_m or (32 if interpret else 64)
    bn = block_n or (32 if interpret else 64)
    _attn_fwd_kernel[(triton.cdiv(l, bm), b * h)](*args, **meta, BLOCK_M=bm, BLOCK_N=bn)


def triton_masked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v over the keys the mask keeps, in one fused kernel.

    q, k, v [B, H, L, D] (fp16, bf16 or fp32, last dim contiguous or not); key_padding_mask
    [B, L] bool, True = attend. Returns [B, H, L, D] in q's dtype, laid out as [B, L, H, D] in
    memory so that merging the heads afterwards is a free reshape. `block_m` / `block_n` pin the
    tile sizes (tests use small tiles to cross block edges); by default the GPU autotunes them.
    """
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(
            f"q, k, v must share one [B, H, L, D] shape, got {q.shape}, {k.shape}, {v.shape}"
        )
    if q.dtype not in SUPPORTED_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must share a dtype among {SUPPORTED_DTYPES}")
    b, h, l, d = q.shape
    if not 1 <= d <= MAX_HEAD_DIM:
        raise ValueError(f"head dim must be in [1, {MAX_HEAD_DIM}], got {d}")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out = torch.empty(b, l, h, d, dtype=q.dtype, device=q.device).transpose(1, 2)  # [B,H,L,D]
    if b * h * l == 0:
        return out

    mask = kv_end = None
    if key_padding_mask is not None:
        if key_padding_mask.shape != (b, l) or key_padding_mask.dtype != torch.bool:
            got = f"{key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
            raise ValueError(f"key_padding_mask must be bool [{b}, {l}], got {got}")
        mask = key_padding_mask.to(q.device, torch.int8).contiguous()
        positions = torch.arange(1, l + 1, device=q.device, dtype=torch.int32)
        # 1 + the last kept position of each row (0 for a row that keeps nothing): no host sync.
        kv_end = torch.where(key_padding_mask.to(q.device), positions, 0).amax(1).to(torch.int32)
    if interpreting() and q.dtype == torch.bfloat16:
        # The interpreter truncates fp32 -> bf16 casts (even with rtne); torch rounds correctly.
        out32 = torch.empty(b, l, h, d, dtype=torch.float32, device=q.device).transpose(1, 2)
        _launch(q, k, v, out32, mask, kv_end, block_m, block_n)
        return out.copy_(out32)
    _launch(q, k, v, out, mask, kv_end, block_m, block_n)
    return out
