"""From a mixture's examples to static-shape, heterogeneous, packed batches.

`MixtureStream` draws tasks by the mixture's rates (numpy RNG), pulls the next example of the
drawn task from that task's own seqio dataset (sharded per host with `seqio.ShardInfo`), and packs
examples into rows first-fit:

- every sequence is a segment: `segment_ids` 1..S per row, 0 for padding, positions restart at 0;
- a multiple-choice example's choices are placed in the same batch (consecutive segments, possibly
  across rows) and share `seg_example`; if they don't all fit, the example waits for the next batch;
- each batch starts with the examples that didn't fit last time, then one example of every family
  of the mixture (so every batch is heterogeneous), then draws by rate until the batch is full;
- `packing=False` gives the plain padded mode: one sequence per row.

The stream is deterministic for a seed and a shard, and its position (the RNG, the waiting
examples, and the tf.data iterators) can be saved and restored exactly.

Batch arrays (B rows, L tokens, T target tokens, S segment slots per row):
  input_ids, segment_ids, positions                                 [B, L] int32
  target_ids, target_segment_ids                                    [B, T] int32 (summarization)
  seg_task, seg_head, seg_label, seg_start, seg_example, seg_choice [B, S] int32 (-1: empty)
  (seg_example: an id per example, unique across hosts, below hosts * B * S)
  seg_score                                                         [B, S] float32
  seg_span                                                          [B, S, 2] int32 (row positions)
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterator

import numpy as np
import seqio
import tensorflow as tf
from etils import epath

from muppet_jax.data import mixing
from muppet_jax.data.task_info import MuppetTask
from muppet_jax.errors import UserError
from muppet_jax.families import HeadLayout

Batch = dict[str, np.ndarray]
STATE_FILE = "stream_state.json"
ITERATORS_PREFIX = "iterators"
_MAX_MISSES = 4  # Draws that don't fit before a batch is called full.


@dataclasses.dataclass(frozen=True)
class StreamConfig:
  """What a stream of batches is made of; the same config and shard give the same batches."""

  mixture: str
  batch_size: int = 32  # Rows per host.
  max_length: int = 512  # Tokens per row (and the longest sequence).
  target_length: int = 128  # Decoder tokens per row, when the mixture has summarization.
  packing: bool = True
  max_segments: int = 16  # Sequences per packed row.
  split: str = "train"
  seed: int = 0
  temperature: float = 1.0  # Mixture rates ~ size ** (1 / temperature).
  rate_cap: int | None = None  # Cap on a task's size when computing rates.
  shared_heads: bool = True  # Multiple choice and span share one head per family.
  homogeneous: bool = False  # One task per batch (the paper's unstable ablation).
  exclude_families: tuple[str, ...] = ()  # E.g. summarization for encoder-only models.
  # Rows r with the same r % row_groups form a group (a microbatch of the train step); all of an
  # example's sequences go to one group, so a multiple-choice softmax never spans microbatches.
  row_groups: int = 1
  num_epochs: int | None = None  # None: repeat each task forever (training).
  shuffle: bool = True


@dataclasses.dataclass
class _Example:
  task: int
  sequences: list[np.ndarray]
  targets: np.ndarray
  label: int
  score: float
  span: np.ndarray


class MixtureStream(Iterator[Batch]):
  """Host-local stream of packed heterogeneous batches; see the module docstring."""

  def __init__(self, config: StreamConfig, shard: seqio.ShardInfo | None = None,
               layout: HeadLayout | None = None):
    """`layout` gives the heads (`seg_head` values), e.g. the training run's for evaluation;
    by default they are those of the stream's tasks."""
    self.config = config
    self.shard = shard or seqio.ShardInfo(index=0, num_shards=1)
    rates = mixing.rates(config.mixture, config.temperature, config.rate_cap)
    self.tasks = [t for t in mixing.mixture_tasks(config.mixture)
                  if t.info.family not in config.exclude_families]
    if not self.tasks:
      raise UserError(f"mixture {config.mixture!r} has no task outside the families "
                      f"{list(config.exclude_families)} that this model can't train")
    self.rates = np.asarray([rates[t.name] for t in self.tasks])
    self.rates = self.rates / self.rates.sum()
    self.task_heads = [t.task_head(config.shared_heads) for t in self.tasks]
    self.layout = layout or HeadLayout.for_tasks(self.task_heads)
    self._head_of = [self.layout.index(t.head) for t in self.task_heads]
    self.families = sorted({t.info.family for t in self.tasks})
    self._family_of = [self.families.index(t.info.family) for t in self.tasks]
    self.has_targets = "summarization" in self.families
    self.pad_id = self.tasks[0].output_features["inputs"].vocabulary.pad_id
    self._check()
    self._datasets = [self._dataset(i, t) for i, t in enumerate(self.tasks)]
    self._iterators = [iter(ds) for ds in self._datasets]
    self._rng = np.random.default_rng([config.seed, self.shard.index])
    self._waiting: list[_Example] = []
    self._exhausted = [False] * len(self.tasks)

  def _check(self) -> None:
    c = self.config
    vocabularies = {t.output_features["inputs"].vocabulary for t in self.tasks}
    if len(vocabularies) > 1:
      raise UserError(f"mixture {c.mixture!r} mixes tasks with different vocabularies")
    most_choices = max(t.info.num_classes if t.info.family == "multiple_choice" else 1
                       for t in self.tasks)
    if c.batch_size % c.row_groups:
      raise UserError(f"batch_size={c.batch_size} rows don't divide into {c.row_groups} "
                      "microbatches")
    slots = c.batch_size // c.row_groups * (c.max_segments if c.packing else 1)
    if slots < most_choices:
      raise UserError(f"a microbatch of {c.batch_size // c.row_groups} rows can't hold a "
                      f"{most_choices}-choice example; use at least {most_choices} rows per "
                      "microbatch")
    if c.max_segments < 1 or c.batch_size < 1:
      raise UserError("batch_size and max_segments must be at least 1")

  def _dataset(self, index: int, task: MuppetTask) -> tf.data.Dataset:
    c = self.config
    if c.split not in task.splits:
      raise UserError(f"task {task.name!r} has no split {c.split!r}; it has {list(task.splits)}")
    lengths = {"inputs": c.max_length, "targets": c.target_length}
    return task.get_dataset(lengths, split=c.split, shuffle=c.shuffle,
                            seed=(c.seed * 1_000_003 + index) % 2**31, shard_info=self.shard,
                            num_epochs=c.num_epochs, trim_output_features=False,
                            try_in_mem_cache=False).prefetch(2)

  # Drawing examples.

  def _next_example(self, task: int) -> _Example | None:
    if self._exhausted[task]:
      return None
    try:
      ex = next(self._iterators[task])
    except StopIteration:
      self._exhausted[task] = True
      return None
    inputs, lengths = ex["inputs"].numpy(), ex["input_lengths"].numpy()
    return _Example(task, np.split(inputs, np.cumsum(lengths)[:-1]), ex["targets"].numpy(),
                    int(ex["label"]), float(ex["score"]), ex["span"].numpy())

  def _draw(self, among: np.ndarray | None = None) -> _Example | None:
    live = np.array([not e for e in self._exhausted])
    if among is not None:
      live &= among
    if not live.any():
      return None
    p = np.where(live, self.rates, 0.0)
    return self._next_example(int(self._rng.choice(len(self.tasks), p=p / p.sum())))

  # Packing.

  def _new_batch(self) -> dict[str, Any]:
    c = self.config
    b, s = c.batch_size, (c.max_segments if c.packing else 1)
    t = c.target_length if self.has_targets else 0
    arrays = {
        "input_ids": np.full((b, c.max_length), self.pad_id, np.int32),
        "segment_ids": np.zeros((b, c.max_length), np.int32),
        "positions": np.zeros((b, c.max_length), np.int32),
        "target_ids": np.full((b, t), self.pad_id, np.int32),
        "target_segment_ids": np.zeros((b, t), np.int32),
        "seg_score": np.zeros((b, s), np.float32),
        "seg_span": np.full((b, s, 2), -1, np.int32),
    }
    for name in ("seg_task", "seg_head", "seg_label", "seg_start", "seg_example", "seg_choice"):
      arrays[name] = np.full((b, s), -1, np.int32)
    return {"arrays": arrays, "used": np.zeros(b, int), "used_targets": np.zeros(b, int),
            "segments": np.zeros(b, int), "examples": 0, "families": set()}

  def _fits(self, used: np.ndarray, used_targets: np.ndarray, segments: np.ndarray, row: int,
            length: int, targets: int) -> bool:
    c = self.config
    if not c.packing:
      return segments[row] == 0
    target_room = (c.target_length if self.has_targets else 0) - used_targets[row]
    return (segments[row] < c.max_segments and used[row] + length <= c.max_length
            and targets <= target_room)

  def _rows_for(self, batch, ex: _Example) -> list[int] | None:
    """Rows for each of the example's sequences, all in one row group; None if they don't fit."""
    groups = self.config.row_groups
    for group in range(groups):
      used, used_t, segs = (batch[k].copy() for k in ("used", "used_targets", "segments"))
      rows = []
      for seq in ex.sequences:
        row = next((r for r in range(group, self.config.batch_size, groups)
                    if self._fits(used, used_t, segs, r, len(seq), len(ex.targets))), None)
        if row is None:
          break
        rows.append(row)
        used[row] += len(seq)
        used_t[row] += len(ex.targets)
        segs[row] += 1
      if len(rows) == len(ex.sequences):
        return rows
    return None

  def _place(self, batch, ex: _Example) -> bool:
    """Places all of an example's sequences, or none of them."""
    rows = self._rows_for(batch, ex)
    if rows is None:
      return False
    # Ids unique across all hosts' batches, and below the global batch's number of segment slots.
    a = batch["arrays"]
    example_id = self.shard.index * a["seg_task"].size + batch["examples"]
    for choice, (seq, row) in enumerate(zip(ex.sequences, rows)):
      slot, start = batch["segments"][row], batch["used"][row]
      end = start + len(seq)
      a["input_ids"][row, start:end] = seq
      a["segment_ids"][row, start:end] = slot + 1
      a["positions"][row, start:end] = np.arange(len(seq))
      if len(ex.targets):
        t0 = batch["used_targets"][row]
        a["target_ids"][row, t0:t0 + len(ex.targets)] = ex.targets
        a["target_segment_ids"][row, t0:t0 + len(ex.targets)] = slot + 1
        batch["used_targets"][row] += len(ex.targets)
      a["seg_task"][row, slot] = ex.task
      a["seg_head"][row, slot] = self._head_of[ex.task]
      a["seg_label"][row, slot] = ex.label
      a["seg_score"][row, slot] = ex.score
      a["seg_start"][row, slot] = start
      a["seg_example"][row, slot] = example_id
      a["seg_choice"][row, slot] = choice
      if ex.span[0] >= 0:
        a["seg_span"][row, slot] = ex.span + start
      batch["used"][row] = end
      batch["segments"][row] += 1
    batch["examples"] += 1
    batch["families"].add(self._family_of[ex.task])
    return True

  def empty_batch(self) -> Batch:
    """A batch with no examples (all padding), of the stream's shapes."""
    return self._new_batch()["arrays"]

  def __next__(self) -> Batch:
    batch = self._new_batch()
    among = None
    if self.config.homogeneous:  # The whole batch from one task: a waiting one's, or a draw.
      task = self._waiting[0].task if self._waiting else int(
          self._rng.choice(len(self.tasks), p=self.rates))
      among = np.arange(len(self.tasks)) == task
    waiting, self._waiting = self._waiting, []
    for ex in waiting:
      if (among is not None and not among[ex.task]) or not self._place(batch, ex):
        self._waiting.append(ex)
    for family in range(len(self.families) if among is None else 0):
      if family in batch["families"]:  # One example of every family first.
        continue
      ex = self._draw(np.asarray(self._family_of) == family)
      if ex is not None and not self._place(batch, ex):
        self._waiting.append(ex)
    misses = 0
    while misses < _MAX_MISSES:
      ex = self._draw(among)
      if ex is None:
        break
      if not self._place(batch, ex):
        self._waiting.append(ex)
        misses += 1
    if batch["examples"] == 0:
      raise StopIteration
    return batch["arrays"]

  # Saving and restoring the position.

  def _checkpoint(self) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(**{f"task_{i}": it for i, it in enumerate(self._iterators)})

  def save(self, directory: str | os.PathLike) -> None:
    """Writes the stream's position under `directory` (which must exist; local or gs://)."""
    directory = epath.Path(directory)
    self._checkpoint().write(str(directory / ITERATORS_PREFIX))
    state = {
        "config": dataclasses.asdict(self.config),
        "shard": [self.shard.index, self.shard.num_shards],
        "rng": self._rng.bit_generator.state,
        "exhausted": self._exhausted,
        "waiting": [{"task": ex.task, "sequences": [s.tolist() for s in ex.sequences],
                     "targets": ex.targets.tolist(), "label": ex.label, "score": ex.score,
                     "span": ex.span.tolist()} for ex in self._waiting],
    }
    (directory / STATE_FILE).write_text(json.dumps(state))

  def restore(self, directory: str | os.PathLike) -> None:
    """Continues exactly where the stream saved under `directory` stopped."""
    directory = epath.Path(directory)
    state = json.loads((directory / STATE_FILE).read_text())
    if state["config"] != json.loads(json.dumps(dataclasses.asdict(self.config))) or state[
        "shard"] != [self.shard.index, self.shard.num_shards]:
      raise UserError(f"the input stream saved in {directory} was made with another data config "
                      "or shard; resume with the same data settings and host count")
    self._checkpoint().read(str(directory / ITERATORS_PREFIX)).assert_consumed()
    self._rng.bit_generator.state = state["rng"]
    self._exhausted = state["exhausted"]
    self._waiting = [
        _Example(w["task"], [np.asarray(s, np.int32) for s in w["sequences"]],
                 np.asarray(w["targets"], np.int32), w["label"], w["score"],
                 np.asarray(w["span"], np.int32)) for w in state["waiting"]]
