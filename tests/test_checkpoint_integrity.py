"""A workdir's checkpoints when something went wrong: a damaged latest step is named in one line
and the previous complete one used (by training, export and the model metadata readers), the
good older step is never rotated away, nothing restorable stops the run without touching the
workdir, a failed save leaves the previous checkpoint intact, and a resume with another mixture
is refused with the difference named."""

import pathlib
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import prefinetune
from muppet_jax import checkpointing, export, pretrained
from muppet_jax.errors import UserError
from muppet_jax.train import train
from tests import run_helpers


def _config(**overrides):
  return run_helpers.short_demo(prefinetune, **{
      "total_steps": 30, "checkpoint.every_steps": 10, "checkpoint.keep": 3,
      "eval.every_steps": 1000, "eval.max_batches": 1, **overrides})


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> pathlib.Path:
  """A demo run with checkpoints at steps 10, 20 and 30."""
  workdir = tmp_path_factory.mktemp("run")
  train(_config(), str(workdir))
  return workdir


def _copy(run: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  shutil.copytree(run, tmp_path / "run")
  return tmp_path / "run"


def _params(checkpoints: pathlib.Path, step: int):
  _, model = pretrained.from_checkpoint(checkpoints, step=step)
  return jax.device_get(model.params)


def _truncate_largest(directory: pathlib.Path) -> None:
  path = max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  path.write_bytes(path.read_bytes()[:1000])


def _warnings(text: str) -> list[str]:
  return [line for line in text.splitlines() if line.startswith("warning: ")]


def _snapshot(directory: pathlib.Path) -> dict[str, tuple[int, int]]:
  return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in directory.rglob("*")}


def test_a_truncated_latest_step_resumes_from_the_previous_one(run, tmp_path, capsys):
  workdir = _copy(run, tmp_path)
  _truncate_largest(workdir / "checkpoints" / "30" / "params")
  capsys.readouterr()
  # keep=2: orbax's own rotation would count the damaged step 30 and delete step 20.
  train(_config(**{"checkpoint.keep": 2}), str(workdir))
  warnings = _warnings(capsys.readouterr().out)
  assert len(warnings) == 1, warnings
  assert "step 30 can't be restored (params: " in warnings[0]
  assert "resuming from step 20" in warnings[0]
  assert (workdir / "damaged_checkpoints" / "30" / "params").is_dir()
  # Steps 20 (the good older one) and 30 (written again) are kept; 10 is the one rotated.
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [
      20, 30]
  assert sorted(p.name for p in (workdir / "input_state").iterdir()) == ["20", "30"]
  # The resumed run continued exactly: its step 30 is the original's.
  for a, b in zip(jax.tree.leaves(_params(run / "checkpoints", 30)),
                  jax.tree.leaves(_params(workdir / "checkpoints", 30)), strict=True):
    np.testing.assert_array_equal(a, b)


def test_damaged_model_metadata_is_detected_and_the_previous_step_exported(run, tmp_path,
                                                                           capsys):
  workdir = _copy(run, tmp_path)
  metadata = workdir / "checkpoints" / "30" / "model" / "metadata"
  metadata.write_text(metadata.read_text()[:-100])
  capsys.readouterr()
  step, meta = checkpointing.read_model_metadata(workdir / "checkpoints")
  assert step == 20 and meta["format"] == checkpointing.FORMAT
  out = export.export(workdir / "checkpoints", tmp_path / "hf")
  warnings = _warnings(capsys.readouterr().out)
  assert len(warnings) == 2 and all("step 30 can't be restored (model: " in w for w in warnings)
  assert "exporting step 20" in warnings[1]
  assert (out / "model.safetensors").exists()
  # Asked for by its number, the damaged step is one line naming it.
  with pytest.raises(UserError, match=r"step 30 is damaged: model: "):
    export.export(workdir / "checkpoints", tmp_path / "hf30", step=30)


def test_nothing_restorable_is_one_line_and_leaves_the_workdir_alone(run, tmp_path):
  workdir = _copy(run, tmp_path)
  for step in (10, 20, 30):
    (workdir / "checkpoints" / str(step) / "model" / "metadata").write_text("{")
  before = _snapshot(workdir)
  with pytest.raises(UserError) as error:
    train(_config(), str(workdir))
  message = str(error.value)
  assert "no checkpoint step restores (step 30: model: " in message
  assert "step 10: model: " in message and "\n" not in message
  assert _snapshot(workdir) == before


def test_a_failed_save_is_one_line_and_the_previous_checkpoint_stays(run, tmp_path,
                                                                    monkeypatch):
  workdir = _copy(run, tmp_path)
  for step in ("20", "30"):  # As if the run had stopped after step 10.
    shutil.rmtree(workdir / "checkpoints" / step)
    shutil.rmtree(workdir / "input_state" / step)
  real = ocp.StandardCheckpointHandler.async_save

  async def disk_full(self, directory, *args, **kwargs):
    if "opt_state" in str(directory):  # Mid-save: the parameters are written already.
      raise OSError(28, "No space left on device")
    return await real(self, directory, *args, **kwargs)
  monkeypatch.setattr(ocp.StandardCheckpointHandler, "async_save", disk_full)
  with pytest.raises(UserError) as error:
    train(_config(**{"checkpoint.keep": 1}), str(workdir))
  message = str(error.value)
  assert message.startswith("saving checkpoint step 20 failed: No space left on device")
  assert "checkpoints step 10" in message and "\n" not in message
  monkeypatch.undo()

  def unfinished():
    return [p.name for p in (workdir / "checkpoints").iterdir() if "checkpoint-tmp" in p.name]
  assert unfinished()  # The failed save's partial step 20 is still there...
  assert checkpointing.TrainCheckpoints(workdir, keep=1).complete_steps() == [10]
  for a, b in zip(jax.tree.leaves(_params(run / "checkpoints", 10)),
                  jax.tree.leaves(_params(workdir / "checkpoints", 10)), strict=True):
    np.testing.assert_array_equal(a, b)
  # ...and the rerun that the message asks for, which never saves step 20 again, removes it.
  train(_config(**{"checkpoint.keep": 1, "total_steps": 15}), str(workdir))
  assert unfinished() == []
  assert checkpointing.TrainCheckpoints(workdir, keep=1).complete_steps() == [15]


def test_resuming_with_another_mixture_names_the_difference(run, tmp_path):
  workdir = _copy(run, tmp_path)
  before = _snapshot(workdir)
  with pytest.raises(UserError) as error:
    train(_config(**{"data.mixture": "demo_sentiment"}), str(workdir))
  message = str(error.value)
  assert "was trained on another mixture" in message
  assert "drops ['demo_choice', 'demo_entailment', 'demo_similarity', 'demo_span', " in message
  assert f"--config.init_from={workdir / 'checkpoints'}" in message
  assert _snapshot(workdir) == before
