"""BART pre-finetuning end to end (configs/prefinetune_bart.py:demo from a tiny Hugging Face
BART): summarization in heterogeneous batches, ROUGE evaluation, the exports, and packed against
unpacked examples."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from configs import prefinetune_bart
from muppet_jax import export, losses, pretrained, trainer
from muppet_jax.data.batching import MixtureStream, StreamConfig
from muppet_jax.errors import UserError
from muppet_jax.models.bart import Bart
from muppet_jax.models.config import BartConfig
from muppet_jax.models.layers import init_variables
from muppet_jax.models.multitask import MultiTaskBart
from muppet_jax.train import train
from tests import hf_fixtures, run_helpers

pytestmark = pytest.mark.slow  # Scheduled first (conftest.py).


def _config(**overrides):
  return run_helpers.short_demo(prefinetune_bart, **{"checkpoint.every_steps": 40, **overrides})


@pytest.fixture(scope="module")
def bart_run(tmp_path_factory):
  """40 steps on muppet_demo from a tiny Hugging Face BART covering the demo vocabulary, with R3F
  as in the bart_large preset."""
  root = tmp_path_factory.mktemp("bart_run")
  hf_fixtures.tiny_bart(vocab_size=1000, max_position_embeddings=130).save_pretrained(root / "hf")
  metrics = train(_config(init_from=str(root / "hf"), **{"r3f.weight": 1.0}), str(root / "run"))
  return root, metrics


def test_run_trains_every_family_with_summaries_and_reports_rouge(bart_run):
  root, metrics = bart_run
  lines = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
  train_lines = [m for m in lines if "loss" in m]
  for family in ("classification", "regression", "multiple_choice", "span", "summarization"):
    assert f"loss/{family}" in train_lines[-1], family
  assert train_lines[-1]["loss/summarization"] < train_lines[0]["loss/summarization"]
  assert all(m["r3f"] > 0 for m in train_lines)
  for name in ("rouge1", "rouge2", "rougeL"):
    assert 0.0 <= metrics[f"eval/demo_summarize/{name}"] <= 1.0
  assert metrics["eval/demo_summarize/examples"] == 32  # 2 batches of 16 documents.
  assert "eval/family/summarization" in metrics
  # The demo preset also evaluates the starting model, for comparison.
  evals = [m for m in lines if "eval/family/summarization" in m]
  assert [m["step"] for m in evals] == [0, 40]


def test_export_is_a_complete_bart_for_conditional_generation(bart_run, tmp_path):
  root, _ = bart_run
  out = export.export(root / "run" / "checkpoints", tmp_path / "bart")
  hf, info = transformers.AutoModelForSeq2SeqLM.from_pretrained(out, output_loading_info=True)
  assert type(hf).__name__ == "BartForConditionalGeneration"
  assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
  _, model = pretrained.from_checkpoint(root / "run" / "checkpoints")
  original = hf_fixtures.tiny_bart(vocab_size=1000, max_position_embeddings=130)
  # The pre-finetuned weights were exported, not the starting ones; the final_logits_bias buffer
  # was not trained.
  assert not torch.equal(hf.model.shared.weight, original.model.shared.weight)
  assert torch.equal(hf.final_logits_bias, original.final_logits_bias)
  ids, mask, decoder = hf_fixtures.seq2seq_batch()
  with torch.no_grad():
    expected = hf.eval()(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder).logits
  got = Bart(model.config).apply({"params": model.params}, jnp.asarray(ids.numpy()),
                                 jnp.asarray(decoder.numpy()),
                                 segment_ids=jnp.asarray(mask.numpy()))
  np.testing.assert_allclose(np.asarray(got.logits), expected.numpy(), atol=1e-4)


@pytest.mark.parametrize("task,auto", [
    ("demo_sentiment", transformers.AutoModelForSequenceClassification),
    ("demo_similarity", transformers.AutoModelForSequenceClassification),
    ("demo_span", transformers.AutoModelForQuestionAnswering),
])
def test_task_export_matches_the_jax_model(bart_run, tmp_path, task, auto):
  root, _ = bart_run
  out = export.export(root / "run" / "checkpoints", tmp_path / task, task=task)
  hf, info = auto.from_pretrained(out, output_loading_info=True)
  assert type(hf).__name__.startswith("BartFor")
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  _, model = pretrained.from_checkpoint(root / "run" / "checkpoints")
  entry = next(t for t in model.tasks if t.name == task)
  head = model.layout.names.index(entry.head)
  ids, mask = run_helpers.padded_inputs(3, 20, len(task), high=900)
  slots = np.zeros((3, 1), np.int32)
  batch = {"input_ids": ids, "segment_ids": mask, "seg_head": slots + head, "seg_start": slots,
           "target_ids": np.zeros((3, 0), np.int32),
           "target_segment_ids": np.zeros((3, 0), np.int32)}
  ours = MultiTaskBart(model.config, model.layout).apply(
      {"params": model.params}, jax.tree.map(jnp.asarray, batch))
  with torch.no_grad():
    got = hf.eval()(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
  if task == "demo_span":
    real = mask.astype(bool)
    np.testing.assert_allclose(got.start_logits.numpy()[real],
                               np.asarray(ours.span_logits[:, 0, :, 0])[real], atol=1e-4)
    np.testing.assert_allclose(got.end_logits.numpy()[real],
                               np.asarray(ours.span_logits[:, 0, :, 1])[real], atol=1e-4)
  else:
    n = got.logits.shape[-1]
    assert n == (1 if task == "demo_similarity" else 2)
    np.testing.assert_allclose(got.logits.numpy(), ours.class_logits[:, 0, :n], atol=1e-4)


@pytest.mark.parametrize("task,message", [
    ("demo_choice", "no transformers counterpart"),
    ("demo_summarize", "export without --task"),
])
def test_task_export_says_when_there_is_no_transformers_class(bart_run, tmp_path, task, message):
  root, _ = bart_run
  with pytest.raises(UserError, match=message):
    export.export(root / "run" / "checkpoints", tmp_path / task, task=task)
  assert not (tmp_path / task).exists()


def _unpacked(batch, row, slot):
  """One example (segment `slot` of `row`, with its summary) alone in a row of its own."""
  tokens = batch["segment_ids"][row] == slot + 1
  targets = batch["target_segment_ids"][row] == slot + 1
  out = {k: np.full_like(v[:1], -1 if k.startswith("seg_") else 0) for k, v in batch.items()}
  out["input_ids"][0] = 1
  out["target_ids"][0] = 1
  n, t = tokens.sum(), targets.sum()
  out["input_ids"][0, :n] = batch["input_ids"][row, tokens]
  out["segment_ids"][0, :n] = 1
  out["target_ids"][0, :t] = batch["target_ids"][row, targets]
  out["target_segment_ids"][0, :t] = 1
  for key in ("seg_task", "seg_head", "seg_label", "seg_score", "seg_example", "seg_choice"):
    out[key][0, 0] = batch[key][row, slot]
  out["seg_start"][0, 0] = 0
  start = np.nonzero(tokens)[0][0]
  out["seg_span"][0, 0] = np.where(batch["seg_span"][row, slot] >= 0,
                                   batch["seg_span"][row, slot] - start, -1)
  return out


def test_packed_and_unpacked_examples_have_the_same_loss():
  stream = MixtureStream(StreamConfig("muppet_demo", batch_size=4, max_length=128,
                                      target_length=48, max_segments=8))
  batch = next(stream)
  config = BartConfig(vocab_size=1000, hidden_size=32, encoder_layers=2,
                                 decoder_layers=2, encoder_heads=4, decoder_heads=4,
                                 encoder_ffn_size=64, decoder_ffn_size=64,
                                 max_position_embeddings=128)
  model = MultiTaskBart(config, stream.layout)
  params = nn.meta.unbox(init_variables(model, jax.random.key(0)))["params"]
  table = losses.TaskTable.build(stream.tasks, 128, 1000)
  mc = losses.FAMILIES.index("multiple_choice")

  @jax.jit  # Compiled once for the unpacked rows (all one shape), once for the packed batch.
  def per_example(b):
    loss, _, _ = losses.per_example_losses(trainer.forward(model, params, b, True), b, table)
    return loss

  packed = np.asarray(per_example(batch))
  compared = set()
  for row, slot in zip(*np.nonzero(batch["seg_task"] >= 0)):
    if table.families[batch["seg_task"][row, slot]] == mc:
      continue  # A multiple-choice example spans several segments.
    single = np.asarray(per_example(_unpacked(batch, row, slot)))
    np.testing.assert_allclose(single[0, 0], packed[row, slot], rtol=2e-5, atol=1e-6)
    compared.add(losses.FAMILIES[table.families[batch["seg_task"][row, slot]]])
  assert compared == {"classification", "regression", "span", "summarization"}
  assert (batch["segment_ids"].max(axis=1) > 1).any()  # Rows really were packed.
