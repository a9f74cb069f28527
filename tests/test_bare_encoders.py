"""Bare encoders (`BertModel`, `RobertaModel` as transformers saves them) as a starting point:
their outputs, the new masked-LM head, their pooler in the task heads, convert; and --task export
of RoBERTa and BERT task models, checked against transformers."""

import contextlib
import io
import json
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from muppet_jax import checkpointing, convert, export, pretrained, state
from muppet_jax.families import HeadLayout, TaskHead
from muppet_jax.models import EncoderForMaskedLM, multitask
from tests import hf_fixtures

# How a bare encoder was saved: by save_pretrained with and without its pooler, or with the
# tensor names under the base model's prefix (`bert.embeddings...`).
VARIANTS = ("pooler", "no_pooler", "prefixed")
HEAD_PREFIX = {"bert": "cls.predictions", "roberta": "lm_head"}


class Bare(NamedTuple):
  model_type: str
  variant: str
  path: pathlib.Path
  model: transformers.PreTrainedModel  # The transformers model it was saved from.

  @property
  def pooler(self) -> bool:
    return self.variant != "no_pooler"


@pytest.fixture(scope="session", params=[(t, v) for t in ("bert", "roberta") for v in VARIANTS],
                ids=lambda p: "-".join(p))
def bare(request, tmp_path_factory) -> Bare:
  model_type, variant = request.param
  model = hf_fixtures.tiny_bare(model_type, pooler=variant != "no_pooler")
  path = tmp_path_factory.mktemp(f"{model_type}_{variant}") / "hf"
  if variant == "prefixed":
    hf_fixtures.save_prefixed(model, path)
  else:
    model.save_pretrained(path)
  hf_fixtures.save_tokenizer(model_type, path)
  return Bare(model_type, variant, path, model)


def _from_hf(path: pathlib.Path, **runtime) -> tuple[pretrained.Pretrained, str]:
  """The loaded model and what it logged."""
  with contextlib.redirect_stdout(io.StringIO()) as out:
    model = pretrained.from_hf(str(path), **runtime)
  return model, out.getvalue()


def _pooler(bare: Bare) -> tuple[np.ndarray, np.ndarray]:
  """The checkpoint's pooler as our kernel [in, out] and bias."""
  dense = bare.model.pooler.dense
  return dense.weight.detach().numpy().T, dense.bias.detach().numpy()


def test_bare_encoder_runs_like_transformers_and_says_what_it_loaded(bare):
  loaded, log = _from_hf(bare.path)
  ids, mask, types = hf_fixtures.padded_batch(bare.model_type)
  with torch.no_grad():
    expected = bare.model(input_ids=ids, attention_mask=mask,
                          token_type_ids=types).last_hidden_state.numpy()
  got = EncoderForMaskedLM(loaded.config).apply(
      {"params": loaded.params}, jnp.asarray(ids.numpy()),
      attention_mask=jnp.asarray(mask.numpy()), token_type_ids=jnp.asarray(types.numpy()))
  real = mask.numpy().astype(bool)
  np.testing.assert_allclose(np.asarray(got.hidden_states)[real], expected[real], atol=2e-5,
                             rtol=0)
  assert expected[real].std(axis=0).mean() > 0.1  # Not vacuous: states vary across tokens.

  head = HEAD_PREFIX[bare.model_type]
  assert f"newly initialized: the masked-LM head ({head}.*, 5 tensors); unused: none" in log
  assert ("with the pooler" in log) == bare.pooler
  assert (loaded.params.keys() == {"encoder", "mlm_head", "pooler"}) == bare.pooler
  if bare.pooler:
    kernel, bias = _pooler(bare)
    np.testing.assert_array_equal(np.asarray(loaded.params["pooler"]["kernel"]), kernel)
    np.testing.assert_array_equal(np.asarray(loaded.params["pooler"]["bias"]), bias)


@pytest.mark.parametrize("bare", [("bert", "no_pooler"), ("roberta", "pooler")], indirect=True,
                         ids=["bert", "roberta"])
