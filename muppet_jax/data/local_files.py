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
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import seqio
import tensorflow as tf

from muppet_jax.data.task_info import MuppetTask, TaskInfo, add_task
from muppet_jax.data.vocabulary import HFVocabulary
from muppet_jax.errors import UserError
from muppet_jax.families import check_family

# family -> (column, dtype) of the text format; multiple choice adds its choices.
_COLUMNS = {
    "classification": [("text_a", tf.string), ("text_b", tf.string), ("label", tf.int64)],
    "regression": [("text_a", tf.string), ("text_b", tf.string), ("label", tf.float32)],
    "multiple_choice": [("context", tf.string), ("label", tf.int64)],
    "span": [("question", tf.string), ("context", tf.string), ("answer_start", tf.int64),
             ("answer_text", tf.string)],
    "summarization": [("document", tf.string), ("summary", tf.string)],
}
_OPTIONAL = {"text_b": ""}


def _paths(spec: str | Sequence[str]) -> list[str]:
  patterns = [spec] if isinstance(spec, str) else list(spec)
  paths = sorted(p for pattern in patterns for p in tf.io.gfile.glob(pattern))
  if not paths:
    raise UserError(f"no files match {patterns}; check the path (local or gs://)")
  formats = {p.rsplit(".", 1)[-1] for p in paths}
  if not formats <= {"tsv", "jsonl"} or len(formats) > 1:
    raise UserError(f"task files must all be .tsv or all .jsonl, got {sorted(formats)}")
  return paths


def _columns(family: str, num_choices: int) -> list[tuple[str, tf.DType]]:
  columns = list(_COLUMNS[family])
  if family == "multiple_choice":
    columns += [(f"choice_{i}", tf.string) for i in range(num_choices)]
  return columns


def _tsv_columns(paths: list[str], columns) -> dict[str, int]:
  """Column positions from the header of the first file; checked when the task is added."""
  with tf.io.gfile.GFile(paths[0]) as f:
    header = f.readline().rstrip("\n").split("\t")
  missing = [c for c, _ in columns if c not in header and c not in _OPTIONAL]
  if missing:
    raise UserError(f"{paths[0]} has columns {header}; missing {missing}")
  return {c: header.index(c) for c, _ in columns if c in header}


def _parse_tsv(paths: list[str], columns, index: dict[str, int]) -> tf.data.Dataset:
  def parse(line):
    fields = tf.strings.split(line, "\t")
    ex = {}
    for name, dtype in columns:
      if name not in index:
        ex[name] = tf.constant(_OPTIONAL[name])
      elif dtype == tf.string:
        ex[name] = fields[index[name]]
      else:
        ex[name] = tf.strings.to_number(fields[index[name]], dtype)
    return ex

  return tf.data.Dataset.from_tensor_slices(paths).flat_map(
      lambda p: tf.data.TextLineDataset(p).skip(1)).map(parse)


def _parse_jsonl(paths: list[str], columns) -> tf.data.Dataset:
  names = [c for c, _ in columns]

  def parse_line(line: bytes) -> tuple:
    obj = json.loads(line)
    if "choices" in obj:
      obj.update({f"choice_{i}": c for i, c in enumerate(obj.pop("choices"))})
    try:
      return tuple(np.asarray(obj.get(n, _OPTIONAL.get(n)), dtype=d.as_numpy_dtype)
                   if d != tf.string else str(obj.get(n, _OPTIONAL.get(n))).encode()
                   for n, d in columns)
    except (TypeError, ValueError) as e:
      raise ValueError(f"bad line {line[:80]!r}: needs fields {names} ({e})") from e

  def parse_lines(lines: np.ndarray) -> list[np.ndarray]:
    rows = [parse_line(line) for line in lines]
    return [np.asarray([r[i] for r in rows], d.as_numpy_dtype if d != tf.string else object)
            for i, (_, d) in enumerate(columns)]

  def parse(lines):  # A batch of lines per Python call: one call per line costs far more.
    values = tf.numpy_function(parse_lines, [lines], [d for _, d in columns], stateful=False)
    return {n: tf.ensure_shape(v, [None]) for n, v in zip(names, values)}

  return tf.data.Dataset.from_tensor_slices(paths).flat_map(
      tf.data.TextLineDataset).filter(
          lambda line: tf.strings.length(tf.strings.strip(line)) > 0).batch(256).map(
              parse).unbatch()


def _stack_choices(num_choices: int):
  def formatter(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.map(lambda ex: {
        "context": ex["context"], "label": ex["label"],
        "choices": tf.stack([ex[f"choice_{i}"] for i in range(num_choices)])})
  return formatter


def _count_lines(paths: list[str]) -> int:
  total = 0
  for path in paths:
    with tf.io.gfile.GFile(path) as f:
      total += sum(1 for line in f if line.strip())
  return total - (len(paths) if paths[0].endswith(".tsv") else 0)


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
  columns = _columns(family, num_classes)
  jsonl = files["train"][0].endswith(".jsonl")
  tsv_index = {} if jsonl else {split: _tsv_columns(paths, columns)
                                for split, paths in files.items()}

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files, seed  # File order is kept; seqio shuffles examples.
    if jsonl:
      return _parse_jsonl(files[split], columns)
    return _parse_tsv(files[split], columns, tsv_index[split])

  source = seqio.FunctionDataSource(dataset_fn, splits=list(files))
  formatter = _stack_choices(num_classes) if family == "multiple_choice" else (lambda ds: ds)
  info = TaskInfo(family, num_classes,
                  train_size if train_size is not None else _count_lines(files["train"]),
                  description=description or f"local files {files['train'][0]}")
  return add_task(name, source, formatter, info, vocabulary)
