"""The Flax encoder against transformers' PyTorch RoBERTa/BERT on the same weights."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from muppet_jax import pretrained
from muppet_jax.models import EncoderForMaskedLM
from tests import hf_fixtures


def _run_both(saved, **runtime):
  ids, mask, types = hf_fixtures.padded_batch(saved.model_type)
  torch_model = hf_fixtures.load_mlm(saved.path)
  with torch.no_grad():
    ref = torch_model(input_ids=ids, attention_mask=mask, token_type_ids=types,
                      output_hidden_states=True)
  loaded = pretrained.from_hf(str(saved.path), **runtime)
  out = EncoderForMaskedLM(loaded.config).apply(
      {"params": loaded.params}, jnp.asarray(ids.numpy()),
      attention_mask=jnp.asarray(mask.numpy()), token_type_ids=jnp.asarray(types.numpy()))
  real = mask.numpy().astype(bool)
  return out, ref, real, loaded.config


def test_hidden_states_and_logits_match_pytorch(tiny_mlm):
  out, ref, real, config = _run_both(tiny_mlm)
  assert config.model_type == tiny_mlm.model_type
  hidden = np.asarray(out.hidden_states)[real]
  logits = np.asarray(out.logits)[real]
  np.testing.assert_allclose(hidden, ref.hidden_states[-1].numpy()[real], atol=1e-4, rtol=0)
  np.testing.assert_allclose(logits, ref.logits.numpy()[real], atol=1e-4, rtol=0)
  # The comparison is not vacuous: outputs vary across tokens and are far from zero.
  assert np.abs(logits).mean() > 0.1 and logits.std(axis=0).mean() > 0.1


def test_bfloat16_compute_stays_close_to_float32(tiny_mlm):
  out, ref, real, config = _run_both(tiny_mlm, dtype="bfloat16")
  assert out.logits.dtype == jnp.bfloat16 and config.param_dtype == "float32"
  logits = np.asarray(out.logits, np.float32)[real]
  expected = ref.logits.numpy()[real]
  assert np.abs(logits - expected).max() > 1e-5  # It really ran in bfloat16 ...
  np.testing.assert_allclose(logits, expected, atol=0.1)  # ... and is still the same function.


@pytest.mark.parametrize("tiny_mlm", ["roberta"], indirect=True)
def test_roberta_positions_start_after_padding_idx(tiny_mlm):
  """Moving padding from the right to the left changes nothing for RoBERTa's real tokens."""
  loaded = pretrained.from_hf(str(tiny_mlm.path))
  model = EncoderForMaskedLM(loaded.config)
  ids = jnp.array([[7, 8, 9, 10, 1, 1]])
  left = jnp.array([[1, 1, 7, 8, 9, 10]])
  out_right = model.apply({"params": loaded.params}, ids, attention_mask=(ids != 1))
  out_left = model.apply({"params": loaded.params}, left, attention_mask=(left != 1))
  np.testing.assert_allclose(out_right.logits[0, :4], out_left.logits[0, 2:], atol=1e-5)
