"""Tasks and mixtures of your own, from a JSON or YAML file (`--config.data.tasks_file=PATH`):

    {"tasks": [
       {"name": "my_sst2", "family": "classification",
        "train": "data/sst2/train.tsv", "validation": "data/sst2/dev.tsv",
        "columns": {"text_a": "sentence", "label": "label"},
        "labels": ["negative", "positive"]},
       {"name": "my_news", "family": "classification",
        "train": "news/train.csv", "validation": "news/test.csv",
        "header": ["topic", "text"], "columns": {"text_a": "text", "label": "topic"},
        "labels": ["World", "Sports", "Business", "Sci/Tech"]},
       {"name": "my_boolq", "family": "classification", "tfds": "super_glue/boolq:1.0.2",
        "columns": {"text_a": "question", "text_b": "passage"}, "labels": ["False", "True"]}],
     "mixtures": {"my_mix": ["my_sst2", "my_news", "glue_rte"]}}

A task's data is files (`train`, `validation`: paths or globs, or lists of them, relative to the
tasks file's directory, or gs://; see `local_files`), a TFDS dataset (`tfds`, with `data_dir`),
or a Hugging Face `datasets` dataset (`hf_dataset`, with `hf_config`; needs `pip install
datasets`); the last two read the splits named by `splits` (default train and validation). For
all: `columns` maps the family's fields to the data's columns, `labels` names the classes
(string labels are mapped to their index; integer labels index into them), `num_classes` where
there are no names, `train_size` (default: counted), `description`.

Rows are checked (`rows`): a file task's all at registration, a dataset task's as they are read.
A bad row stops the run with one line naming it, or with `bad_rows="skip"` (`data.bad_rows`) is
left out and counted (a dataset task's rows are then all read once at registration).

Mixtures may name the file's tasks and registered ones (the catalog's); rates follow the train
sizes as usual. Every task the file registers or mixes is tokenized with the file's `tokenizer`
(a Hugging Face directory or hub name) or, by default, the run's starting model's; catalog tasks
it mixes are registered again with that tokenizer. Loading a file twice is a no-op.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Iterator, Mapping

import seqio
import tensorflow as tf
import yaml

from muppet_jax.data import local_files, mixing, rows
from muppet_jax.data.records import PythonSource, Record
from muppet_jax.data.task_info import (MuppetTask, TaskInfo, add_task, check_tfds_prepared,
                                       get_task, retokenize)
from muppet_jax.data.vocabulary import HFVocabulary
from muppet_jax.errors import UserError
from muppet_jax.families import FAMILIES

FILE_KEYS = {"tokenizer", "tasks", "mixtures"}
TASK_KEYS = {"name", "family", "train", "validation", "header", "tfds", "data_dir", "hf_dataset",
             "hf_config", "splits", "columns", "labels", "num_classes", "train_size",
             "description"}
SOURCE_KEYS = ("train", "tfds", "hf_dataset")
DEFAULT_SPLITS = {"train": "train", "validation": "validation"}


@dataclasses.dataclass(frozen=True)
class Registered:
  """What a tasks file defines: its tasks' and mixtures' names."""

  tasks: tuple[str, ...]
  mixtures: tuple[str, ...]


def read(path: str) -> dict[str, Any]:
  """The file's contents, checked to be a tasks file's top level."""
  if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
    raise UserError(f"tasks file {path} does not exist")
  with tf.io.gfile.GFile(path, "r") as f:  # Local, or gs:// beside the data.
    text = f.read()
  try:
    data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
  except json.JSONDecodeError as e:
    raise UserError(f"{path}: not valid JSON: {e.msg} (line {e.lineno})") from None
  except yaml.YAMLError as e:
    raise UserError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
  if not isinstance(data, dict) or not set(data) <= FILE_KEYS or "tasks" not in data and (
      "mixtures" not in data):
    keys = sorted(data) if isinstance(data, dict) else type(data).__name__
    raise UserError(f"{path}: a tasks file is a mapping with keys {sorted(FILE_KEYS)} (tasks, "
                    f"mixtures, or both), got {keys}")
  if not isinstance(data.get("tasks", []), list):
    raise UserError(f"{path}: tasks must be a list of task definitions")
  if not isinstance(data.get("mixtures", {}), dict):
    raise UserError(f"{path}: mixtures must map names to lists of task names")
  return data


def register(path: str, default_tokenizer: Callable[[], str],
             bad_rows: str = "error") -> Registered:
  """Registers the tasks and mixtures of the tasks file `path` (see the module docstring);
  `default_tokenizer()` names the tokenizer when the file doesn't. `bad_rows`: "error" or
  "skip" (see the module docstring)."""
  rows.check_bad_rows(bad_rows)
  data = read(path)
  base = os.path.dirname(path if "://" in path else os.path.abspath(path))
  tokenizer = data.get("tokenizer")
  if tokenizer:
    local = os.path.join(base, tokenizer)
    tokenizer = local if os.path.isdir(local) else tokenizer
  else:
    tokenizer = default_tokenizer()
  vocabulary = HFVocabulary(tokenizer)
  names = []
  for i, spec in enumerate(data.get("tasks", [])):
    where = f"{path}: task {spec.get('name', i + 1)!r}" if isinstance(spec, dict) else (
        f"{path}: task {i + 1}")
    try:
      names.append(_register_task(spec, base, vocabulary, bad_rows))
    except rows.BadRow:  # It names its file and line.
      raise
    except UserError as e:
      raise UserError(f"{where}: {e}") from None
  mixtures = []
  for name, members in data.get("mixtures", {}).items():
    try:
      _register_mixture(name, members, vocabulary)
    except UserError as e:
      raise UserError(f"{path}: mixture {name!r}: {e}") from None
    mixtures.append(name)
  return Registered(tuple(names), tuple(mixtures))


def _register_task(spec: Any, base: str, vocabulary: HFVocabulary, bad_rows: str) -> str:
  if not isinstance(spec, dict):
    raise UserError(f"a task is a mapping of {sorted(TASK_KEYS)}, got {spec!r:.60}")
  unknown = sorted(set(spec) - TASK_KEYS)
  if unknown:
    raise UserError(f"unknown key(s) {unknown}; a task's keys are {sorted(TASK_KEYS)}")
  for key in ("name", "family"):
    if not isinstance(spec.get(key), str) or not spec[key]:
      raise UserError(f"the task needs a {key}")
  name, family = spec["name"], spec["family"]
  if family not in FAMILIES:
    raise UserError(f"unknown family {family!r}; families are {', '.join(FAMILIES)}")
  sources = [k for k in SOURCE_KEYS if k in spec]
  if len(sources) != 1:
    raise UserError("give the task's data as exactly one of train (files), tfds or hf_dataset; "
                    f"it has {sources or 'none'}")
  fingerprint = (json.dumps(spec, sort_keys=True), base, vocabulary.path)
  if name in seqio.TaskRegistry.names():
    existing = seqio.TaskRegistry.get(name)
    if getattr(existing, "defined_by", None) == fingerprint:
      if existing.bad_rows != bad_rows:  # This file, loaded again in the other mode.
        for split in existing.source.splits:
          existing.source.check_rows(split, skip=bad_rows == "skip")
        existing.bad_rows = bad_rows
      return name
    raise UserError(f"the name {name!r} is taken by a registered task (the catalog's, a task "
                    "module's or another file's); give yours another name")
  common = dict(columns=spec.get("columns") or {}, labels=spec.get("labels") or [],
                num_classes=spec.get("num_classes"), train_size=spec.get("train_size"),
                description=spec.get("description", ""), bad_rows=bad_rows)
  if not isinstance(common["columns"], dict):
    raise UserError(f"columns must map the family's fields to column names, got "
                    f"{common['columns']!r}")
  if not isinstance(common["labels"], list) or not all(
      isinstance(x, (str, int)) for x in common["labels"]):
    raise UserError(f"labels must be a list of names, got {common['labels']!r}")
  common["labels"] = [str(x) for x in common["labels"]]
  header = spec.get("header")
  if header is not None and (not isinstance(header, list) or not all(
      isinstance(c, str) for c in header)):
    raise UserError(f"header must be a list of column names, got {header!r}")
  if "train" in spec:
    files = {split: _resolve(spec[split], base) for split in ("train", "validation")
             if split in spec}
    task = local_files.add_file_task(name, family, vocabulary=vocabulary, header=header,
                                     **files, **common)
  else:
    for key in ("header", "validation"):
      if key in spec:
        raise UserError(f"{key} is for file tasks; a dataset task names its splits with "
                        "`splits`")
    splits = spec.get("splits") or DEFAULT_SPLITS
    if not isinstance(splits, dict) or "train" not in splits:
      raise UserError(f"splits must map train (and validation) to the dataset's split names, "
                      f"got {splits!r}")
    if "tfds" in spec:
      reader = TfdsRows(spec["tfds"], dict(splits), spec.get("data_dir"))
      if "data_dir" in spec and "://" not in spec["data_dir"]:
        reader = dataclasses.replace(reader, data_dir=os.path.join(base, spec["data_dir"]))
    else:
      reader = HfRows(spec["hf_dataset"], spec.get("hf_config"), dict(splits))
    task = add_dataset_task(name, family, reader, vocabulary, **common)
  task.defined_by, task.bad_rows = fingerprint, bad_rows
  return name


def _resolve(files: Any, base: str) -> list[str]:
  if isinstance(files, str):
    files = [files]
  if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
    raise UserError(f"train and validation are paths (or globs), or lists of them, got {files!r}")
  return [f if "://" in f else os.path.join(base, f) for f in files]


def _register_mixture(name: str, members: Any, vocabulary: HFVocabulary) -> None:
  if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
    raise UserError(f"a mixture is a non-empty list of task names, got {members!r}")
  for member in members:
    task = get_task(member)
    if task.vocabulary.path != vocabulary.path:
      retokenize(task, vocabulary)
  if name in seqio.MixtureRegistry.names():
    if sorted(t.name for t in seqio.MixtureRegistry.get(name).tasks) == sorted(members):
      return  # This file, loaded again.
    raise UserError(f"the name {name!r} is taken by a registered mixture; give yours another "
                    "name")
  mixing.add_mixture(name, members)


@dataclasses.dataclass(frozen=True)
class TfdsRows:
  """The rows of a TFDS dataset's splits (`splits`: ours -> the dataset's). A dataclass of
  plain values, so that the token cache's fingerprint describes what it reads."""

  name: str
  splits: Mapping[str, str]
  data_dir: str | None = None

  @property
  def source(self) -> seqio.TfdsDataSource:
    return seqio.TfdsDataSource(tfds_name=self.name, splits=dict(self.splits),
                                tfds_data_dir=self.data_dir)

  def __call__(self, split: str) -> Iterator[tuple[str, int, Mapping[str, Any]]]:
    dataset = self.source.get_dataset(split, shuffle=False)
    for i, row in enumerate(dataset.as_numpy_iterator()):
      yield f"{self.name} {split}", i, row

  def size(self, split: str) -> int:
    source = self.source
    check_tfds_prepared(source, self.name)
    return source.num_input_examples(split)


