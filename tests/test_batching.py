"""MixtureStream: static shapes, heterogeneity, packing, determinism, sharding, resume, and its
background producer (errors, shutdown)."""

import collections
import json
import threading

import numpy as np
import pytest
import seqio

from muppet_jax.data import encoding, mixing
from muppet_jax.data.batching import MixtureStream, StreamConfig
from muppet_jax.data.local_files import add_file_task
from muppet_jax.errors import UserError
from muppet_jax.models.attention import positions_in_segment
from tasks import demo as demo_tasks

CONFIG = StreamConfig("muppet_demo", batch_size=8, max_length=96, target_length=24, max_segments=8,
                      seed=3)


def _batches(config=CONFIG, n=4, shard=None):
  stream = MixtureStream(config, shard)
  return stream, [next(stream) for _ in range(n)]


@pytest.fixture(scope="module")
def packed():
  return _batches()


def _segments(batch):
  """(task, tokens) of every input segment, row by row."""
  out = []
  for row in range(batch["input_ids"].shape[0]):
    for slot in range(batch["seg_task"].shape[1]):
      if batch["seg_task"][row, slot] >= 0:
        tokens = batch["input_ids"][row][batch["segment_ids"][row] == slot + 1]
        out.append((int(batch["seg_task"][row, slot]), tuple(tokens.tolist())))
  return out


def test_static_shapes_and_consistent_segments(packed):
  stream, batches = packed
  for batch in batches:
    assert batch["input_ids"].shape == (8, 96) and batch["target_ids"].shape == (8, 24)
    assert batch["seg_task"].shape == (8, 8) and batch["seg_span"].shape == (8, 8, 2)
    np.testing.assert_array_equal(batch["positions"],
                                  np.asarray(positions_in_segment(batch["segment_ids"])) *
                                  (batch["segment_ids"] > 0))
    live = batch["seg_task"] >= 0
    rows, slots = np.nonzero(live)
    starts = batch["seg_start"][rows, slots]
    # Every segment starts with <s> (id 0: never mistaken for padding) and padding is <pad>.
    assert (batch["input_ids"][rows, starts] == 0).all()
    assert (batch["input_ids"][batch["segment_ids"] == 0] == stream.pad_id).all()
    spans = batch["seg_span"][rows, slots]
    has_span = spans[:, 0] >= 0
    assert has_span.any()
    assert (batch["segment_ids"][rows[has_span], spans[has_span, 0]] == slots[has_span] + 1).all()
    assert (batch["seg_head"][live] == [stream._head_of[t] for t in batch["seg_task"][live]]).all()


def test_every_batch_mixes_all_families(packed):
  stream, batches = packed
  # Small batches too, where drawing by rate alone would often miss a family.
  _, small = _batches(StreamConfig(**{**CONFIG.__dict__, "batch_size": 4, "max_length": 64}), 8)
  assert len(stream.families) == 5
  for batch in batches + small:
    tasks = batch["seg_task"][batch["seg_task"] >= 0]
    assert {stream.tasks[t].info.family for t in tasks} == set(stream.families)


def test_multiple_choice_examples_keep_their_choices_together(packed):
  stream, batches = packed
  choice_task = [t.name for t in stream.tasks].index("demo_choice")
  for batch in batches:
    mine = batch["seg_task"] == choice_task
    by_example = collections.defaultdict(list)
    for example, choice in zip(batch["seg_example"][mine], batch["seg_choice"][mine]):
      by_example[example].append(choice)
    assert by_example and all(sorted(c) == [0, 1, 2, 3] for c in by_example.values())


def test_summaries_ride_with_their_documents(packed):
  stream, batches = packed
  summarize = [t.name for t in stream.tasks].index("demo_summarize")
  for batch in batches:
    for row in range(8):
      target_segments = set(batch["target_segment_ids"][row]) - {0}
      owners = {int(batch["seg_task"][row, s - 1]) for s in target_segments}
      assert owners <= {summarize}
      assert target_segments == {s + 1 for s in np.nonzero(batch["seg_task"][row] == summarize)[0]}


