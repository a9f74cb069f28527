"""BART against transformers' PyTorch BartForConditionalGeneration: states, logits, generation;
and packed against unpacked seq2seq examples."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from muppet_jax import generation, partitioning, pretrained
from muppet_jax.models import bart
from tests import hf_fixtures


@pytest.fixture(scope="module")
def models(tiny_bart):
  reference = transformers.BartForConditionalGeneration.from_pretrained(tiny_bart.path).eval()
  mesh = partitioning.make_mesh({"fsdp": 1}, jax.devices()[:1])
  ours = pretrained.from_hf(str(tiny_bart.path), mesh)
  return reference, ours


def test_states_and_logits_match_transformers(models):
  reference, ours = models
  ids, mask, decoder = hf_fixtures.seq2seq_batch()
  with torch.no_grad():
    ref = reference(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder,
                    output_hidden_states=True)
  got = bart.Bart(ours.config).apply({"params": ours.params}, jnp.asarray(ids.numpy()),
                                     jnp.asarray(decoder.numpy()),
                                     segment_ids=jnp.asarray(mask.numpy()))
  real = mask.numpy().astype(bool)
  np.testing.assert_allclose(np.asarray(got.encoder_hidden_states)[real],
                             ref.encoder_last_hidden_state.numpy()[real], atol=1e-4)
  np.testing.assert_allclose(np.asarray(got.decoder_hidden_states),
                             ref.decoder_hidden_states[-1].numpy(), atol=1e-4)
  np.testing.assert_allclose(np.asarray(got.logits), ref.logits.numpy(), atol=1e-4)
  assert np.abs(ref.logits.numpy()).max() > 1.0  # Not trivially small.


SETTINGS = [
    dict(num_beams=1),
    dict(num_beams=1, no_repeat_ngram_size=2, forced_bos_token_id=0, min_length=4),
    dict(num_beams=4, length_penalty=2.0, no_repeat_ngram_size=3, early_stopping=True,
         forced_bos_token_id=0),
    dict(num_beams=4, length_penalty=1.0, early_stopping=False, min_length=5),
    dict(num_beams=4, length_penalty=0.6, early_stopping=False, no_repeat_ngram_size=2),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(
    f"{k}={v}" for k, v in s.items()))
def test_generation_matches_transformers_generate(models, settings):
  reference, ours = models
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 99, size=(6, 12))
  ids[:, 0] = 0
  ids[:, -1] = 2
  ids[5, 7:], ids[5, 6] = 1, 2  # One padded row.
  mask = (ids != 1).astype(np.int64)
  max_length = 24
  with torch.no_grad():
    expected = reference.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                  max_length=max_length, do_sample=False, **settings).numpy()
  config = generation.GenerationConfig(max_length=max_length, forced_eos_token_id=2, **settings)
  generate = jax.jit(functools.partial(generation.generate, bart.Bart(ours.config),
                                       config=config))
  got = np.asarray(generate(ours.params, jnp.asarray(ids), jnp.asarray(mask)))
  assert got.shape == (6, max_length)
  np.testing.assert_array_equal(got[:, :expected.shape[1]], expected)
  assert (got[:, expected.shape[1]:] == 1).all()  # Padding after the longest output.
  # The outputs end at different lengths (EOS), not all at once.
  assert len({(row != 1).sum() for row in expected}) > 1


def test_packed_rows_give_the_same_per_example_logits_as_one_example_per_row(models):
  _, ours = models
  model = bart.Bart(ours.config)
  rng = np.random.default_rng(1)
  docs = [rng.integers(5, 99, size=n) for n in (7, 5, 9)]
  summaries = [rng.integers(5, 99, size=n) for n in (4, 3, 5)]
  # Unpacked: one example per row (right padding).
  single = []
  for doc, summary in zip(docs, summaries):
    out = model.apply({"params": ours.params}, jnp.asarray(doc[None]),
                      jnp.asarray(summary[None]))
    single.append(np.asarray(out.logits[0]))
  # Packed: all three in one row, each side with segment ids 1, 2, 3, then padding.
  def pack(seqs, length):
    ids, segs = np.ones(length, np.int64), np.zeros(length, np.int64)
    start = 0
    for i, s in enumerate(seqs):
      ids[start:start + len(s)], segs[start:start + len(s)] = s, i + 1
      start += len(s)
    return ids[None], segs[None]
  ids, segs = pack(docs, 24)
  dec, dec_segs = pack(summaries, 14)
  out = model.apply({"params": ours.params}, jnp.asarray(ids), jnp.asarray(dec),
                    segment_ids=jnp.asarray(segs), decoder_segment_ids=jnp.asarray(dec_segs))
  for i, expected in enumerate(single):
    np.testing.assert_allclose(np.asarray(out.logits[0])[dec_segs[0] == i + 1], expected,
                               atol=1e-5)


def test_shift_right_restarts_at_every_segment():
  ids = jnp.asarray([[10, 11, 12, 20, 21, 1]])
  segs = jnp.asarray([[1, 1, 1, 2, 2, 0]])
  np.testing.assert_array_equal(bart.shift_right(ids, segs, start_id=2, pad_id=1),
                                [[2, 10, 11, 2, 20, 1]])


def _bits(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(x).view(np.uint8)


def test_round_trip_through_convert_and_export_is_bit_identical(tiny_bart, tmp_path):
  from safetensors.numpy import load_file

  from muppet_jax import convert, export
  convert.convert(str(tiny_bart.path), tmp_path / "ckpt")
  out = export.export(tmp_path / "ckpt", tmp_path / "hf")
  original = load_file(tiny_bart.path / "model.safetensors")
  exported = load_file(out / "model.safetensors")
  assert sorted(exported) == sorted(original)
  for name, x in original.items():
    assert exported[name].dtype == x.dtype and exported[name].shape == x.shape, name
    np.testing.assert_array_equal(_bits(exported[name]), _bits(x), err_msg=name)
  model, info = transformers.AutoModelForSeq2SeqLM.from_pretrained(out, output_loading_info=True)
  assert type(model).__name__ == "BartForConditionalGeneration"
  assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys",
                                   "error_msgs"))
  ids, mask, decoder = hf_fixtures.seq2seq_batch()
  reference = transformers.BartForConditionalGeneration.from_pretrained(tiny_bart.path).eval()
  with torch.no_grad():
    expected = reference(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder).logits
    got = model.eval()(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder).logits
  assert torch.equal(expected, got)


def test_older_checkpoints_with_tied_copies_and_bare_bart_models_import(tiny_bart, models,
                                                                         tmp_path, capsys):
  import shutil

  from safetensors.numpy import load_file, save_file

  from muppet_jax.errors import UserError
  from muppet_jax.hf import bart_weights
  _, ours = models
  tensors = load_file(tiny_bart.path / "model.safetensors")
  target = pretrained.abstract_params(ours.config, partitioning.make_mesh({"fsdp": 1},
                                                                          jax.devices()[:1]))
  shared = tensors["model.shared.weight"]
  # Older save_pretrained wrote the tied copies; bare BartModel checkpoints lack the `model.`
  # prefix and final_logits_bias.
  old = {**tensors, "lm_head.weight": shared, "model.encoder.embed_tokens.weight": shared,
         "model.decoder.embed_tokens.weight": shared}
  bare = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
  a = bart_weights.import_params(old, ours.config, target).params
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(jax.device_get(ours.params)), strict=True):
    np.testing.assert_array_equal(x, y)
  shutil.copytree(tiny_bart.path, tmp_path / "bare")
  save_file(bare, tmp_path / "bare" / "model.safetensors")
  b = pretrained.from_hf(str(tmp_path / "bare"))
  assert "newly initialized: the LM head's zero bias buffer (final_logits_bias)" in (
      capsys.readouterr().out)
  assert b.params["final_logits_bias"].shape == (1, hf_fixtures.VOCAB_SIZE)
  assert not np.asarray(b.params["final_logits_bias"]).any()
  np.testing.assert_array_equal(b.params["shared"]["embedding"], shared)
  with pytest.raises(UserError, match="untied lm_head.weight"):
    bart_weights.import_params({**tensors, "lm_head.weight": shared + 1}, ours.config, target)
  with pytest.raises(UserError, match="1 tensor\\(s\\) missing, e.g. model.decoder.layers.2.fc1"):
    bart_weights.import_params({k: v for k, v in tensors.items()
                                if k != "model.decoder.layers.2.fc1.weight"}, ours.config, target)
