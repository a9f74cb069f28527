"""Sources whose records are made in Python (files, generated data), read without tf.data.

A file of short records costs tf.data far more per record than the tokenizer does (each element
passes several dataset ops; a JSONL line also crosses into Python to be parsed): on the GLUE-like
benchmark mix, 35,000 records/s against 360,000 for `json.loads` alone. A `PythonSource` hands
the input stream its records in blocks of family text-format columns directly
(`MuppetTask.text_blocks`), and gives seqio the same records as a tf.data dataset, so that
inspection and seqio users see what training reads.

`PythonSource.check_rows` parses every row of a split once, before anything reads it: a bad row
(`rows.BadRow`) is then an error at start-up, not a failure inside a reader thread or tf.data,
or, with `skip`, a row the source leaves out (`bad_rows` counts them per split).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from muppet_jax.data.preprocessors import TEXT_FIELDS
from muppet_jax.data.rows import BadRow
from muppet_jax.errors import UserError

Record = Mapping[str, object]
Columns = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class BadRows:
  """A split's rows left out as bad: how many, and the first of them (where, and why)."""

  count: int
  first: str


def _dtype(family: str, field: str) -> type:
  """A text-format field's numpy type (strings: object)."""
  if field == "label":
    return np.float32 if family == "regression" else np.int64
  return np.int64 if field == "answer_start" else object


def columns(family: str, records: Sequence[Record]) -> Columns:
  """Records in a family's text format as the columns of one block (strings as object arrays,
  `choices` as an [n, choices] object array), as tf.data would batch them."""
  out = {}
  for field in TEXT_FIELDS[family]:
    values = [r[field] for r in records]
    if field == "choices":
      array = np.empty((len(values), len(values[0]) if values else 0), object)
      array[:] = values
      out[field] = array
    else:
      out[field] = np.asarray(values, _dtype(family, field))
  return out


def _signature(family: str, num_choices: int) -> dict[str, tf.TensorSpec]:
  spec = {}
  for field in TEXT_FIELDS[family]:
    dtype = _dtype(family, field)
    spec[field] = tf.TensorSpec([num_choices] if field == "choices" else [],
                                tf.string if dtype is object else tf.as_dtype(dtype))
  return spec


def _same(item: object) -> object:
  return item


class PythonSource(seqio.FunctionDataSource):
  """A seqio source over `items(split)`, the split's items in source order, each made a record
  in the family's text format by `parse` (only the items a reader takes are parsed). Both are
  module-level functions or closures, so that the token cache's fingerprint describes what they
  read. `sources`: the TFDS sources the items come from, which `check_prepared` checks."""

  def __init__(self, items: Callable[[str], Iterable[object]], family: str,
               splits: Sequence[str], num_choices: int = 0,
               num_input_examples: Mapping[str, int] | None = None,
               parse: Callable[[object], Record] = _same,
               sources: Sequence[seqio.DataSource] = ()):
    self.items, self.parse, self.family = items, parse, family
    self.sources = list(sources)
    # Per split: the positions in `items` of the rows left out, and their count and first.
    self.skipped: dict[str, frozenset[int]] = {}
    self.bad_rows: dict[str, BadRows] = {}
    signature = _signature(family, num_choices)

    def records(split: str) -> Iterator[Record]:
      return map(parse, self.rows(split))

    def dataset_fn(split: str, shuffle_files: bool = False, seed: int | None = None
                   ) -> tf.data.Dataset:
      del shuffle_files, seed  # Source order; seqio shuffles examples.
      return tf.data.Dataset.from_generator(
          lambda: ({f: r[f] for f in signature} for r in records(split)),
          output_signature=signature)

    super().__init__(dataset_fn, splits=splits, num_input_examples=num_input_examples)

  def rows(self, split: str) -> Iterator[Any]:
    """The split's items in source order, without those `check_rows` left out."""
    skipped = self.skipped.get(split)
    if not skipped:
      return iter(self.items(split))
    return (item for i, item in enumerate(self.items(split)) if i not in skipped)

  def check_rows(self, split: str, skip: bool) -> int:
    """Parses every item of `split`: the first bad row (`rows.BadRow`) is raised, or with
    `skip` every bad row is left out from then on (and counted in `bad_rows`). Returns the
    count of good rows."""
    good, bad, first = 0, [], None
    for i, item in enumerate(self.items(split)):
      try:
        self.parse(item)
        good += 1
      except BadRow as e:
        if not skip:
          raise
        bad.append(i)
        first = first or e.row
    if bad and not good:
      raise UserError(f"all {len(bad)} {split} rows are bad, the first: {first}; check the "
                      "task's columns and labels")
    self.skipped.pop(split, None)
    self.bad_rows.pop(split, None)
    if bad:
      self.skipped[split] = frozenset(bad)
      self.bad_rows[split] = BadRows(len(bad), first)
    return good

  def text_blocks(self, split: str, *, block_size: int, start: int = 0, step: int = 1,
                  stop: int | None = None) -> Iterator[Columns]:
    """The records start, start + step, ... (before `stop`) of `split`, `block_size` at a
    time, as `columns`."""
    chosen = itertools.islice(self.rows(split), start, stop, step)
    while block := list(itertools.islice(chosen, block_size)):
      yield columns(self.family, [self.parse(item) for item in block])


def bad_rows(task: seqio.Task) -> dict[str, BadRows]:
  """The rows of each of `task`'s splits that its source left out as bad (none: {})."""
  return dict(getattr(task.source, "bad_rows", {}))
