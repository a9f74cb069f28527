"""A quiet, honest start: importing muppet_jax keeps the libraries' start-up noise out of the
log (TensorFlow's through a filter that a crash can't swallow, absl advice by message) and lets
everything else through; the table of tasks that a run starts with. The end-to-end start of
`python -m muppet_jax.train` is checked in test_train.py."""

import os
import signal
import subprocess
import sys
import types

from absl import logging

from muppet_jax import progress
from muppet_jax.data import mixing
from tests import run_helpers


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
  environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        env={**environ, **env}, timeout=300)


def test_tensorflow_starts_quietly_unless_its_logs_are_asked_for():
  code = "import muppet_jax, tensorflow as tf; tf.constant(1); print('started')"
  quiet = _python(code)
  assert quiet.returncode == 0 and "started" in quiet.stdout, quiet.stderr
  assert run_helpers.noise_lines(quiet.stderr) == []
  # The same start with TensorFlow's logs on: what the filter took out.
  loud = _python(code, TF_CPP_MIN_LOG_LEVEL="0")
  assert run_helpers.noise_lines(loud.stderr), loud.stderr


def test_the_filter_keeps_other_lines_even_when_the_process_dies():
  done = _python("import os, muppet_jax\n"
                 "with muppet_jax.stderr_without('^noise'):\n"
                 "  os.write(2, b'noise: dropped\\nF0000 a fatal error\\n')\n"
                 "  os.abort()\n")
  assert done.returncode == -signal.SIGABRT
  assert "F0000 a fatal error" in done.stderr and "dropped" not in done.stderr


def test_library_advice_is_dropped_and_other_warnings_kept(caplog):
  logging.warning("Using an uncached FunctionDataset for training is not recommended ...")
  logging.warning("Given directory is read only=%s", "/ckpt")
  logging.warning("a warning about the run")
  assert [r.getMessage() for r in caplog.records] == ["a warning about the run"]


def test_task_lines_go_down_two_columns_and_name_what_is_left_out():
  config = types.SimpleNamespace(mixture="muppet_demo", temperature=2.0, rate_cap=2500,
                                 exclude_families=("summarization", "span"))
  tasks = [t for t in mixing.mixture_tasks("muppet_demo")
           if t.info.family not in config.exclude_families]
  rates = mixing.rates("muppet_demo", config.temperature, config.rate_cap)
  stream = types.SimpleNamespace(config=config, tasks=tasks,
                                 rates=[rates[t.name] for t in tasks])
  # Shares of sqrt(min(size, 2500)) over the five: 44.7, 50, 50, 38.7 and 49.0 of 232.4.
  assert progress.task_lines(stream) == """\
5 tasks of muppet_demo, train size and sampling rate (temperature 2, cap 2,500):
  demo_choice      2,000  19.2%    demo_similarity  1,500  16.7%
  demo_entailment  3,200  21.5%    demo_topic       2,400  21.1%
  demo_sentiment   3,000  21.5%
  left out (summarization, span, which this model can't train): demo_span, demo_summarize"""
