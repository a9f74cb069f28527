"""muppet_jax: massive multi-task pre-finetuning (Muppet) of RoBERTa/BART in JAX/Flax.

Importing the package quiets what the libraries beneath it print about themselves at start-up,
so that a run's log begins with the run. Errors, and warnings about the run, still show; each
setting is a default that the environment overrides.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import subprocess
import sys
from types import ModuleType
from typing import Iterator, Sequence

from absl import logging as absl_logging

# TensorFlow feeds the input pipeline only: its C++ INFO and WARNING lines would bury the training
# log. jaxlib reads the same variable, so XLA's own warnings show only at 1 or 0.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# transformers' advice that PyTorch is missing: we use its tokenizers and configs only.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

# What TensorFlow's shared libraries log as they load, before they read TF_CPP_MIN_LOG_LEVEL
# (absl's C++ logging has no variable of its own to silence them), and its CUDA probe's complaint
# on a machine without a GPU driver (TensorFlow is kept off GPUs anyway).
TF_START_NOISE = "|".join([
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"\] oneDNN custom operations are on\.",
    r"\] Could not find cuda drivers on your machine, GPU will not be used\.",
    r"\] failed call to cuInit: ",
])

# Libraries' notes on what the package does on purpose: seqio's advice to cache (the package
# shuffles by blocks and has its own token cache), orbax's on the read-only checkpoint managers
# that load (export, init_from), and TFDS's while it looks for a dataset that may not be prepared
# (a missing one is a one-line error that says how to prepare it).
ABSL_NOISE = ("Using an uncached FunctionDataset for training",
              "CheckpointManagerOptions.read_only=True",
              "Given directory is read only",
              "Variant folder ")
absl_logging.get_absl_logger().addFilter(
    lambda record: not str(record.msg).startswith(ABSL_NOISE))

# The child of `stderr_without`: copies its input to its output, less the lines matching argv[1].
_FILTER = """import re, sys
noise = re.compile(sys.argv[1].encode())
for line in sys.stdin.buffer:
  if not noise.search(line):
    sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()
"""


@contextlib.contextmanager
def stderr_without(noise: str) -> Iterator[None]:
  """File descriptor 2, which C++ libraries log to, through a filter that drops the lines
  matching the regular expression `noise`. The filter is a child process, so that everything
  else written here shows even if this process dies inside."""
  sys.stderr.flush()
  original = os.dup(2)
  child = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER, noise],
                           stdin=subprocess.PIPE, stdout=original)
  os.dup2(child.stdin.fileno(), 2)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(original, 2)
    os.close(original)
    child.stdin.close()
    try:
      child.wait(timeout=10)  # Its lines come before what follows.
    except subprocess.TimeoutExpired:  # A process started inside holds the pipe open.
      pass


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
  """Loads TensorFlow, the first time it is imported, through `stderr_without(TF_START_NOISE)`,
  and has it probe for GPUs there too (it does so once a process, at its first use of devices).
  With TF_CPP_MIN_LOG_LEVEL below 2 (a user who asked for TensorFlow's logs), or no interpreter
  to run the filter in, TensorFlow loads as it is."""

  def find_spec(self, name: str, path: Sequence[str] | None = None,
                target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
    if (name != "tensorflow" or os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("0", "1")
        or not sys.executable):
      return None
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None:
      return None
    load = spec.loader.exec_module

    def exec_module(module: ModuleType) -> None:
      with stderr_without(TF_START_NOISE):
        load(module)
        module.config.list_physical_devices("GPU")
    spec.loader.exec_module = exec_module
    return spec


sys.meta_path.insert(0, _QuietTensorFlow())

__version__ = "0.1.0"
