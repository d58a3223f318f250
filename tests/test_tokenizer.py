"""The 3D-VQ tokenizer: shapes, padding, quantizer, inflation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from models.config import CONFIGS, TokenizerConfig
from models.inflation import inflate_2d_to_3d
from models.quantizer import VectorQuantizer
from models.tokenizer import Conv, Downsample, Upsample, VQTokenizer

TINY = CONFIGS["tiny"].tokenizer


@pytest.mark.parametrize("name", ["tiny", "default", "magvit-b"])
def test_token_grid_of_presets(name):
    cfg = CONFIGS[name]
    with torch.device("meta"):
        tok = VQTokenizer(cfg.tokenizer)
        video = torch.empty(1, 3, *cfg.video_shape)
        feats = tok.encode_features(video)
        out = tok.decode_features(feats)
    assert tuple(feats.shape) == (1, cfg.tokenizer.embedding_dim, *cfg.token_shape)
    assert tuple(out.shape) == (1, 3, *cfg.video_shape)


def test_magvit_b_resampling_order():
    cfg = CONFIGS["magvit-b"].tokenizer
    tok = VQTokenizer(cfg)
    # Encoder: 3D pooling in the shallow levels, 2D in the deep one.
    assert [d.factor for d in tok.encoder.downsamples] == [(2, 2, 2), (2, 2, 2), (1, 2, 2)]
    # Decoder: 2D upsampling first (deep end), then 3D.
    assert [u.factor for u in tok.decoder.upsamples] == [(1, 2, 2), (2, 2, 2), (2, 2, 2)]


def test_encode_decode_shapes_and_id_range():
    tok = VQTokenizer(TINY).eval()
    video = torch.rand(2, 3, 8, 16, 16)
    ids = tok.encode(video)
    assert ids.shape == (2, 4, 4, 4) and ids.dtype == torch.long
    assert ids.min() >= 0 and ids.max() < TINY.codebook_size
    assert tok.decode(ids).shape == video.shape


def test_reflect_padding_pads_with_mirrored_values():
    cfg = dataclasses.replace(TINY, padding="reflect")
    conv = Conv(cfg, 1, 1, 3, bias=False)
    with torch.no_grad():
        conv.conv.weight.zero_()
        conv.conv.weight[0, 0, 1, 1, 0] = 1.0  # picks the left neighbour along W
    x = torch.arange(4.0).view(1, 1, 1, 1, 4).expand(1, 1, 3, 3, 4).contiguous()
    y = conv(x)
    assert y[0, 0, 1, 1].tolist() == [1.0, 0.0, 1.0, 2.0]  # reflect: index -1 -> 1
    zeros = Conv(dataclasses.replace(TINY, padding="zeros"), 1, 1, 3, bias=False)
    zeros.conv.weight.data.copy_(conv.conv.weight.data)
    assert zeros(x)[0, 0, 1, 1].tolist() == [0.0, 0.0, 1.0, 2.0]
    with pytest.raises(ValueError):
        Conv(dataclasses.replace(TINY, padding="circular"), 1, 1, 3, bias=False)


def test_quantizer_round_trip_and_straight_through():
    tok = VQTokenizer(TINY)
    q = tok.quantizer
    ids = torch.randint(0, TINY.codebook_size, (2, 4, 4, 4))
    codes = q.lookup(ids)  # [B, D, t, h, w]
    assert codes.shape == (2, TINY.embedding_dim, 4, 4, 4)
    assert torch.equal(q.nearest(codes), ids)
    z = (codes.detach() + 1e-3 * torch.randn_like(codes)).requires_grad_()
    quantized, got, losses = q(z)
    assert torch.equal(got, ids)
    assert torch.allclose(quantized, codes, atol=1e-6)
    assert set(losses) == {"commitment", "codebook", "entropy", "quantizer"}
    quantized.sum().backward()
    assert torch.allclose(z.grad, torch.ones_like(z))  # identity gradient through the quantizer
    assert losses["commitment"].item() == pytest.approx(0.25 * losses["codebook"].item(), 1e-4)


def test_forward_losses_backpropagate_to_encoder_and_codebook():
    tok = VQTokenizer(TINY)
    out = tok(torch.rand(1, 3, 8, 16, 16))
    (
        F.mse_loss(out.reconstruction, torch.rand_like(out.reconstruction))
        + out.losses["quantizer"]
    ).backward()
    assert tok.encoder.conv_in.conv.weight.grad.abs().sum() > 0
    assert tok.quantizer.codebook.grad.abs().sum() > 0


def _per_frame(conv2d, video):
    b, c, t, h, w = video.shape
    frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    return conv2d(frames).view(b, t, -1, h, w).permute(0, 2, 1, 3, 4)


@pytest.mark.parametrize("padding", ["reflect", "zeros"])
def test_central_inflation_equals_per_frame_conv_on_static_video(padding):
    cfg2d = TokenizerConfig(
        filters=8,
        channel_multipliers=(1, 2),
        num_res_blocks=1,
        temporal_downsample=(True,),
        embedding_dim=4,
        codebook_size=16,
        num_groups=4,
        padding=padding,
        conv_dim=2,
    )
    cfg3d = dataclasses.replace(cfg2d, conv_dim=3)
    tok2d, tok3d = VQTokenizer(cfg2d), VQTokenizer(cfg3d)
    tok3d.load_state_dict(inflate_2d_to_3d(tok2d.state_dict(), cfg3d, "central"))
    frame = torch.rand(1, 3, 1, 8, 8)
    video = frame.expand(1, 3, 6, 8, 8).contiguous()  # static
    got = tok3d.encoder.conv_in(video)
    want = _per_frame(tok2d.encoder.conv_in, video)
    inner = slice(None) if padding == "reflect" else slice(1, -1)  # zero padding breaks borders
    torch.testing.assert_close(got[:, :, inner], want[:, :, inner], atol=1e-5, rtol=1e-5)
    avg = inflate_2d_to_3d(tok2d.state_dict(), cfg3d, "average")
    w = avg["encoder.conv_in.conv.weight"]
    torch.testing.assert_close(w.sum(2), tok2d.state_dict()["encoder.conv_in.conv.weight"])
    with pytest.raises(ValueError):
        inflate_2d_to_3d(tok2d.state_dict(), cfg3d, "sideways")


def test_codebook_init_scale_is_the_official_fan_in_over_entries():
    # Flax variance_scaling(1, fan_in, uniform) on [K, D]: bound sqrt(3 / K), not sqrt(3 / D).
    cfg = dataclasses.replace(TINY, codebook_size=1024, embedding_dim=8)
    torch.manual_seed(0)
    codebook = VectorQuantizer(cfg).codebook.detach()
    bound = (3.0 / 1024) ** 0.5
    assert codebook.abs().max() <= bound
    assert codebook.abs().max() > 0.95 * bound


@pytest.mark.parametrize(
    ("conv_dim", "temporal", "shape"),
    [(3, True, (2, 6, 5, 9, 7)), (3, False, (2, 6, 5, 9, 7)), (2, False, (2, 6, 9, 7))],
)
def test_downsampling_is_average_pooling_in_any_layout_and_precision(conv_dim, temporal, shape):
    # Odd sizes: the remainder is dropped, as avg_pool does with kernel = stride.
    cfg = dataclasses.replace(TINY, conv_dim=conv_dim)
    down = Downsample(cfg, temporal)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    pool = F.avg_pool3d if conv_dim == 3 else F.avg_pool2d
    want = pool(x, down.factor)
    torch.testing.assert_close(down(x), want, rtol=1e-6, atol=1e-6)
    if conv_dim == 3:
        x_cl = x.bfloat16().contiguous(memory_format=torch.channels_last_3d)
        torch.testing.assert_close(down(x_cl).float(), want, rtol=0, atol=1e-2)


@pytest.mark.parametrize(
    ("conv_dim", "temporal", "shape"),
    [(3, True, (2, 4, 3, 5, 4)), (3, False, (2, 4, 3, 5, 4)), (2, False, (2, 4, 5, 4))],
)
def test_upsampling_repeats_every_element_and_keeps_the_layout(conv_dim, temporal, shape):
    cfg = dataclasses.replace(TINY, conv_dim=conv_dim)
    up = Upsample(cfg, shape[1], temporal)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    want = x
    for dim, f in enumerate(up.factor, start=2):
        want = want.repeat_interleave(f, dim=dim)
    torch.testing.assert_close(up(x), up.conv(want), rtol=0, atol=0)
    if conv_dim == 3:
        x_cl = x.contiguous(memory_format=torch.channels_last_3d)
        up_cl = up.to(memory_format=torch.channels_last_3d)
        out = up_cl(x_cl)
        assert out.is_contiguous(memory_format=torch.channels_last_3d)
        torch.testing.assert_close(out, up.conv(want), rtol=1e-5, atol=1e-5)
