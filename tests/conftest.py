"""Shared fixtures. Tests are tiny, seeded and CPU-first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

REFERENCE = (
    Path(__file__).resolve().parents[2] / "shared" / "reference" / "magvit_reference_seed0.npz"
)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture(scope="session")
def reference() -> dict[str, np.ndarray]:
    """The official implementation's outputs (see ../shared/reference/README.md)."""
    if not REFERENCE.is_file():
        pytest.skip(f"reference file not found at {REFERENCE}")
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}
