"""The non-finite guard: a diverging run stops with one line and keeps its last good checkpoint,
`metrics.jsonl` records the non-finite step as strict JSON, export refuses non-finite weights,
and in skip mode a dropped step leaves the state bit-identical (microbatches and R3F on), is
counted, and N in a row stop the run."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import prefinetune
from muppet_jax import checkpointing, export, losses, partitioning, pretrained, r3f, state
from muppet_jax import trainer
from muppet_jax.data.batching import MixtureStream, StreamConfig
from muppet_jax.errors import UserError
from muppet_jax.models.config import EncoderConfig
from muppet_jax.models.multitask import build
from muppet_jax.train import train
from tests import run_helpers

ROOT = pathlib.Path(__file__).parent.parent
DIVERGE = {"optimizer.learning_rate": 1e30, "total_steps": 20, "eval.every_steps": 1000,
           "log_every_steps": 5, "checkpoint.every_steps": 10}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> pathlib.Path:
  """10 steps of the demo, checkpointed at step 10."""
  workdir = tmp_path_factory.mktemp("good")
  train(run_helpers.short_demo(prefinetune, **{
      "total_steps": 20, "checkpoint.every_steps": 10, "eval.every_steps": 1000,
      "eval.max_batches": 1}), str(workdir))
  shutil.rmtree(workdir / "checkpoints" / "20")  # As if it had stopped after step 10.
  shutil.rmtree(workdir / "input_state" / "20")
  return workdir


def _records(workdir: pathlib.Path) -> list[dict]:
  def refuse(constant):
    raise ValueError(f"not strict JSON: {constant}")
  return [json.loads(line, parse_constant=refuse)
          for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _steps(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_a_diverging_run_stops_with_one_line_and_keeps_the_good_checkpoint(good_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(good_run, workdir)
  env = {**os.environ, "XLA_FLAGS": ""}
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  done = subprocess.run(
      [sys.executable, "-m", "muppet_jax.train", "--config=configs/prefinetune.py:demo",
       f"--workdir={workdir}", *[f"--config.{k}={v}" for k, v in DIVERGE.items()]],
      cwd=ROOT, env=env, text=True, capture_output=True, timeout=600)
  assert done.returncode == 2, done.stderr[-3000:]
  errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
  assert " not finite" in errors[0] and "on a batch of demo_" in errors[0]
  assert f"the last good checkpoint is {workdir / 'checkpoints'} step 10" in errors[0]
  bad_step = int(errors[0].split("error: step ")[1].split(":")[0])
  assert 10 < bad_step <= 20
  assert _steps(workdir) == [10]  # Nothing non-finite saved, nothing rotated.
  # The non-finite step is in metrics.jsonl, as strict JSON: null, and named.
  record = next(r for r in _records(workdir) if r["step"] == bad_step and "nonfinite" in r)
  # A learning rate of 1e30 overflows the parameters' norm before the loss is NaN.
  assert "params" in record["nonfinite"] and record["params"] is None
  out = export.export(workdir / "checkpoints", tmp_path / "hf")
  from safetensors.numpy import load_file
  assert all(np.isfinite(t).all() for t in load_file(out / "model.safetensors").values())


def test_skip_mode_counts_dropped_steps_and_stops_after_n_in_a_row(good_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(good_run, workdir)
  config = run_helpers.short_demo(prefinetune, **{**DIVERGE, "nonfinite": "skip",
                                                  "nonfinite_max_skips": 3})
  with pytest.raises(UserError, match=r"not finite \(3 steps in a row, nonfinite_max_skips=3\)"):
    train(config, str(workdir))
  assert _steps(workdir) == [10]
  record = _records(workdir)[-1]
  assert record["skipped_steps"] == 3 and "params" in record["nonfinite"]
  # Export refuses a checkpoint with non-finite weights in one line.
  checkpoints = workdir / "checkpoints"
  _, model = pretrained.from_checkpoint(checkpoints)
  params = jax.tree.map(lambda x: np.full(x.shape, np.nan, x.dtype), jax.device_get(model.params))
  checkpointing.save_model(tmp_path / "nan", params, checkpointing.read_model_metadata(
      checkpoints)[1], step=5)
  with pytest.raises(UserError, match=r"step 5 holds non-finite weights \(\d+ tensors, first "):
    export.export(tmp_path / "nan", tmp_path / "hf")


def _nan_updates() -> optax.GradientTransformation:
  """An optimizer stage whose updates are NaN (with a count, to show its state is kept too)."""
  def update(updates, count, params=None):
    del params
    return jax.tree.map(lambda u: jnp.full_like(u, jnp.nan), updates), count + 1
  return optax.GradientTransformation(lambda params: jnp.zeros((), jnp.int32), update)


@pytest.fixture(scope="module")
def tiny_step():
  """A tiny model's train step with 2 microbatches and R3F, whose updates are all NaN; its
  state and a batch."""
  stream = MixtureStream(StreamConfig("muppet_demo", batch_size=8, max_length=32, max_segments=4,
                                      row_groups=2, exclude_families=("summarization",)))
  config = EncoderConfig(vocab_size=1000, hidden_size=16, num_layers=1, num_heads=2,
                         intermediate_size=32, max_position_embeddings=34)
  model = build(config, stream.layout)
  tx = optax.chain(trainer.make_optimizer(1e-3, 1, 100), _nan_updates())
  table = losses.TaskTable.build(stream.tasks, 32, 1000)
  mesh = partitioning.make_mesh({"data": 1}, jax.devices()[:1])
  abstract = state.abstract_state(model, mesh, tx)
  train_state = state.init_state(model, abstract, jax.random.key(0), tx)
  step = jax.jit(trainer.make_train_step(model, tx, table, microbatches=2, seed=0,
                                         r3f_config=r3f.R3FConfig(weight=1.0)))
  batch = {k: jnp.asarray(v) for k, v in next(stream).items()}
  return step, train_state, batch, mesh


@pytest.mark.parametrize("what", ["params", "loss"])
def test_a_dropped_step_leaves_the_state_bit_identical(tiny_step, what):
  step, train_state, batch, mesh = tiny_step
  if what == "loss":  # Heads that overflow: the loss and the gradients are not finite too.
    heads = dict(train_state.params["heads"])
    key = next(k for k in heads if k.startswith("span"))
    heads[key] = jax.device_put(jnp.full_like(heads[key], jnp.inf), heads[key].sharding)
    train_state = train_state.replace(params={**train_state.params, "heads": heads})
  before = jax.device_get(train_state)
  with partitioning.use_mesh(mesh):
    after, metrics = step(train_state, batch)
  after, metrics = jax.device_get((after, metrics))
  assert int(after.step) == int(before.step) + 1
  for a, b in zip(jax.tree.leaves((before.params, before.opt_state)),
                  jax.tree.leaves((after.params, after.opt_state)), strict=True):
    np.testing.assert_array_equal(a, b)  # Bit for bit (the infs where they were).
  assert float(metrics["skipped"]) == 1 and float(metrics[f"nonfinite/{what}"]) == 1
  assert float(metrics["nonfinite/loss"]) == (what == "loss")
  assert float(metrics["loss_sum"]) == 0 and float(metrics["grad_norm"]) == 0


def test_the_guard_stops_after_n_dropped_in_a_row_and_reads_one_step_late():
  guard = trainer.NonfiniteGuard("skip", max_skips=2)
  seg = np.zeros((1, 1), np.int32)

  def flags(bad):
    return {name: np.float32(bad and name == "nonfinite/loss") for name in trainer.NONFINITE}
  assert guard.check(1, flags(True), seg) is None  # Not read yet.
  assert guard.check(2, flags(False), seg) is None  # Step 1 read: one dropped.
  assert guard.check(3, flags(True), seg) is None  # Step 2 read: the row is broken.
  assert guard.check(4, flags(True), seg) is None  # Step 3: one in a row.
  stop = guard.check(5, flags(False), seg)  # Step 4: two in a row.
  assert stop is not None and stop[:2] == (4, ["loss"])
  assert trainer.NonfiniteGuard("stop", 10).check(7, flags(True), seg, now=True)[0] == 7
  with pytest.raises(UserError, match="nonfinite='nope' is not one of stop, skip"):
    trainer.NonfiniteGuard("nope", 1)
