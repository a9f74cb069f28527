"""The token cache: every split of every task tokenized once, read back without a tokenizer.

Layout, per task and split (local disk or gs://):

  CACHE/TASK/SPLIT/info.json        the fingerprint, and records per shard
  CACHE/TASK/SPLIT/shard-00003/     records [3 S, 4 S) in source order: one .npy per
                                    `encoding.Examples` field, and done.json (its counts, and
                                    whether it is the last shard)

Shards are written whole (into a temporary directory, then renamed), so a build that stops
resumes at the first missing shard, and many processes can build at once, each taking every
n-th shard. The fingerprint names the vocabulary, the lengths, the encoder version and the
task's source and formatters (their configuration and source code); a reader whose run would
tokenize differently refuses the cache and says how to rebuild it. A stream reads block b of
process i of P from the records i, i + P, ... of the source order, as it does live, so the cached
and the live stream yield the same batches.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
import uuid
from typing import Any, Mapping

import numpy as np
import seqio
from etils import epath

from muppet_jax.data import encoding, records
from muppet_jax.data.encoding import Examples
from muppet_jax.data.task_info import MuppetTask
from muppet_jax.errors import UserError

FORMAT = 1
RECORDS_PER_SHARD = 32_768
INFO = "info.json"
DONE = "done.json"
BUILD_COMMAND = "python -m muppet_jax.cache --config=CONFIG --out={}"


def _sha(text: str) -> str:
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _describe(x: Any, depth: int = 0) -> str:
  """A stable description of a source or formatter: configuration, and the source code of the
  functions involved (so that editing a formatter invalidates its caches)."""
  if depth > 8:
    return type(x).__qualname__
  d = functools.partial(_describe, depth=depth + 1)
  if isinstance(x, functools.partial):
    return f"partial({d(x.func)}, {d(x.args)}, {d(x.keywords)})"
  if inspect.ismethod(x):
    return d(x.__func__)
  if inspect.isfunction(x):
    try:
      code = _sha(inspect.getsource(x))
    except (OSError, TypeError):
      code = "?"
    cells = []
    for cell in x.__closure__ or ():
      try:
        cells.append(cell.cell_contents)
      except ValueError:  # An empty cell.
        pass
    return f"{x.__module__}.{x.__qualname__}#{code}({d(cells)}, {d(x.__defaults__)})"
  if isinstance(x, seqio.TfdsDataSource):
    return f"tfds({x.tfds_dataset.name}, {d(dict(x.splits))})"
  if isinstance(x, records.PythonSource):
    # The rows it leaves out (data.bad_rows=skip) are records the cache doesn't hold.
    skipped = f", skipped {_sha(repr(sorted((k, sorted(v)) for k, v in x.skipped.items())))}"
    return f"python_source({d(x.items)}, {d(x.parse)}{skipped if x.skipped else ''})"
  if isinstance(x, seqio.FunctionDataSource):
    inner = getattr(x, "sources", None)
    return f"function_source({d(x._dataset_fn)}, {d(inner)})"  # noqa: SLF001
  if dataclasses.is_dataclass(x) and not isinstance(x, type):  # E.g. a reader of rows.
    fields = {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}
    return f"{type(x).__qualname__}({d(fields)})"
  if isinstance(x, (list, tuple)):
    return "[" + ", ".join(map(d, x)) + "]"
  if isinstance(x, Mapping):
    return "{" + ", ".join(f"{k!r}: {d(v)}" for k, v in sorted(x.items(), key=str)) + "}"
  if isinstance(x, str) and os.path.isfile(x):  # A data file: its size and time too.
    stat = os.stat(x)
    return f"file({x!r}, {stat.st_size}, {stat.st_mtime_ns})"
  if isinstance(x, (str, bytes, int, float, bool, type(None))):
    return repr(x)
  return type(x).__qualname__


def fingerprint(task: MuppetTask, split: str, lengths: Mapping[str, int]) -> dict[str, str]:
  """What the tokens of `task`'s `split` depend on, component by component."""
  vocabulary = task.vocabulary
  summarization = task.info.family == "summarization"
  return {
      "format": f"{FORMAT}.{encoding.ENCODER_VERSION}",
      "task": f"{task.name}/{split} ({task.info.family})",
      "lengths": f"inputs {lengths['inputs']}" + (
          f", targets {lengths['targets']}" if summarization else ""),
      # Not the shared tokenizer's own string: its truncation and padding change with every
      # call into it, and a fingerprint must not depend on what the process did before.
      "vocabulary": _sha(vocabulary.backend().to_str() + repr(vocabulary.special_template())),
      "preprocessing": _sha(_describe([task.source, list(task.preprocessors[:-1])])),
  }


