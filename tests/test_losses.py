"""The scaled multi-task losses against hand computations, and a heterogeneous batch's loss
against its tasks' losses computed one task at a time."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muppet_jax import losses, trainer
from muppet_jax.data import mixing
from muppet_jax.data.batching import MixtureStream, StreamConfig
from muppet_jax.models import EncoderConfig
from muppet_jax.models.heads import HeadOutputs, LMHeadInputs
from muppet_jax.models.layers import init_variables
from muppet_jax.models.multitask import MultiTaskEncoder

L = 8
TABLE = losses.TaskTable(names=("cls", "reg", "mc", "span"), families=(0, 1, 2, 3),
                         num_classes=(3, 1, 2, 1),
                         divisors=(math.log(3), 1.0, math.log(2), math.log(L)))


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - np.log(np.exp(x - x.max()).sum()) - x.max()


def _hand_batch():
  rng = np.random.default_rng(0)
  class_logits = rng.normal(size=(1, 6, 3)).astype(np.float32)
  choice_scores = rng.normal(size=(1, 6)).astype(np.float32)
  span_logits = np.full((1, 6, L, 2), -1e30, np.float32)
  span_logits[0, 4, 2:8] = rng.normal(size=(6, 2))  # Segment 5 covers positions 2..7.
  batch = {
      "seg_task": np.array([[0, 1, 2, 2, 3, -1]]),
      "seg_label": np.array([[2, -1, 1, 1, -1, -1]]),
      "seg_score": np.array([[0, 2.5, 0, 0, 0, 0]], np.float32),
      "seg_example": np.array([[0, 1, 2, 2, 3, -1]]),
      "seg_choice": np.array([[0, 0, 0, 1, 0, -1]]),
      "seg_span": np.array([[[-1, -1]] * 4 + [[3, 5], [-1, -1]]]),
  }
  return HeadOutputs(jnp.asarray(class_logits), jnp.asarray(choice_scores),
                     jnp.asarray(span_logits)), batch


def test_each_family_loss_matches_a_hand_computation():
  outputs, batch = _hand_batch()
  loss, is_example, _ = losses.per_example_losses(outputs, batch, TABLE)
  c, s, sp = (np.asarray(x) for x in (outputs.class_logits, outputs.choice_scores,
                                      outputs.span_logits))
  expected = [
      -_log_softmax(c[0, 0])[2] / math.log(3),
      (c[0, 1, 0] - 2.5) ** 2,
      -_log_softmax(s[0, 2:4])[1] / math.log(2),
      0.0,  # The second choice of the example: counted once, on its first choice.
      0.5 * (-_log_softmax(sp[0, 4, 2:8, 0])[1] - _log_softmax(sp[0, 4, 2:8, 1])[3]) / math.log(L),
      0.0,
  ]
  np.testing.assert_allclose(loss[0], expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(is_example[0], [1, 1, 1, 0, 1, 0])
  sums = losses.loss_sums(outputs, batch, TABLE)
  assert float(sums["count"]) == 4 and float(sums["multiple_choice_count"]) == 1
  means = losses.family_means(jax.device_get(sums))
  assert means["loss"] == pytest.approx(sum(expected) / 4, rel=1e-5)
  assert means["loss/span"] == pytest.approx(expected[4], rel=1e-5)


def test_scaling_can_be_switched_off():
  outputs, batch = _hand_batch()
  plain = losses.TaskTable(TABLE.names, TABLE.families, TABLE.num_classes, (1.0,) * 4)
  scaled, _, _ = losses.per_example_losses(outputs, batch, TABLE)
  unscaled, _, _ = losses.per_example_losses(outputs, batch, plain)
  np.testing.assert_allclose(np.asarray(unscaled)[0, [0, 2, 4]],
                             np.asarray(scaled)[0, [0, 2, 4]] *
                             np.array([math.log(3), math.log(2), math.log(L)]), rtol=1e-5)


def test_uniform_predictions_give_every_task_loss_one():
  outputs, batch = _hand_batch()
  uniform = HeadOutputs(jnp.zeros_like(outputs.class_logits),
                        jnp.zeros_like(outputs.choice_scores),
                        jnp.where(outputs.span_logits > -1e29, 0.0, -1e30))
  table = losses.TaskTable(TABLE.names, TABLE.families, TABLE.num_classes,
                           (math.log(3), 1.0, math.log(2), math.log(6)))  # 6 span positions.
  loss, _, _ = losses.per_example_losses(uniform, batch, table)
  np.testing.assert_allclose(np.asarray(loss)[0, [0, 2, 4]], 1.0, rtol=1e-6)


def test_task_table_divisors_come_from_task_info():
  tasks = mixing.mixture_tasks("muppet_demo")
  table = losses.TaskTable.build([t for t in tasks if t.info.family != "summarization"],
                                 max_length=128, vocab_size=1000)
  divisor = dict(zip(table.names, table.divisors))
  assert divisor["demo_choice"] == pytest.approx(math.log(4))
  assert divisor["demo_sentiment"] == pytest.approx(math.log(2))
  assert divisor["demo_span"] == pytest.approx(math.log(128))
  assert divisor["demo_similarity"] == 1.0
  summarize = next(t for t in tasks if t.name == "demo_summarize")
  assert summarize.info.loss_divisor(128, 1000) == pytest.approx(math.log(1000))


def _only_task(batch, task):
  """The batch with every segment of other tasks turned into padding."""
  out = {k: v.copy() for k, v in batch.items()}
  for row, slot in zip(*np.nonzero((batch["seg_task"] >= 0) & (batch["seg_task"] != task))):
    tokens = batch["segment_ids"][row] == slot + 1
    out["input_ids"][row, tokens] = 1
    out["segment_ids"][row, tokens] = 0
    for key in ("seg_task", "seg_head", "seg_example"):
      out[key][row, slot] = -1
  return out


def test_heterogeneous_batch_loss_is_the_sum_of_its_tasks_losses():
  stream = MixtureStream(StreamConfig("muppet_demo", batch_size=6, max_length=64,
                                      max_segments=8, exclude_families=("summarization",)))
  batch = next(stream)
  config = EncoderConfig(vocab_size=1000, hidden_size=32, num_layers=1, num_heads=2,
                         intermediate_size=64, max_position_embeddings=66)
  model = MultiTaskEncoder(config, stream.layout)
  params = nn.meta.unbox(init_variables(model, jax.random.key(0)))["params"]
  table = losses.TaskTable.build(stream.tasks, 64, 1000)

  def sums(b):
    return jax.device_get(losses.loss_sums(trainer.forward(model, params, b, True), b, table))

  full = sums(batch)
  parts = [sums(_only_task(batch, t)) for t in np.unique(batch["seg_task"][batch["seg_task"] >= 0])]
  assert len(parts) >= len(stream.families) == 4  # Every family is in every batch.
  assert sum(p["count"] for p in parts) == full["count"]
  assert sum(p["loss_sum"] for p in parts) == pytest.approx(float(full["loss_sum"]), rel=1e-5)


@pytest.mark.parametrize("chunk", [0, 2, 5])
def test_summary_loss_is_label_smoothed_cross_entropy_over_its_tokens(chunk):
  rng = np.random.default_rng(0)
  V, D, eps = 7, 3, 0.1
  hidden, embedding, bias = (rng.normal(size=s).astype(np.float32) for s in ((1, 5, D), (V, D),
                                                                             (V,)))
  lm_logits = hidden @ embedding.T + bias
  batch = {"seg_task": np.array([[0, 0, -1]]), "seg_label": np.full((1, 3), -1),
           "seg_score": np.zeros((1, 3), np.float32), "seg_example": np.array([[0, 1, -1]]),
           "seg_choice": np.zeros((1, 3), np.int64), "seg_span": np.full((1, 3, 2), -1),
           "target_ids": np.array([[3, 1, 4, 1, 5]]),
           "target_segment_ids": np.array([[1, 1, 2, 2, 0]])}
  outputs = HeadOutputs(jnp.zeros((1, 3, 2)), jnp.zeros((1, 3)), jnp.zeros((1, 3, 4, 2)),
                        LMHeadInputs(*map(jnp.asarray, (hidden, embedding, bias))))
  table = losses.TaskTable(("sum",), (losses.FAMILIES.index("summarization"),), (1,),
                           (math.log(V),), label_smoothing=eps, lm_chunk=chunk)
  loss, is_example, _ = losses.per_example_losses(outputs, batch, table)

  def token(t):
    logp = _log_softmax(lm_logits[0, t])
    return (1 - eps) * -logp[batch["target_ids"][0, t]] + eps * -logp.mean()

  expected = [(token(0) + token(1)) / 2 / math.log(V), (token(2) + token(3)) / 2 / math.log(V)]
  np.testing.assert_allclose(np.asarray(loss)[0, :2], expected, rtol=1e-5)
  np.testing.assert_array_equal(is_example[0], [1, 1, 0])
  uniform = outputs.replace(lm=LMHeadInputs(outputs.lm.hidden, jnp.zeros((V, D)), jnp.zeros(V)))
  np.testing.assert_allclose(np.asarray(losses.per_example_losses(uniform, batch, table)[0])[0, :2],
                             1.0, rtol=1e-6)
