"""Checkpoints of the official MaskGVT code in its own vocabulary layout convert into ours.

The trees here follow the official configs (videogvt/configs/maskgvt_ucf101_config.py,
maskgvt_bair_config.py, maskgvt_bair_multitask_config.py) with tiny sizes: the same parameter
names and layout rules (vocabulary = codebook + classes + 1 + special rows, special tokens as
negative ids counted from the end, a task token only in a multi-task model, no segment
embeddings unless transformer.use_condition_segment). The official side is re-implemented here
from those facts alone: its input ids for a logical sequence, its embedding lookup, and the
tied output head over its own table; the layers in between are the (parity-tested) body.
"""

from __future__ import annotations

import copy
import json

import msgpack
import numpy as np
import pytest
import torch

from cli.main import main
from models.config import ModelConfig, TransformerConfig
from models.official import (
    TreeMismatch,
    UnsupportedOfficialModel,
    official_model_config,
    official_transformer_state,
    state_dict_to_flax,
    tokenizer_config,
)
from models.pipeline import MagvitPipeline, build_transformer
from models.sequence import build_sequence, class_tokens
from models.tasks import TASK_CODES
from models.tokenizer import VQTokenizer
from models.transformer import BidirectionalTransformer, _gelu

# task_registry.SpecialTokens of the official code.
MASK, FULL_GENERATION, FRAME_PREDICTION, FRAME_INTERPOLATION, OUTPAINTING, INPAINTING = (
    -1,
    -3,
    -4,
    -5,
    -6,
    -7,
)
K = 16  # tiny codebook

VQVAE = {  # vqgan3d_*_config.vqvae, tiny: 4 x 8 x 8 pixels -> 2 x 4 x 4 tokens
    "architecture": "3dcnn",
    "codebook_size": K,
    "filters": 32,
    "num_enc_res_blocks": 1,
    "num_dec_res_blocks": 1,
    "channel_multipliers": [1, 1],
    "temporal_downsample": [True],
    "embedding_dim": 8,
    "conv_downsample": False,
    "deconv_upsample": False,
    "norm_type": "GN",
    "activation_fn": "swish",
    "commitment_cost": 0.25,
    "entropy_loss_ratio": 0.1,
    "entropy_temperature": 0.01,
}


def ucf_config() -> dict:
    """maskgvt_ucf101_config, tiny: class-conditional generation, one task, no task token."""
    return {
        "experiment_name": "UCF101_CG_MaskGVT/16",
        "image_size": 8,
        "dataset_configs": {"num_classes": 3, "num_frames": 4},
        "tasks": ["full_generation"],
        "full_generation": {"class_conditional": True},
        "label_smoothing": 1e-4,
        "mask_scheduling_method": "cosine",
        "vq_model_from": {"config": {"vqvae": dict(VQVAE)}},
        "transformer": {
            "latent_shape": [2, 4, 4],
            "num_layers": 1,
            "hidden_size": 16,
            "mlp_dim": 32,
            "num_heads": 2,
            "dropout_rate": 0.1,
            "attention_dropout_rate": 0.1,
        },
        "sampling": {"mask_bins": 12, "choice_temperature": 4.5},
    }


def bair_config() -> dict:
    """maskgvt_bair_config, tiny: frame prediction from one frame, no classes, no task token."""
    config = ucf_config()
    config.update(
        experiment_name="BAIR_FP_MaskGVT/16",
        dataset_configs={"num_classes": 0, "num_frames": 4},
        tasks=["frame_prediction"],
        frame_prediction={
            "cond_frames": 1,
            "cond_latent_frames": 1,
            "condition_mode": "cond->input",
            "weight_mode": "mask+refine+recons",
        },
    )
    del config["full_generation"]
    return config


def bair_multitask_config() -> dict:
    """maskgvt_bair_multitask_config, tiny: eight tasks, one task token for all outpainting and
    inpainting tasks."""
    config = bair_config()
    config.update(
        experiment_name="BAIR_MT_MaskGVT/16",
        multi_task=True,
        tasks=[
            "frame_prediction",
            "frame_interpolation",
            "outpainting_h",
            "outpainting_v",
            "outpainting_c",
            "outpainting_dv",
            "inpainting_c",
            "inpainting_dv",
        ],
        weight_mode="mask+refine+recons",
        condition_mode="cond->input",
        frame_prediction={},
        frame_interpolation={},
        outpainting_h={"cond_region": "rectangle_horizontal"},
        outpainting_v={"cond_region": "rectangle_vertical"},
        outpainting_c={"cond_region": "rectangle_central"},
        outpainting_dv={"cond_region": "dynamic_vertical", "cond_padding": "constant"},
        inpainting_c={"cond_region": "rectangle_central"},
        inpainting_dv={"cond_region": "dynamic_central"},
    )
    return config


