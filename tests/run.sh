#!/usr/bin/env bash
# The project's test command: from a fresh clone, create .venv, install the pinned stack and the
# test-only needs, then run the test suite on one worker per core (at most 4). Each test file runs
# on one worker, so that its module fixtures are built once, and the files marked slow go first,
# in the order conftest.py gives them (not xdist's, by test count), so that none of them is left
# running alone at the end. Extra arguments go to pytest (`-n 0`: one process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh --test
exec .venv/bin/python -m pytest -n auto --maxprocesses=4 --dist loadfile --no-loadscope-reorder "$@"
