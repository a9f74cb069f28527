"""Fine-tuning (`muppet_jax.finetune`) from a short demo pre-finetuning run: the start's weights
and head, the best step, the train fraction, results.json and the command line."""

import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from muppet_jax import finetune, pretrained, results, train
from muppet_jax.data import batching, token_cache
from muppet_jax.data.task_info import get_task
from muppet_jax.errors import UserError
from muppet_jax.families import HeadLayout, TaskHead
from muppet_jax.models.multitask import MultiTaskEncoder
from configs import finetune as finetune_configs
from configs import prefinetune
from tests import run_helpers

pytestmark = pytest.mark.slow  # Scheduled first (conftest.py).

ROOT = pathlib.Path(__file__).parent.parent
TASK = "demo_review"  # The demo preset's.
# 2 classes, the second of 4 classification heads (4 wide) in the pre-finetuned model.
REUSED = "demo_sentiment"


@pytest.fixture(scope="module")
def pre_run(tmp_path_factory):
  """A 20-step demo pre-finetuning run's checkpoints."""
  workdir = tmp_path_factory.mktemp("pre")
  train.train(run_helpers.short_demo(prefinetune, **{
      "total_steps": 20, "checkpoint.every_steps": 20, "eval.every_steps": 20,
      "eval.max_batches": 1}), str(workdir))
  return workdir / "checkpoints"


def _config(start, **overrides):
  config = finetune_configs.get_config("demo")
  config.unlock()
  config.update_from_flattened_dict({
      "init_from": str(start), "total_steps": 6, "log_every_steps": 2, "eval.every_steps": 2,
      "eval.max_batches": 2, **overrides})
  return config


@pytest.fixture(scope="module")
def reuse_run(pre_run, tmp_path_factory):
  """A 6-step fine-tuning with the reused head, stopped early at step 4 by the trainer's hook,
  wrapped to keep the params of every evaluation."""
  workdir = tmp_path_factory.mktemp("reuse")
  seen = {}
  with pytest.MonkeyPatch.context() as patch:
    def recording(config, workdir, on_eval, reuse_heads):
      def hook(step, metrics, params, metadata):
        seen[step] = (metrics, jax.device_get(params))
        return on_eval(step, metrics, params, metadata) or step == 4
      return train_fn(config, workdir, on_eval=hook, reuse_heads=reuse_heads)
    train_fn = train.train
    patch.setattr(train, "train", recording)
    outcome = finetune.finetune(
        _config(pre_run, **{"finetune.head": "reuse", "finetune.task": REUSED}), str(workdir))
  return workdir, outcome, seen


def test_starts_from_the_checkpoint_weights_without_its_optimizer_state(pre_run, reuse_run):
  workdir, _, seen = reuse_run
  _, start = pretrained.from_checkpoint(pre_run)
  first = seen[0][1]  # Step 0: before any update.
  for name in ("encoder", "mlm_head"):
    for a, b in zip(jax.tree.leaves(first[name]), jax.tree.leaves(jax.device_get(start.params[
        name])), strict=True):
      np.testing.assert_array_equal(a, b)
  # Adam counts this run's 4 updates only, not the pre-finetuning's 20 as well.
  path = workdir / "checkpoints" / "4" / "opt_state"
  checkpointer = ocp.StandardCheckpointer()
  saved = checkpointer.metadata(path).item_metadata
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  opt_state = checkpointer.restore(path, jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved))
  counts = [int(v) for k, v in jax.tree_util.tree_leaves_with_path(opt_state)
            if "count" in jax.tree_util.keystr(k)]
  assert counts and set(counts) == {4}
  assert sorted(seen) == [0, 2, 4]  # Stopped early: the step is saved, no more evaluations.
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["4"]


