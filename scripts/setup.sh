#!/usr/bin/env bash
# Install medbalance (editable) into the current Python environment.
#   bash scripts/setup.sh          the package and its runtime dependencies
#   bash scripts/setup.sh --test   also the test tools (pytest, hypothesis, MONAI, torchmetrics)
# torch is installed only when it is missing, pinned so that pip takes the CPU build
# available locally instead of resolving "torch>=2.4" to the newest CUDA release.
# Override the pin with MEDBALANCE_TORCH (e.g. MEDBALANCE_TORCH="torch==2.5.1").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install --disable-pip-version-check --no-input -q "$@" 2>&1 | grep -v -e "Running pip as the 'root' user" -e "^$" || true; }

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing ${MEDBALANCE_TORCH:-torch==2.13.0}"
  pip_install "${MEDBALANCE_TORCH:-torch==2.13.0}"
fi
extras=""
if [ "${1:-}" = "--test" ]; then extras="[test]"; fi
echo "setup: installing medbalance${extras}"
pip_install -e ".${extras}"
# pip's own exit status is hidden by the filter above: check the result instead.
"$PY" -c "import torch, medbalance; print(f'setup: medbalance {medbalance.__version__}, torch {torch.__version__}')"
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
