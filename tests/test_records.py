"""Blocks of a task's records: read in Python (`records.PythonSource`) or through tf.data, the
records start, start + step, ... (before stop) of the source order, as list slicing gives."""

import json

import numpy as np
import pytest
import seqio
import tensorflow as tf

from muppet_jax.data import records
from muppet_jax.data.local_files import add_file_task
from muppet_jax.data.task_info import TaskInfo, add_task
from tasks import demo as demo_tasks

LENGTHS = {"inputs": 32}
ROWS = [{"text_a": f"row {i}", "text_b": "", "label": i % 3} for i in range(23)]


def _python_task():
  source = records.PythonSource(lambda split: iter(ROWS), "classification", ["train"],
                                num_choices=3)
  return add_task("records_python", source, None, TaskInfo("classification", 3, len(ROWS)),
                  demo_tasks.VOCABULARY)


def _tf_task():  # A formatter after the source: the tf.data path.
  def dataset_fn(split, shuffle_files=False, seed=None):
    return tf.data.Dataset.from_tensor_slices(
        {k: [r[k] for r in ROWS] for k in ("text_a", "label")})

  def formatter(dataset):
    return dataset.map(lambda ex: {"text_a": ex["text_a"], "text_b": "", "label": ex["label"]})
  return add_task("records_tf", seqio.FunctionDataSource(dataset_fn, splits=["train"]),
                  formatter, TaskInfo("classification", 3, len(ROWS)), demo_tasks.VOCABULARY)


@pytest.fixture(scope="module", params=["python", "tf"])
def task(request):
  task = _python_task() if request.param == "python" else _tf_task()
  yield task
  seqio.TaskRegistry.remove(task.name)


def _texts(blocks):
  return [[x.decode() if isinstance(x, bytes) else x for x in b["text_a"]] for b in blocks]


@pytest.mark.parametrize("start,step,stop,block_size", [
    (0, 1, None, 10), (3, 2, None, 4), (1, 3, 17, 2), (5, 1, 9, 100), (30, 1, None, 4)])
def test_blocks_are_the_slice_of_the_source_order(task, start, step, stop, block_size):
  blocks = list(task.text_blocks("train", LENGTHS, block_size=block_size, start=start,
                                 step=step, stop=stop))
  expected = [r["text_a"] for r in ROWS][start:stop:step]
  assert _texts(blocks) == [expected[i:i + block_size]
                            for i in range(0, len(expected), block_size)]
  if blocks:
    labels = np.concatenate([b["label"] for b in blocks])
    assert labels.tolist() == [
        r["label"] for r in ROWS][start:stop:step]


def test_python_blocks_equal_what_seqio_reads(tmp_path):
  """The tf.data dataset seqio gets from a file task holds the records training reads."""
  path = tmp_path / "train.jsonl"
  rows = [{"context": f"c{i}", "choices": [f"a{i}", f"b{i}"], "label": i % 2} for i in range(7)]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  task = add_file_task("records_mc", "multiple_choice", num_classes=2, train=str(path),
                       vocabulary=demo_tasks.VOCABULARY)
  (block,) = task.text_blocks("train", LENGTHS, block_size=64)
  (batched,) = task.text_dataset("train", LENGTHS).batch(64).as_numpy_iterator()
  assert block.keys() == batched.keys()
  assert block["choices"].shape == batched["choices"].shape == (7, 2)
  for key in block:
    decoded = np.vectorize(lambda x: x.decode() if isinstance(x, bytes) else x, otypes=[object])
    np.testing.assert_array_equal(block[key], decoded(batched[key]))
  seqio.TaskRegistry.remove("records_mc")
