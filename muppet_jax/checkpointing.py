"""Model checkpoints with orbax: parameters (sharded, restored straight onto the mesh) plus the
JSON metadata that makes a checkpoint self-describing (architecture, source config.json, tokenizer).

A checkpoint directory is an orbax CheckpointManager root with numbered steps, each holding the
items `params` and `model` (and, from training, `opt_state`). `muppet_jax.convert` writes step 0;
`muppet_jax.train` writes `WORKDIR/checkpoints`. Either kind can be exported or trained from.
"""

from __future__ import annotations

import base64
import inspect
import json
import os
import re
import sys
import threading
from typing import Any, Callable, Mapping, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from muppet_jax import progress, trainer
from muppet_jax.errors import UserError
from muppet_jax.state import TrainState

FORMAT = "muppet_jax.model/v1"
# Where a run moves the steps newer than the one it resumed from, when those failed to restore.
DAMAGED_DIR = "damaged_checkpoints"


class Damaged(UserError):
  """A checkpoint step that can't be read back: a missing, truncated or garbled item."""

  def __init__(self, directory: epath.Path, step: int, item: str, reason: str):
    self.step, self.item, self.reason = step, item, reason
    super().__init__(f"{directory} step {step} is damaged: {item}: {reason}; restore another step "
                     "(--step) or move this one aside")


def _reason(error: BaseException) -> str:
  """An exception as a short one-line reason: the innermost of its chain (orbax wraps
  tensorstore's, which names the file's problem), without the store's whereabouts."""
  while error.__cause__ or error.__context__:
    error = error.__cause__ or error.__context__
  text = " ".join(str(error).split()).split(" See full TensorStore details")[0]
  text = re.sub(r' in OCDBT database at local file "[^"]*"', "", text) or type(error).__name__
  return text if len(text) <= 160 else text[:157] + "..."


def _read(directory: epath.Path, step: int, item: str, read: Callable[[], Any]) -> Any:
  """`read()` of `item` of `step`, any failure as `Damaged` (a user error stays one)."""
  if not (directory / str(step) / item).is_dir():
    raise Damaged(directory, step, item, "missing")
  try:
    return read()
  except UserError:  # Damaged, or a mismatch with the model (not damage).
    raise
  except Exception as e:  # Orbax and tensorstore raise many kinds for unreadable files.
    _quiet_abandoned_reads()
    raise Damaged(directory, step, item, _reason(e)) from e


def _quiet_abandoned_reads() -> None:
  """After a failed restore, orbax's other reads of it end later, unawaited or on its closed
  event loop, each printing a traceback with a tensorstore spec: the one line that names the
  damage says it all, so those reports are dropped (any other goes to the usual hook)."""
  previous = sys.unraisablehook
  if getattr(previous, "muppet_jax", False):
    return

  def hook(report) -> None:
    abandoned = (isinstance(report.exc_value, RuntimeError) and
                 str(report.exc_value) == "Event loop is closed") or (
        inspect.iscoroutine(report.object) and
        report.object.cr_code.co_filename.startswith(os.path.dirname(ocp.__file__)))
    if not abandoned:
      previous(report)
  hook.muppet_jax = True
  sys.unraisablehook = hook


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
      # A writer first removes what a failed or killed save left unfinished.
      options=ocp.CheckpointManagerOptions(create=create, enable_async_checkpointing=asynchronous,
                                           read_only=not create, max_to_keep=keep,
                                           cleanup_tmp_directories=create))


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


def _no_steps(directory: epath.Path) -> UserError:
  """What `directory`, which holds no complete step, holds instead, and what to pass."""
  if (directory / "config.json").exists():
    return UserError(f"{directory} is a Hugging Face model, not a muppet_jax checkpoint; use it "
                     "as it is, or make a checkpoint of it with `python -m muppet_jax.convert "
                     f"--from-hf {directory} --out DIR`")
  if (directory / "checkpoints").is_dir():
    return UserError(f"{directory} is a training workdir, not a checkpoint directory; pass "
                     f"{directory / 'checkpoints'}")
  names = sorted(p.name for p in directory.iterdir())
  unfinished = [n for n in names if ".orbax-checkpoint-tmp" in n]
  if unfinished:
    return UserError(f"{directory} holds only unfinished saves ({', '.join(unfinished[:3])}) and "
                     "no complete step; pass a directory with a complete one (a run's "
                     "WORKDIR/checkpoints after its first checkpoint, or convert's --out)")
  found = (", ".join(names[:5]) + (", ..." if len(names) > 5 else "")) if names else "nothing"
  return UserError(f"{directory} holds no muppet_jax checkpoint (found: {found}); pass a run's "
                   "WORKDIR/checkpoints, or make one with `python -m muppet_jax.convert "
                   "--from-hf PATH_OR_NAME --out DIR`")


