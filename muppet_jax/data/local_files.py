"""Tasks from your own TSV, CSV or JSONL files (local paths or gs://), in a few lines:

    from muppet_jax.data.local_files import add_file_task
    add_file_task("my_news", "classification", train="/data/news/train.csv",
                  validation="/data/news/test.csv", vocabulary=HFVocabulary("roberta-large"),
                  columns={"text_a": "text", "label": "topic"},
                  labels=["World", "Sports", "Business", "Sci/Tech"])

(or without Python, in a tasks file: `muppet_jax.data.tasks_file`). Each family's fields:
  classification   text_a, text_b (optional), label (a name from `labels`, or an index)
  regression       text_a, text_b (optional), label (a number)
  multiple_choice  context, choices, label (the correct choice's index, or its name in `labels`)
  span             question, context, answer_start (character offset), answer_text
  summarization    document, summary

Formats, by extension (a task may mix them):
  .tsv    tab-separated, no quoting; .csv: comma-separated with "quoted" fields (which may
          hold commas and line breaks). The first row names the columns, unless `header` names
          them (the file then has no header row). Multiple choice: one column per choice.
  .jsonl  one JSON object per line; choices may be one list-valued field.
`columns` maps fields to the file's column names (see `muppet_jax.data.rows`). Blank lines are
skipped. Files are parsed in Python (`records.PythonSource`). Every row is checked when the task
is registered (a table's row has the header's number of columns; `rows` checks the fields): a
bad row is an error naming its file, line and field, or with `bad_rows="skip"` a row left out.
"""

from __future__ import annotations

import codecs
import csv
import json
from typing import Any, Callable, Iterator, Mapping, Sequence

import tensorflow as tf

from muppet_jax.data import rows
from muppet_jax.data.records import PythonSource, Record
from muppet_jax.data.task_info import MuppetTask, TaskInfo, add_task
from muppet_jax.data.vocabulary import HFVocabulary
from muppet_jax.errors import UserError
from muppet_jax.families import check_family

FORMATS = ("tsv", "csv", "jsonl")
# A table's column positions by name, and its number of columns.
Table = tuple[dict[str, int], int]
# (path, line number, the line (TSV, JSONL) or its cells (CSV), its table or None for JSONL)
Item = tuple[str, int, "bytes | list[str]", "Table | None"]


def _format(path: str) -> str:
  return path.rsplit(".", 1)[-1].lower()


def _paths(spec: str | Sequence[str]) -> list[str]:
  patterns = [spec] if isinstance(spec, str) else list(spec)
  paths = sorted(p for pattern in patterns for p in tf.io.gfile.glob(pattern))
  if not paths:
    raise UserError(f"no files match {patterns}; check the path (local or gs://)")
  unknown = [p for p in paths if _format(p) not in FORMATS]
  if unknown:
    raise UserError(f"{unknown[0]}: unknown file format; task files end in .tsv, .csv or .jsonl")
  return paths


def _open(path: str):
  return tf.io.gfile.GFile(path, "rb") if "://" in path else open(path, "rb")


def _lines(path: str) -> Iterator[tuple[int, bytes | list[str]]]:
  """(line number, line) of a TSV or JSONL file; (first line number, cells) of a CSV record."""
  with _open(path) as f:
    if _format(path) != "csv":
      yield from enumerate(f, 1)
      return
    # Lines keep their line breaks, so quoted fields may span lines (GFile, for gs://, can't be
    # wrapped in a TextIOWrapper).
    reader = csv.reader(codecs.iterdecode(f, "utf-8"))
    line = 1
    try:
      for cells in reader:
        yield line, cells
        line = reader.line_num + 1
    except (csv.Error, UnicodeDecodeError) as e:
      raise UserError(f"{path}, line {reader.line_num}: {e}; fix or remove the row") from None


def _cells(line: bytes | list[str]) -> list[str]:
  if isinstance(line, list):
    return line
  return line.decode("utf-8").rstrip("\r\n").split("\t")


def _blank(line: bytes | list[str]) -> bool:
  return not any(c.strip() for c in line) if isinstance(line, list) else not line.strip()


def _table_header(path: str, header: Sequence[str] | None, required: list[str],
                  optional: list[str]) -> tuple[Table, bool]:
  """A table's columns, and whether its first row is the header."""
  if header is None:
    lines = _lines(path)
    try:
      names = _cells(next(lines, (1, b""))[1])
    except UnicodeDecodeError as e:
      raise UserError(f"{path}, line 1: {e}; files must be UTF-8") from None
    finally:
      lines.close()
  else:
    names = list(header)
  missing = [c for c in required if c not in names]
  if missing:
    fix = ("name the file's columns with `header`" if header is None and not set(required) & set(
        names) else "map the task's fields to the file's columns with `columns`")
    raise UserError(f"{path} has columns {names}; missing {missing}: {fix}")
  positions = {c: names.index(c) for c in required + optional if c in names}
  return (positions, len(names)), header is None