def test_new_masked_lm_head_starts_as_in_transformers(bare):
  """transformers' masked-LM model from the same bare checkpoint initializes its missing head:
  ours has the same constants and the same spread."""
  loaded, _ = _from_hf(bare.path)
  theirs = transformers.AutoModelForMaskedLM.from_pretrained(bare.path)
  state_dict = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
  head = HEAD_PREFIX[bare.model_type]
  transform = head if bare.model_type == "roberta" else f"{head}.transform"
  norm = "layer_norm" if bare.model_type == "roberta" else "LayerNorm"
  ours = jax.device_get(loaded.params["mlm_head"])
  pairs = [(ours["dense"]["bias"], state_dict[f"{transform}.dense.bias"]),
           (ours["layer_norm"]["scale"], state_dict[f"{transform}.{norm}.weight"]),
           (ours["layer_norm"]["bias"], state_dict[f"{transform}.{norm}.bias"]),
           (ours["bias"], state_dict[f"{head}.bias"])]
  for a, b in pairs:
    np.testing.assert_array_equal(a, b)
  kernel, reference = ours["dense"]["kernel"], state_dict[f"{transform}.dense.weight"]
  assert abs(kernel.mean()) < 0.003 and abs(reference.mean()) < 0.003
  np.testing.assert_allclose(kernel.std(), reference.std(), rtol=0.1)
  np.testing.assert_allclose(kernel.std(), loaded.config.initializer_range, rtol=0.1)


TASKS = (
    TaskHead("a_topic", "classification", 2, "a_topic"),
    TaskHead("b_sentiment", "classification", 3, "b_sentiment", ("negative", "neutral", "positive")),
    TaskHead("c_similarity", "regression", 1, "c_similarity"),
    TaskHead("choice", "multiple_choice", 4, "multiple_choice"),
    TaskHead("squad", "span", 1, "span"),
)
LAYOUT = HeadLayout.for_tasks(TASKS)


def _init_heads(loaded: pretrained.Pretrained, seed: int = 1) -> dict:
  """The fresh train state's params of a pre-finetuning model, as training starts them."""
  model = multitask.build(loaded.config, LAYOUT)
  mesh = pretrained.default_mesh()
  abstract = state.abstract_state(model, mesh)
  return state.init_state(model, abstract, jax.random.key(seed), pretrained=loaded.params).params


def test_pooler_starts_the_heads_that_transformers_starts_from_it(bare):
  """Multiple choice (both) and classification (BERT: `BertForSequenceClassification`'s pooler
  is its first layer) start from the checkpoint's pooler, in every head of their stack;
  RoBERTa's classification head (`RobertaClassificationHead`) and the rest start fresh. With
  the layers in a loop, or scanned (for one variant: the pooler path is the same)."""
  for scan in (False, True) if bare.variant == "pooler" else (False,):
    _check_heads(bare, scan)


def _check_heads(bare: Bare, scan: bool) -> None:
  loaded, _ = _from_hf(bare.path, scan_layers=scan)
  params = jax.device_get(_init_heads(loaded))
  heads = params["heads"]
  assert "pooler" not in params
  assert ("stack" in params["encoder"]["layers"]) if scan else "layers_0" in params["encoder"]
  # Linear -> (its kind, whether it starts from the pooler).
  linears = {"multiple_choice_pooler": ("multiple_choice", bare.pooler),
             "classification_dense": ("classification",
                                      bare.pooler and bare.model_type == "bert"),
             "multiple_choice_classifier": ("multiple_choice", False),
             "classification_out_proj": ("classification", False)}
  kernel, bias = _pooler(bare) if bare.pooler else (None, None)
  for name, (kind, from_pooler) in linears.items():
    kernels, biases = heads[f"{name}_kernel"], heads[f"{name}_bias"]
    assert len(kernels) == LAYOUT.count(kind)
    for i in range(len(kernels)):
      if from_pooler:
        np.testing.assert_array_equal(kernels[i], kernel)
        np.testing.assert_array_equal(biases[i], bias)
      else:
        assert not biases[i].any()  # Fresh: zero biases, normal(0, initializer_range) kernels.
        np.testing.assert_allclose(kernels[i].std(), loaded.config.initializer_range, rtol=0.3)


def test_convert_keeps_the_pooler_and_exports_a_masked_lm(bare, tmp_path):
  loaded, _ = _from_hf(bare.path)
  with contextlib.redirect_stdout(io.StringIO()):
    convert.convert(str(bare.path), tmp_path / "ckpt")
  _, restored = pretrained.from_checkpoint(tmp_path / "ckpt")
  for a, b in zip(jax.tree.leaves(jax.device_get(loaded.params)),
                  jax.tree.leaves(jax.device_get(restored.params)), strict=True):
    np.testing.assert_array_equal(a, b)
  assert ("pooler" in restored.params) == bare.pooler
  export.export(tmp_path / "ckpt", tmp_path / "hf")
  mlm, info = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf",
                                                                output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  ids, mask, types = hf_fixtures.padded_batch(bare.model_type)
  with torch.no_grad():
    got = mlm.base_model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    expected = bare.model(input_ids=ids, attention_mask=mask, token_type_ids=types)
  assert torch.equal(got.last_hidden_state, expected.last_hidden_state)


