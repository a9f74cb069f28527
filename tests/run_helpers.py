"""Shared by the end-to-end training tests: short demo configs and padded task-model inputs."""

from __future__ import annotations

import numpy as np


def short_demo(config_module, **overrides):
  """The module's `demo` preset, cut to 40 steps with small evaluations, plus `overrides`."""
  config = config_module.get_config("demo")
  config.unlock()
  config.update_from_flattened_dict({"total_steps": 40, "log_every_steps": 10,
                                     "eval.every_steps": 40, "eval.max_batches": 2,
                                     **overrides})
  return config


def padded_inputs(rows: int, length: int, seed: int, pad_id: int = 1, high: int = 700):
  """(input_ids, attention_mask): `<s> ... </s>` rows, each 3 tokens shorter than the last."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, high, (rows, length))
  ids[:, 0] = 0
  mask = np.ones_like(ids)
  for r in range(rows):
    cut = length - 3 * r
    ids[r, cut - 1], ids[r, cut:], mask[r, cut:] = 2, pad_id, 0
  return ids, mask
