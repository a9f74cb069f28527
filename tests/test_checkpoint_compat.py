"""Checkpoints written by earlier versions of muppet_jax still restore, resume and export.

`tests/fixtures/checkpoints_v1/{roberta,bart}` are 3-step demo runs (tiny models; checkpoints of
steps 2 and 3, the input stream's position of step 2, in the format of before the block readers) written by commit 39a2dde, before the
trainer was split into library modules, with the exports' file hashes that that code produced
(`exports.json`). Rebuilding them with today's code
would prove nothing: `XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m
tests.test_checkpoint_compat` was run once, at that commit.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import prefinetune, prefinetune_bart
from muppet_jax import checkpointing, export, pretrained
from muppet_jax.families import HeadLayout
from muppet_jax.train import train

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "checkpoints_v1"
CONFIGS = {"roberta": prefinetune, "bart": prefinetune_bart}
EXPORTS = {"model": None, "task": "demo_sentiment"}


def config_for(arch: str):
  """The fixture run's config: the demo preset shrunk to a 16-wide, 1-layer model, 3 steps."""
  config = CONFIGS[arch].get_config("demo")
  config.unlock()
  config.update_from_flattened_dict({
      "model.hidden_size": 16, "model.num_layers": 1, "model.num_heads": 2,
      "model.intermediate_size": 32, "data.batch_size": 8, "data.max_length": 64,
      "total_steps": 3, "log_every_steps": 1, "optimizer.warmup_steps": 1,
      "checkpoint.every_steps": 2, "checkpoint.keep": 2, "eval.every_steps": 1000,
      "eval.batch_size": 8, "eval.max_batches": 1, "eval.at_start": False})
  return config


def export_hashes(checkpoint: pathlib.Path, out: pathlib.Path, step: int) -> dict[str, dict]:
  """sha256 of every file of the plain and the --task export of `step`."""
  hashes = {}
  for name, task in EXPORTS.items():
    written = export.export(checkpoint, out / f"{name}_{step}", step=step, task=task)
    hashes[name] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                    for p in sorted(written.iterdir())}
  return hashes


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_old_checkpoints_export_bit_identically(arch, tmp_path):
  expected = json.loads((FIXTURES / "exports.json").read_text())[arch]
  for step in (2, 3):
    assert export_hashes(FIXTURES / arch / "checkpoints", tmp_path, step) == expected[str(step)]
  # The heads rebuilt from the checkpoint's task list are the ones it recorded.
  _, model = pretrained.from_checkpoint(FIXTURES / arch / "checkpoints")
  _, meta = checkpointing.read_model_metadata(FIXTURES / arch / "checkpoints")
  heads = meta["heads"]
  assert model.layout == HeadLayout(tuple(heads["names"]), tuple(heads["kinds"]),
                                    heads["num_classes"])


def _adam_counts(checkpoint_step: pathlib.Path) -> list[int]:
  tree = ocp.StandardCheckpointer().restore(checkpoint_step / "opt_state")
  return [int(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
          if jax.tree_util.keystr(p).endswith("['count']")]


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_old_checkpoints_resume_with_a_fresh_input_stream(arch, tmp_path, capsys):
  """Resuming the old run from step 2 reads its parameters, heads and optimizer state back;
  its input position (tf.data iterator state, from before the block readers) can't be
  continued, so the data stream starts afresh, and the log says so."""
  workdir = tmp_path / "run"
  shutil.copytree(FIXTURES / arch, workdir)
  shutil.rmtree(workdir / "checkpoints" / "3")  # (Its input state isn't kept in the fixture.)
  train(config_for(arch), str(workdir))
  assert ("written by an earlier muppet_jax or by a run on another number of hosts and can't be "
          "continued") in capsys.readouterr().out
  _, old = pretrained.from_checkpoint(FIXTURES / arch / "checkpoints", step=3)
  _, new = pretrained.from_checkpoint(workdir / "checkpoints", step=3)
  assert new.layout == old.layout and new.tasks == old.tasks and len(new.tasks) >= 6
  # Step 3 is the third update of the restored optimizer (a fresh one would count 1), made
  # from the restored step-2 parameters: close to the old step 3, not equal (other batches).
  assert _adam_counts(workdir / "checkpoints" / "3") == _adam_counts(
      FIXTURES / arch / "checkpoints" / "3") == [3, 3]
  distance = [float(np.abs(a - b).max()) for a, b in zip(
      jax.tree.leaves(jax.device_get(new.params)), jax.tree.leaves(jax.device_get(old.params)))]
  _, step2 = pretrained.from_checkpoint(FIXTURES / arch / "checkpoints", step=2)
  update = [float(np.abs(a - b).max()) for a, b in zip(
      jax.tree.leaves(jax.device_get(old.params)), jax.tree.leaves(jax.device_get(step2.params)))]
  assert 0 < max(distance) <= 2 * max(update)


def _write_fixtures(root: pathlib.Path) -> None:
  exports = {}
  for arch in sorted(CONFIGS):
    workdir = root / arch
    train(config_for(arch), str(workdir))
    for extra in ("metrics.jsonl", "tensorboard", "input_state/3"):  # Only step 2 resumes.
      path = workdir / extra
      shutil.rmtree(path) if path.is_dir() else path.unlink()
    exports[arch] = {str(step): export_hashes(workdir / "checkpoints", root / "exports" / arch,
                                              step) for step in (2, 3)}
  shutil.rmtree(root / "exports")
  (root / "exports.json").write_text(json.dumps(exports, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
  _write_fixtures(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else FIXTURES)
