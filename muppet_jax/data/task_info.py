"""What every Muppet task declares, and its registration as a seqio task.

`TaskInfo` is the one place for a task's family, output-space size n (for the 1/log n loss
scaling), head, metrics and train-split size (so mixture rates are known without downloading
anything). It rides on the seqio task itself (`MuppetTask.info`), so the seqio registry is the
only registry.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from muppet_jax.data import preprocessors
from muppet_jax.data.vocabulary import HFVocabulary
from muppet_jax.errors import UserError
from muppet_jax.families import DEFAULT_HEADS, DEFAULT_METRICS, TaskHead, check_family


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """A task's place in pre-finetuning.

  num_classes: classes (classification) or choices per example (multiple choice); 1 for
    regression. Span and summarization output spaces depend on the run (sequence length,
    vocabulary): see `output_space_size`.
  head: "task" (the task's own head), or a shared head's name.
  labels: class names in index order (classification), where known; export writes them as the
    model's id2label.
  train_size: examples in the train split, for size-proportional mixture rates.
  """

  family: str
  num_classes: int
  train_size: int
  metrics: tuple[str, ...] = ()
  head: str = ""
  description: str = ""
  labels: tuple[str, ...] = ()

  def __post_init__(self):
    check_family(self.family)
    if not self.metrics:
      object.__setattr__(self, "metrics", DEFAULT_METRICS[self.family])
    if not self.head:
      object.__setattr__(self, "head", DEFAULT_HEADS[self.family])

  def output_space_size(self, max_length: int, vocab_size: int) -> int:
    """n of the loss scaling L / log n: classes, choices, candidate positions, or vocabulary
    (1 for regression, which has no discrete output space)."""
    if self.family == "span":
      return max_length
    if self.family == "summarization":
      return vocab_size
    return self.num_classes

  def loss_divisor(self, max_length: int, vocab_size: int) -> float:
    """log n; regression's MSE is left unscaled (divisor 1)."""
    n = self.output_space_size(max_length, vocab_size)
    return math.log(n) if n > 1 else 1.0


# Readers fix their own parallelism (one block ahead). tf.data's autotuner would only add a
# thread that an iterator's destructor waits for until its next wake-up, up to a minute: every
# reader left before the end of its split (evaluation, a closed stream) cost that much.
_READ_OPTIONS = tf.data.Options()
_READ_OPTIONS.autotune.enabled = False


class MuppetTask(seqio.Task):
  """A seqio.Task that carries its TaskInfo."""

  def __init__(self, name: str, info: TaskInfo, **kwargs):
    super().__init__(name, **kwargs)
    self.info = info
    self._text_datasets = {}  # Traced once: tracing the formatters costs ~0.1 s a task.

  def task_head(self, shared_heads: bool = True) -> TaskHead:
    """The task as the heads see it; `shared_heads=False` gives multiple-choice and span tasks
    a head of their own too."""
    own = self.info.head == "task" or (
        not shared_heads and self.info.family in ("multiple_choice", "span"))
    return TaskHead(self.name, self.info.family, self.info.num_classes,
                    self.name if own else self.info.head, self.info.labels)

  def text_dataset(self, split: str, lengths: Mapping[str, int]) -> tf.data.Dataset:
    """The split's records in the family's text format, in source order: the task's
    preprocessors but the last, the family tokenizer (`add_task` puts it there)."""
    dataset = self.source.get_dataset(split=split, shuffle=False)
    for fn in self.preprocessors[:-1]:
      dataset = seqio.utils.add_kwargs_to_transform(
          fn, sequence_length=lengths, output_features=self.output_features)(dataset)
    return dataset.with_options(_READ_OPTIONS)

  def text_blocks(self, split: str, lengths: Mapping[str, int], *, block_size: int,
                  start: int = 0, step: int = 1, stop: int | None = None
                  ) -> Iterator[dict[str, np.ndarray]]:
    """The records start, start + step, ... (before `stop`) of `text_dataset`, `block_size`
    at a time, as numpy columns; read in Python, not through tf.data, where the source can
    (`records.PythonSource`, with no formatter after it)."""
    if hasattr(self.source, "text_blocks") and len(self.preprocessors) == 1:
      yield from self.source.text_blocks(split, block_size=block_size, start=start, step=step,
                                         stop=stop)
      return
    key = (split, tuple(sorted(lengths.items())))
    if key not in self._text_datasets:
      self._text_datasets[key] = self.text_dataset(split, lengths)
    dataset = self._text_datasets[key].skip(start)
    if stop is not None:
      dataset = dataset.take(max(stop - start, 0))
    if step > 1:
      dataset = dataset.shard(step, 0)
    yield from dataset.batch(block_size).prefetch(1).as_numpy_iterator()

  @property
  def vocabulary(self) -> HFVocabulary:
    return self.output_features["inputs"].vocabulary


def output_features(vocabulary: HFVocabulary) -> dict[str, seqio.Feature]:
  return {
      "inputs": seqio.Feature(vocabulary, add_eos=False, dtype="int32"),
      "targets": seqio.Feature(vocabulary, add_eos=False, dtype="int32", required=False),
  }


def add_task(name: str, source: seqio.DataSource, formatter: Callable | None, info: TaskInfo,
             vocabulary: HFVocabulary, extra_preprocessors: Sequence[Callable] = ()) -> MuppetTask:
  """Registers `name`: source -> `formatter` (raw example to the family's text format; None
  where the source gives that format) -> the family's tokenizer (text to the uniform token
  format of `preprocessors`)."""
  formatters = [*extra_preprocessors, *([formatter] if formatter else [])]
  task = MuppetTask(
      name, info, source=source, output_features=output_features(vocabulary),
      preprocessors=[*formatters, preprocessors.FAMILY_TOKENIZERS[info.family]],
      shuffle_buffer_size=1_000)
  seqio.TaskRegistry.add_provider(name, task)
  return task


def check_prepared(task: seqio.Task) -> None:
  """Fails with instructions when a TFDS-backed task's data hasn't been prepared.

  Understands a seqio.TfdsDataSource, and sources that read several of them (`.sources`).
  """
  for source in getattr(task.source, "sources", [task.source]):
    if isinstance(source, seqio.TfdsDataSource):
      check_tfds_prepared(source, task.name)


def check_tfds_prepared(source: seqio.TfdsDataSource, task: str) -> None:
  """Fails with instructions when the TFDS data `source` reads for `task` isn't prepared."""
  loader = source.tfds_dataset
  name = loader.name
  build = f"tfds build {name.rsplit(':', 1)[0]}" + (
      f" --data_dir={loader.data_dir}" if loader.data_dir else "")
  extra = " (the huggingface: namespace needs `pip install datasets`)" if name.startswith(
      "huggingface:") else ""
  try:
    prepared = loader.builder.is_prepared()
    where = loader.builder.data_dir_root
  except Exception as e:  # TFDS raises many kinds for builders it can't even create offline.
    raise UserError(f"dataset {name} of task {task!r} is not available "
                    f"({type(e).__name__}); prepare it once, on a machine with network: "
                    f"`{build}`{extra}") from e
  if not prepared:
    raise UserError(
        f"dataset {name} of task {task!r} is not prepared in {where}; prepare it once, "
        f"on a machine with network: `{build}`{extra}, or set TFDS_DATA_DIR to where it is")


def retokenize(task: MuppetTask, vocabulary: HFVocabulary) -> MuppetTask:
  """Registers `task` again, under its name, tokenized with `vocabulary` (e.g. a catalog task
  in a mixture of tasks for a BERT model)."""
  seqio.TaskRegistry.remove(task.name)
  again = MuppetTask(task.name, task.info, source=task.source,
                     output_features=output_features(vocabulary),
                     preprocessors=list(task.preprocessors),
                     shuffle_buffer_size=task.shuffle_buffer_size)
  seqio.TaskRegistry.add_provider(task.name, again)
  return again


def get_task(name: str) -> MuppetTask:
  """The registered MuppetTask `name`, or an error listing what exists."""
  if name not in seqio.TaskRegistry.names():
    close = [n for n in seqio.TaskRegistry.names() if name.split("_")[0] in n][:5]
    hint = f"; similar: {', '.join(close)}" if close else ""
    raise UserError(f"unknown task {name!r}{hint}. `python -m muppet_jax.inspect --list` lists "
                    "every registered task and mixture")
  task = seqio.TaskRegistry.get(name)
  if not isinstance(task, MuppetTask):
    raise UserError(f"{name!r} is a seqio task without Muppet metadata (family, n, head, size); "
                    "register it with muppet_jax.data.task_info.add_task")
  return task
