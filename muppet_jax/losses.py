"""Multi-task losses, each example's divided by log n of its task (Muppet's loss scaling).

Per family: cross-entropy over the task's classes, MSE for regression, softmax cross-entropy over
an example's choices, the mean of start and end cross-entropy over the row's positions for spans,
and for summaries the label-smoothed cross-entropy of the LM head, averaged over the summary's
tokens. n is the task's number of classes, choices, candidate positions or vocabulary entries
(`TaskInfo`), so that with uniform predictions every task's scaled loss is 1. Regression's MSE is
left unscaled. The batch loss is the mean over examples (a multiple-choice example counts once,
not per choice).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from muppet_jax.errors import UserError
from muppet_jax.families import FAMILIES
from muppet_jax.models.heads import HeadOutputs, LMHeadInputs

if TYPE_CHECKING:  # The loss doesn't need seqio/TensorFlow (e.g. on accelerator benchmarks).
  from muppet_jax.data.task_info import MuppetTask


@dataclasses.dataclass(frozen=True)
class TaskTable:
  """Static per-task facts the loss needs, indexed like the stream's `seg_task`."""

  names: tuple[str, ...]
  families: tuple[int, ...]  # Index into FAMILIES.
  num_classes: tuple[int, ...]
  divisors: tuple[float, ...]  # log n, or 1 where scaling is off.
  label_smoothing: float = 0.1  # Of the summaries' cross-entropy (fairseq's default for BART).
  lm_chunk: int = 16  # Target positions whose LM logits are made at once (0: all).

  @classmethod
  def build(cls, tasks: Sequence[MuppetTask], max_length: int, vocab_size: int,
            scale_losses: bool = True, label_smoothing: float = 0.1,
            lm_chunk: int = 16) -> TaskTable:
    if lm_chunk < 0:
      raise UserError(f"lm_loss_chunk={lm_chunk}; give a number of summary positions, or 0 "
                      "for all at once")
    return cls(
        names=tuple(t.name for t in tasks),
        families=tuple(FAMILIES.index(t.info.family) for t in tasks),
        num_classes=tuple(t.info.num_classes for t in tasks),
        divisors=tuple(t.info.loss_divisor(max_length, vocab_size) if scale_losses else 1.0
                       for t in tasks),
        label_smoothing=label_smoothing, lm_chunk=lm_chunk)


def _cross_entropy(logits: jax.Array, label: jax.Array) -> jax.Array:
  """-log softmax(logits)[label] over the last axis. A label of -1 (a segment without one: padding,
  another family) reads class 0, and the caller masks it out. Other labels are never clipped: the
  input stream lets none outside its task's classes through (`readers.check_labels`), and one
  past the logits would make the loss NaN, not quietly another class's."""
  label = jnp.where(label == -1, 0, label)
  picked = jnp.take_along_axis(logits, label[..., None], axis=-1, mode="fill",
                               fill_value=jnp.nan)[..., 0]
  return jax.nn.logsumexp(logits, axis=-1) - picked


def choice_log_probs(scores: jax.Array, batch: Mapping[str, jax.Array], is_choice: jax.Array,
                     example_slots: int | None) -> tuple[jax.Array, jax.Array, int]:
  """Per segment, the log-probability of its choice under its example's softmax over choices;
  also each segment's example index (`n`, a dump slot, for non-choices) and `n`.

  `example_slots` bounds the example ids (the whole global batch's segment slots; by default
  this batch's, which is right unless it is a microbatch).
  """
  flat = scores.reshape(-1)
  n = example_slots or flat.shape[0]
  example = jnp.where(is_choice, batch["seg_example"], n).reshape(-1)
  top = jax.ops.segment_max(jnp.where(is_choice.reshape(-1), flat, -jnp.inf), example, n + 1)
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  lse = jnp.log(jax.ops.segment_sum(jnp.exp(flat - top[example]), example, n + 1)) + top
  return (flat - lse[example]).reshape(scores.shape), example.reshape(scores.shape), n