def _file_items(path: str, headers: dict[str, tuple[Table, bool]]) -> Iterator[Item]:
  table, skip_first = headers.get(path, (None, False))
  for number, line in _lines(path):
    if not (skip_first and number == 1) and not _blank(line):
      yield path, number, line, table


def _items(files: dict[str, list[str]], headers: dict[str, tuple[Table, bool]]
           ) -> Callable[[str], Iterator[Item]]:
  def items(split: str) -> Iterator[Item]:
    for path in files[split]:
      yield from _file_items(path, headers)
  return items


def _file_parser(parse_row: Callable[[Mapping[str, Any]], Record]) -> Callable[[Item], Record]:
  """File items to records; a bad row is a `rows.BadRow` naming its file and line."""

  def parse(item: Item) -> Record:
    path, number, line, table = item
    try:
      if table is None:
        row = json.loads(line)
        if not isinstance(row, dict):
          raise ValueError(f"expected a JSON object, got {line[:80]!r}")
      else:
        positions, width = table
        cells = _cells(line)
        if len(cells) != width:  # Short, or a separator inside a field.
          kind = "comma" if _format(path) == "csv" else "tab"
          raise ValueError(f"{len(cells)} {kind}-separated fields, the header names {width}")
        row = {name: cells[i] for name, i in positions.items()}
      return parse_row(row)
    except (ValueError, UnicodeDecodeError) as e:  # json's errors are ValueErrors too.
      raise rows.BadRow(f"{path}, line {number}", str(e),
                        "fix or remove the row (data.bad_rows=skip leaves bad rows out)"
                        ) from None

  return parse


def class_count(family: str, num_classes: int | None, labels: Sequence[str],
                columns: Mapping[str, Any]) -> int:
  """Classes (choices) of a task: from its labels, its choice columns, or as given."""
  counts = {}
  if labels:
    if family not in ("classification", "multiple_choice"):
      raise UserError(f"labels are for classification and multiple choice tasks, not {family}")
    if len(set(labels)) != len(labels):
      raise UserError(f"labels {list(labels)} repeat a name")
    counts["labels"] = len(labels)
  if family == "multiple_choice" and isinstance(columns.get("choices"), (list, tuple)):
    counts["choice columns"] = len(columns["choices"])
  if num_classes:
    counts["num_classes"] = num_classes
  if len(set(counts.values())) > 1:
    raise UserError(f"the class count is ambiguous: {counts}")
  if family in ("classification", "multiple_choice") and not counts:
    raise UserError(f"a {family} task needs its labels (or num_classes)")
  return next(iter(counts.values()), 1)


def add_file_task(name: str, family: str, *, train: str | Sequence[str],
                  validation: str | Sequence[str] | None = None, vocabulary: HFVocabulary,
                  num_classes: int | None = None, columns: Mapping[str, Any] | None = None,
                  header: Sequence[str] | None = None, labels: Sequence[str] = (),
                  train_size: int | None = None, description: str = "",
                  bad_rows: str = "error") -> MuppetTask:
  """Registers the seqio task `name` over TSV/CSV/JSONL files (see the module docstring).

  num_classes: classes (classification) or choices per example (multiple choice), unless
    `labels` (or a list of choice columns) give it.
  train_size: train examples, for mixture rates; counted from the files when not given.
  bad_rows: "error" (a bad row is an error, here) or "skip" (bad rows are left out, counted in
    `records.bad_rows(task)`).
  """
  check_family(family)
  rows.check_bad_rows(bad_rows)
  columns = dict(columns or {})
  rows.check_columns(family, columns)
  classes = class_count(family, num_classes, labels, columns)
  files = {"train": _paths(train)}
  if validation is not None:
    files["validation"] = _paths(validation)
  required, optional = rows.needed_columns(family, columns, classes)
  headers = {}
  for path in (p for paths in files.values() for p in paths):
    if _format(path) != "jsonl":
      headers[path] = _table_header(path, header, required, optional)
    elif header is not None:
      raise UserError(f"{path}: header names a table's columns; a JSONL file's are its keys")
    if next(_file_items(path, headers), None) is None:  # A mixture's rates need rows.
      raise UserError(f"{path} has no rows; add rows or leave the file out")
  source = PythonSource(_items(files, headers), family, list(files), num_choices=classes,
                        parse=_file_parser(rows.row_parser(family, classes, columns, labels)))
  counts = {split: source.check_rows(split, skip=bad_rows == "skip") for split in files}
  if train_size is None:
    train_size = counts["train"]
  info = TaskInfo(family, classes, train_size, labels=tuple(labels),
                  description=description or f"local files {files['train'][0]}")
  return add_task(name, source, None, info, vocabulary)
