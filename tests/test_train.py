"""`python -m muppet_jax.train` end to end on the demo preset: logs, checkpoints, resume after
SIGKILL (bit-identical), SIGTERM, bad input, and export of every head kind."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from muppet_jax import export, pretrained
from muppet_jax.models.multitask import MultiTaskEncoder
from muppet_jax.preemption import Preemption
from muppet_jax.train import train
from configs import prefinetune
from tests import run_helpers

pytestmark = pytest.mark.slow  # Scheduled first (conftest.py).

ROOT = pathlib.Path(__file__).parent.parent


def _config(**overrides):
  return run_helpers.short_demo(prefinetune, **{"checkpoint.every_steps": 20, **overrides})


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("demo")
  handler, threads = signal.getsignal(signal.SIGTERM), set(threading.enumerate())
  metrics = train(_config(), str(workdir))
  # The run's SIGTERM handler is gone once it returns, and so are its input threads.
  assert signal.getsignal(signal.SIGTERM) is handler
  assert not [t for t in set(threading.enumerate()) - threads
              if t.is_alive() and t.name.startswith("muppet_jax")]
  return workdir, metrics


def _cli(workdir, *args, env=None, wait=True):
  command = [sys.executable, "-m", "muppet_jax.train", "--config=configs/prefinetune.py:demo",
             f"--workdir={workdir}", *args]
  # Two devices: sharded (fsdp=2) checkpoints, at a fraction of the conftest's eight's cost.
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", **(env or {})}
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # The conftest's: as a user runs it, the package sets it.
  kwargs = dict(cwd=ROOT, env=env, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  if wait:
    return subprocess.run(command, timeout=600, **kwargs)
  return subprocess.Popen(command, **kwargs)


def test_demo_run_logs_evaluates_and_checkpoints(demo_run):
  workdir, metrics = demo_run
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  train_lines = [m for m in lines if "loss" in m]
  assert [m["step"] for m in train_lines] == [10, 20, 30, 40]
  assert train_lines[-1]["loss"] < train_lines[0]["loss"]
  for key in ("loss/classification", "loss/span", "learning_rate", "steps_per_second",
              "tokens_per_second", "real_tokens_per_second", "tflops_per_device"):
    assert key in train_lines[-1], key
  assert "eval/demo_sentiment/accuracy" in metrics and "eval/family/span" in metrics
  assert any(m.get("eval/demo_span/exact_match") is not None for m in lines)
  assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [
      "20", "40"]


def _final_params(workdir):
  _, model = pretrained.from_checkpoint(workdir / "checkpoints")
  return jax.device_get(model.params)


def _wait_for(path, process, seconds=300):
  deadline = time.time() + seconds
  while not path.exists():
    assert process.poll() is None, process.communicate()
    assert time.time() < deadline
    time.sleep(0.2)


def test_sigkill_and_restart_is_bit_identical_to_an_uninterrupted_run(tmp_path):
  steps = ["--config.total_steps=40", "--config.checkpoint.every_steps=5",
           "--config.eval.every_steps=1000", "--config.eval.max_batches=1",
           "--config.log_every_steps=1000", "--config.model.hidden_dropout=0.1"]
  done = _cli(tmp_path / "straight", *steps)
  assert done.returncode == 0, done.stderr
  # The start-up log: the tasks, and none of the libraries' noise.
  assert run_helpers.noise_lines(done.stdout + done.stderr) == []
  assert """