def test_the_reused_head_predicts_as_the_pre_finetuned_model(pre_run, reuse_run):
  _, _, seen = reuse_run
  _, start = pretrained.from_checkpoint(pre_run)
  entry = next(t for t in start.tasks if t.name == REUSED)
  layout = HeadLayout.for_tasks([get_task(REUSED).task_head()])
  assert (start.layout.num_classes, layout.num_classes) == (4, 2)
  assert start.layout.index_in_kind()[start.layout.index(entry.head)] == 1
  ids, mask = run_helpers.padded_inputs(3, 20, 7, pad_id=start.config.pad_token_id)
  slots = np.zeros((3, 1), np.int32)

  def logits(params, layout, head):
    batch = {"input_ids": jnp.asarray(ids), "segment_ids": jnp.asarray(mask),
             "seg_head": jnp.asarray(slots + head), "seg_start": jnp.asarray(slots)}
    out = MultiTaskEncoder(start.config, layout).apply({"params": params}, batch)
    return np.asarray(out.class_logits)[..., :2]

  before = logits(jax.device_get(start.params), start.layout, start.layout.index(entry.head))
  np.testing.assert_allclose(logits(seen[0][1], layout, 0), before, rtol=1e-6, atol=1e-6)
  assert np.abs(before).max() > 1e-3  # A trained head, not zeros.


def test_reuse_without_the_task_s_head_is_an_error(pre_run):
  _, start = pretrained.from_checkpoint(pre_run)
  rte = TaskHead("glue_rte", "classification", 2, "glue_rte")
  with pytest.raises(UserError, match="no trained head for task 'glue_rte'.*head=new"):
    pretrained.reuse_heads(start, HeadLayout.for_tasks([rte]), [rte])
  four = TaskHead(REUSED, "classification", 4, REUSED)
  with pytest.raises(UserError, match="4 outputs here but classification with 2"):
    pretrained.reuse_heads(start, HeadLayout.for_tasks([four]), [four])


def test_the_best_step_is_kept_and_results_json_has_it(reuse_run):
  workdir, outcome, seen = reuse_run
  metric = f"eval/{REUSED}/accuracy"
  values = [(seen[s][0][metric], s) for s in sorted(seen)]
  best_value = max(v for v, _ in values)
  best_step = min(s for v, s in values if v == best_value)  # Ties: the earliest.
  written = json.loads((workdir / "results.json").read_text())
  assert written == outcome[0]
  assert written == {
      "task": REUSED, "start": written["start"], "head": "reuse", "fraction": 1.0, "seed": 0,
      "metric": "accuracy", "best": best_value, "best_step": best_step,
      "best_metrics": seen[best_step][0], "last_step": 4,
      "recipe": {"learning_rate": 2e-4, "weight_decay": 0.01, "batch_size": 16,
                 "total_steps": 6, "warmup_steps": 20},  # The demo preset's, as run.
      "checkpoint": str(workdir / "best")}
  assert written["start"].endswith("checkpoints")
  step, best = pretrained.from_checkpoint(workdir / "best")
  assert step == best_step and [t.name for t in best.tasks] == [REUSED]
  for a, b in zip(jax.tree.leaves(jax.device_get(best.params)),
                  jax.tree.leaves(seen[best_step][1]), strict=True):
    np.testing.assert_array_equal(a, b)


def test_best_step_selection_and_patience():
  best = finetune.BestStep("eval/t/f1", patience=2)
  script = [(0, 0.5), (10, math.nan), (20, 0.7), (30, 0.7), (40, 0.6), (50, 0.9), (60, 0.8),
            (70, 0.85)]
  news, stops = [], []
  for step, value in script:
    news.append(best.update(step, {"eval/t/f1": value, "eval/t/examples": step}))
    stops.append(best.stop)
  assert news == [True, False, True, False, False, True, False, False]
  assert stops == [False, False, False, False, True, False, False, True]
  assert (best.step, best.value, best.metrics) == (50, 0.9, {"eval/t/f1": 0.9,
                                                             "eval/t/examples": 50})
  never = finetune.BestStep("eval/t/f1")
  for step, value in script:
    never.update(step, {"eval/t/f1": value})
    assert not never.stop
  # A first evaluation without a value is the best until one has a value.
  nan_first = finetune.BestStep("m")
  assert nan_first.update(0, {"m": math.nan}) and nan_first.update(5, {"m": -3.0})


