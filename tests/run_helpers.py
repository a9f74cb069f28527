"""Shared by the end-to-end training tests: short demo configs, padded task-model inputs, and
the start-up noise that a run's log goes without."""

from __future__ import annotations

import re

import numpy as np

# What TensorFlow, CUDA, absl, jax, transformers and seqio print about themselves at start-up,
# which a run's log goes without.
START_NOISE = ("absl::InitializeLog", "oneDNN", "cudart_stub", "cuInit", "cpu_feature_guard",
               "PyTorch was not found", "FunctionDataset", "Unable to initialize backend")


def short_demo(config_module, **overrides):
  """The module's `demo` preset, cut to 40 steps with small evaluations, plus `overrides`."""
  config = config_module.get_config("demo")
  config.unlock()
  config.update_from_flattened_dict({"total_steps": 40, "log_every_steps": 10,
                                     "eval.every_steps": 40, "eval.max_batches": 2,
                                     **overrides})
  return config


def noise_lines(log: str) -> list[str]:
  """The lines of `log` that are start-up noise, or absl-format INFO and WARNING lines (orbax's
  on every save among them)."""
  return [line for line in log.splitlines()
          if re.match(r"[IW]\d{4} ", line) or any(n in line for n in START_NOISE)]


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