# The official task token of each of this project's tasks in the multi-task config
# (task_registry: inpainting shares the outpainting token unless bug_patches.inpainting_token).
MULTITASK_TOKENS = {
    "fp": FRAME_PREDICTION,
    "fi": FRAME_INTERPOLATION,
    "oph": OUTPAINTING,
    "opv": OUTPAINTING,
    "opc": OUTPAINTING,
    "opd": OUTPAINTING,
    "ipc": OUTPAINTING,
    "ipd": OUTPAINTING,
}


def official_tree(config: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """A random tree of the official Bert with the official vocabulary, positions and segments
    of `config` (maskgvt_train_lib.get_bert_model), every parameter O(1) so rows differ."""
    tr, data = config["transformer"], config["dataset_configs"]
    multi = config.get("multi_task", False)
    n = int(np.prod(tr["latent_shape"]))
    vocab = K + data["num_classes"] + 1 + (16 if multi else 1)
    positions = (2 if multi else 1) + n
    segments = tr.get("use_condition_segment", False)
    cfg = TransformerConfig(tr["hidden_size"], tr["num_layers"], tr["num_heads"], tr["mlp_dim"])
    model = BidirectionalTransformer(cfg, vocab, positions)
    shapes = {k: v.shape for k, v in state_dict_to_flax(model).items()}
    if not segments:
        del shapes["BertEmbed_0/segment_embeddings/embedding"]
    rng = np.random.default_rng(seed)
    return {
        key: (rng.normal(size=shape) * 0.5 + (1.0 if key.endswith("/scale") else 0.0)).astype(
            np.float32
        )
        for key, shape in shapes.items()
    }


def official_logits(
    tree: dict[str, np.ndarray],
    ids: np.ndarray,
    segments: np.ndarray,
    body: BidirectionalTransformer,
) -> torch.Tensor:
    """The official forward pass on official ids: its own embedding tables looked up (negative
    ids from the end, as jnp.take), the body's layers, and the tied head over its own table."""
    word = torch.from_numpy(tree["BertEmbed_0/word_embeddings/embedding"])
    pos = torch.from_numpy(tree["BertEmbed_0/position_embeddings/embedding"])
    rows = torch.from_numpy(ids) % word.shape[0]  # jnp.take counts negative ids from the end
    x = word[rows] + pos[: ids.shape[1]][None]
    seg_key = "BertEmbed_0/segment_embeddings/embedding"
    if seg_key in tree:
        x = x + torch.from_numpy(tree[seg_key])[torch.from_numpy(segments)]
    with torch.no_grad():
        x = body.embeddings_ln(x)
        for layer in body.layers:
            x = layer(x, None)
        x = body.mlm_ln(_gelu(body.mlm_dense(x)))
        return x @ word.t() + torch.from_numpy(tree["BertMlmLayer_0/mlm_bias/bias"])


def converted(config: dict, tree: dict) -> tuple[ModelConfig, BidirectionalTransformer]:
    model_config, layout = official_model_config(config)
    model = build_transformer(model_config).eval()
    model.load_state_dict(official_transformer_state(tree, model_config, layout))
    return model_config, model


def logical_sequence(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Video tokens of one sequence: codes, where [MASK] stands, and segment-1 (condition)
    positions holding a code."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, K, size=n)
    masked = rng.random(n) < 0.5
    segments = (rng.random(n) < 0.3) & masked  # a condition token in a masked position
    return codes, masked & ~segments, segments.astype(np.int64)


def both_logits(config, tree, model_config, model, code, class_id, seed):
    """(ours, official) codebook logits [N, K] for the same logical sequence."""
    n = model_config.num_video_tokens
    codes, is_mask, segs = logical_sequence(n, seed)
    vocab = model_config.vocab
    ours_video = torch.from_numpy(np.where(is_mask, vocab.mask_id, codes))[None]
    ids, seg_ids = build_sequence(
        vocab,
        TASK_CODES.index(code),
        class_tokens(vocab, [class_id]),
        ours_video,
        torch.from_numpy(segs)[None],
    )
    with torch.no_grad():
        ours = model(ids, seg_ids)[0, 2:, :K]

    num_classes = config["dataset_configs"]["num_classes"]
    cls = K + (num_classes if class_id is None else class_id)  # get_class_tokens
    prefix = [cls]
    if config.get("multi_task"):
        prefix = [task_token(config, code), cls]
    off_ids = np.array([prefix + np.where(is_mask, MASK, codes).tolist()])
    off_segs = np.array([[0] * len(prefix) + segs.tolist()])
    theirs = official_logits(tree, off_ids, off_segs, model)[0, len(prefix) :, :K]
    return ours, theirs


def task_token(config: dict, code: str) -> int:
    if code in ("ipc", "ipd") and config.get("bug_patches", {}).get("inpainting_token"):
        return INPAINTING
    return {**MULTITASK_TOKENS, "cg": FULL_GENERATION}[code]


def test_ucf_class_conditional_generation_gives_the_official_logits():
    config = ucf_config()
    tree = official_tree(config)
    model_config, model = converted(config, tree)
    assert model_config.tasks == ("cg",) and model_config.num_classes == 3
    assert not model_config.transformer.task_token
    assert model.position_embeddings.num_embeddings == 1 + 32  # [class] [video]
    assert not model.segment_embeddings.weight.any()
    for class_id in (0, 2, None):
        ours, theirs = both_logits(config, tree, model_config, model, "cg", class_id, seed=1)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    # The class rows are not interchangeable: the test can tell a wrong row apart.
    a, _ = both_logits(config, tree, model_config, model, "cg", 0, seed=1)
    b, _ = both_logits(config, tree, model_config, model, "cg", 1, seed=1)
    assert (a - b).abs().max() > 1e-3


def test_bair_frame_prediction_gives_the_official_logits():
    config = bair_config()
    tree = official_tree(config, seed=1)
    model_config, model = converted(config, tree)
    assert model_config.tasks == ("fp",) and model_config.num_classes == 0
    assert model_config.cond_frames == 1 and model_config.cond_latent_frames == 1
    for seed in range(3):
        ours, theirs = both_logits(config, tree, model_config, model, "fp", None, seed)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("segments", [False, True])
def test_bair_multitask_gives_the_official_logits_for_every_task(segments):
    config = bair_multitask_config()
    config["transformer"]["use_condition_segment"] = segments
    tree = official_tree(config, seed=2)
    model_config, model = converted(config, tree)
    assert model_config.tasks == ("fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd")
    assert model_config.transformer.task_token
    assert bool(model.segment_embeddings.weight.any()) == segments
    out = {}
    for code in model_config.tasks:
        ours, theirs = both_logits(config, tree, model_config, model, code, None, seed=3)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
        out[code] = ours
    # One official token for all outpainting and inpainting tasks; FP and FI have their own.
    torch.testing.assert_close(out["opc"], out["ipd"])
    assert (out["fp"] - out["fi"]).abs().max() > 1e-3
    assert (out["fp"] - out["opc"]).abs().max() > 1e-3


def test_inpainting_token_bug_patch_maps_inpainting_to_its_own_row():
    config = bair_multitask_config()
    config["bug_patches"] = {"inpainting_token": True}
    tree = official_tree(config, seed=4)
    model_config, model = converted(config, tree)
    for code in ("ipc", "opc"):
        ours, theirs = both_logits(config, tree, model_config, model, code, None, seed=5)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    ipc, _ = both_logits(config, tree, model_config, model, "ipc", None, seed=5)
    opc, _ = both_logits(config, tree, model_config, model, "opc", None, seed=5)
    assert (ipc - opc).abs().max() > 1e-3


def _with(config: dict, **changes) -> dict:
    config = copy.deepcopy(config)
    for dotted, value in changes.items():
        node = config
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return config


@pytest.mark.parametrize(
    ("config", "message"),
    [
        # get_outpainting_task's default region is the top-left quarter: no task here.
        (_with(bair_multitask_config(), outpainting_c={}), "quarter_topleft"),
        (_with(bair_config(), frame_prediction__condition_mode="prefix"), "condition mode"),
        (_with(bair_config(), tasks=["latent_frame_prediction"]), "latent frame prediction"),
        (_with(ucf_config(), full_generation={}), "unconditional generation"),
        (_with(bair_config(), frame_prediction__cond_padding="constant"), "padding"),
        (_with(bair_config(), frame_prediction__cond_latent_frames=2), "latent frames"),
        (_with(bair_multitask_config(), frame_interpolation={"cond_frames": 2}), "one frame"),
        (
            _with(
                bair_multitask_config(),
                tasks=["outpainting_c", "outpainting_c2"],
                outpainting_c2={"cond_region": "rectangle_central"},
            ),
            "two official tasks",
        ),
        (_with(ucf_config(), transformer__latent_shape=[4, 4, 4]), "latent shape"),
        (_with(ucf_config(), vq_model_from__config__vqvae__norm_type="BN"), "GroupNorm"),
        (_with(ucf_config(), tasks=["structure"]), "unknown official task"),
        ({k: v for k, v in ucf_config().items() if k != "vq_model_from"}, "vq_model_from"),
        (_with(ucf_config(), dataset_configs={"num_classes": 3}), "num_frames"),
    ],
)
def test_configs_without_an_equal_here_are_refused(config, message):
    with pytest.raises(UnsupportedOfficialModel, match=message):
        official_model_config(config)


def test_trees_that_do_not_fit_the_config_are_refused():
    single = bair_config()
    multi_tree = official_tree(bair_multitask_config())  # 16 special rows, a task position
    model_config, layout = official_model_config(single)
    with pytest.raises(TreeMismatch, match="word_embeddings"):
        official_transformer_state(multi_tree, model_config, layout)
    with_segments = official_tree(_with(single, transformer__use_condition_segment=True))
    with pytest.raises(TreeMismatch, match="use_condition_segment"):
        official_transformer_state(with_segments, model_config, layout)
    no_segments = official_tree(single)
    seg_config, seg_layout = official_model_config(
        _with(single, transformer__use_condition_segment=True)
    )
    with pytest.raises(TreeMismatch, match="missing BertEmbed_0/segment_embeddings"):
        official_transformer_state(no_segments, seg_config, seg_layout)


# ----------------------------------------------------------------------------------------- CLI
def _msgpack(tree: dict) -> bytes:
    """Like flax.serialization.to_bytes of a nested state: ndarrays as extension type 1."""
    nested: dict = {}
    for key, value in tree.items():
        node = nested
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value

    def default(obj):
        if isinstance(obj, np.ndarray):
            return msgpack.ExtType(1, msgpack.packb((obj.shape, obj.dtype.name, obj.tobytes())))
        raise TypeError(type(obj))

    return msgpack.packb({"params": nested, "global_step": 7}, default=default)


def test_cli_converts_an_official_config_and_tree_into_a_checkpoint(tmp_path, capsys):
    config = bair_config()
    tree = official_tree(config, seed=6)
    tokenizer = VQTokenizer(tokenizer_config(VQVAE))
    vq_tree = {f"ema_params/{k}": v for k, v in state_dict_to_flax(tokenizer).items()}
    np.savez(tmp_path / "vq.npz", **vq_tree)
    (tmp_path / "bert.msgpack").write_bytes(_msgpack(tree))
    (tmp_path / "config.json").write_text(json.dumps(config))
    args = [
        "convert-official",
        "--tokenizer",
        str(tmp_path / "vq.npz"),
        "--transformer",
        str(tmp_path / "bert.msgpack"),
        "--official-config",
        str(tmp_path / "config.json"),
        "--out",
        str(tmp_path / "ck"),
    ]
    assert main(args) == 0

    pipe = MagvitPipeline.from_checkpoint(tmp_path / "ck", "cpu", torch.float32)
    assert pipe.config.tasks == ("fp",) and not pipe.config.transformer.task_token
    for name, tensor in tokenizer.state_dict().items():
        assert torch.equal(pipe.tokenizer.state_dict()[name], tensor), name
    ours, theirs = both_logits(config, tree, pipe.config, pipe.transformer, "fp", None, seed=7)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    video = torch.rand(1, 3, 4, 8, 8)
    out = pipe.generate("fp", video, None, seeds=[0])
    assert out.shape == (1, 3, 4, 8, 8)
    with pytest.raises(ValueError, match="not trained for task 'fi'"):
        pipe.generate("fi", video, None, seeds=[0])
    capsys.readouterr()

    # What cannot map is one line on stderr and exit status 2.
    (tmp_path / "bad.json").write_text(json.dumps(_with(config, tasks=["outpainting"])))
    args[args.index(str(tmp_path / "config.json"))] = str(tmp_path / "bad.json")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "quarter_topleft" in err
    (tmp_path / "bad.json").write_text("{not json")
    assert main(args) == 2
    assert "cannot read" in capsys.readouterr().err
