"""Validation metrics per task (accuracy, F1, Matthews correlation, Pearson/Spearman, span EM/F1,
ROUGE-1/2/L of generated summaries) and their averages per family."""

from __future__ import annotations

import collections
import re
import string
from typing import Callable, Iterable, Mapping

import numpy as np
import scipy.stats
from rouge_score import rouge_scorer

from muppet_jax.data.task_info import MuppetTask
from muppet_jax.models.heads import HeadOutputs

MAX_ANSWER_TOKENS = 30


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
  return float(np.mean(pred == gold))


def f1_binary(pred: np.ndarray, gold: np.ndarray) -> float:
  tp = np.sum((pred == 1) & (gold == 1))
  precision = tp / max(np.sum(pred == 1), 1)
  recall = tp / max(np.sum(gold == 1), 1)
  return float(2 * precision * recall / max(precision + recall, 1e-12))


def matthews(pred: np.ndarray, gold: np.ndarray) -> float:
  tp = np.sum((pred == 1) & (gold == 1)); tn = np.sum((pred == 0) & (gold == 0))  # noqa: E702
  fp = np.sum((pred == 1) & (gold == 0)); fn = np.sum((pred == 0) & (gold == 1))  # noqa: E702
  denominator = np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
  return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def _normalize(text: str) -> list[str]:
  """SQuAD's answer normalization: lower case, no punctuation, articles or extra spaces."""
  text = "".join(c for c in text.lower() if c not in set(string.punctuation))
  return re.sub(r"\b(a|an|the)\b", " ", text).split()


def span_f1(pred: str, gold: str) -> float:
  p, g = _normalize(pred), _normalize(gold)
  common = sum((collections.Counter(p) & collections.Counter(g)).values())
  if not p or not g:
    return float(p == g)
  if common == 0:
    return 0.0
  precision, recall = common / len(p), common / len(g)
  return 2 * precision * recall / (precision + recall)


def exact_match(pred: str, gold: str) -> float:
  return float(_normalize(pred) == _normalize(gold))


def best_span(start_logits: np.ndarray, end_logits: np.ndarray) -> tuple[int, int]:
  """argmax of start + end logits over start <= end < start + MAX_ANSWER_TOKENS."""
  length = len(start_logits)
  scores = start_logits[:, None] + end_logits[None, :]
  i, j = np.indices((length, length))
  scores = np.where((j >= i) & (j < i + MAX_ANSWER_TOKENS), scores, -np.inf)
  start, end = np.unravel_index(np.argmax(scores), scores.shape)
  return int(start), int(end)


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
  """Mean ROUGE F-measures (Google's `rouge-score`, Porter stemming as in the usual reports)."""
  scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
  scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references)]
  return {name: float(np.mean([s[name].fmeasure for s in scores])) for name in ROUGE_TYPES}


class TaskAccumulator:
  """Collects one task's predictions over its validation batches."""

  def __init__(self, task: MuppetTask, decode: Callable[[Iterable[int]], str]):
    self.task, self.decode = task, decode
    self.pred, self.gold = [], []

  def add(self, outputs: HeadOutputs, batch: Mapping[str, np.ndarray]) -> None:
    family = self.task.info.family
    live = batch["seg_task"] >= 0
    if family == "classification":
      n = self.task.info.num_classes
      logits = np.asarray(outputs.class_logits, np.float32)[..., :n]
      self.pred += logits.argmax(-1)[live].tolist()
      self.gold += batch["seg_label"][live].tolist()
    elif family == "regression":
      self.pred += np.asarray(outputs.class_logits, np.float32)[..., 0][live].tolist()
      self.gold += batch["seg_score"][live].tolist()
    elif family == "multiple_choice":
      scores = np.asarray(outputs.choice_scores, np.float32)
      by_example = collections.defaultdict(dict)
      for r, s in zip(*np.nonzero(live)):
        by_example[batch["seg_example"][r, s]][batch["seg_choice"][r, s]] = (
            scores[r, s], batch["seg_label"][r, s])
      for choices in by_example.values():
        self.pred.append(max(choices, key=lambda c: choices[c][0]))
        self.gold.append(next(iter(choices.values()))[1])
    elif family == "span":
      logits = np.asarray(outputs.span_logits, np.float32)
      for r, s in zip(*np.nonzero(live)):
        tokens = np.nonzero(batch["segment_ids"][r] == s + 1)[0]  # The segment's positions.
        start, end = best_span(logits[r, s, tokens, 0], logits[r, s, tokens, 1])
        g0, g1 = batch["seg_span"][r, s]
        self.pred.append(self.decode(batch["input_ids"][r, tokens[start]:tokens[end] + 1]))
        self.gold.append(self.decode(batch["input_ids"][r, g0:g1 + 1]))

  def add_summaries(self, tokens: np.ndarray, batch: Mapping[str, np.ndarray]) -> None:
    """Generated token ids [B, T] of an unpacked batch (one document per row)."""
    for row in np.nonzero(batch["seg_task"][:, 0] >= 0)[0]:
      self.pred.append(self.decode(tokens[row]))
      self.gold.append(self.decode(batch["target_ids"][row][batch["target_segment_ids"][row] > 0]))

  def metrics(self) -> dict[str, float]:
    if not self.pred:
      return {}
    if self.task.info.family == "summarization":
      return {**rouge(self.pred, self.gold), "examples": len(self.pred)}
    pred, gold = np.asarray(self.pred), np.asarray(self.gold)
    out = {}
    for name in self.task.info.metrics:
      if name == "accuracy":
        out[name] = accuracy(pred, gold)
      elif name == "f1" and self.task.info.family == "classification":
        out[name] = f1_binary(pred, gold)
      elif name == "matthews":
        out[name] = matthews(pred, gold)
      elif name == "pearson":
        out[name] = float(scipy.stats.pearsonr(pred, gold)[0])
      elif name == "spearman":
        out[name] = float(scipy.stats.spearmanr(pred, gold)[0])
      elif name == "exact_match":
        out[name] = float(np.mean([exact_match(p, g) for p, g in zip(pred, gold)]))
      elif name == "f1":
        out[name] = float(np.mean([span_f1(p, g) for p, g in zip(pred, gold)]))
    out["examples"] = len(self.pred)
    return out


def family_averages(per_task: Mapping[str, Mapping[str, float]],
                    families: Mapping[str, str], primary: Mapping[str, str]) -> dict[str, float]:
  """Mean of each task's primary metric (its first) per family."""
  grouped = collections.defaultdict(list)
  for task, metrics in per_task.items():
    if primary[task] in metrics:
      grouped[families[task]].append(metrics[primary[task]])
  return {family: float(np.mean(values)) for family, values in grouped.items()}