@dataclasses.dataclass(frozen=True)
class HfRows:
  """The rows of a Hugging Face `datasets` dataset's splits (`splits`: ours -> the dataset's);
  `datasets` keeps what it downloaded, so each read loads from its cache."""

  name: str
  config: str | None
  splits: Mapping[str, str]

  def dataset(self, split: str) -> Any:
    try:
      import datasets
    except ImportError:
      raise UserError(f"hf_dataset {self.name!r} needs the datasets package: "
                      "`pip install datasets`") from None
    try:
      return datasets.load_dataset(self.name, self.config, split=self.splits[split])
    except Exception as e:  # datasets raises many kinds (network, unknown name or split).
      raise UserError(f"datasets.load_dataset({self.name!r}, {self.config!r}, "
                      f"split={self.splits[split]!r}) failed: {type(e).__name__}: "
                      f"{' '.join(str(e).split())[:300]}") from None

  def __call__(self, split: str) -> Iterator[tuple[str, int, Mapping[str, Any]]]:
    for i, row in enumerate(self.dataset(split)):
      yield f"{self.name} {split}", i, row

  def size(self, split: str) -> int:
    return len(self.dataset(split))


def _dataset_parser(parse_row: Callable[[Mapping[str, Any]], Record]
                    ) -> Callable[[tuple[str, int, Mapping[str, Any]]], Record]:
  def parse(item: tuple[str, int, Mapping[str, Any]]) -> Record:
    where, index, row = item
    try:
      return parse_row(row)
    except (ValueError, UnicodeDecodeError) as e:
      raise rows.BadRow(f"{where}, example {index}", str(e), "map the fields with `columns` "
                        "(data.bad_rows=skip leaves bad rows out)") from None
  return parse


def add_dataset_task(name: str, family: str, reader: TfdsRows | HfRows, vocabulary: HFVocabulary,
                     *, columns: Mapping[str, Any], labels: list[str], num_classes: int | None,
                     train_size: int | None, description: str,
                     bad_rows: str = "error") -> MuppetTask:
  """Registers the seqio task `name` over the rows `reader` gives; `bad_rows` as for files,
  but "error" checks rows as they are read, not all at once here."""
  rows.check_bad_rows(bad_rows)
  rows.check_columns(family, columns)
  classes = local_files.class_count(family, num_classes, labels, columns)
  source = PythonSource(reader, family, list(reader.splits), num_choices=classes,
                        parse=_dataset_parser(rows.row_parser(family, classes, columns, labels)),
                        sources=[reader.source] if isinstance(reader, TfdsRows) else ())
  if bad_rows == "skip":  # Every row read once, here, to leave the bad ones out.
    reader.size("train")  # Checks first that the data is there.
    good = {split: source.check_rows(split, skip=True) for split in source.splits}
    train_size = train_size or good["train"]
  info = TaskInfo(family, classes, train_size or reader.size("train"), labels=tuple(labels),
                  description=description or reader.name)
  return add_task(name, source, None, info, vocabulary)
