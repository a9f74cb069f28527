"""Rematerialization (`model.remat`): the same parameters and the same gradients (dropout on),
with the layers really recomputed in the backward pass."""

import jax
import numpy as np
import pytest

from muppet_jax import losses, trainer
from muppet_jax.data.batching import MixtureStream, StreamConfig
from muppet_jax.models.config import BartConfig, EncoderConfig
from muppet_jax.models.layers import init_variables
from muppet_jax.models.multitask import build


@pytest.fixture(scope="module", params=["roberta", "bart"])
def setup(request):
  bart = request.param == "bart"
  stream = MixtureStream(StreamConfig("muppet_demo", batch_size=4, max_length=64,
                                      target_length=24, max_segments=8,
                                      exclude_families=() if bart else ("summarization",)))
  if bart:
    config = BartConfig(vocab_size=1000, hidden_size=32, encoder_layers=2, decoder_layers=2,
                        encoder_heads=4, decoder_heads=4, encoder_ffn_size=64,
                        decoder_ffn_size=64, max_position_embeddings=64, attention_dropout=0.1)
  else:
    config = EncoderConfig(vocab_size=1000, hidden_size=32, num_layers=2, num_heads=4,
                           intermediate_size=64, max_position_embeddings=66)
  with stream:
    batch = next(stream)
  return config, stream.layout, losses.TaskTable.build(stream.tasks, 64, 1000), batch


def _grad_fn(setup, policy):
  config, layout, table, batch = setup
  model = build(config.replace(remat=policy), layout)

  def loss(params):
    outputs = trainer.forward(model, params, batch, False, jax.random.key(1))
    sums = losses.loss_sums(outputs, batch, table)
    return sums["loss_sum"] / sums["count"]
  params = jax.tree.map(lambda x: x.unbox(), init_variables(model, jax.random.key(0)),
                        is_leaf=lambda x: hasattr(x, "unbox"))["params"]
  return jax.jit(jax.grad(loss)), params


@pytest.mark.parametrize("policy", ["full", "save_dots"])
def test_remat_keeps_parameters_and_gradients(setup, policy):
  grad, params = _grad_fn(setup, "none")
  remat_grad, remat_params = _grad_fn(setup, policy)
  assert jax.tree.structure(remat_params) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(remat_params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  expected, got = grad(params), remat_grad(params)
  norm = max(float(np.abs(g).max()) for g in jax.tree.leaves(expected))
  assert norm > 0
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * norm)
  # The layers are recomputed: the gradient's program holds a rematerialized block per layer
  # (beyond the LM loss's chunks, which BART's has either way).
  config = setup[0]
  layers = getattr(config, "num_layers", 0) + getattr(config, "encoder_layers", 0) + getattr(
      config, "decoder_layers", 0)
  blocks = [str(jax.make_jaxpr(g)(params)).count("remat2[") for g in (remat_grad, grad)]
  assert blocks[0] >= blocks[1] + layers
