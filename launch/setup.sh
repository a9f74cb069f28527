#!/usr/bin/env bash
# Creates .venv in the repository and installs the pinned stack (CPU JAX) and the package.
# Usage: bash launch/setup.sh [--test]   (--test adds pytest and torch for the test suite)
# For TPU or NVIDIA GPUs, install the matching jax extra afterwards (see README.md, "Install").
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
requirements=(-r requirements.txt)
[ "${1:-}" = "--test" ] && requirements+=(-r requirements-test.txt)
.venv/bin/python -m pip install --quiet "${requirements[@]}" -e .
