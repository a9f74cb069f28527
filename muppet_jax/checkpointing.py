"""Model checkpoints with orbax: parameters (sharded, restored straight onto the mesh) plus the
JSON metadata that makes a checkpoint self-describing (architecture, source config.json, tokenizer).

A checkpoint directory is an orbax CheckpointManager root with numbered steps, each holding the
items `params` and `model`. `muppet_jax.convert` writes step 0; training writes later steps.
"""

from __future__ import annotations

import base64
import os
import pathlib
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp

from muppet_jax.errors import UserError

FORMAT = "muppet_jax.model/v1"


def encode_files(files: Mapping[str, bytes]) -> dict[str, str]:
  return {name: base64.b64encode(data).decode("ascii") for name, data in files.items()}


def decode_files(files: Mapping[str, str]) -> dict[str, bytes]:
  return {name: base64.b64decode(data) for name, data in files.items()}


def _manager(directory: pathlib.Path, *, create: bool) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      directory.absolute(), item_names=("params", "model"),
      options=ocp.CheckpointManagerOptions(create=create, enable_async_checkpointing=False,
                                           read_only=not create))


def save_model(directory: str | os.PathLike, params: Any, model_metadata: Mapping[str, Any],
               step: int = 0) -> pathlib.Path:
  """Writes `params` and `model_metadata` as step `step` of the checkpoint root `directory`."""
  directory = pathlib.Path(directory).expanduser()
  with _manager(directory, create=True) as manager:
    if step in manager.all_steps():
      raise UserError(f"{directory} already has a checkpoint at step {step}; not overwriting it")
    manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        model=ocp.args.JsonSave({"format": FORMAT, **model_metadata})))
    manager.wait_until_finished()
  return directory


def _resolve_step(manager: ocp.CheckpointManager, directory: pathlib.Path,
                  step: int | None) -> int:
  steps = manager.all_steps()
  if not steps:
    raise UserError(f"{directory} holds no muppet_jax checkpoint; make one with "
                    "`python -m muppet_jax.convert --from-hf PATH_OR_NAME --out DIR`")
  if step is None:
    return max(steps)
  if step not in steps:
    raise UserError(f"{directory} has no checkpoint at step {step}; it has steps {sorted(steps)}")
  return step


def read_model_metadata(directory: str | os.PathLike,
                        step: int | None = None) -> tuple[int, dict[str, Any]]:
  """(step, metadata) of the given step, or of the latest one."""
  directory = pathlib.Path(directory).expanduser()
  if not directory.is_dir():
    raise UserError(f"checkpoint directory {directory} does not exist")
  with _manager(directory, create=False) as manager:
    step = _resolve_step(manager, directory, step)
    metadata = manager.restore(step, args=ocp.args.Composite(model=ocp.args.JsonRestore()))["model"]
  if metadata.get("format") != FORMAT:
    raise UserError(f"{directory} step {step} is not a {FORMAT} checkpoint "
                    f"(format={metadata.get('format')!r})")
  return step, metadata


def restore_params(directory: str | os.PathLike, step: int, abstract_params: Any) -> Any:
  """Restores parameters onto the shardings given by `abstract_params` (ShapeDtypeStructs)."""
  directory = pathlib.Path(directory).expanduser()
  with _manager(directory, create=False) as manager:
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(abstract_params)))
    except (ValueError, KeyError) as e:
      raise UserError(f"{directory} step {step} does not match the model: {e}") from e
  return restored["params"]


def abstract_with_shardings(abstract: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)
