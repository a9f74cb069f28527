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
# Fields a row may leave out, and their value then: a single text's missing second text.
OPTIONAL = {"text_b": ""}


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

  def column(row: Mapping[str, Any], name: str, field: str) -> Any:
    if name in row and row[name] is not None:
      return row[name]
    if field in OPTIONAL and field not in columns:
      return OPTIONAL[field]
    where = "" if name == field else f" (column {name!r})"
    raise ValueError(f"no {field!r}{where}; a {family} row needs {', '.join(fields)}")

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
    return [_text(v) for v in values]

  def parse(row: Mapping[str, Any]) -> Record:
    record = {}
    for field in fields:
      if field == "choices":
        record[field] = choices(row)
        continue
      x = column(row, columns.get(field, field), field)
      if field == "label":
        record[field] = _number(field, x) if family == "regression" else label(x)
      elif field == "answer_start":
        start = _number(field, x)
        if not start.is_integer():
          raise ValueError(f"answer_start {x!r} is not an integer")
        record[field] = int(start)
      else:
        record[field] = _text(x)
    return record

  return parse
