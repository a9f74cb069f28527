"""Packed rows (segment ids) against the same examples one per row; attention implementations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muppet_jax.errors import UserError
from muppet_jax.models import EncoderConfig, EncoderForMaskedLM
from muppet_jax.models import attention
from muppet_jax.models.layers import init_variables

LENGTH = 24


def _model(model_type: str, **runtime):
  config = EncoderConfig(
      model_type=model_type, vocab_size=97, hidden_size=32, num_layers=2, num_heads=4,
      intermediate_size=48, max_position_embeddings=40, type_vocab_size=2,
      pad_token_id=1 if model_type == "roberta" else 0, **runtime)
  model = EncoderForMaskedLM(config)
  params = nn.meta.unbox(init_variables(model, jax.random.key(0)))["params"]
  # Non-zero biases and shifted LayerNorms too.
  return model, {"params": jax.tree.map(lambda x: x + 0.02, params)}


def _examples(pad_id: int):
  rng = np.random.default_rng(0)
  lengths = [5, 9, 7, 11, 3]
  return [(rng.integers(5, 97, n), rng.integers(0, 2, n)) for n in lengths], pad_id


def _unpacked(examples, pad_id):
  ids = np.full((len(examples), LENGTH), pad_id)
  types = np.zeros((len(examples), LENGTH), int)
  mask = np.zeros((len(examples), LENGTH), int)
  for row, (tokens, token_types) in enumerate(examples):
    ids[row, :len(tokens)], types[row, :len(tokens)], mask[row, :len(tokens)] = tokens, token_types, 1
  return ids, types, mask


def _packed(examples, rows, pad_id):
  """`rows` lists the example indices packed into each row."""
  ids = np.full((len(rows), LENGTH), pad_id)
  types = np.zeros((len(rows), LENGTH), int)
  segments = np.zeros((len(rows), LENGTH), int)
  where = {}
  for row, members in enumerate(rows):
    offset = 0
    for segment, index in enumerate(members, start=1):
      tokens, token_types = examples[index]
      span = slice(offset, offset + len(tokens))
      ids[row, span], types[row, span], segments[row, span] = tokens, token_types, segment
      where[index] = (row, span)
      offset += len(tokens)
  return ids, types, segments, where


@pytest.mark.parametrize("model_type", ["roberta", "bert"])
def test_packed_rows_equal_unpacked_examples(model_type):
  model, variables = _model(model_type)
  examples, pad_id = _examples(model.config.pad_token_id)
  ids, types, mask = _unpacked(examples, pad_id)
  single = model.apply(variables, ids, attention_mask=mask, token_type_ids=types)
  rows = [[0, 1, 2], [3, 4]]
  p_ids, p_types, segments, where = _packed(examples, rows, pad_id)
  packed = model.apply(variables, p_ids, segment_ids=segments, token_type_ids=p_types)
  for index, (tokens, _) in enumerate(examples):
    row, span = where[index]
    n = len(tokens)
    np.testing.assert_allclose(packed.hidden_states[row, span], single.hidden_states[index, :n],
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose(packed.logits[row, span], single.logits[index, :n],
                               atol=1e-5, rtol=0)
  # Without segment ids the same packed rows attend across examples and differ.
  mixed = model.apply(variables, p_ids, attention_mask=segments > 0, token_type_ids=p_types)
  assert np.abs(mixed.hidden_states[0, 5:14] - single.hidden_states[1, :9]).max() > 1e-2


def test_positions_restart_per_segment():
  segments = jnp.array([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(attention.positions_in_segment(segments),
                                [[0, 1, 2, 0, 1, 0, 0, 1], [0, 1, 2, 3, 4, 5, 6, 7]])


def test_segment_mask_is_block_diagonal_over_real_tokens():
  mask = attention.segment_mask(jnp.array([[1, 1, 2, 0]]))[0, 0]
  np.testing.assert_array_equal(mask, [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize("dtype,atol", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_dot_product_attention_equals_xla(dtype, atol):
  examples, _ = _examples(1)
  p_ids, p_types, segments, _ = _packed(examples, [[0, 1, 2], [3, 4]], 1)
  outputs = []
  for impl in ("xla", "dot_product"):
    model, variables = _model("roberta", attention_impl=impl, dtype=dtype)
    out = model.apply(variables, p_ids, segment_ids=segments, token_type_ids=p_types)
    outputs.append(np.asarray(out.hidden_states, np.float32)[segments > 0])
  np.testing.assert_allclose(outputs[0], outputs[1], atol=atol, rtol=0)


@pytest.mark.parametrize("impl", ["xla", "dot_product"])
def test_no_token_attends_across_segments_or_to_padding(impl):
  """Changing one segment's tokens (or the padding) leaves every other segment's states as they
  were: fails as soon as the mask is dropped."""
  examples, _ = _examples(1)
  ids, types, segments, where = _packed(examples, [[0, 1, 2]], 1)
  model, variables = _model("roberta", attention_impl=impl)

  def states(ids):
    return np.asarray(model.apply(variables, jnp.asarray(ids), segment_ids=segments,
                                  token_type_ids=types).hidden_states)[0]
  before = states(ids)
  changed = ids.copy()
  changed[0, where[1][1]] = (changed[0, where[1][1]] + 7) % 90 + 5  # Segment 2's tokens.
  changed[0, segments[0] == 0] = 50  # And the padding.
  after = states(changed)
  for index in (0, 2):
    span = where[index][1]
    np.testing.assert_allclose(after[span], before[span], atol=1e-6, rtol=0)
  assert np.abs(after[where[1][1]] - before[where[1][1]]).max() > 1e-2


def test_dot_product_attention_gradients_equal_xla():
  examples, _ = _examples(1)
  ids, types, segments, _ = _packed(examples, [[0, 1, 2], [3, 4]], 1)
  weights = jnp.asarray(np.random.default_rng(1).normal(size=(2, LENGTH, 32)) * (segments > 0)[
      ..., None], jnp.float32)
  grads = []
  for impl in ("xla", "dot_product"):
    model, variables = _model("roberta", attention_impl=impl)

    def loss(params):
      out = model.apply({"params": params}, ids, segment_ids=segments, token_type_ids=types)
      return jnp.sum(out.hidden_states * weights)
    grads.append(jax.grad(loss)(variables["params"]))
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_dropout_is_random_in_training_and_off_in_eval():
  model, variables = _model("roberta")
  ids = jnp.full((2, 10), 7)
  train = [model.apply(variables, ids, deterministic=False, rngs={"dropout": jax.random.key(s)})
           for s in (1, 2)]
  evals = [model.apply(variables, ids) for _ in range(2)]
  assert np.abs(train[0].logits - train[1].logits).max() > 1e-3
  np.testing.assert_array_equal(evals[0].logits, evals[1].logits)


def test_dot_product_attention_refuses_attention_dropout_in_training():
  model, variables = _model("roberta", attention_impl="dot_product", attention_dropout=0.1)
  with pytest.raises(UserError, match="attention_dropout=0.0"):
    model.apply(variables, jnp.full((1, 4), 7), deterministic=False,
                rngs={"dropout": jax.random.key(0)})
