"""Shared plumbing of the command-line entry points: user mistakes as one-line errors."""

from __future__ import annotations

import sys
from typing import Callable

from muppet_jax.errors import UserError


def run(main: Callable[[list[str]], int], argv: list[str] | None = None) -> None:
  """Runs `main`, turning a UserError into `error: ...` on stderr and exit status 2."""
  try:
    sys.exit(main(sys.argv[1:] if argv is None else argv))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
