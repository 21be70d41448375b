#!/usr/bin/env bash
# Create ./.venv and install tensordas into it.
# torch is pinned to one version first (TORCH_VERSION): an open `torch` requirement could pull a newer
# multi-GB CUDA build. pip takes whichever build of that version the configured index serves.
# Usage: bash scripts/setup.sh [EXTRAS]     e.g. `bash scripts/setup.sh test`
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
extras="${1:-}"
"${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==${TORCH_VERSION}"
if [ -n "$extras" ]; then
  .venv/bin/python -m pip install -q -e ".[${extras}]"
else
  .venv/bin/python -m pip install -q -e .
fi
