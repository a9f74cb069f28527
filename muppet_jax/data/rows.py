"""Rows of your own data (a file's line, a TFDS or `datasets` example) as records in a family's
text format (`preprocessors.TEXT_FIELDS`): which column holds each field, label names, checks.

A row is a mapping from column names to values. `columns` maps a family's fields to the row's
columns (a field not mapped is read from the column of its own name); multiple choice's
`choices` maps to a list of columns, or to one column holding a list. With `labels` (class names
in index order, or the names of the choices) a label is a name, or an integer index into them.
A row that doesn't fit raises a ValueError saying why; readers add where the row is.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from muppet_jax.data.preprocessors import TEXT_FIELDS
from muppet_jax.errors import UserError

Record = Mapping[str, object]
# Fields a row may leave out (or leave empty), and their value then: a single text's second text.
OPTIONAL = {"text_b": ""}
# What a reader does with a row that doesn't fit: stop with its error, or leave it out.
BAD_ROWS = ("error", "skip")


class BadRow(UserError):
  """A row that doesn't fit its task: `row` says where it is and why; the message adds the fix."""

  def __init__(self, where: str, problem: str, fix: str):
    super().__init__(f"{where}: {problem}; {fix}")
    self.row = f"{where}: {problem}"


def check_bad_rows(mode: str, key: str = "bad_rows") -> None:
  """`mode` is one of `BAD_ROWS`."""
  if mode not in BAD_ROWS:
    raise UserError(f"{key}={mode!r}; choose error (stop at a bad row) or skip (leave bad rows "
                    "out, counted)")


def check_columns(family: str, columns: Mapping[str, Any]) -> None:
  """`columns` names only fields the family has, each as a column name (choices: or a list)."""
  fields = TEXT_FIELDS[family]
  unknown = sorted(set(columns) - set(fields))
  if unknown:
    raise UserError(f"columns maps {unknown}, not fields of a {family} task; its fields are "
                    f"{list(fields)}")
  for field, column in columns.items():
    allowed = (str, list, tuple) if field == "choices" else (str,)
    if not isinstance(column, allowed) or (
        isinstance(column, (list, tuple)) and not all(isinstance(c, str) for c in column)):
      what = "a column name or a list of them" if field == "choices" else "a column name"
      raise UserError(f"columns.{field} must be {what}, got {column!r}")


def needed_columns(family: str, columns: Mapping[str, Any], num_choices: int = 0
                   ) -> tuple[list[str], list[str]]:
  """(required, optional) column names a table (TSV/CSV) must have for the family's fields.
  A table's choices are separate columns: those mapped, or choice_0 ... choice_{k-1}."""
  required, optional = [], []
  for field in TEXT_FIELDS[family]:
    column = columns.get(field, field)
    if field == "choices":
      required += list(column) if isinstance(column, (list, tuple)) else [
          f"choice_{i}" for i in range(num_choices)]
    elif field in OPTIONAL and field not in columns:
      optional.append(column)
    else:
      required.append(column)
  return required, optional


def _text(x: Any) -> str:
  if isinstance(x, bytes):
    return x.decode("utf-8")
  if isinstance(x, np.generic):
    x = x.item()
  if not isinstance(x, (str, int, float)) or isinstance(x, bool):
    raise ValueError(f"expected a text, got {x!r:.80}")
  return str(x)


def _number(field: str, x: Any) -> float:
  try:
    return float(_text(x))
  except ValueError:
    raise ValueError(f"{field} {x!r} is not a number") from None


def row_parser(family: str, num_classes: int, columns: Mapping[str, Any] | None = None,
               labels: Sequence[str] = ()) -> Callable[[Mapping[str, Any]], Record]:
  """A function from rows to the family's records (see the module docstring).

  num_classes: classes (classification) or choices (multiple choice).
  """
  columns = dict(columns or {})
  labels = tuple(labels)
  fields = TEXT_FIELDS[family]
  index_of = {name: i for i, name in enumerate(labels)}
  kind = "choices" if family == "multiple_choice" else "classes"
  # answer_start last: it is checked against the context and the answer's text.
  order = sorted(fields, key=lambda f: f == "answer_start")

  def column(row: Mapping[str, Any], name: str, field: str) -> Any:
    if name in row and row[name] is not None:
      return row[name]
    if field in OPTIONAL and field not in columns:
      return OPTIONAL[field]
    where = "" if name == field else f" (column {name!r})"
    raise ValueError(f"no {field!r}{where}; a {family} row needs {', '.join(fields)}")

  def text(row: Mapping[str, Any], name: str, field: str) -> str:
    value = _text(column(row, name, field))
    if not value.strip() and field not in OPTIONAL:
      where = "" if name == field else f" (column {name!r})"
      raise ValueError(f"empty {field!r}{where}")
    return value

  def label(x: Any) -> int:
    if labels:
      name = _text(x)
      if name in index_of:
        return index_of[name]
      try:
        number = float(name)
      except ValueError:
        number = math.nan
    else:
      number = _number("label", x)
    if not number.is_integer() or not 0 <= number < num_classes:
      named = f"one of {list(labels)} or " if labels else ""
      raise ValueError(f"label {x!r} is not {named}an integer in 0..{num_classes - 1} "
                       f"({num_classes} {kind})")
    return int(number)

  def choices(row: Mapping[str, Any]) -> list[str]:
    name = columns.get("choices", "choices")
    if isinstance(name, (list, tuple)):
      values = [column(row, c, "choices") for c in name]
    elif name not in row and "choices" not in columns:  # A table: one column per choice.
      values = [column(row, f"choice_{i}", "choices") for i in range(num_classes)]
    else:
      values = column(row, name, "choices")
      if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, (list, tuple)) or len(values) != num_classes:
      raise ValueError(f"choices must be a list of {num_classes} texts, got {values!r:.80}")
    texts = [_text(v) for v in values]
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
      raise ValueError(f"choice {empty[0]} is empty")
    return texts

  def answer(record: dict[str, Any], x: Any) -> int:
    """answer_start, checked to be where answer_text is in the context."""
    start = _number("answer_start", x)
    if not start.is_integer():
      raise ValueError(f"answer_start {x!r} is not an integer")
    start, context, wanted = int(start), record["context"], record["answer_text"]
    end = start + len(wanted)
    if not 0 <= start <= end <= len(context):
      raise ValueError(f"answer_start {start} with answer_text {wanted!r:.40} is outside the "
                       f"context ({len(context)} characters)")
    if context[start:end] != wanted:
      raise ValueError(f"answer_text {wanted!r:.40} is not the context's text at answer_start "
                       f"{start} ({context[start:end]!r:.40})")
    return start

  def parse(row: Mapping[str, Any]) -> Record:
    record = {}
    for field in order:
      name = columns.get(field, field)
      if field == "choices":
        record[field] = choices(row)
      elif field == "label" and family == "regression":
        score = _number(field, column(row, name, field))
        if not math.isfinite(score):
          raise ValueError(f"label {score} is not a finite number")
        record[field] = score
      elif field == "label":
        record[field] = label(column(row, name, field))
      elif field == "answer_start":
        record[field] = answer(record, column(row, name, field))
      else:
        record[field] = text(row, name, field)
    return {field: record[field] for field in fields}

  return parse
