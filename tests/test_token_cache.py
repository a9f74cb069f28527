"""The token cache: the same batches as live (and after a resume), refusal of a stale or foreign
cache, live reading of what isn't cached, and the cache command on two workers with resume."""

import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import seqio

from muppet_jax.data import mixing, token_cache
from muppet_jax.data.batching import MixtureStream, StreamConfig
from muppet_jax.data.local_files import add_file_task
from muppet_jax.data.vocabulary import HFVocabulary
from muppet_jax.errors import UserError
from tasks import demo as demo_tasks
from tests import hf_fixtures

CONFIG = StreamConfig("muppet_demo", batch_size=8, max_length=64, target_length=24, seed=5,
                      block_size=256)
LENGTHS = {"inputs": 64, "targets": 24}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build(cache_dir, tasks, split="train", **kwargs):
  for task in tasks:
    token_cache.build_split(task, split, LENGTHS, cache_dir, **kwargs)


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
  cache_dir = tmp_path_factory.mktemp("cache")
  _build(cache_dir, mixing.mixture_tasks("muppet_demo"), records_per_shard=1000)
  return cache_dir


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_cached_and_live_streams_give_the_same_batches(demo_cache):
  with MixtureStream(CONFIG) as live, MixtureStream(CONFIG, cache_dir=demo_cache) as cached:
    assert cached.live_tasks == [] and len(live.live_tasks) == len(live.tasks) == 7
    # Enough batches to cross shuffle blocks (256 records) and shards (1000 records).
    for _ in range(60):
      _assert_same(next(live), next(cached))


def test_resume_from_the_middle_is_exact_cached_and_live(demo_cache, tmp_path):
  with MixtureStream(CONFIG, cache_dir=demo_cache) as stream:
    for _ in range(25):
      next(stream)
    stream.save(tmp_path)
    expected = [next(stream) for _ in range(10)]
  for cache_dir in (demo_cache, None):
    with MixtureStream(CONFIG, cache_dir=cache_dir) as resumed:
      assert resumed.restore(tmp_path)
      for batch in expected:
        _assert_same(batch, next(resumed))


def test_a_cache_of_other_lengths_is_refused_with_the_fix(demo_cache):
  other = StreamConfig(**{**CONFIG.__dict__, "max_length": 96})
  with pytest.raises(UserError) as e:
    MixtureStream(other, cache_dir=demo_cache)
  message = str(e.value)
  assert "\n" not in message and "lengths 'inputs 64' (this run: 'inputs 96')" in message
  assert "python -m muppet_jax.cache" in message and "--overwrite" in message


def test_the_fingerprint_ignores_what_calls_into_the_tokenizer_left_behind():
  """A fast tokenizer's call sets its truncation and padding; a process that called it (an
  evaluation, a test) must still accept the cache another process made."""
  task = mixing.mixture_tasks("demo_topic")[0]
  before = token_cache.fingerprint(task, "train", LENGTHS)
  task.vocabulary.tokenizer(["anna saw maps"] * 2, truncation=True, max_length=3,
                            padding="max_length")
  assert task.vocabulary.tokenizer.backend_tokenizer.truncation is not None  # The state changed.
  assert token_cache.fingerprint(task, "train", LENGTHS) == before
  task.vocabulary.tokenizer.backend_tokenizer.no_truncation()
  task.vocabulary.tokenizer.backend_tokenizer.no_padding()


def _file_task(name, path, vocabulary):
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return add_file_task(name, "classification", num_classes=2, train=str(path),
                       vocabulary=vocabulary)


