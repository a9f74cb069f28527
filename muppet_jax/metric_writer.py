"""Where metrics go, from process 0 only: TensorBoard summaries and `metrics.jsonl` (one JSON
object per logged step or evaluation: `step`, the training loss as `loss`, every other metric
under a stable name such as `loss/span`, `eval/glue_mnli/accuracy`, `eval/family/span`). A
non-finite value is written as null and named in the record's `nonfinite` list (TensorBoard
leaves it out)."""

from __future__ import annotations

import json
import math
import os
from typing import Mapping

import jax
import tensorflow as tf
from etils import epath


class MetricWriter:
  def __init__(self, workdir: str | os.PathLike):
    self.enabled = jax.process_index() == 0
    workdir = epath.Path(workdir)  # Local, or gs://.
    self.jsonl = workdir / "metrics.jsonl"
    self.tensorboard_dir = workdir / "tensorboard"
    self._summary = tf.summary.create_file_writer(str(self.tensorboard_dir)) if self.enabled \
        else None

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in metrics.items()}
    clean = {k: v for k, v in values.items() if math.isfinite(v)}
    # Strict JSON has no NaN or Infinity: a non-finite value is null, and named.
    record = {"step": int(step), **{k: clean.get(k) for k in values}}
    nonfinite = sorted(values.keys() - clean.keys())
    if nonfinite:
      record["nonfinite"] = nonfinite
    with self.jsonl.open("a") as f:
      f.write(json.dumps(record, sort_keys=True, allow_nan=False) + "\n")
    with self._summary.as_default(step=int(step)):
      for name, value in clean.items():
        tf.summary.scalar(name, value)
    self._summary.flush()

  def close(self) -> None:
    if self._summary is not None:
      self._summary.close()
