#!/usr/bin/env bash
# One-step set-up into the active Python environment (use a fresh venv):
#   torch (only if none is installed: the CPU build 2.13.0), the build tools, then divaext
#   compiled against that torch, with the test and CLI extras. Safe to re-run: it rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
# The build uses the installed torch (no build isolation: an isolated build env would fetch
# another torch and build against the wrong one).
"$PY" -m pip install -q "scikit-build-core>=0.10" ninja numpy
"$PY" -m pip install -q --no-build-isolation -e ".[test,cli]"
"$PY" -c "import divaext, json; print('divaext', divaext.__version__, json.dumps(divaext.build_info()))"
