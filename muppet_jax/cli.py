"""Shared plumbing of the command-line entry points: one-line errors, quiet logs."""

from __future__ import annotations

import os
import sys
from typing import Callable

from muppet_jax.errors import UserError


def run(main: Callable[[list[str]], int], argv: list[str] | None = None) -> None:
  """Runs `main`, turning a UserError into `error: ...` on stderr and exit status 2."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    sys.exit(main(sys.argv[1:] if argv is None else argv))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