def _steps(manager: ocp.CheckpointManager, directory: epath.Path, step: int | None) -> list[int]:
  """The steps to try, newest first: `step` alone, or every complete one."""
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    raise _no_steps(directory)
  if step is None:
    return steps
  if step not in steps:
    raise UserError(f"{directory} has no checkpoint at step {step}; it has steps {sorted(steps)}")
  return [step]


T = TypeVar("T")


def first_restorable(directory: epath.Path, steps: list[int], restore: Callable[[int], T],
                     action: str = "using") -> tuple[int, T, list[Damaged]]:
  """(step, restore(step)) of the newest of `steps` (newest first) that restores, and the newer
  ones that are damaged, each logged in one line ("...; {action} step N"); one line if none
  restores. Every host takes the same step: a step restores where it restores on all of them."""
  damaged = []
  for step in steps:
    try:
      result, error = restore(step), None
    except Damaged as e:
      result, error = None, e
    if jax.process_count() > 1:  # One host's unreadable shard makes the step unusable for all.
      failed = multihost_utils.process_allgather(np.int32(error is not None))
      if failed.any() and error is None:
        error = Damaged(directory, step, "another host's shard", "unreadable there")
    if error is None:
      for e in damaged:
        progress.log(f"warning: {directory} step {e.step} can't be restored ({e.item}: "
                     f"{e.reason}); {action} step {step}")
      return step, result, damaged
    damaged.append(error)
  raise UserError(f"{directory}: no checkpoint step restores (" + "; ".join(
      f"step {e.step}: {e.item}: {e.reason}" for e in damaged) + "); nothing in it was "
                  "changed: move the damaged steps aside (or start a new workdir)")


def read_model_metadata(directory: str | os.PathLike,
                        step: int | None = None) -> tuple[int, dict[str, Any]]:
  """(step, metadata) of the given step, or of the latest one whose metadata reads."""
  directory = epath.Path(directory).expanduser()
  if not directory.is_dir():
    raise UserError(f"checkpoint directory {directory} does not exist")
  with _manager(directory, create=False) as manager:
    steps = _steps(manager, directory, step)
    if step is None:
      step, metadata, _ = first_restorable(directory, steps,
                                           lambda s: _read_model(manager, directory, s))
    else:  # The step asked for, or its damage.
      metadata = _read_model(manager, directory, step)
  if metadata.get("format") != FORMAT:
    raise UserError(f"{directory} step {step} is not a {FORMAT} checkpoint "
                    f"(format={metadata.get('format')!r})")
  return step, metadata


def _read_model(manager: ocp.CheckpointManager, directory: epath.Path,
                step: int) -> dict[str, Any]:
  metadata = _read(directory, step, "model", lambda: manager.restore(
      step, args=ocp.args.Composite(model=ocp.args.JsonRestore()))["model"])
  if not isinstance(metadata, dict):
    raise Damaged(directory, step, "model", f"holds {type(metadata).__name__}, not an object")
  return metadata


def restorable_steps(directory: str | os.PathLike, step: int | None = None) -> list[int]:
  """The steps of the checkpoint root `directory` to try, newest first (`step` alone if given)."""
  directory = epath.Path(directory).expanduser()
  if not directory.is_dir():
    raise UserError(f"checkpoint directory {directory} does not exist")
  with _manager(directory, create=False) as manager:
    return _steps(manager, directory, step)


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
    saved = _read(directory, step, "params", lambda: manager.item_metadata(step)["params"])
    check_shapes(saved, abstract_params, f"{directory} step {step}")
    return _read(directory, step, "params", lambda: manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params)))["params"])


