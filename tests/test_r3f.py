"""R3F: the symmetric-KL penalty against numpy, zero without noise, and differentiable."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muppet_jax import losses, r3f, trainer
from muppet_jax.data.batching import MixtureStream, StreamConfig
from muppet_jax.models.config import BartConfig, EncoderConfig
from muppet_jax.models.heads import HeadOutputs, LMHeadInputs
from muppet_jax.models.layers import init_variables
from muppet_jax.models.multitask import build
from muppet_jax.state import TrainState


def _softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def _symmetric_kl(a, b):
  p, q = _softmax(np.asarray(a, np.float64)), _softmax(np.asarray(b, np.float64))
  return float(np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p)))


def test_penalty_per_family_matches_numpy():
  L, V = 6, 11
  table = losses.TaskTable(("cls", "reg", "mc", "span", "sum"), (0, 1, 2, 3, 4), (3, 1, 2, 1, 1),
                           (math.log(3), 1.0, math.log(2), math.log(L), math.log(V)),
                           lm_chunk=3)  # Two chunks over the 4 target positions, one padded.
  batch = {"seg_task": np.array([[0, 1, 2, 2, 3, 4]]),
           "seg_example": np.array([[0, 1, 2, 2, 3, 4]]),
           "seg_choice": np.array([[0, 0, 0, 1, 0, 0]]),
           "seg_label": np.array([[1, -1, 0, 0, -1, -1]]),
           "target_segment_ids": np.array([[6, 6, 6, 0]])}

  embedding, bias = (jnp.asarray(np.random.default_rng(0).normal(size=s), jnp.float32)
                     for s in ((V, 3), (V,)))

  def outputs(seed):
    g = np.random.default_rng(seed)
    return HeadOutputs(jnp.asarray(g.normal(size=(1, 6, 4)), jnp.float32),
                       jnp.asarray(g.normal(size=(1, 6)), jnp.float32),
                       jnp.asarray(g.normal(size=(1, 6, L, 2)), jnp.float32),
                       LMHeadInputs(jnp.asarray(g.normal(size=(1, 4, 3)), jnp.float32),
                                    embedding, bias))

  a, b = outputs(1), outputs(2)
  got, is_example = r3f.per_example_penalty(a, b, batch, table)
  na, nb = jax.tree.map(np.asarray, (a, b))
  lm_a, lm_b = (n.lm.hidden @ n.lm.embedding.T + n.lm.bias for n in (na, nb))
  expected = [
      _symmetric_kl(na.class_logits[0, 0, :3], nb.class_logits[0, 0, :3]) / math.log(3),
      (na.class_logits[0, 1, 0] - nb.class_logits[0, 1, 0]) ** 2,
      _symmetric_kl(na.choice_scores[0, 2:4], nb.choice_scores[0, 2:4]) / math.log(2),
      0.0,  # Second choice: the example is counted on its first.
      0.5 * (_symmetric_kl(na.span_logits[0, 4, :, 0], nb.span_logits[0, 4, :, 0]) +
             _symmetric_kl(na.span_logits[0, 4, :, 1], nb.span_logits[0, 4, :, 1])) / math.log(L),
      np.mean([_symmetric_kl(lm_a[0, t], lm_b[0, t]) for t in range(3)])
      / math.log(V),
  ]
  np.testing.assert_allclose(np.asarray(got)[0], expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(is_example[0], [1, 1, 1, 0, 1, 1])
  assert min(expected[i] for i in (0, 2, 4, 5)) > 0


@pytest.fixture(scope="module", params=["roberta", "bart"])
def setup(request):
  stream = MixtureStream(StreamConfig("muppet_demo", batch_size=4, max_length=64,
                                      target_length=24, max_segments=8,
                                      exclude_families=() if request.param == "bart"
                                      else ("summarization",)))
  batch = jax.tree.map(jnp.asarray, next(stream))
  if request.param == "bart":
    config = BartConfig(vocab_size=1000, hidden_size=32, encoder_layers=1, decoder_layers=1,
                        encoder_heads=2, decoder_heads=2, encoder_ffn_size=64,
                        decoder_ffn_size=64, max_position_embeddings=64, hidden_dropout=0.1)
  else:
    config = EncoderConfig(vocab_size=1000, hidden_size=32, num_layers=1, num_heads=2,
                           intermediate_size=64, max_position_embeddings=66)
  model = build(config, stream.layout)
  params = nn.meta.unbox(init_variables(model, jax.random.key(0)))["params"]
  table = losses.TaskTable.build(stream.tasks, 64, 1000)
  return model, params, table, batch


def _penalty(setup, noise_scale, params=None):
  model, default_params, table, batch = setup
  params = default_params if params is None else params
  rng = jax.random.key(3)  # Dropout on, with the same masks in both runs.
  noise = noise_scale * jax.random.normal(jax.random.key(4), (*batch["input_ids"].shape, 32))
  clean = trainer.forward(model, params, batch, False, rng)
  noised = trainer.forward(model, params, batch, False, rng, noise)
  penalty, _ = r3f.per_example_penalty(clean, noised, batch, table)
  return penalty.sum()


def test_penalty_is_zero_without_noise_and_grows_with_it(setup):
  assert float(_penalty(setup, 0.0)) == 0.0
  small, large = float(_penalty(setup, 1e-2)), float(_penalty(setup, 1e-1))
  assert 0.0 < small < large


def test_penalty_is_differentiable(setup):
  _, params, _, _ = setup
  grads = jax.grad(lambda p: _penalty(setup, 0.1, p))(params)
  leaves = jax.tree.leaves(grads)
  assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
  assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0
  # The gradient agrees with a finite difference along a random direction.
  direction = jax.tree.map(lambda x: jax.random.normal(jax.random.key(5), x.shape), params)
  h = 1e-3
  plus = _penalty(setup, 0.1, jax.tree.map(lambda p, d: p + h * d, params, direction))
  minus = _penalty(setup, 0.1, jax.tree.map(lambda p, d: p - h * d, params, direction))
  numeric = (float(plus) - float(minus)) / (2 * h)
  analytic = sum(float(jnp.vdot(g, d)) for g, d in zip(leaves, jax.tree.leaves(direction)))
  assert analytic == pytest.approx(numeric, rel=0.05)


def test_train_step_adds_the_weighted_penalty(setup):
  model, params, table, batch = setup
  tx = trainer.make_optimizer(1e-3, 1, 10)
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
  _, off = jax.jit(trainer.make_train_step(model, tx, table, 1, 0))(state, batch)
  # At random init the heads' outputs barely depend on the input, so the penalty is tiny: a large
  # weight makes its gradient visible.
  _, on = jax.jit(trainer.make_train_step(model, tx, table, 1, 0,
                                          r3f.R3FConfig(1e4, "normal", 0.1)))(state, batch)
  assert "r3f_sum" not in off and float(on["r3f_sum"]) > 0
  assert float(on["loss_sum"]) == pytest.approx(float(off["loss_sum"]), rel=1e-6)
  assert float(on["grad_norm"]) != pytest.approx(float(off["grad_norm"]), rel=1e-6)
