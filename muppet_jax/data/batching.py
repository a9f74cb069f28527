"""From a mixture's examples to static-shape, heterogeneous, packed batches.

`MixtureStream` draws tasks by the mixture's rates, takes the next example of the drawn task from
that task's reader (`readers.TaskReader`: this process's shard of the task, tokenized live or read
from the token cache, shuffled in blocks), and packs examples into rows first-fit:

- every sequence is a segment: `segment_ids` 1..S per row, 0 for padding, positions restart at 0;
- a multiple-choice example's choices are placed in the same batch (consecutive segments, possibly
  across rows) and share `seg_example`; if they don't all fit, the example waits for the next batch;
- each batch starts with the examples that didn't fit last time, then one example of every family
  of the mixture (so every batch is heterogeneous), then draws by rate until the batch is full;
- `packing=False` gives the plain padded mode: one sequence per row.

The stream is deterministic for a seed and a shard, cached or live, and its position (the RNG,
each reader's position, the waiting examples) is saved and restored exactly. Batches are made
ahead on a background thread (`ahead` of them ready); an error there is raised by `next`, and
`close()` (or leaving a `with` block) stops the thread and the readers.

Batch arrays (B rows, L tokens, T target tokens, S segment slots per row):
  input_ids, segment_ids, positions                                 [B, L] int32
  target_ids, target_segment_ids                                    [B, T] int32 (summarization)
  seg_task, seg_head, seg_label, seg_start, seg_example, seg_choice [B, S] int32 (-1: empty)
  (seg_example: an id per example, unique across hosts, below hosts * B * S)
  seg_score                                                         [B, S] float32
  seg_span                                                          [B, S, 2] int32 (row positions)
"""

from __future__ import annotations

import atexit
import bisect
import concurrent.futures
import dataclasses
import itertools
import json
import math
import os
import queue
import random
import threading
import weakref
from typing import Any, Iterator

import numpy as np
import seqio
from etils import epath

from muppet_jax.data import mixing, packing, readers
from muppet_jax.errors import UserError
from muppet_jax.families import HeadLayout

Batch = dict[str, np.ndarray]
STATE_FILE = "stream_state.json"
STATE_FORMAT = 2
_MAX_MISSES = 4  # Draws that don't fit before a batch is called full.
_END = object()
_open_streams: weakref.WeakSet[MixtureStream] = weakref.WeakSet()


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
  # The train split's first ceil(fraction x TaskInfo.train_size) records only, for every task
  # (sample-efficiency runs); rates stay those of the whole splits.
  train_fraction: float = 1.0
  shuffle: bool = True
  block_size: int = 1024  # Records per tokenization call and shuffle block.


@dataclasses.dataclass
class _Failure:
  error: BaseException


