"""Parameters of the official (Flax) MAGVIT modules <-> this project's state dicts.

A Flax parameter tree is handled flat: module paths joined by "/" -> arrays, as in
`../shared/reference/`. Layouts differ: Flax is channels-last (conv kernels [kt, kh, kw, in, out]
or [kh, kw, in, out], dense kernels [in, out], attention q/k/v [D, H, Dh] and out [H, Dh, D]);
PyTorch convs are [out, in, kt, kh, kw] and linears [out, in]. The BERT output head is tied to
the word embeddings in both, so it has no kernel of its own.

Each converter builds one table of (flax name, torch name, layout) from the module structure
itself, so the same table converts in both directions and a tree whose names or shapes differ is
refused with the offending keys named.

Trees trained with the official MaskGVT code keep the transformer's vocabulary, positions and
segments in another layout than this project's (`OfficialLayout`); `official_model_config` reads
an official experiment config into a `ModelConfig` and that layout, and
`official_transformer_state` remaps the rows before the table does the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from models.config import ModelConfig, TokenizerConfig, TransformerConfig, Vocabulary
from models.tasks import TASK_CODES, get_task
from models.tokenizer import ResBlock, VQTokenizer
from models.transformer import BidirectionalTransformer


class TreeMismatch(ValueError):
    """A Flax tree whose names or shapes do not fit the module."""


class UnsupportedOfficialModel(ValueError):
    """An official config whose model this project cannot express (a task, a conditioning mode
    or an architecture it does not have)."""


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
    blocks = [
        (f"encoder.levels.{i}.{j}", b)
        for i, lvl in enumerate(enc.levels)
        for j, b in enumerate(lvl)
    ]
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
    """The official VQ model config (`config.vqvae`; as in the reference's meta_json) ->
    TokenizerConfig."""
    if official.get("architecture", "3dcnn") not in ("3dcnn", "2dcnn"):
        raise UnsupportedOfficialModel(
            f"unsupported tokenizer architecture {official.get('architecture')!r}"
        )
    if official.get("num_enc_res_blocks") != official.get("num_dec_res_blocks"):
        raise UnsupportedOfficialModel("different encoder and decoder depths are not supported")
    if official.get("conv_downsample") or official.get("deconv_upsample"):
        raise UnsupportedOfficialModel(
            "strided-conv resampling is not supported (the MAGVIT configs pool)"
        )
    if official.get("norm_type", "GN") != "GN" or official.get("activation_fn", "swish") != "swish":
        raise UnsupportedOfficialModel(
            f"tokenizer norm {official.get('norm_type')!r} / activation "
            f"{official.get('activation_fn')!r}: only GroupNorm and swish are supported"
        )
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


# ------------------------------------------------------------ official MaskGVT vocabulary layout
# Special tokens of the official code (videogvt/train_lib/task_registry.py, SpecialTokens) are
# negative ids; its embedding lookup (jnp.take) counts them from the end of the vocabulary.
OFFICIAL_MASK = -1
OFFICIAL_TASK_TOKENS: dict[str, int] = {
    "full_generation": -3,
    "frame_prediction": -4,
    "frame_interpolation": -5,
    "outpainting": -6,
    "inpainting": -7,
}
# Special-token rows after the class rows (maskgvt_train_lib.get_num_special_tokens): only
# [MASK] in a single-task model, 16 slots in a multi-task one.
OFFICIAL_SPECIAL_ROWS = {False: 1, True: 16}

# Official condition padding (cond_utils, jnp.pad modes) -> this project's padding rule.
_PADDING = {"edge": "edge", "interpolate": "blend", "constant": "zeros"}
_OUTPAINTING = {
    "rectangle_central": "opc",
    "rectangle_vertical": "opv",
    "rectangle_horizontal": "oph",
    "dynamic_vertical": "opd",
}
_INPAINTING = {"rectangle_central": "ipc", "dynamic_central": "ipd"}


@dataclass(frozen=True)
class OfficialLayout:
    """Where an official MaskGVT transformer keeps its rows (maskgvt_train_lib.get_bert_model,
    get_class_tokens, generate_masked_tokens):

    vocabulary   [0, K) codebook, K + c class c, K + C "unconditional", then the special
                 rows, [MASK] last (id -1), task tokens at -3 .. -7
    sequence     [task token] [class token] [video tokens] in a multi-task model,
                 [class token] [video tokens] in a single-task one (no task token)
    segments     no segment embeddings unless `transformer.use_condition_segment`

    `task_tokens` maps each task code of this project the model was trained for to its official
    (negative) task token; it is empty for a single-task model.
    """

    codebook_size: int
    num_classes: int
    num_video_tokens: int
    multi_task: bool
    segments: bool
    task_tokens: dict[str, int] = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return self.codebook_size + self.num_classes + 1 + OFFICIAL_SPECIAL_ROWS[self.multi_task]

    @property
    def num_positions(self) -> int:
        return (2 if self.multi_task else 1) + self.num_video_tokens

    def row(self, token: int) -> int:
        """The embedding row of an official token id (negative ids count from the end)."""
        return token + self.vocab_size if token < 0 else token


def _section(config: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = config.get(key)
    if not isinstance(value, Mapping):
        raise UnsupportedOfficialModel(f"the official config has no '{key}' section")
    return value


def _official_task(
    config: Mapping[str, Any], task_id: str, inpainting_token: int
) -> tuple[str, int, tuple[int, int] | None]:
    """One official task (task_registry.get_task_registry and its defaults) -> (this project's
    code, official task token, (condition frames, latent condition frames) of frame prediction
    or None); refuses what has no equal."""
    own = config.get(task_id)
    task_cfg: Mapping[str, Any] = own if isinstance(own, Mapping) else {}

    def cond_mode() -> None:
        mode = task_cfg.get("condition_mode", config.get("condition_mode", "cond->input"))
        if mode != "cond->input":
            raise UnsupportedOfficialModel(
                f"task {task_id}: condition mode {mode!r}; only 'cond->input' (condition "
                "tokens in the masked positions) is supported"
            )

    def padding(default: str, code: str) -> None:
        pad = task_cfg.get("cond_padding", default)
        if _PADDING.get(pad) != get_task(code).padding:
            raise UnsupportedOfficialModel(
                f"task {task_id}: condition padding {pad!r}; task {code} pads "
                f"{get_task(code).padding!r}"
            )

    if task_id.startswith("full_generation"):
        # Without its own section the task is class-conditional (get_full_generation_task).
        if not (task_cfg.get("class_conditional", False) if own is not None else True):
            raise UnsupportedOfficialModel(
                f"task {task_id}: unconditional generation has no task here (cg needs a class)"
            )
        return "cg", OFFICIAL_TASK_TOKENS["full_generation"], None
    if task_id.startswith("latent_frame_prediction"):
        raise UnsupportedOfficialModel(
            f"task {task_id}: latent frame prediction ('cond->cond' under the full-generation "
            "token) has no task here"
        )
    if task_id.startswith("frame_prediction"):
        cond_mode()
        code = "cfp" if task_cfg.get("class_conditional", False) else "fp"
        padding("edge", code)
        frames = (int(task_cfg.get("cond_frames", 1)), int(task_cfg.get("cond_latent_frames", 1)))
        return code, OFFICIAL_TASK_TOKENS["frame_prediction"], frames
    if task_id.startswith("frame_interpolation"):
        cond_mode()
        padding("interpolate", "fi")
        ends = (int(task_cfg.get("cond_frames", 1)), int(task_cfg.get("cond_latent_frames", 1)))
        if ends != (1, 1):
            raise UnsupportedOfficialModel(
                f"task {task_id}: interpolation here knows one frame (one latent frame) at each end"
            )
        return "fi", OFFICIAL_TASK_TOKENS["frame_interpolation"], None
    for prefix, regions, pad, token in (
        ("outpainting", _OUTPAINTING, "edge", OFFICIAL_TASK_TOKENS["outpainting"]),
        ("inpainting", _INPAINTING, "constant", inpainting_token),
    ):
        if task_id.startswith(prefix):
            cond_mode()
            region = task_cfg.get("cond_region", "quarter_topleft")
            if region not in regions:
                raise UnsupportedOfficialModel(
                    f"task {task_id}: {prefix} region {region!r} has no task here "
                    f"(supported: {', '.join(sorted(regions))})"
                )
            padding(pad, regions[region])
            return regions[region], token, None
    raise UnsupportedOfficialModel(f"unknown official task {task_id!r}")


def official_model_config(config: Mapping[str, Any]) -> tuple[ModelConfig, OfficialLayout]:
    """An official MaskGVT experiment config (the ConfigDict of videogvt/configs/maskgvt_*.py as
    JSON, with its VQ model's config under vq_model_from.config) -> the ModelConfig of the same
    model here and the layout of its official parameters.

    Refuses, with `UnsupportedOfficialModel`, what has no equal here: tasks other than the ten
    (e.g. the quarter-top-left outpainting default, latent frame prediction, unconditional
    generation), condition modes other than 'cond->input', other condition paddings, frame
    prediction whose latent condition frames are not ceil(frames / temporal factor), two official
    tasks on one task of this project, and a latent shape the tokenizer does not give."""
    try:
        return _official_model_config(config)
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, UnsupportedOfficialModel):
            raise
        what = f"no key {err.args[0]!r}" if isinstance(err, KeyError) else str(err)
        raise UnsupportedOfficialModel(f"invalid official config: {what}") from None


def _official_model_config(config: Mapping[str, Any]) -> tuple[ModelConfig, OfficialLayout]:
    tr = _section(config, "transformer")
    if tr.get("variant", "simplified_bert") != "simplified_bert":
        raise UnsupportedOfficialModel(f"transformer variant {tr.get('variant')!r}")
    vq = _section(_section(config, "vq_model_from"), "config")
    tokenizer = tokenizer_config(_section(vq, "vqvae"))
    data = _section(config, "dataset_configs")
    size = config.get("image_size")
    frame_size = (int(size), int(size)) if isinstance(size, int | float) else tuple(size or ())
    if len(frame_size) != 2:
        raise UnsupportedOfficialModel(f"image_size {size!r}")

    multi_task = bool(config.get("multi_task", False))
    inpainting_token = OFFICIAL_TASK_TOKENS[
        "inpainting" if (config.get("bug_patches") or {}).get("inpainting_token") else "outpainting"
    ]
    task_ids = config.get("tasks") or ("full_generation",)
    if isinstance(task_ids, str):
        task_ids = (task_ids,)
    tokens: dict[str, int] = {}
    cond: set[tuple[int, int]] = set()
    for task_id in task_ids:
        code, token, fp_cond = _official_task(config, str(task_id), inpainting_token)
        if code in tokens:
            raise UnsupportedOfficialModel(f"two official tasks map onto task {code}")
        tokens[code] = token
        if fp_cond is not None:
            cond.add(fp_cond)
    if len(cond) > 1:
        raise UnsupportedOfficialModel("fp and cfp condition on different numbers of frames")
    has_fp = bool(cond)
    cond_frames, cond_latent = cond.pop() if has_fp else (1, 1)

    model = ModelConfig(
        name=f"official:{config.get('experiment_name', 'maskgvt')}",
        num_frames=int(data["num_frames"]),
        frame_size=(int(frame_size[0]), int(frame_size[1])),
        tokenizer=tokenizer,
        transformer=TransformerConfig(
            hidden_dim=int(tr["hidden_size"]),
            num_layers=int(tr["num_layers"]),
            num_heads=int(tr["num_heads"]),
            mlp_dim=int(tr["mlp_dim"]),
            dropout=float(tr.get("dropout_rate", 0.1)),
            task_token=multi_task,
        ),
        num_classes=int(data.get("num_classes", 0)),
        cond_frames=cond_frames,
        tasks=tuple(code for code in TASK_CODES if code in tokens),
    )
    latent = tuple(int(n) for n in tr.get("latent_shape", model.token_shape))
    if latent != model.token_shape:
        raise UnsupportedOfficialModel(
            f"latent shape {list(latent)} is not what the tokenizer gives for "
            f"{model.num_frames} x {model.frame_size[0]} x {model.frame_size[1]} "
            f"({list(model.token_shape)})"
        )
    if has_fp and cond_latent != model.cond_latent_frames:
        raise UnsupportedOfficialModel(
            f"frame prediction on {cond_frames} frames conditions on {cond_latent} latent "
            f"frames; here it is {model.cond_latent_frames} (ceil of frames / temporal factor)"
        )
    layout = OfficialLayout(
        codebook_size=tokenizer.codebook_size,
        num_classes=model.num_classes,
        num_video_tokens=model.num_video_tokens,
        multi_task=multi_task,
        segments=bool(tr.get("use_condition_segment", False)),
        task_tokens=tokens if multi_task else {},
    )
    return model, layout


_WORD = "BertEmbed_0/word_embeddings/embedding"
_POSITION = "BertEmbed_0/position_embeddings/embedding"
_SEGMENT = "BertEmbed_0/segment_embeddings/embedding"
_BIAS = "BertMlmLayer_0/mlm_bias/bias"


def _rows_to_project(layout: OfficialLayout, vocab: Vocabulary) -> dict[int, int]:
    """Row of this project's vocabulary -> row of the official one, for every row that has one.
    A task token the official model shares between tasks (all outpainting and inpainting tasks
    under one token) is copied to each of them; rows of tasks it was not trained for stay
    zero."""
    k = layout.codebook_size
    rows = {i: i for i in range(k)}
    rows[vocab.mask_id] = layout.row(OFFICIAL_MASK)
    for c in range(layout.num_classes):
        rows[vocab.class_token(c)] = k + c
    rows[vocab.class_token(None)] = k + layout.num_classes
    for code, token in layout.task_tokens.items():
        rows[vocab.task_token(TASK_CODES.index(code))] = layout.row(token)
    return rows


def official_transformer_tree(
    tree: Mapping[str, Any], layout: OfficialLayout, vocab: Vocabulary
) -> dict[str, np.ndarray]:
    """A flat official transformer tree -> the same tree in this project's layout (vocabulary
    rows remapped, segment embeddings zero where the official model has none), for
    `flax_to_state_dict`. Refuses a tree whose embedding shapes are not the config's."""
    tree = dict(tree)
    for key in (_WORD, _POSITION, _BIAS):
        if key not in tree:
            raise TreeMismatch(f"parameter tree does not match the official layout: missing {key}")
    word, bias = np.asarray(tree[_WORD]), np.asarray(tree[_BIAS])
    width = word.shape[-1]
    expected = {
        _WORD: (layout.vocab_size, width),
        _BIAS: (layout.vocab_size,),
        _POSITION: (layout.num_positions, width),
    }
    if layout.segments:
        expected[_SEGMENT] = (2, width)
    elif _SEGMENT in tree:
        raise TreeMismatch(
            f"unexpected {_SEGMENT}: the config has no segment embeddings "
            "(transformer.use_condition_segment)"
        )
    for key, shape in expected.items():
        if key not in tree:
            raise TreeMismatch(f"parameter tree does not match the official layout: missing {key}")
        if tuple(np.shape(tree[key])) != shape:
            raise TreeMismatch(
                f"{key}: shape {tuple(np.shape(tree[key]))}, the official layout of this config "
                f"has {shape}"
            )
    rows = _rows_to_project(layout, vocab)
    ours, theirs = list(rows), list(rows.values())
    new_word = np.zeros((vocab.size, width), np.float32)
    new_bias = np.zeros((vocab.size,), np.float32)
    new_word[ours] = word[theirs]
    new_bias[ours] = bias[theirs]
    tree[_WORD], tree[_BIAS] = new_word, new_bias
    if not layout.segments:
        tree[_SEGMENT] = np.zeros((2, width), np.float32)
    return tree


def official_transformer_state(
    tree: Mapping[str, Any], model_config: ModelConfig, layout: OfficialLayout
) -> dict[str, torch.Tensor]:
    """A flat official transformer tree -> a state dict of `build_transformer(model_config)`."""
    with torch.device("meta"):  # shapes only
        model = BidirectionalTransformer(
            model_config.transformer, model_config.vocab.size, model_config.num_positions
        )
    return flax_to_state_dict(official_transformer_tree(tree, layout, model_config.vocab), model)
