"""Tasks from your own TSV or JSONL files (local paths or gs://), in a few lines:

    from muppet_jax.data.local_files import add_file_task
    add_file_task("my_sentiment", "classification", num_classes=2,
                  train="/data/sent/train.tsv", validation="/data/sent/dev.tsv",
                  vocabulary=HFVocabulary("roberta-large"))

Columns (TSV: a header row naming them, tab-separated, no quoting; JSONL: one object per line):
  classification   text_a, text_b (optional), label (int 0..n-1)
  regression       text_a, text_b (optional), label (float)
  multiple_choice  context, choices (JSONL: a list; TSV: choice_0 ... choice_{k-1}), label
  span             question, context, answer_start (character offset), answer_text
  summarization    document, summary

Blank lines are skipped. Files are parsed in Python (`records.PythonSource`), where a bad row is
an error naming its file, line and field.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator, Sequence

import tensorflow as tf

from muppet_jax.data.preprocessors import TEXT_FIELDS
from muppet_jax.data.records import PythonSource, Record
from muppet_jax.data.task_info import MuppetTask, TaskInfo, add_task
from muppet_jax.data.vocabulary import HFVocabulary
from muppet_jax.errors import UserError
from muppet_jax.families import check_family

_OPTIONAL = {"text_b": ""}
# (path, line number, line, TSV column positions by name, or None for JSONL)
Item = tuple[str, int, bytes, "dict[str, int] | None"]


def _paths(spec: str | Sequence[str]) -> list[str]:
  patterns = [spec] if isinstance(spec, str) else list(spec)
  paths = sorted(p for pattern in patterns for p in tf.io.gfile.glob(pattern))
  if not paths:
    raise UserError(f"no files match {patterns}; check the path (local or gs://)")
  formats = {p.rsplit(".", 1)[-1] for p in paths}
  if not formats <= {"tsv", "jsonl"} or len(formats) > 1:
    raise UserError(f"task files must all be .tsv or all .jsonl, got {sorted(formats)}")
  return paths


def _file_columns(family: str, num_choices: int) -> list[str]:
  """The columns of a family's TSV file (multiple choice: one per choice)."""
  if family != "multiple_choice":
    return list(TEXT_FIELDS[family])
  return ["context", "label", *(f"choice_{i}" for i in range(num_choices))]


def _lines(path: str) -> Iterator[bytes]:
  with (tf.io.gfile.GFile(path, "rb") if "://" in path else open(path, "rb")) as f:
    yield from f


def _first_line(path: str) -> bytes:
  lines = _lines(path)
  try:
    return next(lines, b"")
  finally:
    lines.close()


def _header(path: str, line: bytes, columns: list[str]) -> dict[str, int]:
  names = line.decode("utf-8").rstrip("\r\n").split("\t")
  missing = [c for c in columns if c not in names and c not in _OPTIONAL]
  if missing:
    raise UserError(f"{path} has columns {names}; missing {missing}")
  return {c: names.index(c) for c in columns if c in names}


def _items(files: dict[str, list[str]], columns: list[str]) -> Callable[[str], Iterator[Item]]:
  def items(split: str) -> Iterator[Item]:
    for path in files[split]:
      header = None
      for number, line in enumerate(_lines(path), 1):
        if path.endswith(".tsv") and number == 1:
          header = _header(path, line, columns)
        elif line.strip():
          yield path, number, line, header
  return items


def _parser(family: str, num_classes: int) -> Callable[[Item], Record]:
  """Rows to records in the family's text format; a bad row is a `UserError` naming it."""
  fields = TEXT_FIELDS[family]
  needs = ", ".join(f"{f} (optional)" if f in _OPTIONAL else f for f in fields)

  def value(row: dict[str, Any], field: str) -> Any:
    if field == "choices" and "choices" not in row:  # TSV: one column per choice.
      return [value(row, f"choice_{i}") for i in range(num_classes)]
    x = row.get(field, _OPTIONAL.get(field))
    if x is None:
      raise ValueError(f"no {field!r} (a {family} row needs {needs})")
    if field == "choices":
      if not isinstance(x, list) or len(x) != num_classes:
        raise ValueError(f"choices must be a list of {num_classes} texts, got {x!r:.80}")
      return [value({"choice": c}, "choice") for c in x]
    if field in ("label", "answer_start"):
      try:
        number = float(x)
      except (TypeError, ValueError):
        raise ValueError(f"{field} {x!r} is not a number") from None
      if family == "regression":
        return number
      if not number.is_integer():
        raise ValueError(f"{field} {x!r} is not an integer")
      if field == "label" and not 0 <= number < num_classes:
        raise ValueError(f"label {x!r} is outside 0..{num_classes - 1} ({num_classes} "
                         f"{'choices' if family == 'multiple_choice' else 'classes'})")
      return int(number)
    if not isinstance(x, (str, int, float)):
      raise ValueError(f"{field} must be a text, got {x!r:.80}")
    return str(x)

  def parse(item: Item) -> Record:
    path, number, line, header = item
    try:
      if header is None:
        row = json.loads(line)
        if not isinstance(row, dict):
          raise ValueError(f"expected a JSON object, got {line[:80]!r}")
      else:
        cells = line.decode("utf-8").rstrip("\r\n").split("\t")
        if len(cells) <= max(header.values()):
          raise ValueError(f"{len(cells)} tab-separated fields, the header names "
                           f"{max(header.values()) + 1}")
        row = {name: cells[i] for name, i in header.items()}
      return {field: value(row, field) for field in fields}
    except (ValueError, UnicodeDecodeError) as e:  # json's errors are ValueErrors too.
      raise UserError(f"{path}, line {number}: {e}; fix or remove the row") from None

  return parse


def add_file_task(name: str, family: str, *, train: str | Sequence[str],
                  validation: str | Sequence[str] | None = None, vocabulary: HFVocabulary,
                  num_classes: int = 1, train_size: int | None = None,
                  description: str = "") -> MuppetTask:
  """Registers the seqio task `name` over TSV/JSONL files (see the module docstring).

  num_classes: classes (classification) or choices per example (multiple choice).
  train_size: train examples, for mixture rates; counted from the files when not given.
  """
  check_family(family)
  files = {"train": _paths(train)}
  if validation is not None:
    files["validation"] = _paths(validation)
  columns = _file_columns(family, num_classes)
  for path in (p for paths in files.values() for p in paths if p.endswith(".tsv")):
    _header(path, _first_line(path), columns)
  items = _items(files, columns)
  source = PythonSource(items, family, list(files), num_choices=num_classes,
                        parse=_parser(family, num_classes))
  if train_size is None:
    train_size = sum(1 for _ in items("train"))
  info = TaskInfo(family, num_classes, train_size,
                  description=description or f"local files {files['train'][0]}")
  return add_task(name, source, None, info, vocabulary)
