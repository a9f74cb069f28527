"""Each task's examples, block by block, tokenized live or read from the token cache.

A process reads the records i, i + P, i + 2P, ... of a task's split in source order (process i of
P; `seqio.ShardInfo`), in blocks of `block_size` records. Block b of an epoch is tokenized in one
call (live) or gathered from the cache, then shuffled within itself by a permutation seeded with
(seed, process, task, epoch, b). So a reader's position is three numbers, (epoch, block, examples
taken from it), and restoring one re-reads a single block: exact, and cheap, live or cached.
Blocks are read ahead on a thread pool, one per task, while the packer works. Every block's
labels are checked against its task's classes (`check_labels`) before the packer sees it.
"""

from __future__ import annotations

import concurrent.futures
import zlib
from typing import Iterator, Mapping

import numpy as np
import seqio
import tensorflow as tf

from muppet_jax.data import encoding, token_cache
from muppet_jax.data.encoding import Examples
from muppet_jax.data.task_info import MuppetTask
from muppet_jax.errors import UserError

Position = tuple[int, int, int]  # (epoch, block, examples taken from the block)


class LiveSource:
  """Blocks of a split's records (`MuppetTask.text_blocks`), tokenized by the Rust tokenizer."""

  cached = False

  def __init__(self, task: MuppetTask, split: str, lengths: Mapping[str, int],
               shard: seqio.ShardInfo, block_size: int, stop: int | None = None):
    self.task, self.split, self.lengths = task, split, dict(lengths)
    self.shard, self.block_size, self.stop = shard, block_size, stop

  def blocks(self, start: int) -> Iterator[Examples]:
    """Blocks start, start + 1, ... to the end of the split."""
    records = self.task.text_blocks(
        self.split, self.lengths, block_size=self.block_size, step=self.shard.num_shards,
        start=self.shard.index + self.shard.num_shards * start * self.block_size,
        stop=self.stop)
    encode = encoding.ENCODERS[self.task.info.family]
    while True:
      try:
        columns = next(records)
      except StopIteration:
        return
      except tf.errors.OpError as e:  # A bad file or row: the user's data, not a crash.
        raise UserError(f"reading the {self.split} split of task {self.task.name!r} failed: "
                        f"{' '.join(e.message.split())[:500]}") from e
      yield encode(self.task.vocabulary, columns, self.lengths)


class CachedSource:
  """The same blocks, from a `token_cache.CachedSplit`."""

  cached = True

  def __init__(self, cache: token_cache.CachedSplit, split: str, shard: seqio.ShardInfo,
               block_size: int, stop: int | None = None):
    self.cache, self.split, self.shard, self.block_size = cache, split, shard, block_size
    self.num_records = min(cache.num_records, stop) if stop is not None else cache.num_records

  def blocks(self, start: int) -> Iterator[Examples]:
    block = start
    while True:
      local = block * self.block_size + np.arange(self.block_size)
      index = self.shard.index + self.shard.num_shards * local
      index = index[index < self.num_records]
      if not len(index):
        return
      yield self.cache.records(index)
      block += 1


def source(task: MuppetTask, split: str, lengths: Mapping[str, int], shard: seqio.ShardInfo,
           block_size: int, cache_dir: str | None,
           stop: int | None = None) -> LiveSource | CachedSource:
  """The cached split where `cache_dir` has it (and it matches this run), live otherwise; only
  its records before `stop` (None: all)."""
  cached = token_cache.open_split(cache_dir, task, split, lengths) if cache_dir else None
  if cached is None:
    return LiveSource(task, split, lengths, shard, block_size, stop)
  return CachedSource(cached, split, shard, block_size, stop)


def check_labels(task: MuppetTask, split: str, examples: Examples) -> None:
  """Every label of a block is one of the task's classes (choices), every regression score
  finite: the loss takes them as they are. Rows of files are checked as they are parsed; this
  holds the rest (task modules, formatters, token caches) to it."""
  family, n = task.info.family, task.info.num_classes
  if family in ("classification", "multiple_choice"):
    kind = "choices" if family == "multiple_choice" else "classes"
    field, values, allowed = "label", examples.label, f"in 0..{n - 1} ({n} {kind})"
    bad = (values < 0) | (values >= n)
  elif family == "regression":
    field, values, allowed = "score", examples.score, "finite"
    bad = ~np.isfinite(values)
  else:
    return
  if bad.any():
    raise UserError(f"task {task.name!r}: a {split} example has {field} {values[bad][0]}, not "
                    f"{allowed}; fix the task's data or its formatter")


class TaskReader:
  """One task's examples as packer rows (`Examples.rows`), from shuffled blocks."""

  def __init__(self, index: int, task: MuppetTask, source: LiveSource | CachedSource, *,
               seed: int, shuffle: bool, num_epochs: int | None,
               pool: concurrent.futures.Executor):
    self.index, self.task, self.source = index, task, source
    self.seed, self.shuffle, self.num_epochs, self.pool = seed, shuffle, num_epochs, pool
    self._key = zlib.crc32(task.name.encode())  # Not the mixture index: adding tasks keeps it.
    self.exhausted = False
    self.seek((0, 0, 0))

  @property
  def position(self) -> Position:
    return self.epoch, self.block, self.taken

  def seek(self, position: Position) -> None:
    """Continues from `position` (blocks are read again from there)."""
    if hasattr(self, "_next"):
      self._next.cancel()
    self.epoch, self.block, self.taken = position
    self._epoch_start, self._epoch_examples = self.block, 0
    self._rows: list[tuple] | None = None
    self.exhausted = self.num_epochs is not None and self.epoch >= self.num_epochs
    self._blocks = iter(()) if self.exhausted else self.source.blocks(self.block)
    self._next = self.pool.submit(self._read, self._blocks, self.epoch, self.block)

  def _read(self, blocks: Iterator[Examples], epoch: int, block: int) -> list[tuple] | None:
    examples = next(blocks, None)
    if examples is None:
      return None
    check_labels(self.task, self.source.split, examples)
    if self.shuffle:
      rng = np.random.default_rng([self.seed, self.source.shard.index, self._key, epoch, block])
      examples = examples.take(rng.permutation(len(examples)))
    return examples.rows(self.index)

  def next(self) -> tuple | None:
    """The next example's row; None once `num_epochs` epochs are read."""
    while not self.exhausted:
      if self._rows is None:
        self._rows = self._next.result()
        if self._rows is None:
          self._end_of_epoch()
          continue
        self._next = self.pool.submit(self._read, self._blocks, self.epoch, self.block + 1)
      if self.taken < len(self._rows):
        self.taken += 1
        self._epoch_examples += 1
        return self._rows[self.taken - 1]
      self.block, self.taken, self._rows = self.block + 1, 0, None
    return None

  def _end_of_epoch(self) -> None:
    if self._epoch_examples == 0 and self._epoch_start == 0 and self.num_epochs is None:
      shard = self.source.shard
      part = f" (process {shard.index} of {shard.num_shards})" if shard.num_shards > 1 else ""
      raise UserError(f"task {self.task.name!r} has no {self.source.split} examples{part}")
    self.seek((self.epoch + 1, 0, 0))

  def close(self) -> None:
    self._next.cancel()
