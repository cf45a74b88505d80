#!/usr/bin/env bash
# Compile and link the whole CUDA path (launchers + kernels + registration) against a
# CUDA-enabled torch in a throw-away venv, so code that only builds with CUDA cannot break
# unnoticed on machines without a GPU. Needs nvcc (/usr/local/cuda) and the registry; skips
# (exit 0, with a message) when either is missing, fails when the build fails.
set -uo pipefail
cd "$(dirname "$0")/.."
TORCH_CUDA=${TORCH_CUDA:-torch==2.14.1}
WORK=${WORK:-$(mktemp -d)}
if [ ! -x /usr/local/cuda/bin/nvcc ] && ! command -v nvcc >/dev/null; then
  echo "check_cuda_build: SKIPPED (no nvcc)"; exit 0
fi
python3 -m venv "$WORK/venv"
if ! "$WORK/venv/bin/pip" install -q "$TORCH_CUDA" "scikit-build-core>=0.10" ninja numpy >"$WORK/install.log" 2>&1; then
  echo "check_cuda_build: SKIPPED (could not install $TORCH_CUDA: $(tail -1 "$WORK/install.log"))"; exit 0
fi
if ! "$WORK/venv/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)"; then
  echo "check_cuda_build: SKIPPED ($TORCH_CUDA is not a CUDA build here)"; exit 0
fi
mkdir -p "$WORK/src" && cp -r CMakeLists.txt pyproject.toml README.md cmake csrc python "$WORK/src/"
if ! (cd "$WORK/src" && "$WORK/venv/bin/pip" wheel -q --no-build-isolation --no-deps . -w "$WORK/wheel" \
      -Cbuild-dir="$WORK/build" >"$WORK/build.log" 2>&1); then
  echo "check_cuda_build: FAILED to build against $TORCH_CUDA"; grep -E "error" "$WORK/build.log" | head -20; exit 1
fi
"$WORK/venv/bin/pip" install -q --no-deps "$WORK"/wheel/*.whl
"$WORK/venv/bin/python" - <<'PY' || exit 1
import torch, divaext
info = divaext.build_info()
assert info["cuda"] and info["cuda_kernels"] == "built", info
for op in ("gram", "gram_labels", "loo_rows", "loss_grad", "loss_rows", "loo_grad", "vjp_gram", "vjp_rows", "vjp_fit", "val_rows"):
    assert "CUDA: registered" in torch._C._dispatch_dump(f"divaext::{op}"), op
print("check_cuda_build: OK, CUDA ops built and registered against torch", torch.__version__,
      "for architectures", info["cuda_archs"])
PY
rm -rf "$WORK"
