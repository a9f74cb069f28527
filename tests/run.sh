#!/usr/bin/env bash
# The project's test command: from a fresh clone, create .venv, install the pinned stack and the
# test-only needs, then run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt -r requirements-test.txt -e .
exec .venv/bin/python -m pytest "$@"
