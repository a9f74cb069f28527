"""Name map between Hugging Face RoBERTa/BERT checkpoints (masked-LM models, bare encoders, and
the task models of --task export) and `EncoderForMaskedLM` plus task heads (the rules and
transforms are explained in `muppet_jax.hf.weights`)."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from muppet_jax.hf import weights
from muppet_jax.hf.weights import (COPY, FLATTEN, KERNEL_FROM_HEADS, Rule, WeightSpec, dense,
                                   head_linear, layer_norm)
from muppet_jax.models.config import EncoderConfig

# model_type -> (prefix of the encoder's tensors, prefix of the transformers class names).
ARCHITECTURES = {
    "roberta": ("roberta", "Roberta"),
    "xlm-roberta": ("roberta", "XLMRoberta"),
    "bert": ("bert", "Bert"),
}
# The transformers task model of each head kind, per encoder prefix: its class name (after the
# class prefix) and the transformers names of our head's linears. Where BERT's and RoBERTa's task
# models put the pooler (dense + tanh on the first token), the head's first linear is written as
# the pooler; those heads also start from a checkpoint's pooler (`heads_from_pooler`).
TASK_MODELS = {
    "roberta": {
        "classification": ("ForSequenceClassification",
                           {"classification_dense": "classifier.dense",
                            "classification_out_proj": "classifier.out_proj"}),
        "multiple_choice": ("ForMultipleChoice",
                            {"multiple_choice_pooler": "roberta.pooler.dense",
                             "multiple_choice_classifier": "classifier"}),
        "span": ("ForQuestionAnswering", {"span_qa_outputs": "qa_outputs"}),
    },
    "bert": {
        "classification": ("ForSequenceClassification",
                           {"classification_dense": "bert.pooler.dense",
                            "classification_out_proj": "classifier"}),
        "multiple_choice": ("ForMultipleChoice",
                            {"multiple_choice_pooler": "bert.pooler.dense",
                             "multiple_choice_classifier": "classifier"}),
        "span": ("ForQuestionAnswering", {"span_qa_outputs": "qa_outputs"}),
    },
}
POOLER = "pooler"  # The params entry of a checkpoint's pooler (beside the model's own).


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


def pooler_heads(config: EncoderConfig) -> dict[str, str]:
  """Head kind -> our linear that transformers' task model of that kind takes from the pooler."""
  p = ARCHITECTURES[config.model_type][0]
  return {kind: ours for kind, (_, linears) in TASK_MODELS[p].items()
          for ours, hf in linears.items() if hf == f"{p}.pooler.dense"}


def spec(config: EncoderConfig) -> WeightSpec:
  """The masked-LM model's rules, plus the tensors a checkpoint may hold beyond them: tied copies,
  the pooler, and parts no model of ours uses (the NSP head, position-id buffers). A bare encoder
  (`BertModel`, `RobertaModel`) lacks the masked-LM head."""
  p, _ = ARCHITECTURES[config.model_type]
  head = "lm_head" if p == "roberta" else "cls.predictions"
  users = " and ".join(kind.replace("_", "-") for kind in pooler_heads(config))
  return WeightSpec(
      weight_map(config), hf_architecture(config),
      tied={f"{head}.decoder.weight": f"{p}.embeddings.word_embeddings.weight",
            f"{head}.decoder.bias": f"{head}.bias"},
      ignored=(f"{p}.embeddings.position_ids", "cls.seq_relationship."),
      fresh={f"{head}.": "the masked-LM head"},
      extra={f"the pooler ({p}.pooler.*), which starts the {users} heads":
             dense((POOLER,), f"{p}.pooler.dense")})


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
                  abstract_params: Mapping[str, Any]) -> weights.Imported:
  """PyTorch-named tensors -> our parameter tree (see `weights.import_params`); the pooler, when
  the checkpoint has one, under `POOLER` (which `abstract_params` must hold)."""
  tensors = _normalize_names(tensors, ARCHITECTURES[config.model_type][0])
  return weights.import_params(tensors, spec(config), config.param_dtype, abstract_params)


def export_tensors(params: Mapping[str, Any], config: EncoderConfig,
                   dtype: str | None = None) -> dict[str, np.ndarray]:
  return weights.export_tensors(params, spec(config), dtype)


def hf_architecture(config: EncoderConfig) -> str:
  return f"{ARCHITECTURES[config.model_type][1]}ForMaskedLM"


def task_architectures(config: EncoderConfig) -> dict[str, str]:
  """The transformers class of a --task export, per head kind."""
  p, classes = ARCHITECTURES[config.model_type]
  return {kind: classes + suffix for kind, (suffix, _) in TASK_MODELS[p].items()}


def export_task_tensors(params: Mapping[str, Any], config: EncoderConfig, kind: str, index: int,
                        num_labels: int, dtype: str | None = None) -> dict[str, np.ndarray]:
  """The encoder plus one task head, under the names of the transformers task model of `kind`.

  `index` is the head's position in its kind's stack; `num_labels` the classes it exports.
  """
  p = ARCHITECTURES[config.model_type][0]
  out = {k: v for k, v in export_tensors(params, config, dtype).items() if k.startswith(p + ".")}
  for ours, hf in TASK_MODELS[p][kind][1].items():
    columns = slice(0, num_labels) if ours == "classification_out_proj" else slice(None)
    out |= head_linear(params["heads"], ours, index, hf, dtype, columns)
  return dict(sorted(out.items()))


def heads_from_pooler(heads: Mapping[str, jax.Array], pooler: Mapping[str, jax.Array],
                      config: EncoderConfig) -> dict[str, jax.Array]:
  """`heads` (stacked, in a jit) with the `pooler_heads` among them set to `pooler` (ours, under
  `POOLER`) in every head of their stack, as transformers' task models start."""
  heads = dict(heads)
  for name in pooler_heads(config).values():
    for part in ("kernel", "bias"):
      if (key := f"{name}_{part}") in heads:
        heads[key] = jnp.broadcast_to(pooler[part], heads[key].shape).astype(heads[key].dtype)
  return heads
