"""Checks of a run's config and workdir before anything is built or compiled, so that a mistake
costs seconds and leaves an existing workdir as it was: step counts and lengths, the workdir, the
mesh against the devices and the batches against the mesh, the starting model, and the mixture's
tasks and their data. Each failure is one `UserError` naming the key (or path) and the fix.

`check` is the whole of it (the top of `train.train`); its parts serve other commands too.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import jax
import ml_collections

from muppet_jax import inputs, partitioning, pretrained, trainer
from muppet_jax.data.task_info import MuppetTask
from muppet_jax.errors import UserError

# (key, least value): counts, intervals and lengths that must be positive (or not negative).
AT_LEAST: tuple[tuple[str, int], ...] = (
    ("total_steps", 1), ("log_every_steps", 1), ("eval.every_steps", 1),
    ("checkpoint.every_steps", 1), ("checkpoint.keep", 1), ("microbatches", 1),
    ("data.batch_size", 1), ("data.max_length", 1), ("data.target_length", 1),
    ("data.max_segments", 1), ("data.rate_cap", 0), ("eval.batch_size", 1),
    ("eval.max_batches", 1), ("eval.generation.num_beams", 1), ("eval.generation.min_length", 0),
    ("eval.generation.max_length", 0), ("optimizer.warmup_steps", 0))
# The model's sizes, which only a random init (empty init_from) reads.
MODEL_AT_LEAST: tuple[tuple[str, int], ...] = (
    ("model.vocab_size", 0), ("model.hidden_size", 1), ("model.num_layers", 1),
    ("model.num_heads", 1), ("model.intermediate_size", 1),
    ("model.max_position_embeddings", 1))


def check(config: ml_collections.ConfigDict, workdir: str
          ) -> tuple[jax.sharding.Mesh, list[MuppetTask]]:
  """Everything about `config` and `workdir` that can be known before the run builds anything,
  cheapest first. Returns what the checks made, for the run to go on with: the mesh, and the
  mixture's tasks (registered and checked prepared)."""
  check_numbers(config)
  check_workdir(workdir)
  mesh = partitioning.make_mesh(dict(config.mesh))
  check_batches(config, mesh)
  pretrained.check_start(config.init_from)
  # The mixture and its tasks exist, their data files are there with rows, TFDS data prepared.
  return mesh, inputs.prepared_tasks(config)


def _value(config: ml_collections.ConfigDict, key: str) -> Any:
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def check_numbers(config: ml_collections.ConfigDict) -> None:
  """Step counts, intervals, lengths and sizes in range; choices among their options."""
  model_keys = MODEL_AT_LEAST if not config.init_from else ()
  for key, least in AT_LEAST + model_keys:
    value = _value(config, key)
    if value < least:
      raise UserError(f"{key}={value} must be at least {least}; set --config.{key}")
  if not 0 < config.data.train_fraction <= 1:
    raise UserError(f"data.train_fraction={config.data.train_fraction} must be in (0, 1]; set "
                    "--config.data.train_fraction")
  if config.data.temperature <= 0:
    raise UserError(f"data.temperature={config.data.temperature} must be positive; set "
                    "--config.data.temperature")
  m = config.model
  if not config.init_from and m.hidden_size % m.num_heads:
    raise UserError(f"model.hidden_size={m.hidden_size} must be a multiple of model.num_heads="
                    f"{m.num_heads}; change either")
  if m.attention_impl == "splash":  # BART's summaries are rows of target_length.
    for key in ("data.max_length",) + (("data.target_length",) if m.architecture == "bart"
                                       else ()):
      if (length := _value(config, key)) % 128:
        raise UserError(f"{key}={length}: attention_impl='splash' tiles rows by 128 tokens; "
                        f"set --config.{key} to a multiple of 128")
  inputs.stream_config(config)  # Its choices (data.batching).
  trainer.NonfiniteGuard(config.nonfinite, config.nonfinite_max_skips)  # Its mode and count.


def check_workdir(workdir: str, flag: str = "--workdir") -> None:
  """A local output directory (`flag`'s) is a directory, or can become one, that this user can
  write in; gs:// and other remote paths are left to their file system."""
  if "://" in workdir:
    return
  path = pathlib.Path(workdir).expanduser()
  existing = path
  while not existing.exists() and existing != existing.parent:
    existing = existing.parent
  if not existing.is_dir():
    where = "" if existing == path else f" ({existing} is a file)"
    raise UserError(f"{flag}={workdir} is not a directory{where}; give {flag} a new or "
                    "existing directory")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise UserError(f"{flag}={workdir} is not writable ({existing} is read-only to this user); "
                    f"give {flag} a directory you can write")


def check_batches(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
  """The train and evaluation batches divide over the mesh's data-parallel axes and the hosts
  (the mesh itself is checked against the devices as it is made)."""
  inputs.check_batch_size(config, mesh)
  ways = mesh.shape["data"] * mesh.shape["fsdp"]
  if config.eval.batch_size % ways:
    raise UserError(f"eval.batch_size={config.eval.batch_size} must be a multiple of data*fsdp "
                    f"({ways})")
  if config.eval.batch_size % jax.process_count():
    raise UserError(f"eval.batch_size={config.eval.batch_size} must divide over "
                    f"{jax.process_count()} hosts")

