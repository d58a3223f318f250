"""Parity with the official implementation, and conversion of its parameters."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest
import torch

from cli import parity
from cli.main import main
from models.checkpoint import load_checkpoint, read_flax_tree
from models.config import CONFIGS
from models.official import (
    TreeMismatch,
    flax_to_state_dict,
    state_dict_to_flax,
    tokenizer_config,
    transformer_config,
)
from models.pipeline import build_tokenizer, build_transformer
from models.tokenizer import VQTokenizer
from models.transformer import BidirectionalTransformer


@pytest.fixture(scope="module")
def report(reference):
    return parity.compare(reference, parity.compute(reference))


def test_every_output_key_is_compared(reference, report):
    outputs = {
        k
        for k in reference
        if k != "meta_json" and "/params/" not in k and not k.endswith(parity.INPUT_KEYS)
    }
    assert set(report) == outputs
    assert all("error" not in v for v in report.values()), report


def test_transformer_logits_within_1e_4(report):
    assert report["bert/logits"]["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("padding", ["zeros", "reflect"])
def test_tokenizer_within_1e_3_and_ids_identical(report, padding):
    p = f"tokenizer_{padding}"
    assert report[f"{p}/decoded"]["max_abs_diff"] < 1e-3
    assert report[f"{p}/decoded_from_ids"]["max_abs_diff"] < 1e-3
    assert report[f"{p}/token_ids"]["agree"] == 1.0


def test_task_masks_identical_and_schedule(report):
    for key, value in report.items():
        if key.endswith("_mask"):
            assert value["agree"] == 1.0, key
        if key.startswith("tasks/") and key.endswith("/video"):
            assert value["max_abs_diff"] < 1e-6, key
    assert report["schedule/cosine_12"]["max_abs_diff"] < 1e-6


def test_parity_cli_json_and_save(tmp_path, capsys, reference):
    from tests.conftest import REFERENCE

    out = tmp_path / "ours.npz"
    assert main(["parity", "--reference", str(REFERENCE), "--save", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["bert/logits"]["max_abs_diff"] < 1e-4
    with np.load(out) as saved:
        assert set(saved.files) == set(printed)


def test_parity_cli_errors(tmp_path, capsys):
    assert main(["parity", "--reference", str(tmp_path / "none.npz")]) == 2
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    assert main(["parity", "--reference", str(bad)]) == 2
    assert "cannot use" in capsys.readouterr().err


def _round_trip(model):
    tree = state_dict_to_flax(model)
    state = flax_to_state_dict(tree, model)
    for name, tensor in model.state_dict().items():
        assert torch.equal(state[name], tensor), name
    return tree


def test_converter_round_trip_is_bit_exact(reference):
    meta = json.loads(str(reference["meta_json"]))
    tok = VQTokenizer(tokenizer_config(meta["tokenizer_reflect"]["config"]))
    tree = _round_trip(tok)
    ref_tree = {
        k[len("tokenizer_reflect/params/") :]: v
        for k, v in reference.items()
        if k.startswith("tokenizer_reflect/params/")
    }
    assert {k: v.shape for k, v in tree.items()} == {k: v.shape for k, v in ref_tree.items()}
    cfg, sizes = transformer_config(meta["bert"]["config"])
    tree = _round_trip(BidirectionalTransformer(cfg, **sizes))
    assert tree["BertLayer_0/BertAttention_0/self_attention/query/kernel"].shape == (64, 4, 16)
    cfg2d = tokenizer_config({**meta["tokenizer_reflect"]["config"], "architecture": "2dcnn"})
    _round_trip(VQTokenizer(cfg2d))


def test_mismatched_trees_are_refused_by_name():
    model = build_transformer(CONFIGS["tiny"])
    tree = state_dict_to_flax(model)
    renamed = dict(tree)
    renamed["BertEmbed_0/word_embeddingz/embedding"] = renamed.pop(
        "BertEmbed_0/word_embeddings/embedding"
    )
    with pytest.raises(TreeMismatch, match="word_embeddingz"):
        flax_to_state_dict(renamed, model)
    wrong = dict(tree)
    wrong["BertMlmLayer_0/mlm_dense/kernel"] = np.zeros((3, 3), np.float32)
    with pytest.raises(TreeMismatch, match="mlm_dense/kernel"):
        flax_to_state_dict(wrong, model)


def _nest(flat):
    out = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _flax_msgpack(tree) -> bytes:
    """Serialise like flax.serialization.to_bytes: ndarrays as msgpack extension type 1."""

    def default(obj):
        if isinstance(obj, np.ndarray):
            payload = msgpack.packb((obj.shape, obj.dtype.name, obj.tobytes("C")))
            return msgpack.ExtType(1, payload)
        raise TypeError(type(obj))

    return msgpack.packb(tree, default=default, use_bin_type=True)


def test_convert_official_msgpack_and_npz(tmp_path, capsys):
    cfg = CONFIGS["tiny"]
    tok, tr = build_tokenizer(cfg), build_transformer(cfg)
    state = {
        "step": 3,
        "params": _nest(state_dict_to_flax(tok)),
        "ema_params": _nest(state_dict_to_flax(tok)),
    }
    (tmp_path / "tok.msgpack").write_bytes(_flax_msgpack(state))
    np.savez(tmp_path / "tr.npz", **{f"params/{k}": v for k, v in state_dict_to_flax(tr).items()})
    assert (
        read_flax_tree(tmp_path / "tok.msgpack", "encoder").keys() == state_dict_to_flax(tok).keys()
    )
    args = [
        "convert-official",
        "--tokenizer",
        str(tmp_path / "tok.msgpack"),
        "--transformer",
        str(tmp_path / "tr.npz"),
        "--preset",
        "tiny",
        "--out",
        str(tmp_path / "ck"),
    ]
    assert main(args) == 0
    ck = load_checkpoint(tmp_path / "ck", require_transformer=True)
    for name, tensor in tr.state_dict().items():
        assert torch.equal(ck.transformer_state[name], tensor)
    for name, tensor in tok.state_dict().items():
        assert torch.equal(ck.tokenizer_state[name], tensor)
    # A tree for another preset is refused with a clear message.
    args[args.index("tiny")] = "default"
    assert main(args) == 2
    assert "does not match the module: missing" in capsys.readouterr().err