def split_dir(cache_dir: str | os.PathLike, task: str, split: str) -> epath.Path:
  return epath.Path(cache_dir) / task / split


def _shard_dir(directory: epath.Path, shard: int) -> epath.Path:
  return directory / f"shard-{shard:05d}"


def _load(path: epath.Path) -> np.ndarray:
  if path.is_file() and not str(path).startswith(("gs://", "s3://")):
    return np.load(os.fspath(path), mmap_mode="r")
  with path.open("rb") as f:
    return np.load(f)


def check_info(directory: epath.Path, expected: Mapping[str, str], build_hint: str) -> dict:
  """The cache's info, if it was made as `expected` says; a one-line error naming what
  differs otherwise."""
  info = json.loads((directory / INFO).read_text())
  saved = info["fingerprint"]
  differs = [k for k in expected if saved.get(k) != expected[k]]
  if differs:
    what = ", ".join(f"{k} {saved.get(k)!r} (this run: {expected[k]!r})" for k in differs)
    raise UserError(f"the token cache in {directory} was made differently: {what}; rebuild it: "
                    f"{build_hint} --overwrite")
  return info


@dataclasses.dataclass
class ShardStatus:
  records: int
  last: bool


def shard_status(directory: epath.Path, shard: int) -> ShardStatus | None:
  done = _shard_dir(directory, shard) / DONE
  if not done.exists():
    return None
  status = json.loads(done.read_text())
  return ShardStatus(status["records"], status["last"])


def write_shard(directory: epath.Path, shard: int, examples: Examples, last: bool) -> None:
  """Writes one shard whole: into a temporary directory, renamed when complete."""
  final = _shard_dir(directory, shard)
  tmp = directory / f"{final.name}.tmp-{os.getpid()}"
  if tmp.exists():
    tmp.rmtree()
  tmp.mkdir(parents=True)
  for field in Examples.FIELDS:
    with (tmp / f"{field}.npy").open("wb") as f:
      np.save(f, getattr(examples, field))
  (tmp / DONE).write_text(json.dumps({
      "records": len(examples.per_record), "examples": len(examples),
      "tokens": int(len(examples.tokens) + len(examples.targets)), "last": last}))
  tmp.rename(final)


class CachedSplit:
  """A complete cached split; `block(...)` reads records by their source-order index."""

  def __init__(self, directory: epath.Path, info: Mapping[str, Any]):
    self.directory = directory
    self.records_per_shard = info["records_per_shard"]
    statuses = []
    while (status := shard_status(directory, len(statuses))) is not None:
      statuses.append(status)
      if status.last:
        break
    if not statuses or not statuses[-1].last:
      raise UserError(f"the token cache in {directory} is incomplete (shard {len(statuses)} is "
                      "missing); finish it by running the cache command again (it resumes)")
    self.num_records = sum(s.records for s in statuses)
    self._shards: dict[int, Examples] = {}
    self._num_shards = len(statuses)

  def _shard(self, index: int) -> Examples:
    if index not in self._shards:
      path = _shard_dir(self.directory, index)
      self._shards[index] = Examples(*(_load(path / f"{f}.npy") for f in Examples.FIELDS))
    return self._shards[index]

  def records(self, index: np.ndarray) -> Examples:
    """The examples of the records at (sorted) source-order `index`."""
    shard_of = index // self.records_per_shard
    parts = [self._shard(int(s)).select_records(index[shard_of == s] - s * self.records_per_shard)
             for s in np.unique(shard_of)]
    return Examples.concatenate(parts) if parts else Examples.build([], [])