6 tasks of muppet_demo, train size and sampling rate (temperature 1, cap none):
  demo_choice      2,000  13.7%    demo_similarity  1,500  10.3%
  demo_entailment  3,200  21.9%    demo_span        2,500  17.1%
  demo_sentiment   3,000  20.5%    demo_topic       2,400  16.4%
  left out (summarization, which this model can't train): demo_summarize
""" in done.stdout
  own_cache = {"JAX_COMPILATION_CACHE_DIR": ""}  # The workdir's, not the test session's.
  killed = _cli(tmp_path / "killed", *steps, env=own_cache, wait=False)
  _wait_for(tmp_path / "killed" / "checkpoints" / "5", killed)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  assert not (tmp_path / "killed" / "checkpoints" / "40").exists()
  cache = tmp_path / "killed" / "compilation_cache"
  compiled = {p.name for p in cache.iterdir()}
  assert any(name.startswith("jit_train_step-") for name in compiled)
  resumed = _cli(tmp_path / "killed", *steps, env=own_cache)
  assert resumed.returncode == 0, resumed.stderr
  assert "resumed from" in resumed.stdout + resumed.stderr
  assert "compiled train step in" in resumed.stdout
  # The restart found its train step in the persistent cache: nothing new of it was compiled.
  assert {p.name for p in cache.iterdir() if p.name.startswith("jit_train_step-")} == {
      name for name in compiled if name.startswith("jit_train_step-")}
  a, b = _final_params(tmp_path / "straight"), _final_params(tmp_path / "killed")
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def test_sigterm_saves_and_exits_cleanly(tmp_path):
  running = _cli(tmp_path, "--config.total_steps=100000", "--config.checkpoint.every_steps=10",
                 "--config.eval.every_steps=100000", wait=False)
  _wait_for(tmp_path / "checkpoints" / "10", running)
  running.send_signal(signal.SIGTERM)
  out, err = running.communicate(timeout=300)
  assert running.returncode == 0, err
  saved = int(out.split("SIGTERM: saved step ")[1].split(";")[0]) if "SIGTERM" in out else int(
      err.split("SIGTERM: saved step ")[1].split(";")[0])
  assert saved >= 10 and (tmp_path / "checkpoints" / str(saved)).exists()


def test_preemption_catches_sigterm_only_while_open():
  before = signal.getsignal(signal.SIGTERM)
  with Preemption() as preemption:
    assert not preemption.requested()
    signal.raise_signal(signal.SIGTERM)
    assert preemption.requested()
  assert signal.getsignal(signal.SIGTERM) is before
  with pytest.raises(RuntimeError), Preemption():
    raise RuntimeError("a failed run")
  assert signal.getsignal(signal.SIGTERM) is before


def _snapshot(directory):
  """Every file a run saved; the compilation cache, which only grows, is not the run's."""
  return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in directory.rglob("*")
          if p.is_file() and p.relative_to(directory).parts[0] != "compilation_cache"}


# Mistakes that need the demo's run (config keys, types, presets: tests/test_bad_inputs.py).
@pytest.mark.parametrize("args,env,message", [
    (["--config.mesh.fsdp=3"], {}, "needs 3 devices but 1 are available"),
    (["--config.data.mixture=glue_cola"], {"TFDS_DATA_DIR": "/nonexistent/tfds"},
     "tfds build glue/cola"),
    (["--config.model.hidden_size=64"], {}, "another model size"),
])
def test_bad_input_is_one_clear_line_and_leaves_the_workdir_alone(demo_run, args, env, message):
  workdir, _ = demo_run
  before = _snapshot(workdir)
  done = _cli(workdir, *args, env={"XLA_FLAGS": "", **env})
  assert done.returncode != 0
  errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and message in errors[0], done.stderr[-2000:]
  assert "Traceback" not in done.stderr
  assert run_helpers.noise_lines(done.stdout + done.stderr) == []
  assert _snapshot(workdir) == before


