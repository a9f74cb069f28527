"""A run's input pipeline, from its config: the mixture's tasks (registered, and checked to be
prepared before anything is read), the host-local training and evaluation streams, and host
batches assembled into global arrays."""

from __future__ import annotations

import hashlib
import importlib
import pathlib
import shutil
import tempfile
from typing import Any

import jax
import ml_collections
import numpy as np
import seqio
import tensorflow as tf
from jax.sharding import Mesh, NamedSharding

from muppet_jax import checkpointing, progress
from muppet_jax.data import batching, demo, mixing, records, rows, task_modules, tasks_file
from muppet_jax.data.task_info import MuppetTask, check_prepared
from muppet_jax.errors import UserError
from muppet_jax.families import HeadLayout


def prepared_tasks(config: ml_collections.ConfigDict) -> list[MuppetTask]:
  """The tasks of `config.data.mixture`, each checked to have its data prepared."""
  tf.config.set_visible_devices([], "GPU")  # TensorFlow only feeds data.
  register_tasks(config)
  tasks = mixing.mixture_tasks(config.data.mixture)
  for task in tasks:  # Before any tokenizer or data is read.
    check_prepared(task)
  return tasks


def register_tasks(config: ml_collections.ConfigDict) -> None:
  """Registers the built-in tasks and mixtures, then the config's task modules and tasks file
  (its bad rows an error, or left out: `data.bad_rows`)."""
  rows.check_bad_rows(config.data.bad_rows, "data.bad_rows")
  importlib.import_module("tasks")
  task_modules.import_task_modules(config.data.task_modules)
  if config.data.tasks_file:
    tasks_file.register(config.data.tasks_file, lambda: start_tokenizer(config.init_from),
                        config.data.bad_rows)


def bad_row_metrics(tasks: list[MuppetTask]) -> dict[str, float]:
  """The rows of each task's splits left out as bad (`data.bad_rows=skip`), as metrics
  `bad_rows/TASK/SPLIT`; {} where none were."""
  return {f"bad_rows/{task.name}/{split}": float(bad.count) for task in tasks
          for split, bad in records.bad_rows(task).items()}


def start_tokenizer(init_from: str) -> str:
  """The tokenizer of a run's starting model: a Hugging Face directory or hub name as it is; a
  muppet_jax checkpoint's saved tokenizer files, written once to the local cache."""
  if not init_from:
    raise UserError("the tasks file names no tokenizer, and there is no starting model to take "
                    "it from (init_from, or inspect's --tokenizer, is empty): name one in the "
                    "file (\"tokenizer\": a Hugging Face directory or hub name)")
  path = pathlib.Path(init_from)
  if not path.is_dir() or (path / "config.json").exists():
    return init_from
  _, metadata = checkpointing.read_model_metadata(path)
  files = checkpointing.decode_files(metadata["tokenizer_files"])
  if not files:
    raise UserError(f"the checkpoint {init_from} has no tokenizer files; name a tokenizer in "
                    "the tasks file (\"tokenizer\": a Hugging Face directory or hub name)")
  digest = hashlib.sha256(b"".join(n.encode() + files[n] for n in sorted(files))).hexdigest()
  target = demo.cache_dir() / "tokenizers" / digest[:16]
  if not target.is_dir():
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=target.parent))
    for name, data in files.items():
      (tmp / name).write_bytes(data)
    try:
      tmp.rename(target)
    except OSError:  # Another process wrote it first.
      shutil.rmtree(tmp, ignore_errors=True)
  return str(target)


def vocabulary(tasks: list[MuppetTask]) -> Any:
  return tasks[0].output_features["inputs"].vocabulary


def check_batch_size(config: ml_collections.ConfigDict, mesh: Mesh) -> None:
  ways = mesh.shape["data"] * mesh.shape["fsdp"]
  if config.data.batch_size % (ways * config.microbatches):
    raise UserError(f"data.batch_size={config.data.batch_size} must be a multiple of data*fsdp "
                    f"({ways}) x microbatches ({config.microbatches})")
  if config.data.batch_size % jax.process_count():
    raise UserError(f"data.batch_size={config.data.batch_size} must divide over "
                    f"{jax.process_count()} hosts")


def stream_config(config: ml_collections.ConfigDict, **changes: Any) -> batching.StreamConfig:
  """The host-local stream of `config.data` (the batch divided over hosts), with `changes`."""
  d = config.data
  if d.batching not in ("heterogeneous", "homogeneous"):
    raise UserError(f"data.batching={d.batching!r}; choose heterogeneous or homogeneous")
  fields = dict(mixture=d.mixture, batch_size=d.batch_size // jax.process_count(),
                max_length=d.max_length, target_length=d.target_length, packing=d.packing,
                max_segments=d.max_segments, seed=d.seed, temperature=d.temperature,
                rate_cap=d.rate_cap or None, shared_heads=d.shared_heads,
                homogeneous=d.batching == "homogeneous", row_groups=config.microbatches,
                train_fraction=d.train_fraction)
  return batching.StreamConfig(**{**fields, **changes})


def _shard() -> seqio.ShardInfo:
  return seqio.ShardInfo(jax.process_index(), jax.process_count())


def train_stream(config: ml_collections.ConfigDict, seq2seq: bool) -> batching.MixtureStream:
  """This host's training batches; encoders have no decoder to summarize with, so their runs
  leave summarization tasks out."""
  excluded = () if seq2seq else ("summarization",)
  stream = batching.MixtureStream(stream_config(config, exclude_families=excluded), _shard(),
                                  cache_dir=config.data.cache_dir or None)
  if config.data.cache_dir:
    cached = len(stream.tasks) - len(stream.live_tasks)
    live = f"; tokenized live: {', '.join(stream.live_tasks)}" if stream.live_tasks else ""
    progress.log(f"{cached} of {len(stream.tasks)} tasks read from the token cache in "
                 f"{config.data.cache_dir}{live}")
  return stream


def eval_stream(config: ml_collections.ConfigDict, task: MuppetTask,
                layout: HeadLayout) -> batching.MixtureStream:
  """One pass over this host's part of `task`'s validation split, heads numbered as in
  training; summaries one document per row (they are generated from it)."""
  summarize = task.info.family == "summarization"
  return batching.MixtureStream(
      stream_config(config, mixture=task.name, split="validation", num_epochs=1, shuffle=False,
                    batch_size=config.eval.batch_size // jax.process_count(),
                    homogeneous=False, row_groups=1,
                    packing=config.data.packing and not summarize),
      _shard(), layout=layout, cache_dir=config.data.cache_dir or None, ahead=2)


def global_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Every host's batch, as one global array per key."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