@pytest.fixture(scope="session", params=["bert", "roberta"])
def multitask_checkpoint(request, tmp_path_factory) -> pathlib.Path:
  """A pre-finetuned checkpoint of every head kind, from a bare encoder with a pooler; every head
  tensor random (biases too), as after training."""
  model_type = request.param
  path = tmp_path_factory.mktemp(f"{model_type}_tasks")
  hf_fixtures.tiny_bare(model_type).save_pretrained(path / "hf")
  hf_fixtures.save_tokenizer(model_type, path / "hf")
  loaded, _ = _from_hf(path / "hf")
  params = jax.device_get(_init_heads(loaded))
  rng = np.random.default_rng(0)
  params["heads"] = {k: (v + rng.normal(0, 0.3, v.shape)).astype(v.dtype)
                     for k, v in params["heads"].items()}
  checkpointing.save_model(path / "ckpt", params, loaded.metadata(LAYOUT, TASKS))
  return path / "ckpt"


def _inputs(rows: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """(input_ids, attention_mask): rows of different lengths, right-padded, first token a start
  token (both tokenizers' special ids are below 5)."""
  rng = np.random.default_rng(rows)
  ids = rng.integers(5, hf_fixtures.VOCAB_SIZE, (rows, 12))
  mask = np.ones_like(ids)
  for r in range(rows):
    ids[r, 12 - 2 * r:], mask[r, 12 - 2 * r:] = pad_id, 0
  return ids, mask


@pytest.mark.parametrize("task,auto", [
    ("a_topic", transformers.AutoModelForSequenceClassification),
    ("b_sentiment", transformers.AutoModelForSequenceClassification),
    ("c_similarity", transformers.AutoModelForSequenceClassification),
    ("choice", transformers.AutoModelForMultipleChoice),
    ("squad", transformers.AutoModelForQuestionAnswering),
])
def test_task_export_is_the_transformers_task_model(multitask_checkpoint, tmp_path, task, auto):
  out = export.export(multitask_checkpoint, tmp_path / task, task=task)
  hf, info = auto.from_pretrained(out, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  _, model = pretrained.from_checkpoint(multitask_checkpoint)
  prefix = {"bert": "Bert", "roberta": "Roberta"}[model.config.model_type]
  kind = {"choice": "ForMultipleChoice", "squad": "ForQuestionAnswering"}
  assert type(hf).__name__ == prefix + kind.get(task, "ForSequenceClassification")
  config = json.loads((out / "config.json").read_text())
  assert config["architectures"] == [type(hf).__name__]

  head = model.layout.names.index(next(t.head for t in TASKS if t.name == task))
  rows = 4 if task == "choice" else 3
  ids, mask = _inputs(rows, model.config.pad_token_id)
  slots = np.zeros((rows, 1), np.int32)
  ours = multitask.build(model.config, model.layout).apply(
      {"params": model.params}, {"input_ids": jnp.asarray(ids), "segment_ids": jnp.asarray(mask),
                                 "seg_head": jnp.asarray(slots + head),
                                 "seg_start": jnp.asarray(slots)})
  with torch.no_grad():
    if task == "choice":
      got = hf.eval()(input_ids=torch.tensor(ids)[None], attention_mask=torch.tensor(mask)[None])
      np.testing.assert_allclose(got.logits[0].numpy(), ours.choice_scores[:, 0], atol=2e-5)
      return
    got = hf.eval()(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
  if task == "squad":
    real = mask.astype(bool)
    np.testing.assert_allclose(got.start_logits.numpy()[real],
                               np.asarray(ours.span_logits[:, 0, :, 0])[real], atol=2e-5)
    np.testing.assert_allclose(got.end_logits.numpy()[real],
                               np.asarray(ours.span_logits[:, 0, :, 1])[real], atol=2e-5)
    return
  labels = {"a_topic": ["LABEL_0", "LABEL_1"], "b_sentiment": ["negative", "neutral", "positive"],
            "c_similarity": ["LABEL_0"]}[task]
  assert [hf.config.id2label[i] for i in range(len(labels))] == labels
  assert hf.config.label2id == {label: i for i, label in enumerate(labels)}
  assert hf.config.problem_type == ("regression" if task == "c_similarity"
                                    else "single_label_classification")
  n = len(labels)
  assert got.logits.shape[-1] == n
  np.testing.assert_allclose(got.logits.numpy(), ours.class_logits[:, 0, :n], atol=2e-5)
