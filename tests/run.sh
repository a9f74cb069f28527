#!/usr/bin/env bash
# The project's test command: from a fresh clone, create .venv, install the pinned stack and the
# test-only needs, then run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh --test
exec .venv/bin/python -m pytest "$@"