def check_same_run(saved: Mapping[str, Any], current: Mapping[str, Any], what: str) -> None:
  """A one-line error naming how the model metadata saved in a workdir's checkpoint differs from
  this run's where resuming can't continue it: the tasks, the head layout, the architecture.
  Runtime model settings (dtype, remat, dropout, ...) may change between restarts."""
  from muppet_jax import pretrained  # Not at the top: pretrained imports this module.
  saved, current = json.loads(json.dumps(saved)), json.loads(json.dumps(current))
  warm_start = ("; to start from its weights with this config, train in a new workdir with "
                f"--config.init_from={what.rsplit(' step ', 1)[0]}")
  tasks = [{t["name"]: t for t in meta.get("tasks", ())} for meta in (saved, current)]
  if tasks[0].keys() != tasks[1].keys():
    added, removed = sorted(tasks[1].keys() - tasks[0].keys()), sorted(
        tasks[0].keys() - tasks[1].keys())
    raise UserError(f"{what} was trained on another mixture: this config adds tasks "
                    f"{added or 'none'} and drops {removed or 'none'}{warm_start}")
  for name, there in tasks[0].items():
    here = tasks[1][name]
    for key in sorted(there.keys() & here.keys()):
      if there[key] != here[key]:
        raise UserError(f"{what} was trained with another head layout: task {name!r} has "
                        f"{key} {there[key]!r} there but {here[key]!r} here{warm_start}")
  if saved.get("heads") != current.get("heads"):
    raise UserError(f"{what} was trained with another head layout: heads {saved.get('heads')} "
                    f"there but {current.get('heads')} here (data.shared_heads?){warm_start}")
  configs = [meta.get("model_config") or meta.get("encoder_config") or {}
             for meta in (saved, current)]
  for key in sorted(configs[0].keys() & configs[1].keys() - set(pretrained.RUNTIME_KEYS)):
    if configs[0][key] != configs[1][key]:
      raise UserError(f"{what} holds another model size or architecture: model {key} is "
                      f"{configs[0][key]!r} there but {configs[1][key]!r} in this config; resume "
                      "with the settings it was trained with")


def _check_dtypes(saved: Any, expected: Any, what: str) -> None:
  for (path, there), here in zip(jax.tree_util.tree_leaves_with_path(saved),
                                 jax.tree.leaves(expected)):
    if np.dtype(there.dtype) != np.dtype(here.dtype):
      raise UserError(f"{what} holds {jax.tree_util.keystr(path)} as {there.dtype} but this "
                      f"config makes it {here.dtype}: resume with the model.param_dtype it was "
                      "trained with")


