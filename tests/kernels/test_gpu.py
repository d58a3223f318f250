"""The compiled kernels on a CUDA GPU (opt in: TRITON_INTERPRET=0 pytest -m gpu tests/kernels).

The same checks as the interpreter tests, at sizes where tiles, autotuning and warps matter.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from models.kernels.attention import sdpa_attention  # noqa: E402
from models.kernels.attention_triton import triton_masked_attention  # noqa: E402
from models.kernels.sampling import (  # noqa: E402
    PhiloxStream,
    gumbel_noise,
    sampling_step,
)
from models.kernels.sampling_triton import triton_sampling_step  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("compiled")]

EPS = 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("l", "d"), [(1, 64), (1026, 64), (777, 96), (2048, 128)])
def test_attention_within_torch_error(dtype, l, d):
    g = torch.Generator("cuda").manual_seed(l + d)
    b, h = 4, 4
    q, k, v = (torch.randn(b, h, l, d, device="cuda", generator=g).to(dtype) for _ in range(3))
    lengths = torch.tensor([l, 1, max(1, l // 3), 0], device="cuda")
    mask = torch.arange(l, device="cuda")[None, :] < lengths[:, None]  # [B, L]
    for m in (None, mask):
        ref = sdpa_attention(q.double(), k.double(), v.double(), m)
        err = (triton_masked_attention(q, k, v, m).double() - ref).abs().max().item()
        err_torch = (sdpa_attention(q, k, v, m).double() - ref).abs().max().item()
        assert err <= 2 * err_torch + EPS, (dtype, l, d, m is None, err, err_torch)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_sampling_token_for_token(dtype):
    n, v = 4096, 1024
    g = torch.Generator("cuda").manual_seed(0)
    logits = (3 * torch.randn(n, v, device="cuda", generator=g)).to(dtype)
    tokens = torch.randint(0, v, (n,), device="cuda", generator=g)
    known = torch.rand(n, device="cuda", generator=g) < 0.3
    noise, noise_c = gumbel_noise((n, v), g, "cuda"), gumbel_noise((n,), g, "cuda")
    got = triton_sampling_step(logits, tokens, known, 0.8, 3.0, noise, noise_c)
    want = sampling_step(logits, tokens, known, 0.8, 3.0, noise, noise_c)
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=2e-5)
    torch.testing.assert_close(got[2], want[2], rtol=0, atol=2e-5)

    # Philox noise on the GPU: the PyTorch reference draws the same numbers.
    stream = PhiloxStream.for_requests([1, 2, 3, 4], num_tokens=n // 4, step=5, device="cuda")
    got = triton_sampling_step(
        logits, tokens, known, 0.8, 3.0, seeds=stream.seeds, offsets=stream.offsets
    )
    want = sampling_step(logits, tokens, known, 0.8, 3.0, *stream.gumbel(v))
    # tl.log on the GPU may differ from torch.log by an ulp: allow rare near-ties.
    assert (got[0] != want[0]).float().mean().item() < 1e-3
