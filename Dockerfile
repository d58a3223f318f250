# syntax=docker/dockerfile:1
# The magvit image, one for every role: `magvit serve` (the API; with `--queue redis://...
# --workers 0` it loads no model), `magvit worker` (the model, metrics on port 9100) or the
# single-process service with its SQLite queue under /data. GPU image by default;
# `--build-arg VARIANT=cpu` builds a CPU one.
#   docker build -t magvit:0.1.0 .                                # CUDA 12.6 runtime + cu126 torch
#   docker build -t magvit:0.1.0-cpu --build-arg VARIANT=cpu .    # Ubuntu + CPU torch
# Both bases are Ubuntu 24.04, so the venv built in one stage runs on the same Python 3.12 in the
# next. PyTorch's CUDA wheels carry their own CUDA libraries; the CUDA base adds the driver
# plumbing that the NVIDIA container toolkit expects (NVIDIA_VISIBLE_DEVICES etc.).
ARG VARIANT=cuda

FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 AS base-cuda
ENV TORCH_INDEX=https://download.pytorch.org/whl/cu126

FROM ubuntu:24.04 AS base-cpu
ENV TORCH_INDEX=https://download.pytorch.org/whl/cpu

# hadolint ignore=DL3006
FROM base-${VARIANT} AS base
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The distribution's Python of the pinned Ubuntu release; apt versions are not pinned because
# the archive drops superseded ones (DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*

FROM base AS build
# The same PyTorch release as the Makefile's TORCH_VERSION.
ARG TORCH_VERSION=2.13.0
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the index of the chosen variant; `pip install .` then finds it satisfied.
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models models
COPY media media
COPY service service
COPY training training
COPY cli cli
RUN pip install --no-cache-dir . \
    && magvit --help > /dev/null

FROM base AS runtime
# A numeric, non-root user: Kubernetes can only verify runAsNonRoot against a numeric USER.
RUN groupadd --gid 10001 magvit \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin magvit \
    && mkdir -p /data /checkpoints /opt/magvit \
    && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
# The shipped model; /checkpoints stays free as the mount point for other checkpoints.
COPY checkpoints/default /opt/magvit/checkpoints/default
COPY deploy/healthcheck.py /opt/magvit/healthcheck.py
# Caches go to /tmp so the root filesystem can be mounted read-only (Kubernetes, compose).
ENV PATH=/opt/venv/bin:$PATH \
    MAGVIT_HOST=0.0.0.0 \
    MAGVIT_PORT=8000 \
    MAGVIT_CHECKPOINT=/opt/magvit/checkpoints/default \
    MAGVIT_DATA_DIR=/data \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    TRITON_CACHE_DIR=/tmp/.cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/tmp/.cache/inductor \
    CUDA_CACHE_PATH=/tmp/.cache/nv
USER 10001:10001
WORKDIR /data
EXPOSE 8000
VOLUME ["/data"]
# Liveness of `serve` only: loading and warming the model may take minutes (start period), and
# readiness (/readyz) is for load balancers, not for restarting the container. A worker has no
# HTTP API: compose overrides this with `healthcheck.py /metrics 9100`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["/opt/venv/bin/python", "/opt/magvit/healthcheck.py", "/healthz"]
ENTRYPOINT ["magvit"]
CMD ["serve"]
