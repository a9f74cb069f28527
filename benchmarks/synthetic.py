"""Synthetic heterogeneous packed batches for the step benchmarks, and their timing loop (no
seqio, no TensorFlow, so they run on accelerator images without them)."""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import numpy as np

from muppet_jax import losses
from muppet_jax.families import HeadLayout

# Synthetic tasks: (family index, classes, head kind) - three classification datasets (one of
# them regression), one multiple-choice, one span and one summarization task.
TASKS = [(0, 3, "classification"), (0, 2, "classification"), (1, 1, "classification"),
         (2, 4, "multiple_choice"), (3, 1, "span"), (4, 1, "lm")]
ENCODER_TASKS = TASKS[:-1]  # Encoders have no decoder to summarize with.


def synthetic_batch(rows: int, length: int, target_length: int, segments: int, vocab: int,
                    tasks: list = TASKS, seed: int = 0) -> dict[str, np.ndarray]:
  """Rows packed with `segments` sequences each, cycling through `tasks`; summaries' targets
  fill the target rows."""
  rng = np.random.default_rng(seed)
  b = {k: np.full((rows, segments), -1, np.int32) for k in
       ("seg_task", "seg_head", "seg_label", "seg_start", "seg_example", "seg_choice")}
  b["seg_score"] = np.zeros((rows, segments), np.float32)
  b["seg_span"] = np.full((rows, segments, 2), -1, np.int32)
  b["input_ids"] = rng.integers(3, vocab, (rows, length)).astype(np.int32)
  b["segment_ids"] = np.zeros((rows, length), np.int32)
  b["target_ids"] = rng.integers(3, vocab, (rows, target_length)).astype(np.int32)
  b["target_segment_ids"] = np.zeros((rows, target_length), np.int32)
  seg_len = length // segments
  example = 0
  for r in range(rows):
    for s in range(segments):
      task = (r * segments + s) % len(tasks)
      family, classes, _ = tasks[task]
      start = s * seg_len
      b["segment_ids"][r, start:start + seg_len] = s + 1
      b["seg_task"][r, s], b["seg_head"][r, s], b["seg_start"][r, s] = task, task, start
      b["seg_label"][r, s] = rng.integers(classes)
      b["seg_example"][r, s], b["seg_choice"][r, s] = example, 0
      if family == 3:
        b["seg_span"][r, s] = [start + 2, start + 5]
      if family == 4 and not b["target_segment_ids"][r].any():
        b["target_segment_ids"][r, :] = s + 1  # One summary per row fills its target tokens.
      example += 1
  return b


def layout(tasks: list = TASKS) -> HeadLayout:
  return HeadLayout(tuple(f"task_{i}" for i in range(len(tasks))),
                    tuple(kind for _, _, kind in tasks), max(c for _, c, _ in tasks))


def task_table(tasks: list = TASKS, lm_chunk: int = 16) -> losses.TaskTable:
  return losses.TaskTable(tuple(f"task_{i}" for i in range(len(tasks))),
                          tuple(f for f, _, _ in tasks), tuple(c for _, c, _ in tasks),
                          tuple(float(np.log(max(c, 2))) for _, c, _ in tasks),
                          lm_chunk=lm_chunk)


def time_steps(step: Callable, train_state: Any, batch: Any, warmup: int,
               steps: int) -> tuple[float, Any, dict]:
  """Seconds per call of `step(train_state, batch)` over `steps` calls after `warmup` untimed
  ones; with the last state and metrics."""
  for _ in range(warmup):
    train_state, metrics = step(train_state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    train_state, metrics = step(train_state, batch)
  jax.block_until_ready(metrics)
  return (time.perf_counter() - start) / steps, train_state, metrics
