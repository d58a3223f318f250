"""The fused Triton attention against PyTorch, run on CPU through the Triton interpreter.

Accuracy is judged as flash-attention's tests judge it: in each dtype the kernel may be at most
twice as far from a float64 reference as PyTorch's SDPA in that same dtype, plus a small epsilon;
errors are absolute values, never signed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from models.config import get_config  # noqa: E402
from models.kernels import attention  # noqa: E402
from models.kernels.attention import masked_attention, sdpa_attention  # noqa: E402
from models.kernels.attention_triton import triton_masked_attention  # noqa: E402
from models.transformer import BidirectionalTransformer  # noqa: E402

pytestmark = pytest.mark.usefixtures("interpreter")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
EPS = 1e-6


def _qkv(b: int, h: int, l: int, d: int, dtype: torch.dtype) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(b * 1000 + l * 10 + d)
    return [torch.randn(b, h, l, d, generator=g).to(dtype) for _ in range(3)]


def _reference64(q, k, v, mask) -> torch.Tensor:
    """Attention in float64 with the same zeros-for-empty-rows rule."""
    return sdpa_attention(q.double(), k.double(), v.double(), mask)


def _prefix_mask(lengths: list[int], l: int) -> torch.Tensor:
    return torch.arange(l)[None, :] < torch.tensor(lengths)[:, None]  # [B, L]


def _check(q, k, v, mask, **blocks) -> torch.Tensor:
    out = triton_masked_attention(q, k, v, mask, **blocks)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert torch.isfinite(out).all()
    ref = _reference64(q, k, v, mask)
    err = (out.double() - ref).abs().max().item()
    err_torch = (sdpa_attention(q, k, v, mask).double() - ref).abs().max().item()
    assert err <= 2 * err_torch + EPS, (err, err_torch)
    return out


CASES = {
    # (B, H, L, D), mask
    "length-1": ((1, 2, 1, 32), None),
    "odd-L-D48-prefix": ((3, 2, 37, 48), [37, 1, 20]),
    "D64-no-mask-partial-block": ((1, 2, 45, 64), None),
    "D96-prefix": ((2, 1, 33, 96), [5, 33]),
    "D128-prefix": ((2, 1, 24, 128), [24, 17]),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference_within_torch_error(case, dtype):
    (b, h, l, d), lengths = CASES[case]
    q, k, v = _qkv(b, h, l, d, dtype)
    mask = None if lengths is None else _prefix_mask(lengths, l)
    # 16-wide tiles so that every case crosses block edges in both directions.
    _check(q, k, v, mask, block_m=16, block_n=16)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_general_mask_with_empty_row_and_empty_leading_block(dtype):
    b, h, l, d = 3, 2, 40, 32
    q, k, v = _qkv(b, h, l, d, dtype)
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(b, l, generator=g) < 0.5
    mask[0, :20] = False  # the first 16-key block has nothing to attend: no NaN may leak
    mask[0, 25] = True
    mask[1] = False  # a request with no valid key at all
    out = _check(q, k, v, mask, block_m=16, block_n=16)
    assert torch.equal(out[1], torch.zeros_like(out[1]))


def test_padding_values_do_not_leak():
    # Whatever sits in padded keys (here huge values) must not change the valid output.
    q, k, v = _qkv(2, 1, 30, 32, torch.float32)
    mask = _prefix_mask([30, 9], 30)
    out = triton_masked_attention(q, k, v, mask, block_m=16, block_n=16)
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 9:] = 1e4
    v2[1, :, 9:] = -1e4
    out2 = triton_masked_attention(q, k2, v2, mask, block_m=16, block_n=16)
    assert torch.equal(out, out2)


def test_strided_heads_and_output_layout():
    # The transformer passes [B, L, H, D] memory viewed as [B, H, L, D].
    b, l, h, d = 2, 19, 3, 32
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(b, l, h, d, generator=g).transpose(1, 2) for _ in range(3))
    out = _check(q, k, v, _prefix_mask([19, 7], l))
    assert out.transpose(1, 2).is_contiguous()  # merging heads afterwards is a free reshape


def test_default_tiles_and_dispatch(monkeypatch):
    q, k, v = _qkv(2, 2, 50, 64, torch.float16)
    mask = _prefix_mask([50, 3], 50)
    monkeypatch.setenv("MAGVIT_ATTENTION", "triton")
    out = masked_attention(q, k, v, mask)
    assert torch.equal(out, triton_masked_attention(q, k, v, mask))
    _check(q, k, v, mask)


def test_auto_uses_sdpa_on_cpu(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the Triton kernel must not run for CPU tensors under auto")

    monkeypatch.setattr("models.kernels.attention_triton.triton_masked_attention", forbidden)
    monkeypatch.setenv("MAGVIT_ATTENTION", "auto")
    q, k, v = _qkv(1, 1, 5, 32, torch.float32)
    assert torch.equal(masked_attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_backend_errors(monkeypatch):
    q, k, v = _qkv(1, 1, 5, 32, torch.float32)
    monkeypatch.setenv("MAGVIT_ATTENTION", "flash")
    with pytest.raises(ValueError, match="MAGVIT_ATTENTION"):
        masked_attention(q, k, v)
    monkeypatch.setenv("MAGVIT_ATTENTION", "triton")
    monkeypatch.setattr("models.kernels.attention_triton.interpreting", lambda: False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        masked_attention(q, k, v)
    with pytest.raises(ValueError, match="key_padding_mask"):
        triton_masked_attention(q, k, v, torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="dtype"):
        triton_masked_attention(q, k.double(), v)


def test_sdpa_reference_gives_zeros_for_empty_rows():
    q, k, v = _qkv(2, 1, 6, 32, torch.float32)
    mask = _prefix_mask([6, 0], 6)
    out = sdpa_attention(q, k, v, mask)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    torch.testing.assert_close(out[:1], F.scaled_dot_product_attention(q[:1], k[:1], v[:1]))


def test_transformer_forward_same_on_both_backends(monkeypatch):
    cfg = get_config("tiny")
    torch.manual_seed(0)
    model = BidirectionalTransformer(cfg.transformer, cfg.vocab.size, cfg.sequence_length).eval()
    ids = torch.randint(0, cfg.vocab.codebook_size, (2, cfg.sequence_length))
    mask = _prefix_mask([cfg.sequence_length, 30], cfg.sequence_length)
    with torch.no_grad():
        monkeypatch.setenv("MAGVIT_ATTENTION", "sdpa")
        want = model(ids, key_padding_mask=mask)
        monkeypatch.setenv("MAGVIT_ATTENTION", "triton")
        got = model(ids, key_padding_mask=mask)
    assert attention.attention_backend() == "triton"
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
