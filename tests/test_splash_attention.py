"""attention_impl='splash', the Pallas TPU kernel (in interpret mode on CPU), against `xla` on
packed rows of 128 tokens with many short segments and padding: values and gradients of the
encoder under a sharded mesh (the kernel runs in a shard_map, heads split over `tensor`) and of
BART's three kinds of attention; no token reads another segment or padding; its limits are
one-line errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muppet_jax import partitioning
from muppet_jax.errors import UserError
from muppet_jax.models import EncoderConfig, EncoderForMaskedLM, attention
from muppet_jax.models.bart import Bart
from muppet_jax.models.config import BartConfig
from muppet_jax.models.layers import init_variables

LENGTH = 128


def _segments(lengths_per_row: list[list[int]]) -> np.ndarray:
  segments = np.zeros((len(lengths_per_row), LENGTH), np.int32)
  for row, lengths in enumerate(lengths_per_row):
    starts = np.cumsum([0, *lengths])
    for segment, (start, stop) in enumerate(zip(starts[:-1], starts[1:]), start=1):
      segments[row, start:stop] = segment
  return segments


# Short segments then padding; 16 segments of 8; one segment filling the row; two and padding.
SEGMENTS = _segments([[5, 9, 30, 3, 40], [8] * 16, [LENGTH], [60, 7]])


def _params(model):
  return nn.meta.unbox(init_variables(model, jax.random.key(0)))["params"]


def test_the_encoder_equals_xla_under_a_sharded_mesh_and_keeps_segments_apart():
  ids = np.random.default_rng(0).integers(5, 90, SEGMENTS.shape)
  real = SEGMENTS > 0
  weights = jnp.asarray(np.random.default_rng(1).normal(size=(*SEGMENTS.shape, 32)) *
                        real[..., None], jnp.float32)
  mesh = partitioning.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  results = {}
  for impl in ("xla", "splash"):
    model = EncoderForMaskedLM(EncoderConfig(  # A vocabulary that the mesh divides.
        vocab_size=96, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48,
        max_position_embeddings=LENGTH + 2, attention_impl=impl))

    @jax.jit
    def states_and_grads(params, ids, model=model):
      def loss(params):
        hidden = model.apply({"params": params}, ids, segment_ids=SEGMENTS).hidden_states
        return jnp.sum(hidden * weights), hidden
      return jax.grad(loss, has_aux=True)(params)

    params = _params(model)
    with partitioning.use_mesh(mesh):
      grads, hidden = states_and_grads(params, ids)
      results[impl] = np.asarray(hidden), grads
      if impl == "splash":  # Segment 2 of row 0 and all padding changed.
        changed = ids.copy()
        changed[0, SEGMENTS[0] == 2] = (changed[0, SEGMENTS[0] == 2] + 7) % 80 + 5
        changed[~real] = 50
        _, after = states_and_grads(params, changed)
  (xla_hidden, xla_grads), (hidden, grads) = results["xla"], results["splash"]
  np.testing.assert_allclose(hidden[real], xla_hidden[real], atol=1e-5, rtol=0)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(xla_grads), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  after = np.asarray(after)
  others = real & ~((np.arange(4) == 0)[:, None] & (SEGMENTS == 2))
  np.testing.assert_allclose(after[others], hidden[others], atol=1e-6, rtol=0)
  assert np.abs(after[0, SEGMENTS[0] == 2] - hidden[0, SEGMENTS[0] == 2]).max() > 1e-2


def test_bart_self_causal_and_cross_attention_equal_xla():
  """Row 2's encoder side has no padding while its targets do: those padding queries match no key
  at all, and must stay finite."""
  targets = _segments([[20, 30], [8] * 16, [50], [60, 7]])
  rng = np.random.default_rng(0)
  ids, decoder_ids = rng.integers(5, 97, SEGMENTS.shape), rng.integers(5, 97, targets.shape)
  outputs = {}
  for impl in ("xla", "splash"):
    model = Bart(BartConfig(vocab_size=97, hidden_size=32, encoder_layers=1, decoder_layers=2,
                            encoder_heads=4, decoder_heads=4, encoder_ffn_size=48,
                            decoder_ffn_size=48, max_position_embeddings=LENGTH,
                            attention_impl=impl))

    @jax.jit
    def run(params, model=model):
      def loss(params):
        out = model.apply({"params": params}, ids, decoder_ids, SEGMENTS, targets)
        kept = (out.encoder_hidden_states * (SEGMENTS > 0)[..., None],
                out.decoder_hidden_states * (targets > 0)[..., None])
        return sum(jnp.sum(jnp.sin(x)) for x in kept), kept
      return jax.grad(loss, has_aux=True)(params)
    outputs[impl] = run(_params(model))
  (grads, states), (xla_grads, xla_states) = outputs["splash"], outputs["xla"]
  for a, b in zip(states, xla_states, strict=True):
    assert np.isfinite(a).all()
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(xla_grads), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_decoding_step_without_segment_ids_runs_as_xla():
  q, k, v = (jnp.asarray(np.random.default_rng(i).normal(size=(2, 1 if i == 0 else 5, 4, 8)),
                         jnp.float32) for i in range(3))
  mask = attention.Mask(jnp.asarray([[[[1, 1, 1, 0, 0]]], [[[1, 0, 0, 0, 0]]]], bool))
  np.testing.assert_array_equal(attention.attend(q, k, v, mask, impl="splash"),
                                attention.attend(q, k, v, mask, impl="xla"))


def test_splash_needs_rows_in_tiles_of_128_and_no_attention_dropout():
  def apply(length, dropout):
    model = EncoderForMaskedLM(EncoderConfig(
        vocab_size=97, hidden_size=32, num_layers=1, num_heads=4, intermediate_size=48,
        max_position_embeddings=LENGTH + 2, attention_impl="splash", attention_dropout=dropout))
    return model.apply({"params": _params(model)}, jnp.full((1, length), 7), deterministic=False,
                       rngs={"dropout": jax.random.key(0)})
  with pytest.raises(UserError, match="multiples of 128, or use attention_impl='xla'"):
    apply(24, 0.0)
  with pytest.raises(UserError, match="set attention_dropout=0.0"):
    apply(LENGTH, 0.1)