@pytest.mark.parametrize("task,auto", [
    ("demo_sentiment", transformers.AutoModelForSequenceClassification),
    ("demo_similarity", transformers.AutoModelForSequenceClassification),
    ("demo_choice", transformers.AutoModelForMultipleChoice),
    ("demo_span", transformers.AutoModelForQuestionAnswering),
])
def test_task_export_matches_the_jax_model(demo_run, tmp_path, task, auto):
  workdir, _ = demo_run
  out = export.export(workdir / "checkpoints", tmp_path / task, task=task)
  hf, info = auto.from_pretrained(out, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  _, model = pretrained.from_checkpoint(workdir / "checkpoints")
  net = MultiTaskEncoder(model.config, model.layout)
  entry = next(t for t in model.tasks if t.name == task)
  head = model.layout.names.index(entry.head)
  rows = 4 if task == "demo_choice" else 3
  ids, mask = run_helpers.padded_inputs(rows, 20, len(task), pad_id=model.config.pad_token_id)
  slots = np.zeros((rows, 1), np.int32)
  ours = net.apply({"params": model.params},
                   {"input_ids": jnp.asarray(ids), "segment_ids": jnp.asarray(mask),
                    "seg_head": jnp.asarray(slots + head), "seg_start": jnp.asarray(slots)})
  with torch.no_grad():
    if task == "demo_choice":
      got = hf.eval()(input_ids=torch.tensor(ids)[None], attention_mask=torch.tensor(mask)[None])
      np.testing.assert_allclose(got.logits[0].numpy(), ours.choice_scores[:, 0], atol=1e-4)
    elif task == "demo_span":
      got = hf.eval()(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
      real = mask.astype(bool)
      np.testing.assert_allclose(got.start_logits.numpy()[real],
                                 np.asarray(ours.span_logits[:, 0, :, 0])[real], atol=1e-4)
      np.testing.assert_allclose(got.end_logits.numpy()[real],
                                 np.asarray(ours.span_logits[:, 0, :, 1])[real], atol=1e-4)
    else:
      got = hf.eval()(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
      n = got.logits.shape[-1]
      assert n == (1 if task == "demo_similarity" else 2)
      np.testing.assert_allclose(got.logits.numpy(), ours.class_logits[:, 0, :n], atol=1e-4)


def test_task_export_errors(demo_run, tmp_path):
  workdir, _ = demo_run
  with pytest.raises(Exception, match="no head for task 'glue_mnli'"):
    export.export(workdir / "checkpoints", tmp_path / "x", task="glue_mnli")


@pytest.mark.parametrize("source,scan", [("hf", False), ("converted", False), ("hf", True),
                                         ("converted", True)])
def test_starts_from_pretrained_weights_and_keeps_the_mlm_head(tmp_path, source, scan):
  """...with the layers in a loop or scanned (stacked on the way in, a loop again on the way
  out of the checkpoint)."""
  from muppet_jax import convert
  from tests import hf_fixtures
  # A tiny RoBERTa whose vocabulary covers the demo tokenizer.
  hf_fixtures.tiny_mlm("roberta", vocab_size=1000, max_position_embeddings=130).save_pretrained(
      tmp_path / "hf")
  start = tmp_path / "hf"
  if source == "converted":
    start = convert.convert(str(tmp_path / "hf"), tmp_path / "ckpt")
  train(_config(init_from=str(start), total_steps=4,
                **{"eval.every_steps": 100, "model.scan_layers": scan}), str(tmp_path / "run"))
  trained = _final_params(tmp_path / "run")
  original = jax.device_get(pretrained.from_hf(str(tmp_path / "hf")).params)
  # The masked-LM head is frozen (Muppet has no MLM loss) and exported as it came in ...
  for a, b in zip(jax.tree.leaves(trained["mlm_head"]), jax.tree.leaves(original["mlm_head"]),
                  strict=True):
    np.testing.assert_array_equal(a, b)
  # ... while the encoder trained from the pretrained weights: close to them, not equal.
  before = original["encoder"]["layers_0"]["attention"]["query"]["kernel"]
  after = trained["encoder"]["layers_0"]["attention"]["query"]["kernel"]
  assert 0 < np.abs(after - before).max() < 0.05
  assert trained["encoder"]["embeddings"]["word_embeddings"]["embedding"].shape == (1000, 32)
