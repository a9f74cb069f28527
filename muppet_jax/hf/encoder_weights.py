"""Name map between Hugging Face RoBERTa/BERT masked-LM checkpoints and `EncoderForMaskedLM`
(the rules and transforms are explained in `muppet_jax.hf.weights`)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from muppet_jax.errors import UserError
from muppet_jax.hf import weights
from muppet_jax.hf.weights import (COPY, FLATTEN, KERNEL_FROM_HEADS, Rule, WeightSpec, dense,
                                   head_linear, layer_norm)
from muppet_jax.models.config import EncoderConfig

# model_type -> (prefix of the encoder's tensors, transformers masked-LM class).
ARCHITECTURES = {
    "roberta": ("roberta", "RobertaForMaskedLM"),
    "xlm-roberta": ("roberta", "XLMRobertaForMaskedLM"),
    "bert": ("bert", "BertForMaskedLM"),
}


def weight_map(config: EncoderConfig) -> list[Rule]:
  """(our path, PyTorch name, transform) for every tensor of the masked-LM model."""
  p = ARCHITECTURES[config.model_type][0]
  emb = ("encoder", "embeddings")
  rules = [
      (emb + ("word_embeddings", "embedding"), f"{p}.embeddings.word_embeddings.weight", COPY),
      (emb + ("position_embeddings", "embedding"), f"{p}.embeddings.position_embeddings.weight",
       COPY),
      (emb + ("token_type_embeddings", "embedding"),
       f"{p}.embeddings.token_type_embeddings.weight", COPY),
      *layer_norm(emb + ("layer_norm",), f"{p}.embeddings.LayerNorm"),
  ]
  for i in range(config.num_layers):
    ours, theirs = ("encoder", f"layers_{i}"), f"{p}.encoder.layer.{i}"
    for name in ("query", "key", "value"):
      rules += dense(ours + ("attention", name), f"{theirs}.attention.self.{name}", bias=FLATTEN)
    rules += dense(ours + ("attention", "output"), f"{theirs}.attention.output.dense",
                   kernel=KERNEL_FROM_HEADS)
    rules += layer_norm(ours + ("attention_norm",), f"{theirs}.attention.output.LayerNorm")
    rules += dense(ours + ("mlp", "intermediate"), f"{theirs}.intermediate.dense")
    rules += dense(ours + ("mlp", "output"), f"{theirs}.output.dense")
    rules += layer_norm(ours + ("mlp_norm",), f"{theirs}.output.LayerNorm")
  head = "lm_head" if p == "roberta" else "cls.predictions"
  transform = "lm_head" if p == "roberta" else "cls.predictions.transform"
  rules += dense(("mlm_head", "dense"), f"{transform}.dense")
  rules += layer_norm(("mlm_head", "layer_norm"),
                      f"{transform}.layer_norm" if p == "roberta" else f"{transform}.LayerNorm")
  rules.append((("mlm_head", "bias"), f"{head}.bias", COPY))
  return rules


def spec(config: EncoderConfig) -> WeightSpec:
  """The masked-LM model's rules, plus the tensors a checkpoint may hold beyond them: tied copies
  and parts no masked-LM model uses (the NSP and pooler heads, position-id buffers)."""
  p, architecture = ARCHITECTURES[config.model_type]
  head = "lm_head" if p == "roberta" else "cls.predictions"
  return WeightSpec(
      weight_map(config), architecture,
      tied={f"{head}.decoder.weight": f"{p}.embeddings.word_embeddings.weight",
            f"{head}.decoder.bias": f"{head}.bias"},
      ignored=(f"{p}.embeddings.position_ids", f"{p}.pooler.", "cls.seq_relationship."))


def _normalize_names(tensors: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  """Old TF-era names (LayerNorm.gamma/beta) and bare-encoder checkpoints without a prefix."""
  renamed = {}
  for name, x in tensors.items():
    if name.endswith(".gamma"):
      name = name[:-len("gamma")] + "weight"
    elif name.endswith(".beta"):
      name = name[:-len("beta")] + "bias"
    renamed[name] = x
  if not any(n.startswith(prefix + ".") for n in renamed):
    renamed = {(f"{prefix}.{n}" if n.startswith(("embeddings.", "encoder.", "pooler.")) else n): x
               for n, x in renamed.items()}
  return renamed


def import_params(tensors: Mapping[str, np.ndarray], config: EncoderConfig,
                  abstract_params: Mapping[str, Any]) -> dict[str, Any]:
  """PyTorch-named tensors -> our parameter tree (see `weights.import_params`)."""
  tensors = _normalize_names(tensors, ARCHITECTURES[config.model_type][0])
  return weights.import_params(tensors, spec(config), config.param_dtype, abstract_params)


def export_tensors(params: Mapping[str, Any], config: EncoderConfig,
                   dtype: str | None = None) -> dict[str, np.ndarray]:
  return weights.export_tensors(params, spec(config), dtype)


def hf_architecture(config: EncoderConfig) -> str:
  return ARCHITECTURES[config.model_type][1]


# The transformers class of a --task export per head kind (RoBERTa family).
TASK_ARCHITECTURES = {"classification": "RobertaForSequenceClassification",
                      "multiple_choice": "RobertaForMultipleChoice",
                      "span": "RobertaForQuestionAnswering"}


def export_task_tensors(params: Mapping[str, Any], config: EncoderConfig, kind: str, index: int,
                        num_labels: int, dtype: str | None = None) -> dict[str, np.ndarray]:
  """The encoder plus one task head, under the names of the transformers task model of `kind`.

  `index` is the head's position in its kind's stack; `num_labels` the classes it exports.
  """
  if config.model_type not in ("roberta", "xlm-roberta"):
    raise UserError(f"--task export writes RoBERTa task models; this checkpoint is a "
                    f"{config.model_type}")
  out = {k: v for k, v in export_tensors(params, config, dtype).items()
         if k.startswith("roberta.")}
  heads = params["heads"]
  if kind == "classification":
    out |= head_linear(heads, "classification_dense", index, "classifier.dense", dtype)
    out |= head_linear(heads, "classification_out_proj", index, "classifier.out_proj", dtype,
                       slice(0, num_labels))
  elif kind == "multiple_choice":
    out |= head_linear(heads, "multiple_choice_pooler", index, "roberta.pooler.dense", dtype)
    out |= head_linear(heads, "multiple_choice_classifier", index, "classifier", dtype)
  else:
    out |= head_linear(heads, "span_qa_outputs", index, "qa_outputs", dtype)
  return dict(sorted(out.items()))
