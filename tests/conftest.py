"""Test setup: 8 fake CPU devices (before jax is imported) and tiny Hugging Face checkpoints."""

import os
import tempfile

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # Tests never use the network.
if "MUPPET_JAX_CACHE" not in os.environ:  # Hermetic: the demo tokenizer is built afresh.
  os.environ["MUPPET_JAX_CACHE"] = tempfile.mkdtemp(prefix="muppet_jax_cache_")
# One persistent compilation cache for the session, this process and the command lines it runs:
# the same demo programs are compiled once, not once per run.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="muppet_jax_xla_cache_")

import pytest  # noqa: E402

import muppet_jax  # noqa: E402,F401  (first: it quiets TensorFlow's start, which seqio imports)
import seqio  # noqa: E402

import tasks  # noqa: E402,F401  (registers the seqio tasks and mixtures)
from tests import hf_fixtures  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  """The slow modules first, so that with several workers (tests/run.sh) they start at once and
  the quick ones fill in around them, rather than one of them running on alone at the end."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session", params=["roberta", "bert"])
def tiny_mlm(request, tmp_path_factory) -> hf_fixtures.SavedModel:
  """A saved tiny random masked-LM checkpoint with tokenizer files, one per architecture."""
  path = tmp_path_factory.mktemp(request.param) / "hf"
  hf_fixtures.save_tiny_mlm(request.param, path)
  return hf_fixtures.SavedModel(request.param, path)


@pytest.fixture(scope="session")
def tiny_bart(tmp_path_factory) -> hf_fixtures.SavedModel:
  """A saved tiny random BartForConditionalGeneration with tokenizer files."""
  path = tmp_path_factory.mktemp("bart") / "hf"
  hf_fixtures.save_tiny_bart(path)
  return hf_fixtures.SavedModel("bart", path)


@pytest.fixture
def registry():
  """Removes the seqio tasks and mixtures a test registers, so that names can be reused."""
  tasks, mixtures = set(seqio.TaskRegistry.names()), set(seqio.MixtureRegistry.names())
  yield
  for name in set(seqio.MixtureRegistry.names()) - mixtures:
    seqio.MixtureRegistry.remove(name)
  for name in set(seqio.TaskRegistry.names()) - tasks:
    seqio.TaskRegistry.remove(name)