def test_same_seed_same_batches_other_seed_other_batches(packed):
  _, batches = packed
  _, again = _batches()
  _, other = _batches(StreamConfig(**{**CONFIG.__dict__, "seed": 4}), n=1)
  for a, b in zip(batches, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(batches[0]["input_ids"], other[0]["input_ids"])


def test_saved_position_resumes_exactly(tmp_path):
  stream, _ = _batches(n=2)
  stream.save(tmp_path)
  expected = [next(stream) for _ in range(3)]
  resumed = MixtureStream(CONFIG)
  resumed.restore(tmp_path)
  for a, b in zip(expected, [next(resumed) for _ in range(3)]):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  with pytest.raises(UserError, match="another data config"):
    MixtureStream(StreamConfig(**{**CONFIG.__dict__, "batch_size": 9})).restore(tmp_path)


def test_two_shards_cover_a_task_exactly_once():
  config = StreamConfig("demo_similarity", batch_size=16, max_length=64, num_epochs=1,
                        shuffle=False)
  task = seqio.get_mixture_or_task("demo_similarity")
  everything = collections.Counter(
      tuple(ex["inputs"].tolist()) for ex in task.get_dataset(
          {"inputs": 64}, shuffle=False, num_epochs=1, trim_output_features=False,
          try_in_mem_cache=False).as_numpy_iterator())
  seen = []
  for index in range(2):
    shard = [s for batch in MixtureStream(config, seqio.ShardInfo(index, 2))
             for _, s in _segments(batch)]
    assert 0 < len(shard) < sum(everything.values())
    seen.append(collections.Counter(shard))
  assert seen[0] + seen[1] == everything


def test_padded_mode_has_one_sequence_per_row():
  stream, batches = _batches(StreamConfig(**{**CONFIG.__dict__, "packing": False}), n=2)
  for batch in batches:
    assert batch["seg_task"].shape == (8, 1)
    assert (batch["segment_ids"].max(axis=1) <= 1).all()


def test_packing_raises_the_real_token_fraction(packed):
  _, batches = packed
  _, padded = _batches(StreamConfig(**{**CONFIG.__dict__, "packing": False}), n=4)
  fraction = lambda bs: np.mean([(b["segment_ids"] > 0).mean() for b in bs])  # noqa: E731
  assert fraction(batches) > 2 * fraction(padded)


def test_batch_too_small_for_the_choices():
  with pytest.raises(UserError, match="can't hold a 4-choice example"):
    MixtureStream(StreamConfig("demo_choice", batch_size=2, packing=False))


# Mixtures.

def test_muppet_mixtures():
  roberta = {t.name for t in mixing.mixture_tasks("muppet_roberta")}
  bart = {t.name for t in mixing.mixture_tasks("muppet_bart")}
  assert len(roberta) == 42 and len(bart) == 46 and roberta < bart
  assert {t.info.family for t in mixing.mixture_tasks("muppet_roberta")} == {
      "classification", "regression", "multiple_choice", "span"}
  assert {t.info.family for t in mixing.mixture_tasks("muppet_summarization")} == {
      "summarization"}
  previous = set()
  for n in (10, 15, 20, 25, 30, 35, 40):
    names = {t.name for t in mixing.mixture_tasks(f"muppet_roberta_n{n}")}
    assert len(names) == n and previous < names and names < roberta
    assert {"glue_mnli", "glue_stsb", "super_glue_boolq", "race", "squad"} <= names
    previous = names


def test_rates_are_size_proportional_with_temperature_and_cap():
  sizes = {t.name: t.info.train_size for t in mixing.mixture_tasks("muppet_demo")}
  rates = mixing.rates("muppet_demo")
  assert sum(rates.values()) == pytest.approx(1.0)
  for name, size in sizes.items():
    assert rates[name] == pytest.approx(size / sum(sizes.values()))
  hot = mixing.rates("muppet_demo", temperature=2.0)
  assert hot["demo_similarity"] / hot["demo_entailment"] == pytest.approx(
      (1500 / 3200) ** 0.5)
  capped = mixing.rates("muppet_demo", cap=2000)
  assert capped["demo_entailment"] == pytest.approx(capped["demo_choice"])
  with pytest.raises(UserError, match="unknown mixture or task 'muppet_nope'"):
    mixing.rates("muppet_nope")


def _new_threads(before):
  return [t for t in set(threading.enumerate()) - before if t.is_alive()]


def test_two_processes_split_the_single_process_stream():
  """Process 0 and 1 of 2 read disjoint examples that together are the 1-process stream's."""
  config = StreamConfig("demo_entailment", batch_size=16, max_length=64, num_epochs=1,
                        seed=2, block_size=64)

  def examples(shard):
    with MixtureStream(config, shard) as stream:
      return collections.Counter(s for batch in stream for _, s in _segments(batch))

  whole = examples(None)
  halves = [examples(seqio.ShardInfo(i, 2)) for i in range(2)]
  assert sum(whole.values()) == 3200 and not set(halves[0]) & set(halves[1]) - {
      k for k, v in whole.items() if v > 1}
  assert halves[0] + halves[1] == whole
  assert abs(sum(halves[0].values()) - sum(halves[1].values())) <= 1


def test_a_bad_row_reaches_the_consumer_as_a_clear_error_and_stops_the_threads(tmp_path):
  path = tmp_path / "train.jsonl"
  rows = [json.dumps({"text_a": f"row {i}", "label": 1}) for i in range(3000)]
  path.write_text("\n".join(rows) + "\n")
  before = set(threading.enumerate())
  add_file_task("bad_row_task", "classification", num_classes=2, train=str(path),
                vocabulary=demo_tasks.VOCABULARY)
  rows[2500] = "{not json"  # After registration checked the rows: a reader thread finds it.
  path.write_text("\n".join(rows) + "\n")
  stream = MixtureStream(StreamConfig("bad_row_task", batch_size=4, max_length=32,
                                      block_size=512))
  with pytest.raises(UserError, match=r"train.jsonl, line 2501: Expecting property name"):
    for _ in range(1000):
      next(stream)
  with pytest.raises(UserError):  # And it stays failed.
    next(stream)
  assert not _new_threads(before)
  seqio.TaskRegistry.remove("bad_row_task")


def test_a_crash_in_the_producer_is_raised_by_next_not_a_hang(monkeypatch):
  calls = []

  def broken(vocabulary, columns, lengths):
    calls.append(1)
    if len(calls) > 3:
      raise ValueError("boom")
    return encoding.encode_classification(vocabulary, columns, lengths)

  monkeypatch.setitem(encoding.ENCODERS, "classification", broken)
  before = set(threading.enumerate())
  stream = MixtureStream(StreamConfig("demo_sentiment", batch_size=8, max_length=512,
                                      block_size=64))
  with pytest.raises(RuntimeError, match="the input stream failed: ValueError: boom"):
    for _ in range(1000):
      next(stream)
  assert not _new_threads(before)


def test_close_stops_the_producer_and_readers():
  before = set(threading.enumerate())
  stream = MixtureStream(CONFIG)
  next(stream)
  assert "muppet_jax-batches" in {t.name for t in _new_threads(before)}
  stream.close()
  assert not _new_threads(before)


def test_task_datasets_run_without_tf_data_autotuning():
  """The autotuner's thread made every reader closed before the end of its split (an
  evaluation, a stopped run) wait up to a minute in its tf.data iterator's destructor."""
  task = seqio.get_mixture_or_task("demo_sentiment")
  assert task.text_dataset("train", {"inputs": 64}).options().autotune.enabled is False


def test_a_position_saved_on_another_number_of_hosts_starts_the_stream_afresh(tmp_path):
  config = StreamConfig(**{**CONFIG.__dict__, "batch_size": CONFIG.batch_size // 2})
  with MixtureStream(config, seqio.ShardInfo(index=0, num_shards=2)) as half:
    next(half)
    half.save(tmp_path)
  with MixtureStream(CONFIG) as whole:
    assert not whole.restore(tmp_path)
    with MixtureStream(CONFIG) as fresh:
      a, b = next(whole), next(fresh)
      for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
