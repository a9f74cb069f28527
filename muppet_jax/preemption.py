"""SIGTERM (how TPU VMs and most schedulers announce a preemption) as a flag the train loop polls,
so that it can save a checkpoint and stop at a step boundary."""

from __future__ import annotations

import signal
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


class Preemption:
  """A context that catches SIGTERM while it is open and puts the previous handler back when it
  closes (the run returns, or fails)."""

  def __init__(self):
    self._signalled = False
    self._previous: Any = None

  def __enter__(self) -> Preemption:
    self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc_info: Any) -> None:
    signal.signal(signal.SIGTERM, self._previous)

  def _handle(self, signum: int, frame: Any) -> None:
    del signum, frame
    self._signalled = True

  def requested(self) -> bool:
    """Whether any host got SIGTERM; all hosts must call this at the same steps."""
    if jax.process_count() == 1:
      return self._signalled
    return bool(multihost_utils.process_allgather(np.asarray(self._signalled)).any())