def open_split(cache_dir: str | os.PathLike, task: MuppetTask, split: str,
               lengths: Mapping[str, int]) -> CachedSplit | None:
  """`task`'s cached `split`, checked against this run's fingerprint; None if not cached."""
  directory = split_dir(cache_dir, task.name, split)
  if not (directory / INFO).exists():
    return None
  info = check_info(directory, fingerprint(task, split, lengths),
                    BUILD_COMMAND.format(cache_dir))
  return CachedSplit(directory, info)


def _token_dtype(vocabulary_size: int) -> type:
  return np.uint16 if vocabulary_size <= np.iinfo(np.uint16).max + 1 else np.int32


def _start_split(directory: epath.Path, expected: Mapping[str, str], records_per_shard: int,
                 overwrite: bool, build_hint: str) -> None:
  """Checks (or writes) the split's info.json; `overwrite` replaces a cache made otherwise."""
  info_path = directory / INFO
  if overwrite and info_path.exists():
    try:
      check_info(directory, expected, build_hint)
    except UserError:
      directory.rmtree()
  if not info_path.exists():
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f"{INFO}.tmp-{uuid.uuid4().hex}"
    tmp.write_text(json.dumps({"fingerprint": dict(expected),
                               "records_per_shard": records_per_shard}, indent=1))
    try:
      tmp.rename(info_path)
      return
    except FileExistsError:  # Another worker started the split first: its info must agree.
      tmp.unlink()
  info = check_info(directory, expected, build_hint)
  if info["records_per_shard"] != records_per_shard:
    raise UserError(f"the token cache in {directory} has {info['records_per_shard']} records "
                    f"per shard; resume it with --records_per_shard={info['records_per_shard']}")


def build_split(task: MuppetTask, split: str, lengths: Mapping[str, int],
                cache_dir: str | os.PathLike, *, worker: int = 0, workers: int = 1,
                records_per_shard: int = RECORDS_PER_SHARD, block_size: int = 1024,
                overwrite: bool = False, on_records: Any = None) -> dict[str, int]:
  """Builds this worker's shards (worker, worker + workers, ...) of `task`'s `split`; shards
  already there are kept. Returns the counts of the shards it wrote. `on_records(n)` is called
  as records are tokenized (a progress bar)."""
  directory = split_dir(cache_dir, task.name, split)
  _start_split(directory, fingerprint(task, split, lengths), records_per_shard, overwrite,
               BUILD_COMMAND.format(cache_dir))
  encode = encoding.ENCODERS[task.info.family]
  dtype = _token_dtype(task.vocabulary.vocab_size)
  totals = {"shards": 0, "records": 0, "examples": 0, "tokens": 0}
  shard = worker
  while True:
    status = shard_status(directory, shard)
    if status is None:
      blocks = []
      for columns in task.text_blocks(split, lengths, block_size=block_size,
                                      start=shard * records_per_shard,
                                      stop=(shard + 1) * records_per_shard):
        blocks.append(encode(task.vocabulary, columns, lengths))
        if on_records:
          on_records(len(blocks[-1].per_record))
      examples = Examples.concatenate(blocks) if blocks else Examples.build([], [], per_record=[])
      examples = dataclasses.replace(examples, tokens=examples.tokens.astype(dtype),
                                     targets=examples.targets.astype(dtype))
      status = ShardStatus(len(examples.per_record), len(examples.per_record) < records_per_shard)
      write_shard(directory, shard, examples, status.last)
      totals["shards"] += 1
      totals["records"] += status.records
      totals["examples"] += len(examples)
      totals["tokens"] += len(examples.tokens) + len(examples.targets)
    if status.last:
      return totals
    shard += workers
