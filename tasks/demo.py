"""The offline demo suite as seqio tasks: `demo_*` and the mixture `muppet_demo`."""

from __future__ import annotations

import functools

from muppet_jax.data import demo
from muppet_jax.data.records import PythonSource
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


VOCABULARY = DemoVocabulary()

for _name, (_family, _classes, _, _train, _validation) in demo.DEMO_TASKS.items():
  add_task(  # Demo examples are generated in their family's text format: no formatter.
      _name,
      PythonSource(functools.partial(demo.examples, _name), _family, ("train", "validation"),
                   num_choices=_classes,
                   num_input_examples={"train": _train, "validation": _validation}),
      None,
      TaskInfo(family=_family, num_classes=_classes, train_size=_train,
               description="generated demo task"),
      VOCABULARY)
