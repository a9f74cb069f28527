"""Mixture rates: proportional to train-split size, with temperature and a per-task cap.

Rates live on the registered seqio Mixture (size-proportional, as in the paper) and are recomputed
here with a run's options, so that inspection and the batch sampler agree.
"""

from __future__ import annotations

from typing import Sequence

import seqio

from muppet_jax.data.task_info import MuppetTask, get_task
from muppet_jax.errors import UserError


def size_rate(task: MuppetTask, temperature: float = 1.0, cap: int | None = None) -> float:
  """min(train_size, cap) ** (1 / temperature); temperature 1 and no cap is proportional."""
  if temperature <= 0:
    raise UserError(f"mixture temperature must be > 0, got {temperature}")
  size = min(task.info.train_size, cap) if cap else task.info.train_size
  return float(size) ** (1.0 / temperature)


def add_mixture(name: str, task_names: Sequence[str]) -> seqio.Mixture:
  for task in task_names:
    get_task(task)  # Fails early, with a clear message, on a typo.
  return seqio.MixtureRegistry.add(name, [(t, size_rate) for t in task_names])


def mixture_tasks(name: str) -> list[MuppetTask]:
  """The MuppetTasks of a mixture (or of a single task name)."""
  if name in seqio.MixtureRegistry.names():
    return [get_task(t.name) for t in seqio.MixtureRegistry.get(name).tasks]
  if name in seqio.TaskRegistry.names():
    return [get_task(name)]
  raise UserError(f"unknown mixture or task {name!r}. `python -m muppet_jax.inspect --list` "
                  "lists every registered task and mixture")


def rates(name: str, temperature: float = 1.0, cap: int | None = None) -> dict[str, float]:
  """Sampling probability of each task of mixture `name` (sums to 1)."""
  raw = {t.name: size_rate(t, temperature, cap) for t in mixture_tasks(name)}
  total = sum(raw.values())
  return {t: r / total for t, r in raw.items()}
