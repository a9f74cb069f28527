"""One batch under construction: first-fit placement of examples into rows, then the arrays.

Placing an example is a few comparisons on Python ints; the arrays are written once per batch,
vectorized, from the list of placed sequences (see `muppet_jax.data.batching` for their layout).
An example is a packer row of `encoding.Examples.rows`: (task, sequence lengths, token array,
offset, target array, offset, target length, label, score, span start, span end); its tokens stay
in its block's arrays until the batch is written.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from muppet_jax.data.encoding import ranges

Row = tuple


@dataclasses.dataclass(frozen=True)
class Shape:
  batch_size: int
  max_length: int
  target_length: int  # 0: no summarization in the mixture.
  max_segments: int
  packing: bool
  row_groups: int


class BatchBuilder:
  """Rows being filled; `place` an example (all its sequences or none), then `arrays()`."""

  def __init__(self, shape: Shape, head_of: Sequence[int], family_of: Sequence[int],
               pad_id: int, example_base: int):
    self.shape, self.head_of, self.family_of = shape, head_of, family_of
    self.pad_id, self.example_base = pad_id, example_base
    b = shape.batch_size
    self.used, self.used_targets, self.segments = [0] * b, [0] * b, [0] * b
    self.placed: list[tuple] = []
    self.examples = 0
    self.families: set[int] = set()
    # Single sequences in one row group take the inlined first-fit of `_row_for`.
    self._simple = shape.row_groups == 1 and shape.packing

  def _fits(self, row: int, length: int, targets: int, add: dict[int, list[int]]) -> bool:
    s = self.shape
    extra = add.get(row, (0, 0, 0))
    segments = self.segments[row] + extra[2]
    if not s.packing:
      return segments == 0
    return (segments < s.max_segments and self.used[row] + extra[0] + length <= s.max_length
            and self.used_targets[row] + extra[1] + targets <= s.target_length)

  def _rows_for(self, lengths: tuple[int, ...], targets: int) -> list[int] | None:
    """A row for each sequence, all in one row group; None if they don't fit."""
    s = self.shape
    for group in range(s.row_groups):
      add: dict[int, list[int]] = {}
      rows = []
      for length in lengths:
        row = next((r for r in range(group, s.batch_size, s.row_groups)
                    if self._fits(r, length, targets, add)), None)
        if row is None:
          break
        rows.append(row)
        extra = add.setdefault(row, [0, 0, 0])
        extra[0] += length
        extra[1] += targets
        extra[2] += 1
      if len(rows) == len(lengths):
        return rows
    return None

  def _row_for(self, length: int, targets: int) -> int | None:
    """`_rows_for` of one sequence in one group, inlined: the hot path of packing."""
    s = self.shape
    used_limit, targets_limit = s.max_length - length, s.target_length - targets
    used, used_targets, segments = self.used, self.used_targets, self.segments
    for row in range(s.batch_size):
      if (used[row] <= used_limit and segments[row] < s.max_segments
          and used_targets[row] <= targets_limit):
        return row
    return None

  def place(self, ex: Row) -> bool:
    """Places all of the example's sequences, or none of them."""
    task, lengths, tokens, offset, targets, target_offset, target_length = ex[:7]
    if self._simple and len(lengths) == 1:
      row = self._row_for(lengths[0], target_length)
      if row is None:
        return False
      rows = (row,)
    else:
      rows = self._rows_for(lengths, target_length)
      if rows is None:
        return False
    # Ids unique across all hosts' batches, and below the global batch's number of slots.
    example_id = self.example_base + self.examples
    used, segments = self.used, self.segments
    for choice, (length, row) in enumerate(zip(lengths, rows)):
      self.placed.append((row, segments[row], used[row], length, tokens, offset,
                          self.used_targets[row], ex, example_id, choice))
      offset += length
      used[row] += length
      self.used_targets[row] += target_length
      segments[row] += 1
    self.examples += 1
    self.families.add(self.family_of[task])
    return True

  def arrays(self) -> dict[str, np.ndarray]:
    s = self.shape
    b, length, t = s.batch_size, s.max_length, s.target_length
    slots = s.max_segments if s.packing else 1
    a = {
        "input_ids": np.full((b, length), self.pad_id, np.int32),
        "segment_ids": np.zeros((b, length), np.int32),
        "positions": np.zeros((b, length), np.int32),
        "target_ids": np.full((b, t), self.pad_id, np.int32),
        "target_segment_ids": np.zeros((b, t), np.int32),
        "seg_score": np.zeros((b, slots), np.float32),
        "seg_span": np.full((b, slots, 2), -1, np.int32),
    }
    for name in ("seg_task", "seg_head", "seg_label", "seg_start", "seg_example", "seg_choice"):
      a[name] = np.full((b, slots), -1, np.int32)
    if not self.placed:
      return a
    rows, slot, start, lengths, sources, offsets, target_start, exs, example, choice = (
        zip(*self.placed))
    rows, slot, start = np.asarray(rows), np.asarray(slot), np.asarray(start)
    lengths, offsets = np.asarray(lengths), np.asarray(offsets)
    first = rows * length + start
    _gather(a["input_ids"], first, lengths, sources, offsets)
    where = ranges(first, lengths)
    a["segment_ids"].flat[where] = np.repeat(slot + 1, lengths)
    a["positions"].flat[where] = where - np.repeat(first, lengths)
    (task, _, _, _, targets, target_offsets, target_lengths, label, score, span_start,
     span_end) = zip(*exs)
    target_lengths = np.asarray(target_lengths)
    if target_lengths.any():
      first = rows * t + np.asarray(target_start)
      _gather(a["target_ids"], first, target_lengths, targets, np.asarray(target_offsets))
      a["target_segment_ids"].flat[ranges(first, target_lengths)] = np.repeat(
          slot + 1, target_lengths)
    cell = rows * slots + slot
    task = np.asarray(task)
    for name, values in (("seg_task", task), ("seg_head", np.asarray(self.head_of)[task]),
                         ("seg_label", label), ("seg_score", score), ("seg_start", start),
                         ("seg_example", example), ("seg_choice", choice)):
      a[name].flat[cell] = values
    span = np.stack([span_start, span_end], axis=-1)
    has_span = span[:, 0] >= 0
    a["seg_span"].reshape(-1, 2)[cell[has_span]] = span[has_span] + start[has_span, None]
    return a


def _gather(out: np.ndarray, first: np.ndarray, lengths: np.ndarray,
            sources: Sequence[np.ndarray], offsets: np.ndarray) -> None:
  """out.flat[first[i]:first[i] + lengths[i]] = sources[i][offsets[i]:...], one fancy index per
  distinct source array (a block holds many examples)."""
  keys = np.asarray([id(x) for x in sources])
  for key in np.unique(keys):
    sel = np.flatnonzero(keys == key)
    source = sources[sel[0]]
    out.flat[ranges(first[sel], lengths[sel])] = source[ranges(offsets[sel], lengths[sel])]