def per_example_sum(values: jax.Array, example: jax.Array, n: int) -> jax.Array:
  """Per segment: the sum of `values` over the segments of its example."""
  sums = jax.ops.segment_sum(values.reshape(-1), example.reshape(-1), n + 1)
  return sums[example]


def target_segment_mean(per_token: jax.Array, target_segment_ids: jax.Array,
                        num_segments: int) -> jax.Array:
  """[B, T] per target token -> [B, S]: the mean over each segment's target tokens."""
  slots = jnp.arange(num_segments) + 1
  member = (target_segment_ids[:, :, None] == slots).astype(jnp.float32)  # [B, T, S]
  total = jnp.einsum("bt,bts->bs", per_token, member)
  return total / jnp.maximum(member.sum(axis=1), 1.0)


def over_target_chunks(fn: Callable[..., jax.Array], arrays: Sequence[jax.Array],
                       chunk: int) -> jax.Array:
  """fn over `chunk` target positions at a time: `arrays` are [B, T, ...], `fn` maps their
  [B, chunk, ...] slices to [B, chunk]; the result is [B, T]. Each chunk is recomputed in the
  backward pass, so LM logits made inside `fn` exist for one chunk at a time, never
  [B, T, vocab] at once. `chunk` 0 (or >= T): one call over everything."""
  rows, length = arrays[0].shape[:2]
  if not chunk or chunk >= length:
    return fn(*arrays)
  pad = -length % chunk
  n = (length + pad) // chunk

  def split(x):  # [B, T, ...] -> [n, B, chunk, ...]: chunks along T; rows keep their sharding.
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    return jnp.moveaxis(x.reshape(rows, n, chunk, *x.shape[2:]), 1, 0)

  out = jax.lax.map(jax.checkpoint(lambda xs: fn(*xs)), [split(x) for x in arrays])
  return jnp.moveaxis(out, 0, 1).reshape(rows, n * chunk)[:, :length]


def lm_log_probs(lm: LMHeadInputs, hidden: jax.Array) -> jax.Array:
  """float32 log-softmax of the LM head over states [B, t, D], the vocabulary sharded like the
  logits of the whole head."""
  logits = nn.with_logical_constraint(
      lm.logits(hidden), ("activation_batch", "activation_length", "activation_vocab"))
  return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


def _summary_losses(lm: LMHeadInputs | None, batch: Mapping[str, jax.Array],
                    num_segments: int, smoothing: float, chunk: int) -> jax.Array:
  """Per segment: label-smoothed cross-entropy averaged over the summary's tokens."""
  if lm is None:
    return jnp.zeros(batch["seg_task"].shape, jnp.float32)

  def per_token(hidden, targets):
    log_probs = lm_log_probs(lm, hidden)
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return (1.0 - smoothing) * nll - smoothing * log_probs.mean(axis=-1)

  per_token = over_target_chunks(per_token, [lm.hidden, batch["target_ids"]], chunk)
  return target_segment_mean(per_token, batch["target_segment_ids"], num_segments)


class Segments(NamedTuple):
  """Per-segment facts of a batch, [B, S] each."""

  task: jax.Array  # Index into the TaskTable (0 for empty slots).
  family: jax.Array  # Index into FAMILIES.
  classes: jax.Array
  is_choice: jax.Array  # A choice of a multiple-choice example.
  is_example: jax.Array  # Counted as an example: not empty, not a non-first choice.


def segments(batch: Mapping[str, jax.Array], table: TaskTable) -> Segments:
  task = jnp.maximum(batch["seg_task"], 0)
  valid = batch["seg_task"] >= 0
  family = jnp.asarray(table.families, jnp.int32)[task]
  is_choice = valid & (family == FAMILIES.index("multiple_choice"))
  return Segments(task, family, jnp.asarray(table.num_classes, jnp.int32)[task], is_choice,
                  valid & (~is_choice | (batch["seg_choice"] == 0)))


