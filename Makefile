# One entry point for set-up, tests, lint and serving. `make test` works on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# The CPU build of PyTorch where there is no GPU: a local wheel when pip can see one
# (PIP_FIND_LINKS), else PyTorch's CPU index. On GPU machines the default (CUDA) build.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
LOCAL_TORCH := $(shell ls $${PIP_FIND_LINKS:-/nonexistent}/torch-$(TORCH_VERSION)*cpu*.whl 2>/dev/null | head -n 1)
ifeq ($(HAS_GPU),1)
TORCH_INDEX ?=
else ifneq ($(LOCAL_TORCH),)
TORCH_INDEX ?=
else
TORCH_INDEX ?= --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple
endif
PYTEST_ARGS ?=
CHECKPOINT ?= checkpoints/default

.PHONY: install test test-all lint format serve bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==$(TORCH_VERSION)" $(TORCH_INDEX)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/.installed

test: install
	tests/support/prepare.sh
	$(BIN)/pytest $(PYTEST_ARGS)

test-all: install
	tests/support/prepare.sh
	$(BIN)/pytest -m "" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

serve: install
	$(BIN)/magvit serve --checkpoint $(CHECKPOINT) --device cpu

bench: install
	$(BIN)/python benchmarks/decode.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
