"""Kernel tests run the Triton kernels on CPU tensors through the Triton interpreter.

Triton decides between compiling and interpreting when it is first imported (`triton.jit` wraps
its own library, tl.max and tl.sum included, then), so TRITON_INTERPRET is set here, before any
test module of this folder imports it. On a CUDA machine, TRITON_INTERPRET=0 runs the compiled
`gpu` tests (test_gpu.py) instead.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def interpreter() -> None:
    """For tests that launch kernels on CPU tensors."""
    pytest.importorskip("triton")
    from models.kernels.attention_triton import interpreting

    if interpreting():
        return
    if os.environ["TRITON_INTERPRET"] == "1":
        pytest.fail(
            "triton was imported before TRITON_INTERPRET=1 was set; run the kernel tests "
            "in a process of their own: pytest tests/kernels"
        )
    pytest.skip("TRITON_INTERPRET=0: the interpreter tests are off")


@pytest.fixture
def compiled() -> None:
    """For `gpu` tests that launch the compiled kernels on CUDA tensors."""
    pytest.importorskip("triton")
    from models.kernels.attention_triton import interpreting

    if not torch.cuda.is_available() or interpreting():
        pytest.skip("needs CUDA and TRITON_INTERPRET=0")