def _rows(config, batches, cache_dir=None):
  with batching.MixtureStream(config, ahead=0, cache_dir=cache_dir) as stream:
    return [tuple(row[row != stream.pad_id]) for _ in range(batches)
            for row in next(stream)["input_ids"] if (row != stream.pad_id).any()]


def test_train_fraction_reads_only_the_first_examples_of_the_split(tmp_path):
  common = dict(mixture="demo_sentiment", batch_size=8, max_length=64, packing=False,
                block_size=16)
  limited = _rows(batching.StreamConfig(**common, train_fraction=0.01), 10)  # 80 rows.
  first = _rows(batching.StreamConfig(**common, shuffle=False), 4)  # The first 32 in order.
  assert len(limited) == 80 and set(limited) == set(first[:30])
  # The same rows from the token cache.
  token_cache.build_split(get_task("demo_sentiment"), "train", {"inputs": 64, "targets": 128},
                          tmp_path)
  assert _rows(batching.StreamConfig(**common, train_fraction=0.01), 10, tmp_path) == limited
  assert len(set(_rows(batching.StreamConfig(**common), 10))) > len(set(first[:30]))
  with pytest.raises(UserError, match="train_fraction=0 must be in"):
    batching.MixtureStream(batching.StreamConfig(**common, train_fraction=0))


@pytest.mark.parametrize("preset,first,runs", [("glue", "glue_cola", 8),
                                               ("superglue", "super_glue_boolq", 6),
                                               ("squad", "squad", 1)])
def test_real_presets_name_catalog_tasks(preset, first, runs):
  config = finetune_configs.get_config(preset)
  planned = finetune.runs(config, "w")
  assert planned[0].task == first and len(planned) == runs
  for run in planned:  # Registered, with the family the recipe is for.
    assert get_task(run.task).info.family in (
        ("span",) if preset == "squad" else ("classification", "regression", "multiple_choice"))


def test_real_presets_take_each_family_s_recipe_unless_set():
  config = finetune_configs.get_config("superglue")
  by_task = {r.task: finetune.run_config(config, r) for r in finetune.runs(config, "w")}
  cb, copa = by_task["super_glue_cb"], by_task["copa"]  # 250 and 400 train examples.
  # CB: GLUE's recipe, 8 steps of 32 an epoch for 10 epochs; COPA: RACE's, 400 x 2 choices in
  # rows of 16, 50 steps an epoch for 4.
  assert (cb.optimizer.learning_rate, cb.optimizer.weight_decay, cb.data.batch_size,
          cb.total_steps, cb.eval.every_steps) == (1e-5, 0.1, 32, 80, 8)
  assert (copa.data.batch_size, copa.total_steps, copa.eval.every_steps) == (16, 200, 50)
  squad = finetune.run_config(finetune_configs.get_config("squad"),
                              finetune.runs(finetune_configs.get_config("squad"), "w")[0])
  assert (squad.optimizer.learning_rate, squad.data.batch_size) == (1.5e-5, 48)
  config.unlock()
  config.update_from_flattened_dict({"optimizer.learning_rate": 3e-5, "data.batch_size": 8})
  copa = finetune.run_config(config, finetune.Run("copa", 1.0, 0, "w"))
  assert (copa.optimizer.learning_rate, copa.optimizer.weight_decay, copa.data.batch_size,
          copa.total_steps) == (3e-5, 0.1, 8, 400)  # Set keys win; the rest is the recipe's.
  assert config.optimizer.weight_decay is None  # The sweep's config is untouched.