def test_a_cache_of_another_vocabulary_or_changed_data_is_refused(tmp_path):
  data = tmp_path / "train.jsonl"
  data.write_text("".join(json.dumps({"text_a": f"anna saw {i} maps", "label": i % 2}) + "\n"
                          for i in range(50)))
  task = _file_task("cache_vocab_task", data, demo_tasks.VOCABULARY)
  _build(tmp_path / "cache", [task])
  assert token_cache.open_split(tmp_path / "cache", task, "train", LENGTHS).num_records == 50
  hf_fixtures.save_tokenizer("bert", tmp_path / "bert")
  task = _file_task("cache_vocab_task", data, HFVocabulary(tmp_path / "bert"))
  with pytest.raises(UserError, match="vocabulary"):
    token_cache.open_split(tmp_path / "cache", task, "train", LENGTHS)
  task = _file_task("cache_vocab_task", data, demo_tasks.VOCABULARY)
  time.sleep(0.01)
  data.write_text(data.read_text() + json.dumps({"text_a": "new row", "label": 0}) + "\n")
  with pytest.raises(UserError, match="preprocessing"):
    token_cache.open_split(tmp_path / "cache", task, "train", LENGTHS)
  seqio.TaskRegistry.remove("cache_vocab_task")


def test_tasks_missing_from_the_cache_are_read_live_and_named(tmp_path):
  _build(tmp_path, [mixing.mixture_tasks("demo_topic")[0]])
  with MixtureStream(CONFIG, cache_dir=tmp_path) as stream:
    assert sorted(stream.live_tasks) == sorted(
        t.name for t in stream.tasks if t.name != "demo_topic")
    next(stream)


def test_an_incomplete_cache_is_refused(tmp_path):
  task = mixing.mixture_tasks("demo_topic")[0]
  _build(tmp_path, [task], records_per_shard=1000)
  (tmp_path / "demo_topic" / "train" / "shard-00001" / "done.json").unlink()
  with pytest.raises(UserError, match="incomplete.*resumes"):
    token_cache.open_split(tmp_path, task, "train", LENGTHS)


def test_workers_starting_a_split_at_once_agree_on_its_info(tmp_path):
  """Workers of the cache command start each split at the same moment: whoever writes its
  info.json first, the others check it instead of failing."""
  task = mixing.mixture_tasks("demo_topic")[0]
  expected = token_cache.fingerprint(task, "train", LENGTHS)
  for trial in range(10):
    directory = tmp_path / str(trial)
    barrier = threading.Barrier(4)

    def start(directory=directory, barrier=barrier):
      barrier.wait()
      token_cache._start_split(directory, expected, 700, False, "hint")

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
      for future in [pool.submit(start) for _ in range(4)]:
        future.result()
    assert [p.name for p in directory.iterdir()] == ["info.json"]


def _cache_command(out, *flags):
  return [sys.executable, "-m", "muppet_jax.cache", "--config=configs/prefinetune.py:demo",
          f"--out={out}", "--config.data.max_length=64", "--config.data.target_length=24",
          "--records_per_shard=700", *flags]


def test_cache_command_on_two_workers_then_resumed(demo_cache, tmp_path):
  """Two workers at once build the whole cache, shard for shard what one process builds;
  a missing shard is rebuilt by running the command again, and nothing else is."""
  out = tmp_path / "cache"
  workers = [subprocess.Popen(_cache_command(out, f"--worker={i}", "--workers=2"), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
  logs = [w.communicate(timeout=300) for w in workers]
  assert [w.returncode for w in workers] == [0, 0], [err[-3000:] for _, err in logs]
  task = mixing.mixture_tasks("demo_entailment")[0]  # 3,200 train records: 5 shards of 700.
  whole = token_cache.open_split(out, task, "train", LENGTHS)
  assert whole.num_records == 3200
  reference = token_cache.open_split(demo_cache, task, "train", LENGTHS)
  index = np.arange(3200)
  for field in ("tokens", "sequence_lengths", "label"):
    np.testing.assert_array_equal(getattr(whole.records(index), field),
                                  getattr(reference.records(index), field))
  shard = out / "demo_entailment" / "train" / "shard-00003"
  for path in shard.iterdir():
    path.unlink()
  shard.rmdir()
  done = subprocess.run(_cache_command(out, "--tasks=demo_entailment"), cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  assert "demo_entailment/train: 1 shards written (700 records" in done.stdout
  assert "demo_entailment/validation: 0 shards written" in done.stdout
  np.testing.assert_array_equal(
      token_cache.open_split(out, task, "train", LENGTHS).records(index).tokens,
      reference.records(index).tokens)
