"""The offline demo suite as seqio tasks: `demo_*` and the mixture `muppet_demo`."""

from __future__ import annotations

import functools

import seqio
import tensorflow as tf

from muppet_jax.data import demo
from muppet_jax.data.task_info import TaskInfo, add_task
from muppet_jax.data.vocabulary import HFVocabulary


class DemoVocabulary(HFVocabulary):
  """The demo's byte-level BPE vocabulary; trained and cached on first use, not on import."""

  def __init__(self):
    super().__init__(demo.cache_dir() / demo.TOKENIZER_DIR)

  @property
  def tokenizer(self):
    demo.tokenizer_path()
    return super().tokenizer


def _dataset(split: str, shuffle_files: bool = False, seed: int | None = None, *,
             task: str) -> tf.data.Dataset:
  del shuffle_files, seed  # One in-memory "file"; seqio shuffles examples.
  rows = demo.examples(task, split)
  return tf.data.Dataset.from_tensor_slices({k: [r[k] for r in rows] for k in rows[0]})


def _identity(dataset: tf.data.Dataset) -> tf.data.Dataset:
  return dataset  # Demo examples are generated in their family's text format already.


VOCABULARY = DemoVocabulary()

for _name, (_family, _classes, _, _train, _validation) in demo.DEMO_TASKS.items():
  add_task(
      _name,
      seqio.FunctionDataSource(functools.partial(_dataset, task=_name),
                               splits=("train", "validation"),
                               num_input_examples={"train": _train, "validation": _validation}),
      _identity,
      TaskInfo(family=_family, num_classes=_classes, train_size=_train,
               description="generated demo task"),
      VOCABULARY)