def task_class_logits(outputs: HeadOutputs, classes: jax.Array) -> jax.Array:
  """float32 classification logits with the classes a segment's task lacks masked out."""
  logits = outputs.class_logits.astype(jnp.float32)
  return jnp.where(jnp.arange(logits.shape[-1]) < classes[..., None], logits, -1e30)


def scaled_per_example(per_family: Sequence[jax.Array], segs: Segments,
                       table: TaskTable) -> jax.Array:
  """Each segment's value from its family's entry of `per_family` (in FAMILIES order), divided
  by its task's divisor, 0 where the segment is not an example."""
  value = jnp.select([segs.family == i for i in range(len(FAMILIES))], list(per_family))
  value = value / jnp.asarray(table.divisors, jnp.float32)[segs.task]
  return jnp.where(segs.is_example, value, 0.0)


def per_example_losses(outputs: HeadOutputs, batch: Mapping[str, jax.Array], table: TaskTable,
                       example_slots: int | None = None
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(scaled loss, is-example mask, family index), each [B, S].

  A segment is an example unless it is a non-first choice of a multiple-choice example.
  """
  segs = segments(batch, table)
  # A choice's label is its example's answer, which may be past the class head's width.
  class_label = jnp.where(segs.family == FAMILIES.index("classification"), batch["seg_label"], -1)
  classification = _cross_entropy(task_class_logits(outputs, segs.classes), class_label)
  regression = (outputs.class_logits[..., 0].astype(jnp.float32) - batch["seg_score"]) ** 2
  log_probs, example, n = choice_log_probs(outputs.choice_scores.astype(jnp.float32), batch,
                                           segs.is_choice, example_slots)
  correct = batch["seg_choice"] == batch["seg_label"]
  choice = -per_example_sum(jnp.where(correct & segs.is_choice, log_probs, 0.0), example, n)
  span_logits = outputs.span_logits.astype(jnp.float32)
  span = 0.5 * (_cross_entropy(span_logits[..., 0], batch["seg_span"][..., 0]) +
                _cross_entropy(span_logits[..., 1], batch["seg_span"][..., 1]))
  summary = _summary_losses(outputs.lm, batch, segs.task.shape[1], table.label_smoothing,
                            table.lm_chunk)
  loss = scaled_per_example([classification, regression, choice, span, summary], segs, table)
  return loss, segs.is_example, segs.family


def _sum_names() -> list[str]:
  return ["loss_sum", "count"] + [f"{f}_{k}" for f in FAMILIES for k in ("loss_sum", "count")]


def zero_sums() -> dict[str, jax.Array]:
  """The accumulator `loss_sums` adds into (e.g. over microbatches)."""
  return {name: jnp.zeros((), jnp.float32) for name in _sum_names()}


def loss_sums(outputs: HeadOutputs, batch: Mapping[str, jax.Array], table: TaskTable,
              example_slots: int | None = None) -> dict[str, jax.Array]:
  """Sums and counts (overall and per family) whose ratio is the mean scaled loss."""
  loss, is_example, family = per_example_losses(outputs, batch, table, example_slots)
  sums = {"loss_sum": loss.sum(), "count": is_example.sum().astype(jnp.float32)}
  for i, name in enumerate(FAMILIES):
    in_family = is_example & (family == i)
    sums[f"{name}_loss_sum"] = jnp.where(in_family, loss, 0.0).sum()
    sums[f"{name}_count"] = in_family.sum().astype(jnp.float32)
  return sums


def family_means(sums: Mapping[str, np.ndarray | jax.Array]) -> dict[str, float]:
  """Mean loss overall and per family present, from (accumulated) sums."""
  out = {"loss": float(sums["loss_sum"]) / max(float(sums["count"]), 1.0)}
  for name in FAMILIES:
    if float(sums[f"{name}_count"]) > 0:
      out[f"loss/{name}"] = float(sums[f"{name}_loss_sum"]) / float(sums[f"{name}_count"])
  if "r3f_sum" in sums:  # The R3F penalty, per example like the loss.
    out["r3f"] = float(sums["r3f_sum"]) / max(float(sums["count"]), 1.0)
  return out
