"""Validation: every task's metrics (accuracy, F1, Matthews correlation, Pearson/Spearman, span
EM/F1, ROUGE-1/2/L of generated summaries) and their averages per family, computed over the
run's validation streams by `Evaluator`."""

from __future__ import annotations

import collections
import functools
import re
import string
from typing import Any, Callable, Iterable, Mapping

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import scipy.stats
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from rouge_score import rouge_scorer

from muppet_jax import generation, inputs, partitioning, progress, trainer
from muppet_jax.data.task_info import MuppetTask
from muppet_jax.families import HeadLayout
from muppet_jax.models.bart import Bart
from muppet_jax.models.config import BartConfig, ModelConfig
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
  tp, tn = np.sum((pred == 1) & (gold == 1)), np.sum((pred == 0) & (gold == 0))
  fp, fn = np.sum((pred == 1) & (gold == 0)), np.sum((pred == 0) & (gold == 1))
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


def generation_config(config: ml_collections.ConfigDict,
                      model_config: BartConfig) -> generation.GenerationConfig:
  """How a run generates its validation summaries (`config.eval.generation`)."""
  g = config.eval.generation
  return generation.GenerationConfig(
      max_length=g.max_length or config.data.target_length, num_beams=g.num_beams,
      length_penalty=g.length_penalty, no_repeat_ngram_size=g.no_repeat_ngram_size,
      min_length=g.min_length,
      # Summaries are trained as `<s> ... </s>` after the start token.
      forced_bos_token_id=model_config.bos_token_id,
      forced_eos_token_id=model_config.eos_token_id)


class Evaluator:
  """A run's validation: the compiled eval step (and, for BART, generation) over each task's
  validation stream, on every host in step."""

  def __init__(self, config: ml_collections.ConfigDict, tasks: list[MuppetTask],
               layout: HeadLayout, model: nn.Module, model_config: ModelConfig,
               param_shardings: Any, mesh: Mesh):
    self.config, self.layout, self.mesh = config, layout, mesh
    self.tasks = [t for t in tasks if "validation" in t.splits]
    unevaluated = [t.name for t in tasks if "validation" not in t.splits]
    if unevaluated:
      progress.log(f"not evaluated (no validation split): {', '.join(unevaluated)}")
    self.batch_sharding = partitioning.batch_sharding(mesh)
    self.eval_step = jax.jit(trainer.make_eval_step(model),
                             in_shardings=(param_shardings, self.batch_sharding))
    self.generate = None
    if isinstance(model_config, BartConfig):
      self.generate = jax.jit(
          functools.partial(generation.generate, Bart(model_config),
                            config=generation_config(config, model_config)),
          in_shardings=(param_shardings, self.batch_sharding, self.batch_sharding))

  def __call__(self, params: Any) -> tuple[dict[str, float], dict[str, tuple[str, str]]]:
    """Every task's validation metrics (`eval/TASK/METRIC`) and the mean of each family's
    primary metric (`eval/family/FAMILY`); and for each summarization task its first
    (generated, reference) summary."""
    per_task, samples = {}, {}
    with partitioning.use_mesh(self.mesh):
      for task in self.tasks:
        acc = self.predict(task, params)
        per_task[task.name] = acc.metrics()
        if task.info.family == "summarization" and acc.pred:
          samples[task.name] = (acc.pred[0], acc.gold[0])
    out = {f"eval/{t}/{k}": v for t, m in per_task.items() for k, v in m.items()}
    families = {t.name: t.info.family for t in self.tasks}
    primary = {t.name: t.info.metrics[0] for t in self.tasks}
    out.update({f"eval/family/{f}": v for f, v in
                family_averages(per_task, families, primary).items()})
    return out, samples

  def predict(self, task: MuppetTask, params: Any) -> TaskAccumulator:
    """`task`'s predictions over (at most `eval.max_batches` of) its validation batches."""
    tokenizer = task.output_features["inputs"].vocabulary.tokenizer
    acc = TaskAccumulator(task, lambda ids: tokenizer.decode(ids, skip_special_tokens=True))
    with inputs.eval_stream(self.config, task, self.layout) as stream:
      self._run(task, stream, params, acc)
    return acc

  def _run(self, task: MuppetTask, stream: Any, params: Any, acc: TaskAccumulator) -> None:
    for _ in range(self.config.eval.max_batches):
      local = next(stream, None)
      # Hosts run out at different times; all keep stepping until every one is done.
      if multihost_utils.process_allgather(np.asarray(local is None)).all():
        break
      local = stream.empty_batch() if local is None else local
      batch = inputs.global_batch(local, self.batch_sharding)
      if task.info.family == "summarization":
        tokens = self.generate(params, batch["input_ids"], batch["segment_ids"])
        acc.add_summaries(*multihost_utils.process_allgather((tokens, local), tiled=True))
      else:
        outputs = self.eval_step(params, batch)
        acc.add(*multihost_utils.process_allgather((outputs, local), tiled=True))