class TrainCheckpoints:
  """A training run's checkpoints: `WORKDIR/checkpoints` (orbax: params, opt_state, model JSON;
  asynchronous) and `WORKDIR/input_state/STEP/process_I` (each host's data stream position,
  written before the orbax save starts). A step counts as complete when orbax finalized it and
  the positions are there, so a run killed at any moment resumes from a consistent pair. The
  last `keep` complete steps are kept; the rotation is done here, once a new step is complete,
  so that a failed save never costs an older good step (orbax's own counts the new step when it
  starts writing it). A step that doesn't restore is skipped for the one before it.
  """

  def __init__(self, workdir: str | os.PathLike, keep: int, asynchronous: bool = True):
    self.workdir = epath.Path(workdir).expanduser()  # Local, or gs:// on TPU pods.
    self.inputs = self.workdir / "input_state"
    self.keep, self._saving = keep, None
    self.manager = _manager(self.workdir / "checkpoints", create=True, asynchronous=asynchronous)

  @property
  def directory(self) -> epath.Path:
    return self.manager.directory

  def _input_dir(self, step: int) -> epath.Path:
    return self.inputs / str(step) / f"process_{jax.process_index()}"

  def complete_steps(self) -> list[int]:
    """The complete steps, oldest first."""
    # Every host writes its stream position before joining the (collective) orbax save, so a
    # step orbax finished has all of them; hosts of another topology read the same answer.
    self.manager.reload()
    return sorted(s for s in self.manager.all_steps() if (self.inputs / str(s)).is_dir())

  def latest_step(self) -> int | None:
    complete = self.complete_steps()
    return complete[-1] if complete else None

  def last_good(self, wait: bool = True) -> str:
    """Where a stopped run resumes from, for messages: the latest complete step (once the save
    in flight, if any, is done)."""
    if wait:
      self.wait()
    step = self.latest_step()
    return (f"the last good checkpoint is {self.directory} step {step}" if step is not None
            else "no checkpoint was saved yet")

  def save(self, step: int, train_state: TrainState, metadata: Mapping[str, Any],
           stream: Any) -> None:
    """Starts saving `step` (the previous save finished first); never a non-finite state."""
    self.wait()  # Before anything of `step` is written: the previous one is complete.
    if not bool(_all_finite(train_state.params)):
      raise UserError(f"step {step}: the parameters are not finite, so they were not saved; "
                      f"{self.last_good()}: rerun from it with a lower optimizer.learning_rate")
    final, self._saving = self._input_dir(step), step
    try:
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
    except OSError as e:
      raise self._save_failed(step, e) from e

  def _save_failed(self, step: int, error: OSError) -> UserError:
    # The failed save's other writes end first, rather than report at exit after the one line.
    for thread in threading.enumerate():
      if type(thread).__module__.startswith("orbax.") and thread is not threading.current_thread():
        thread.join(timeout=60)
    self.manager.reload()  # The failed step is no checkpoint.
    where = f" ({error.filename})" if error.filename else ""
    return UserError(f"saving checkpoint step {step} failed: {error.strerror or _reason(error)}"
                     f"{where}; {self.last_good(wait=False)}, intact: free disk space or fix "
                     "permissions, then rerun to resume from it")

  def _rotate(self) -> None:
    """Deletes the complete steps older than the last `keep`, and their stream positions."""
    complete = self.complete_steps()
    if len(complete) <= self.keep:
      return
    kept = complete[-self.keep:]
    for old in complete[:-self.keep]:
      self.manager.delete(old)  # On every host: orbax deletes on one and syncs them all.
    if jax.process_index() != 0:  # One host deletes old positions; two would race.
      return
    for old in self.inputs.iterdir() if self.inputs.exists() else ():
      if old.name.isdigit() and int(old.name) < kept[0]:
        old.rmtree()

  def restore_latest(self, abstract: TrainState, stream: Any,
                     metadata: Mapping[str, Any]) -> tuple[int, TrainState] | None:
    """(step, train state) of the latest complete step that restores, onto the shardings of
    `abstract`, with `stream` continuing from there; None if there is no complete step. Newer
    steps that don't restore are moved to WORKDIR/damaged_checkpoints, out of the way of the
    run's next saves."""
    steps = self.complete_steps()[::-1]
    if not steps:
      return None
    step, train_state, damaged = first_restorable(
        self.directory, steps, lambda s: self._restore(s, abstract, stream, metadata),
        f"moved it to {self.workdir / DAMAGED_DIR}; resuming from")
    if damaged and jax.process_index() == 0:
      for error in damaged:
        target = self.workdir / DAMAGED_DIR / str(error.step)
        target.parent.mkdir(parents=True, exist_ok=True)
        (self.directory / str(error.step)).rename(target)
        if (self.inputs / str(error.step)).exists():
          (self.inputs / str(error.step)).rename(target / "input_state")
    if damaged and jax.process_count() > 1:
      multihost_utils.sync_global_devices("muppet_jax:damaged_steps_moved")
    self.manager.reload()
    return step, train_state

  def _restore(self, step: int, abstract: TrainState, stream: Any,
               metadata: Mapping[str, Any]) -> TrainState:
    directory, what = self.directory, f"{self.directory} step {step}"
    for item in ("params", "opt_state"):  # Every item there before anything is read.
      _read(directory, step, item, lambda: None)
    saved = _read_model(self.manager, directory, step)
    if saved.get("format") != FORMAT:
      raise Damaged(directory, step, "model", f"format {saved.get('format')!r}, not {FORMAT}")
    check_same_run(saved, metadata, what)
    items = {item: _read(directory, step, item, lambda i=item: self.manager.item_metadata(step)[i])
             for item in ("params", "opt_state")}
    check_shapes(items["params"], abstract.params, what)
    _check_dtypes(items["params"], abstract.params, what)
    restored = {item: _read(directory, step, item, lambda i=item: self.manager.restore(
        step, args=ocp.args.Composite(**{i: ocp.args.StandardRestore(getattr(abstract, i))}))[i])
                for item in ("params", "opt_state")}
    position = self._input_dir(step)
    if not (position.is_dir() and stream.restore(position)):
      progress.log(f"the input position saved at step {step} was written by an earlier "
                   "muppet_jax or by a run on another number of hosts and can't be continued: "
                   "the data stream starts afresh from the seed (parameters and optimizer "
                   "state are restored)")
    return TrainState(jax.device_put(jnp.asarray(step, jnp.int32), abstract.step.sharding),
                      restored["params"], restored["opt_state"])

  def wait(self) -> None:
    """Until the save in flight is complete; its failure as one line."""
    try:
      self.manager.wait_until_finished()
    except OSError as e:
      raise self._save_failed(self._saving, e) from e
    self._rotate()

  def close(self) -> None:
    self.wait()
    self.manager.close()


_all_finite = jax.jit(trainer.all_finite)