def test_runs_and_their_configs():
  config = _config("start", **{"finetune.train_fraction": "0.5, 1", "finetune.seeds": "3,4",
                               "finetune.epochs": 2.0})
  planned = finetune.runs(config, "w")
  assert [(r.fraction, r.seed, r.workdir) for r in planned] == [
      (0.5, 3, f"w{os.sep}{TASK}_f0.5_s3"), (0.5, 4, f"w{os.sep}{TASK}_f0.5_s4"),
      (1.0, 3, f"w{os.sep}{TASK}_f1_s3"), (1.0, 4, f"w{os.sep}{TASK}_f1_s4")]
  c = finetune.run_config(config, planned[1])
  # 300 of 600 examples at 16 a step: 19 steps an epoch.
  assert (c.data.mixture, c.data.train_fraction, c.seed, c.data.seed) == (TASK, 0.5, 4, 4)
  assert (c.total_steps, c.optimizer.warmup_steps, c.eval.every_steps) == (38, 2, 19)
  assert config.data.mixture != TASK and config.seed == 0  # The sweep's config is untouched.
  assert finetune.runs(_config("start"), "w")[0].workdir == "w"  # One run: the workdir itself.
  for key, value, message in [("finetune.head", "old", "choose new or reuse"),
                              ("finetune.train_fraction", "0.5,2", "not in \\(0, 1\\]"),
                              ("finetune.seeds", "1,x", "comma-separated list of ints"),
                              ("finetune.task", "", "give --config.finetune.task"),
                              ("finetune.epochs", -1.0, "epochs=-1.0 must be 0"),
                              ("finetune.warmup_fraction", 1.0, "must be in \\[0, 1\\)"),
                              ("finetune.patience", -2, "patience=-2 must be 0")]:
    with pytest.raises(UserError, match=message):
      finetune.runs(_config("start", **{key: value}), "w")
  assert finetune.DEMO_START == finetune_configs.DEMO_START
  with pytest.raises(UserError, match="configs/finetune.py"):
    finetune.finetune(prefinetune.get_config("demo"), "w")


def _cli(workdir, *args):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  return subprocess.run(
      [sys.executable, "-m", "muppet_jax.finetune", "--config=configs/finetune.py:demo",
       f"--workdir={workdir}", *args], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, timeout=600)


def test_command_line_sweep_writes_results_per_run(pre_run, tmp_path):
  done = _cli(tmp_path, f"--config.init_from={pre_run}", "--config.total_steps=4",
              "--config.eval.every_steps=2", "--config.eval.max_batches=1",
              "--config.eval.at_start=false", "--config.finetune.seeds=1,2",
              "--config.finetune.train_fraction=0.5")
  assert done.returncode == 0, done.stderr[-3000:]
  assert run_helpers.noise_lines(done.stdout + done.stderr) == []
  lines = done.stdout.splitlines()
  for seed in (1, 2):
    run = tmp_path / f"{TASK}_f0.5_s{seed}"
    written = json.loads((run / "results.json").read_text())
    assert (written["fraction"], written["seed"], written["head"]) == (0.5, seed, "new")
    assert written["best_step"] in (2, 4) and written["last_step"] == 4
    assert (run / "best").is_dir()
    assert any(line.startswith(f"{TASK} fraction 0.5 seed {seed}: best accuracy ")
               for line in lines)
  assert lines[-2].startswith(f"2 runs done: {TASK} f0.5 ") and "(2 seeds)" in lines[-2]
  assert f"| {TASK} (0.5 of train) | accuracy |" in (tmp_path / "results.md").read_text()
  assert (tmp_path / "results.png").stat().st_size > 0
  # What the results table reads of them.
  assert sorted((r.task, r.fraction, r.seed, r.metric) for r in results.read([tmp_path])) == [
      (TASK, 0.5, 1, "accuracy"), (TASK, 0.5, 2, "accuracy")]
  again = _cli(tmp_path, f"--config.init_from={pre_run}", "--config.finetune.seeds=1,2",
               "--config.finetune.train_fraction=0.5")  # Done runs are skipped.
  assert again.returncode == 0 and again.stdout.splitlines()[-1] == lines[-1]


def test_a_missing_demo_start_is_one_line(tmp_path):
  done = subprocess.run(
      [sys.executable, "-m", "muppet_jax.finetune", f"--config={ROOT}/configs/finetune.py:demo",
       f"--workdir={tmp_path / 'w'}"], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, timeout=300,
      env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [
      "error: no pre-finetuned demo model in runs/demo/checkpoints; run the demo pre-finetuning "
      "first (python -m muppet_jax.train --config=configs/prefinetune.py:demo "
      "--workdir=runs/demo) or give --config.init_from=CHECKPOINT"]
