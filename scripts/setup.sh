#!/usr/bin/env bash
# Set up Easel in ./.venv (idempotent). `--dev` adds the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# The CPU build of torch lies on this machine's disk; pin it first so nothing pulls CUDA.
if ! .venv/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
fi
EXTRA=""
[ "${1:-}" = "--dev" ] && EXTRA="[dev]"
STAMP=".venv/.easel-installed$EXTRA"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e ".$EXTRA"
  touch "$STAMP"
fi
