"""The summaries' LM loss over chunks of target positions: the same loss and gradients as over
all of them at once (R3F's penalty too), without [rows, targets, vocab] logits in the program."""

import dataclasses

import flax.linen as nn
import jax
import numpy as np
import pytest

from muppet_jax import losses, r3f, trainer
from muppet_jax.data.batching import MixtureStream, StreamConfig
from muppet_jax.models.config import BartConfig
from muppet_jax.models.layers import init_variables
from muppet_jax.models.multitask import build

ROWS, TARGETS, VOCAB = 4, 24, 1000


@pytest.fixture(scope="module")
def setup():
  with MixtureStream(StreamConfig("demo_summarize", batch_size=ROWS, max_length=64,
                                  target_length=TARGETS, max_segments=8)) as stream:
    batch = next(stream)
  assert (batch["target_segment_ids"] > 0).any(axis=1).all()  # Summaries in every row.
  config = BartConfig(vocab_size=VOCAB, hidden_size=32, encoder_layers=1, decoder_layers=1,
                      encoder_heads=2, decoder_heads=2, encoder_ffn_size=64,
                      decoder_ffn_size=64, max_position_embeddings=64)
  model = build(config, stream.layout)
  params = nn.meta.unbox(init_variables(model, jax.random.key(0)))["params"]
  return model, params, batch, losses.TaskTable.build(stream.tasks, 64, VOCAB)


def _loss(model, batch, table, penalty=False):
  def loss(params):
    outputs = trainer.forward(model, params, batch, False, jax.random.key(1))
    if penalty:  # Against the same model with other dropout.
      noised = trainer.forward(model, params, batch, False, jax.random.key(2))
      return r3f.per_example_penalty(outputs, noised, batch, table)[0].sum()
    sums = losses.loss_sums(outputs, batch, table)
    return sums["summarization_loss_sum"]
  return loss


@pytest.mark.parametrize("chunk", [5, 8])
@pytest.mark.parametrize("penalty", [False, True])
def test_chunked_equals_whole_loss_and_gradients(setup, chunk, penalty):
  model, params, batch, table = setup
  whole = _loss(model, batch, dataclasses.replace(table, lm_chunk=0), penalty)
  chunked = _loss(model, batch, dataclasses.replace(table, lm_chunk=chunk), penalty)
  (a, grad_a), (b, grad_b) = jax.value_and_grad(whole)(params), jax.value_and_grad(chunked)(params)
  assert float(a) > 0
  np.testing.assert_allclose(b, a, rtol=1e-5)
  for x, y in zip(jax.tree.leaves(grad_b), jax.tree.leaves(grad_a), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-7)


def test_the_whole_logits_never_exist_in_the_chunked_step(setup):
  model, params, batch, table = setup
  whole_shape = f"f32[{ROWS},{TARGETS},{VOCAB}]"

  def program(chunk):
    loss = _loss(model, batch, dataclasses.replace(table, lm_chunk=chunk))
    return jax.jit(jax.grad(loss)).lower(params).compile().as_text()

  assert whole_shape in program(0)
  chunked = program(8)
  assert whole_shape not in chunked and f"f32[{ROWS},8,{VOCAB}]" in chunked
