"""Parameters of the official (Flax) MAGVIT modules <-> this project's state dicts.

A Flax parameter tree is handled flat: module paths joined by "/" -> arrays, as in
`../shared/reference/`. Layouts differ: Flax is channels-last (conv kernels [kt, kh, kw, in, out]
or [kh, kw, in, out], dense kernels [in, out], attention q/k/v [D, H, Dh] and out [H, Dh, D]);
PyTorch convs are [out, in, kt, kh, kw] and linears [out, in]. The BERT output head is tied to
the word embeddings in both, so it has no kernel of its own.

Each converter builds one table of (flax name, torch name, layout) from the module structure
itself, so the same table converts in both directions and a tree whose names or shapes differ is
refused with the offending keys named.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.config import TokenizerConfig, TransformerConfig
from models.tokenizer import ResBlock, VQTokenizer
from models.transformer import BidirectionalTransformer


class TreeMismatch(ValueError):
    """A Flax tree whose names or shapes do not fit the module."""


@dataclass(frozen=True)
class _Entry:
    flax: str
    torch: str
    layout: str  # "conv", "dense", "qkv", "attn_out", "plain"


def _to_torch(array: np.ndarray, layout: str, shape: torch.Size) -> torch.Tensor:
    t = torch.from_numpy(np.array(array, dtype=np.float32))  # a writable copy
    if layout == "conv":  # [*k, in, out] -> [out, in, *k]
        t = t.permute(t.ndim - 1, t.ndim - 2, *range(t.ndim - 2))
    elif layout == "dense":
        t = t.t()
    elif layout == "qkv":  # [D, H, Dh] -> [H*Dh, D]
        t = t.reshape(t.shape[0], -1).t() if t.ndim == 3 else t.reshape(-1)
    elif layout == "attn_out":  # [H, Dh, D] -> [D, H*Dh]
        t = t.reshape(-1, t.shape[-1]).t()
    if tuple(t.shape) != tuple(shape):
        raise TreeMismatch(f"shape {tuple(array.shape)} does not fit {tuple(shape)}")
    return t.contiguous()


def _to_flax(t: torch.Tensor, layout: str, flax_shape: tuple[int, ...]) -> np.ndarray:
    t = t.detach().cpu().float()
    if layout == "conv":  # [out, in, *k] -> [*k, in, out]
        t = t.permute(*range(2, t.ndim), 1, 0)
    elif layout in ("dense", "attn_out") or (layout == "qkv" and t.ndim == 2):
        t = t.t()
    return np.ascontiguousarray(t.numpy()).reshape(flax_shape)


def _flax_shape(t: torch.Tensor, layout: str, num_heads: int) -> tuple[int, ...]:
    if layout == "conv":
        return (*t.shape[2:], t.shape[1], t.shape[0])
    if layout == "dense":
        return (t.shape[1], t.shape[0])
    if layout == "qkv":
        if t.ndim == 1:
            return (num_heads, t.shape[0] // num_heads)
        return (t.shape[1], num_heads, t.shape[0] // num_heads)
    if layout == "attn_out":
        return (num_heads, t.shape[1] // num_heads, t.shape[0])
    return tuple(t.shape)


# ---------------------------------------------------------------------------------- tokenizer
def _conv(entries, flax: str, torch_name: str, module) -> None:
    entries.append(_Entry(f"{flax}/kernel", f"{torch_name}.conv.weight", "conv"))
    if module.conv.bias is not None:
        entries.append(_Entry(f"{flax}/bias", f"{torch_name}.conv.bias", "plain"))


def _norm(entries, flax: str, torch_name: str) -> None:
    entries.append(_Entry(f"{flax}/scale", f"{torch_name}.weight", "plain"))
    entries.append(_Entry(f"{flax}/bias", f"{torch_name}.bias", "plain"))


def _resblock(entries, flax: str, torch_name: str, block: ResBlock) -> None:
    _norm(entries, f"{flax}/GroupNorm_0", f"{torch_name}.norm1")
    _conv(entries, f"{flax}/Conv_0", f"{torch_name}.conv1", block.conv1)
    _norm(entries, f"{flax}/GroupNorm_1", f"{torch_name}.norm2")
    _conv(entries, f"{flax}/Conv_1", f"{torch_name}.conv2", block.conv2)
    if block.shortcut is not None:
        _conv(entries, f"{flax}/Conv_2", f"{torch_name}.shortcut", block.shortcut)


def _tokenizer_table(model: VQTokenizer) -> list[_Entry]:
    """Flax numbers sibling modules of a kind in creation order (ResBlock_0, Conv_1, ...)."""
    e: list[_Entry] = []
    enc, dec = model.encoder, model.decoder
    _conv(e, "encoder/Conv_0", "encoder.conv_in", enc.conv_in)
    blocks = [(f"encoder.levels.{i}.{j}", b) for i, lvl in enumerate(enc.levels)
              for j, b in enumerate(lvl)]  # fmt: skip
    blocks += [(f"encoder.mid.{j}", b) for j, b in enumerate(enc.mid)]
    for r, (name, block) in enumerate(blocks):
        _resblock(e, f"encoder/ResBlock_{r}", name, block)
    _norm(e, "encoder/GroupNorm_0", "encoder.norm_out")
    _conv(e, "encoder/Conv_1", "encoder.conv_out", enc.conv_out)

    _conv(e, "decoder/Conv_0", "decoder.conv_in", dec.conv_in)
    r = 0
    for j, block in enumerate(dec.mid):
        _resblock(e, f"decoder/ResBlock_{r}", f"decoder.mid.{j}", block)
        r += 1
    conv_index = 1
    for i, level in enumerate(dec.levels):
        for j, block in enumerate(level):
            _resblock(e, f"decoder/ResBlock_{r}", f"decoder.levels.{i}.{j}", block)
            r += 1
        if i < len(dec.upsamples):
            up = dec.upsamples[i]
            _conv(e, f"decoder/Conv_{conv_index}", f"decoder.upsamples.{i}.conv", up.conv)
            conv_index += 1
    _norm(e, "decoder/GroupNorm_0", "decoder.norm_out")
    _conv(e, f"decoder/Conv_{conv_index}", "decoder.conv_out", dec.conv_out)
    e.append(_Entry("quantizer/codebook", "quantizer.codebook", "plain"))
    return e


# -------------------------------------------------------------------------------- transformer
def _transformer_table(model: BidirectionalTransformer) -> list[_Entry]:
    e = [
        _Entry("BertEmbed_0/word_embeddings/embedding", "word_embeddings.weight", "plain"),
        _Entry("BertEmbed_0/position_embeddings/embedding", "position_embeddings.weight", "plain"),
        _Entry("BertEmbed_0/segment_embeddings/embedding", "segment_embeddings.weight", "plain"),
    ]
    _norm(e, "BertEmbed_0/embeddings_ln", "embeddings_ln")
    for i in range(len(model.layers)):
        a, t = f"BertLayer_{i}/BertAttention_0", f"layers.{i}"
        for n in ("query", "key", "value"):
            e.append(_Entry(f"{a}/self_attention/{n}/kernel", f"{t}.attention.{n}.weight", "qkv"))
            e.append(_Entry(f"{a}/self_attention/{n}/bias", f"{t}.attention.{n}.bias", "qkv"))
        e.append(_Entry(f"{a}/self_attention/out/kernel", f"{t}.attention.out.weight", "attn_out"))
        e.append(_Entry(f"{a}/self_attention/out/bias", f"{t}.attention.out.bias", "plain"))
        _norm(e, f"{a}/attention_output_ln", f"{t}.attention_ln")
        m = f"BertLayer_{i}/BertMlp_0"
        e.append(_Entry(f"{m}/intermediate_output/kernel", f"{t}.intermediate.weight", "dense"))
        e.append(_Entry(f"{m}/intermediate_output/bias", f"{t}.intermediate.bias", "plain"))
        e.append(_Entry(f"{m}/layer_output/kernel", f"{t}.output.weight", "dense"))
        e.append(_Entry(f"{m}/layer_output/bias", f"{t}.output.bias", "plain"))
        _norm(e, f"{m}/layer_output_ln", f"{t}.output_ln")
    e.append(_Entry("BertMlmLayer_0/mlm_dense/kernel", "mlm_dense.weight", "dense"))
    e.append(_Entry("BertMlmLayer_0/mlm_dense/bias", "mlm_dense.bias", "plain"))
    _norm(e, "BertMlmLayer_0/mlm_ln", "mlm_ln")
    e.append(_Entry("BertMlmLayer_0/mlm_bias/bias", "mlm_bias", "plain"))
    return e


# ------------------------------------------------------------------------------------ convert
def _table(model: torch.nn.Module) -> list[_Entry]:
    if isinstance(model, VQTokenizer):
        return _tokenizer_table(model)
    if isinstance(model, BidirectionalTransformer):
        return _transformer_table(model)
    raise TypeError(f"no official layout for {type(model).__name__}")


def _num_heads(model: torch.nn.Module) -> int:
    return model.cfg.num_heads if isinstance(model, BidirectionalTransformer) else 1


def flax_to_state_dict(tree: Mapping[str, Any], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Convert a flat Flax tree into `model`'s state dict; refuse extra, missing or misshapen
    parameters, naming them."""
    table = _table(model)
    state = model.state_dict()
    expected = {e.flax for e in table}
    missing = sorted(expected - set(tree))
    extra = sorted(set(tree) - expected)
    if missing or extra:
        raise TreeMismatch(
            "parameter tree does not match the module: "
            + (f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected {extra[:8]}{' ...' if len(extra) > 8 else ''}" if extra else "")
        )
    out = {}
    for e in table:
        try:
            out[e.torch] = _to_torch(np.asarray(tree[e.flax]), e.layout, state[e.torch].shape)
        except (TreeMismatch, RuntimeError) as err:
            raise TreeMismatch(f"{e.flax}: {err}") from None
    return out


def state_dict_to_flax(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The inverse: this project's parameters as a flat Flax tree."""
    state, heads = model.state_dict(), _num_heads(model)
    return {
        e.flax: _to_flax(state[e.torch], e.layout, _flax_shape(state[e.torch], e.layout, heads))
        for e in _table(model)
    }


def load_official(model: torch.nn.Module, tree: Mapping[str, Any]) -> torch.nn.Module:
    model.load_state_dict(flax_to_state_dict(tree, model))
    return model


# ------------------------------------------------------------------------------------- configs
def tokenizer_config(official: Mapping[str, Any]) -> TokenizerConfig:
    """The official VQ model config (as in the reference's meta_json) -> TokenizerConfig."""
    if official.get("architecture", "3dcnn") not in ("3dcnn", "2dcnn"):
        raise ValueError(f"unsupported tokenizer architecture {official.get('architecture')!r}")
    if official.get("num_enc_res_blocks") != official.get("num_dec_res_blocks"):
        raise ValueError("different encoder and decoder depths are not supported")
    if official.get("conv_downsample") or official.get("deconv_upsample"):
        raise ValueError("strided-conv resampling is not supported (the MAGVIT configs pool)")
    return TokenizerConfig(
        filters=int(official["filters"]),
        channel_multipliers=tuple(int(m) for m in official["channel_multipliers"]),
        num_res_blocks=int(official["num_enc_res_blocks"]),
        temporal_downsample=tuple(bool(t) for t in official["temporal_downsample"]),
        embedding_dim=int(official["embedding_dim"]),
        codebook_size=int(official["codebook_size"]),
        padding="reflect" if official.get("custom_conv_padding") == "reflect" else "zeros",
        conv_dim=2 if official.get("architecture") == "2dcnn" else 3,
        commitment_cost=float(official.get("commitment_cost", 0.25)),
        entropy_loss_ratio=float(official.get("entropy_loss_ratio", 0.1)),
        entropy_temperature=float(official.get("entropy_temperature", 0.01)),
    )


def transformer_config(official: Mapping[str, Any]) -> tuple[TransformerConfig, dict[str, int]]:
    """The official BERT config -> (TransformerConfig, sizes for the constructor)."""
    cfg = TransformerConfig(
        hidden_dim=int(official["hidden_size"]),
        num_layers=int(official["num_hidden_layers"]),
        num_heads=int(official["num_attention_heads"]),
        mlp_dim=int(official["intermediate_size"]),
    )
    sizes = {
        "vocab_size": int(official["vocab_size"]),
        "max_positions": int(official["max_position_embeddings"]),
        "num_segments": int(official.get("num_segments", 2)),
    }
    return cfg, sizes