class MixtureStream(Iterator[Batch]):
  """Host-local stream of packed heterogeneous batches; see the module docstring."""

  def __init__(self, config: StreamConfig, shard: seqio.ShardInfo | None = None,
               layout: HeadLayout | None = None, cache_dir: str | None = None, ahead: int = 4):
    """`layout` gives the heads (`seg_head` values), e.g. the training run's for evaluation;
    by default they are those of the stream's tasks. `cache_dir`: a token cache to read the
    tasks it holds from. `ahead`: batches made ahead on a thread (0: made in `next`)."""
    self.config, self.ahead = config, ahead
    self.shard = shard or seqio.ShardInfo(index=0, num_shards=1)
    rates = mixing.rates(config.mixture, config.temperature, config.rate_cap)
    self.tasks = [t for t in mixing.mixture_tasks(config.mixture)
                  if t.info.family not in config.exclude_families]
    if not self.tasks:
      raise UserError(f"mixture {config.mixture!r} has no task outside the families "
                      f"{list(config.exclude_families)} that this model can't train")
    self.rates = [rates[t.name] for t in self.tasks]
    self.task_heads = [t.task_head(config.shared_heads) for t in self.tasks]
    self.layout = layout or HeadLayout.for_tasks(self.task_heads)
    self.families = sorted({t.info.family for t in self.tasks})
    self._family_of = [self.families.index(t.info.family) for t in self.tasks]
    self.has_targets = "summarization" in self.families
    self.pad_id = self.tasks[0].vocabulary.pad_id
    self._check()
    c = config
    self._shape = packing.Shape(c.batch_size, c.max_length,
                                c.target_length if self.has_targets else 0,
                                c.max_segments if c.packing else 1, c.packing, c.row_groups)
    self._head_of = [self.layout.index(t.head) for t in self.task_heads]
    self._pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="muppet_jax-read")
    lengths = {"inputs": c.max_length, "targets": c.target_length}
    sources = [readers.source(t, c.split, lengths, self.shard, c.block_size, cache_dir,
                              self._stop(t)) for t in self.tasks]
    self.live_tasks = [t.name for t, s in zip(self.tasks, sources) if not s.cached]
    self._readers = [readers.TaskReader(i, t, s, seed=c.seed, shuffle=c.shuffle,
                                        num_epochs=c.num_epochs, pool=self._pool)
                     for i, (t, s) in enumerate(zip(self.tasks, sources))]
    self._rng = random.Random(c.seed * 1_000_003 + self.shard.index)
    self._waiting: list[tuple] = []
    self._draw_tables: dict[Any, tuple[list[int], list[float]]] = {}
    self._thread: threading.Thread | None = None
    self._failure: BaseException | None = None
    self._ended = False
    self.position = self._snapshot()  # Of the last batch `next` returned.
    _open_streams.add(self)

  def _stop(self, task: Any) -> int | None:
    """Where `task`'s records end for this stream: the train fraction's, or None (all)."""
    if self.config.split != "train" or self.config.train_fraction == 1:
      return None
    return math.ceil(self.config.train_fraction * task.info.train_size)

  def _check(self) -> None:
    c = self.config
    if not 0 < c.train_fraction <= 1:
      raise UserError(f"train_fraction={c.train_fraction} must be in (0, 1]")
    vocabularies = {t.vocabulary for t in self.tasks}
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
    if c.max_segments < 1 or c.batch_size < 1 or c.block_size < 1:
      raise UserError("batch_size, max_segments and block_size must be at least 1")

  # Drawing examples.

  def _pool_of(self, key: Any) -> tuple[list[int], list[float]]:
    """The live tasks that a draw with `key` (None: any; ("family", f); ("task", t)) picks
    from, with their cumulative rates."""
    if key not in self._draw_tables:
      tasks = [t for t, r in enumerate(self._readers) if not r.exhausted and (
          key is None or (key[0] == "family" and self._family_of[t] == key[1])
          or (key[0] == "task" and t == key[1]))]
      self._draw_tables[key] = tasks, list(itertools.accumulate(self.rates[t] for t in tasks))
    return self._draw_tables[key]

  def _pick(self, key: Any = None) -> int | None:
    tasks, cumulative = self._pool_of(key)
    if not tasks:
      return None
    return tasks[min(bisect.bisect_right(cumulative, self._rng.random() * cumulative[-1]),
                     len(tasks) - 1)]

  def _draw(self, key: Any = None) -> tuple | None:
    while (task := self._pick(key)) is not None:
      ex = self._readers[task].next()
      if ex is not None:
        return ex
      self._draw_tables.clear()  # The task ran out (evaluation): draw among the others.
    return None

  # Making batches.

  def _builder(self) -> packing.BatchBuilder:
    # Example ids unique across hosts: each host's below its own multiple of the slot count.
    slots = self._shape.batch_size * self._shape.max_segments
    return packing.BatchBuilder(self._shape, self._head_of, self._family_of, self.pad_id,
                                example_base=self.shard.index * slots)

  def empty_batch(self) -> Batch:
    """A batch with no examples (all padding), of the stream's shapes."""
    return self._builder().arrays()

  def _make_batch(self) -> Batch | None:
    batch = self._builder()
    key = None
    if self.config.homogeneous:  # The whole batch from one task: a waiting one's, or a draw.
      key = ("task", self._waiting[0][0] if self._waiting else self._pick())
    waiting, self._waiting = self._waiting, []
    for ex in waiting:
      if (key is not None and ex[0] != key[1]) or not batch.place(ex):
        self._waiting.append(ex)
    for family in range(len(self.families) if key is None else 0):
      if family in batch.families:  # One example of every family first.
        continue
      ex = self._draw(("family", family))
      if ex is not None and not batch.place(ex):
        self._waiting.append(ex)
    misses = 0
    while misses < _MAX_MISSES:
      ex = self._draw(key)
      if ex is None:
        break
      if not batch.place(ex):
        self._waiting.append(ex)
        misses += 1
    return batch.arrays() if batch.examples else None

  def _snapshot(self) -> dict[str, Any]:
    return {"rng": self._rng.getstate(), "readers": [r.position for r in self._readers],
            "waiting": list(self._waiting)}

  def _produce(self) -> tuple[Batch, dict[str, Any]] | object:
    batch = self._make_batch()
    return _END if batch is None else (batch, self._snapshot())

  # The background producer.

  def _run(self, stop: threading.Event, ready: queue.Queue) -> None:
    try:
      while not stop.is_set():
        item = self._produce()
        while not stop.is_set():
          try:
            ready.put(item, timeout=0.1)
            break
          except queue.Full:
            pass
        if item is _END:
          return
    except BaseException as e:  # noqa: BLE001  (handed to the consumer, which raises it)
      ready.put(_Failure(e))

  def _start(self) -> None:
    self._stop, self._ready = threading.Event(), queue.Queue(maxsize=self.ahead)
    self._thread = threading.Thread(target=self._run, args=(self._stop, self._ready),
                                    name="muppet_jax-batches", daemon=True)
    self._thread.start()

  def _stop_producer(self) -> None:
    if self._thread is None:
      return
    self._stop.set()
    while self._thread.is_alive():
      try:  # Unblocks a producer waiting to hand over a batch.
        self._ready.get(timeout=0.1)
      except queue.Empty:
        pass
    self._thread = None

  def _next_item(self) -> Any:
    if not self.ahead:
      return self._produce()
    if self._thread is None:
      self._start()
    while True:
      try:
        return self._ready.get(timeout=1.0)
      except queue.Empty:
        if not self._thread.is_alive():
          return _Failure(RuntimeError("the input stream's producer thread ended unexpectedly"))

  def __next__(self) -> Batch:
    if self._failure is not None:
      raise self._failure
    if self._ended:
      raise StopIteration
    try:
      item = self._next_item()
    except Exception as e:  # noqa: BLE001  (made without a thread: reported the same way)
      item = _Failure(e)
    if isinstance(item, _Failure):
      error = item.error
      if not isinstance(error, UserError):
        error = RuntimeError(f"the input stream failed: {type(error).__name__}: {error}")
        error.__cause__ = item.error
      self._failure = error
      self.close()
      raise error
    if item is _END:
      self._ended = True
      raise StopIteration
    batch, self.position = item
    return batch

  def close(self) -> None:
    """Stops the producer thread and the readers; the stream can't be used afterwards."""
    self._stop_producer()
    for reader in self._readers:
      reader.close()
    self._pool.shutdown(wait=True, cancel_futures=True)
    _open_streams.discard(self)

  def __enter__(self) -> MixtureStream:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()

  # Saving and restoring the position.

  def save(self, directory: str | os.PathLike) -> None:
    """Writes the position after the last batch `next` returned under `directory` (which must
    exist; local or gs://)."""
    p = self.position
    state = {
        "format": STATE_FORMAT,
        "config": dataclasses.asdict(self.config),
        "shard": [self.shard.index, self.shard.num_shards],
        "rng": p["rng"],
        "readers": p["readers"],
        "waiting": [{"task": ex[0], "lengths": list(ex[1]),
                     "tokens": ex[2][ex[3]:ex[3] + sum(ex[1])].tolist(),
                     "targets": ex[4][ex[5]:ex[5] + ex[6]].tolist(), "label": ex[7],
                     "score": ex[8], "span": [ex[9], ex[10]]} for ex in p["waiting"]],
    }
    (epath.Path(directory) / STATE_FILE).write_text(json.dumps(state))

  def restore(self, directory: str | os.PathLike) -> bool:
    """Continues exactly where the stream saved under `directory` stopped. False (and the
    stream starts afresh) for a position that can't be continued: saved by muppet_jax before the
    block readers, or by a run on another number of hosts (its shards were other ones)."""
    directory = epath.Path(directory)
    state = json.loads((directory / STATE_FILE).read_text())
    if state.get("format") != STATE_FORMAT or state["shard"][1] != self.shard.num_shards:
      return False
    # Positions saved before a field existed were made with its default.
    defaults = {f.name: f.default for f in dataclasses.fields(StreamConfig)
                if f.default is not dataclasses.MISSING}
    saved = {**json.loads(json.dumps(defaults)), **state["config"]}
    if saved != json.loads(json.dumps(dataclasses.asdict(self.config))) or state[
        "shard"][0] != self.shard.index:
      raise UserError(f"the input stream saved in {directory} was made with another data config "
                      "or shard; resume with the same data settings")
    self._stop_producer()
    version, internal, gauss = state["rng"]
    self._rng.setstate((version, tuple(internal), gauss))
    for reader, position in zip(self._readers, state["readers"]):
      reader.seek(tuple(position))
    self._draw_tables.clear()
    self._waiting = [(w["task"], tuple(w["lengths"]), np.asarray(w["tokens"], np.int32), 0,
                      np.asarray(w["targets"], np.int32), 0, len(w["targets"]), w["label"],
                      w["score"], *w["span"]) for w in state["waiting"]]
    self._ended, self.position = False, self._snapshot()
    return True


@atexit.register
def _close_open_streams() -> None:
  """Streams left open stop their threads before the interpreter (and TensorFlow) goes."""
  for stream in list(_open_streams):
    stream.close()
