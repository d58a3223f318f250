#!/usr/bin/env bash
# What the test suite needs beside Python packages: a Redis server binary (the queue tests start
# their own on a free port) and a Chromium for the playground's browser tests (Debian's package,
# driven by Playwright through its executable path). Idempotent.
set -u
if ! command -v redis-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing redis-server for the queue tests"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null 2>&1; } \
      || { echo "could not install redis-server" >&2; exit 1; }
  else
    echo "redis-server is missing and cannot be installed here" >&2
    exit 1
  fi
fi
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing chromium for the browser tests"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; } \
      || echo "could not install chromium: the browser tests will be skipped"
  else
    echo "no chromium and no way to install it here: the browser tests will be skipped"
  fi
fi
exit 0
