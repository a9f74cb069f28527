"""The task families and the task heads they train: the one table of both, and the head layout of
a set of tasks (which heads exist, of which kind, in which order).

Pure Python, so that the data layer, the models, the losses and export all read the same
definitions without importing each other (or seqio and TensorFlow).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from muppet_jax.errors import UserError

FAMILIES = ("classification", "regression", "multiple_choice", "span", "summarization")
HEAD_KINDS = ("classification", "multiple_choice", "span", "lm")
# The head kind of each family: regression is a one-output classification head; summarization
# trains BART's LM head.
FAMILY_HEAD_KIND = {"classification": "classification", "regression": "classification",
                    "multiple_choice": "multiple_choice", "span": "span", "summarization": "lm"}
# The head a family trains by default: classification and regression tasks get their own
# ("task"); multiple choice and span share one per family; summarization uses the LM head.
DEFAULT_HEADS = {"classification": "task", "regression": "task",
                 "multiple_choice": "multiple_choice", "span": "span", "summarization": "lm"}
DEFAULT_METRICS = {"classification": ("accuracy",), "regression": ("pearson", "spearman"),
                   "multiple_choice": ("accuracy",), "span": ("exact_match", "f1"),
                   "summarization": ("rouge1", "rouge2", "rougeL")}


def check_family(family: str) -> None:
  if family not in FAMILIES:
    raise UserError(f"unknown task family {family!r}; families are {FAMILIES}")


@dataclasses.dataclass(frozen=True)
class TaskHead:
  """A task as the heads see it; also its entry in a checkpoint's metadata (`tasks`)."""

  name: str
  family: str
  num_classes: int  # Classes or choices; 1 for regression.
  head: str  # The name of the head it trains.
  labels: tuple[str, ...] = ()  # Class names (index order), where the task gives them.

  def __post_init__(self):
    object.__setattr__(self, "labels", tuple(self.labels))  # JSON metadata gives a list.


@dataclasses.dataclass(frozen=True)
class HeadLayout:
  """Which heads exist, and each head's kind and index within its kind's stack."""

  names: tuple[str, ...]  # Global head index -> name (the stream's `seg_head` values).
  kinds: tuple[str, ...]
  num_classes: int  # Width of the classification heads (the most classes of any task).

  @classmethod
  def for_tasks(cls, tasks: Sequence[TaskHead]) -> HeadLayout:
    """The heads that `tasks` train, sorted by name."""
    kinds: dict[str, set[str]] = {}
    for task in tasks:
      kinds.setdefault(task.head, set()).add(FAMILY_HEAD_KIND[task.family])
    mixed = {head: sorted(k) for head, k in kinds.items() if len(k) > 1}
    if mixed:
      raise UserError(f"tasks of different head kinds share a head: {mixed}; give each kind its "
                      "own head name")
    names = tuple(sorted(kinds))
    classes = [t.num_classes for t in tasks if FAMILY_HEAD_KIND[t.family] == "classification"]
    return cls(names, tuple(kinds[n].pop() for n in names), max(classes, default=1))

  def index(self, head: str) -> int:
    """The global index of the head named `head`."""
    if head not in self.names:
      raise UserError(f"head {head!r} is not among this model's heads {list(self.names)}")
    return self.names.index(head)

  def index_in_kind(self) -> tuple[int, ...]:
    seen = {k: 0 for k in HEAD_KINDS}
    out = []
    for kind in self.kinds:
      out.append(seen[kind])
      seen[kind] += 1
    return tuple(out)

  def count(self, kind: str) -> int:
    return self.kinds.count(kind)
