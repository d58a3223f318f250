"""Checkpoint format: safetensors + JSON, bit-exact round trip, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from models.checkpoint import (
    CheckpointError,
    default_checkpoint_dir,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from models.config import CONFIGS


def _states():
    g = torch.Generator().manual_seed(0)
    tok = {"enc.w": torch.randn(4, 3, generator=g), "codebook": torch.randn(8, 2, generator=g)}
    tr = {"emb": torch.randn(5, 4, generator=g), "count": torch.tensor([3], dtype=torch.int64)}
    return tok, tr


def test_round_trip_is_bit_exact(tmp_path):
    tok, tr = _states()
    cfg = CONFIGS["tiny"]
    save_checkpoint(tmp_path / "ck", cfg, tok, tr, {"steps": 7})
    ck = load_checkpoint(tmp_path / "ck", require_transformer=True)
    assert ck.config == cfg and ck.metadata == {"steps": 7}
    for a, b in ((tok, ck.tokenizer_state), (tr, ck.transformer_state)):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k])
    doc = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert doc["format_version"] == 1 and doc["tasks"] == list(cfg.tasks)
    assert not list((tmp_path / "ck").glob(".*tmp"))  # no temporary files left behind


def test_half_precision_and_tokenizer_only(tmp_path):
    tok, tr = _states()
    save_checkpoint(tmp_path, CONFIGS["tiny"], tok, tr, dtype=torch.float16)
    ck = load_checkpoint(tmp_path)
    assert ck.tokenizer_state["enc.w"].dtype == torch.float16
    assert ck.transformer_state["count"].dtype == torch.int64  # integers are never cast
    save_checkpoint(tmp_path, CONFIGS["tiny"], tok)  # overwrite as tokenizer-only
    assert load_checkpoint(tmp_path).transformer_state is None
    with pytest.raises(CheckpointError, match="tokenizer only"):
        load_checkpoint(tmp_path, require_transformer=True)


def test_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text('{"format_version": 99}')
    with pytest.raises(CheckpointError, match="unsupported format_version"):
        read_config(tmp_path)
    tok, tr = _states()
    save_checkpoint(tmp_path, CONFIGS["tiny"], tok, tr)
    (tmp_path / "tokenizer.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path)


def test_default_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MAGVIT_CHECKPOINT", str(tmp_path))
    assert default_checkpoint_dir() == tmp_path
    monkeypatch.delenv("MAGVIT_CHECKPOINT")
    assert default_checkpoint_dir().parts[-2:] == ("checkpoints", "default")
