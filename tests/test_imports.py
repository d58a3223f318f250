"""What each entry point loads: an API-only server and the CLI's parser never load torch (or
the trainers), as their docstrings say. Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def loaded_after(code: str) -> set[str]:
    """Top-level names of the heavy modules loaded after running `code` in a new interpreter."""
    probe = (
        f"{code}\nimport sys, json\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'fastapi', 'training', 'service') or m in ('service.engine', "
        "'models.pipeline', 'training.tokenizer_trainer', 'training.transformer_trainer'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_api_only_server_loads_no_torch(tmp_path):
    settings = f"Settings(workers=0, data_dir=Path({str(tmp_path)!r}))"
    mods = loaded_after(
        "from pathlib import Path\nfrom service.settings import Settings\n"
        f"from service.app import create_app\ncreate_app({settings})"
    )
    assert "service.routes" in mods  # the probe sees what it should
    assert not {m for m in mods if m.split(".")[0] == "torch"}
    assert "service.engine" not in mods and "models.pipeline" not in mods


def test_cli_parser_loads_neither_torch_nor_trainers():
    mods = loaded_after("from cli.main import build_parser\nbuild_parser()")
    assert "training.configs" in mods  # `magvit train`'s flags come from its dataclasses
    assert not {m for m in mods if m.split(".")[0] in ("torch", "fastapi")}
    assert "training.tokenizer_trainer" not in mods
    assert "training.transformer_trainer" not in mods


def test_task_data_loads_no_torch_but_masks_do():
    mods = loaded_after("from models.tasks import TASKS\nfrom models.options import DecodeOptions")
    assert not {m for m in mods if m.split(".")[0] == "torch"}
    mods = loaded_after("from models.tasks import TASKS\nTASKS['opc'].pixel_mask(2, 8, 8, 1)")
    assert "torch" in mods
