"""Model checkpoints with orbax: parameters (sharded, restored straight onto the mesh) plus the
JSON metadata that makes a checkpoint self-describing (architecture, source config.json, tokenizer).

A checkpoint directory is an orbax CheckpointManager root with numbered steps, each holding the
items `params` and `model` (and, from training, `opt_state`). `muppet_jax.convert` writes step 0;
`muppet_jax.train` writes `WORKDIR/checkpoints`. Either kind can be exported or trained from.
"""

from __future__ import annotations

import base64
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath

from muppet_jax import progress
from muppet_jax.errors import UserError
from muppet_jax.state import TrainState

FORMAT = "muppet_jax.model/v1"


def encode_files(files: Mapping[str, bytes]) -> dict[str, str]:
  return {name: base64.b64encode(data).decode("ascii") for name, data in files.items()}


def decode_files(files: Mapping[str, str]) -> dict[str, bytes]:
  return {name: base64.b64decode(data) for name, data in files.items()}


def _manager(directory: epath.Path, *, create: bool, asynchronous: bool = False,
             keep: int | None = None) -> ocp.CheckpointManager:
  handlers = {"params": ocp.StandardCheckpointHandler(),
              "opt_state": ocp.StandardCheckpointHandler(), "model": ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(
      directory.absolute(), item_handlers=handlers,
      options=ocp.CheckpointManagerOptions(create=create, enable_async_checkpointing=asynchronous,
                                           read_only=not create, max_to_keep=keep))


def save_model(directory: str | os.PathLike, params: Any, model_metadata: Mapping[str, Any],
               step: int = 0, keep: int | None = None) -> epath.Path:
  """Writes `params` and `model_metadata` as step `step` of the checkpoint root `directory`;
  with `keep`, the older steps beyond the last `keep` go once it is written."""
  directory = epath.Path(directory).expanduser()
  with _manager(directory, create=True, keep=keep) as manager:
    if step in manager.all_steps():
      raise UserError(f"{directory} already has a checkpoint at step {step}; not overwriting it")
    manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        model=ocp.args.JsonSave({"format": FORMAT, **model_metadata})))
    manager.wait_until_finished()
  return directory


def _resolve_step(manager: ocp.CheckpointManager, directory: epath.Path,
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
  directory = epath.Path(directory).expanduser()
  if not directory.is_dir():
    raise UserError(f"checkpoint directory {directory} does not exist")
  with _manager(directory, create=False) as manager:
    step = _resolve_step(manager, directory, step)
    metadata = manager.restore(step, args=ocp.args.Composite(model=ocp.args.JsonRestore()))["model"]
  if metadata.get("format") != FORMAT:
    raise UserError(f"{directory} step {step} is not a {FORMAT} checkpoint "
                    f"(format={metadata.get('format')!r})")
  return step, metadata


def check_shapes(saved: Any, expected: Any, what: str) -> None:
  """A one-line error naming the first tensor whose saved shape differs from the model's."""
  flat_saved = {jax.tree_util.keystr(k): tuple(v.shape)
                for k, v in jax.tree_util.tree_leaves_with_path(saved)}
  flat_expected = {jax.tree_util.keystr(k): tuple(v.shape)
                   for k, v in jax.tree_util.tree_leaves_with_path(expected)}
  if flat_saved.keys() != flat_expected.keys():
    extra = sorted(flat_saved.keys() - flat_expected.keys())[:2]
    missing = sorted(flat_expected.keys() - flat_saved.keys())[:2]
    scanned = [any("['stack']['layer']" in k for k in keys) for keys in (extra, missing)]
    hint = ""
    if scanned[0] != scanned[1]:  # The same model, its layers in the other layout.
      hint = (f"; it was saved with model.scan_layers={str(scanned[0]).lower()}: resume with "
              "that setting")
    raise UserError(f"{what} holds another model: tensors {extra} are not in the model and "
                    f"{missing} are not in the checkpoint{hint}")
  for key, shape in flat_expected.items():
    if flat_saved[key] != shape:
      raise UserError(f"{what} holds another model size: {key} is {flat_saved[key]} there but "
                      f"{shape} in this config")


def restore_params(directory: str | os.PathLike, step: int, abstract_params: Any) -> Any:
  """Restores parameters onto the shardings given by `abstract_params` (ShapeDtypeStructs)."""
  directory = epath.Path(directory).expanduser()
  with _manager(directory, create=False) as manager:
    saved = manager.item_metadata(step)["params"]
    check_shapes(saved, abstract_params, f"{directory} step {step}")
    restored = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params)))
  return restored["params"]


class TrainCheckpoints:
  """A training run's checkpoints: `WORKDIR/checkpoints` (orbax: params, opt_state, model JSON;
  asynchronous; the last `keep`) and `WORKDIR/input_state/STEP/process_I` (each host's data
  stream position, written before the orbax save starts). A step counts as complete when both
  are there, so a run killed at any moment resumes from a consistent pair.
  """

  def __init__(self, workdir: str | os.PathLike, keep: int, asynchronous: bool = True):
    workdir = epath.Path(workdir).expanduser()  # Local, or gs:// on TPU pods.
    self.inputs = workdir / "input_state"
    self.manager = _manager(workdir / "checkpoints", create=True, asynchronous=asynchronous,
                            keep=keep)

  def _input_dir(self, step: int) -> epath.Path:
    return self.inputs / str(step) / f"process_{jax.process_index()}"

  def latest_step(self) -> int | None:
    # Every host writes its stream position before joining the (collective) orbax save, so a
    # step orbax finished has all of them; hosts of another topology read the same answer.
    complete = [s for s in self.manager.all_steps() if (self.inputs / str(s)).is_dir()]
    return max(complete) if complete else None

  def save(self, step: int, train_state: TrainState, metadata: Mapping[str, Any],
           stream: Any) -> None:
    final = self._input_dir(step)
    if not final.exists():
      tmp = final.parent / (final.name + ".tmp")
      if tmp.exists():
        tmp.rmtree()
      tmp.mkdir(parents=True)
      stream.save(tmp)
      tmp.rename(final)
    self.manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(train_state.params),
        opt_state=ocp.args.StandardSave(train_state.opt_state),
        model=ocp.args.JsonSave({"format": FORMAT, **metadata})), force=True)
    if jax.process_index() == 0:  # One host deletes old positions; two would race.
      kept = self.manager.all_steps()
      for old in self.inputs.iterdir() if self.inputs.exists() else ():
        if old.name.isdigit() and int(old.name) < min(kept, default=step) and int(
            old.name) != step:
          old.rmtree()

  def restore(self, step: int, abstract: TrainState, stream: Any) -> TrainState:
    """The train state of `step`, onto the shardings of `abstract`; `stream` continues from
    where it was at that step."""
    what = f"{self.manager.directory} step {step}"
    check_shapes(self.manager.item_metadata(step)["params"], abstract.params, what)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract.params),
        opt_state=ocp.args.StandardRestore(abstract.opt_state)))
    position = self._input_dir(step)
    if not (position.is_dir() and stream.restore(position)):
      progress.log(f"the input position saved at step {step} was written by an earlier "
                   "muppet_jax or by a run on another number of hosts and can't be continued: "
                   "the data stream starts afresh from the seed (parameters and optimizer "
                   "state are restored)")
    return TrainState(jax.device_put(jnp.asarray(step, jnp.int32), abstract.step.sharding),
                      restored["params"], restored["opt_state"])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
