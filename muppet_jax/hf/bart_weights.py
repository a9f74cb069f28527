"""Name map between Hugging Face `BartForConditionalGeneration` checkpoints and `models.bart.Bart`
(the rules and transforms are explained in `muppet_jax.hf.weights`)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from muppet_jax.errors import UserError
from muppet_jax.hf import weights
from muppet_jax.hf.weights import (COPY, KERNEL_FROM_HEADS, Rule, WeightSpec, dense, head_linear,
                                   layer_norm)
from muppet_jax.models.config import BartConfig

ARCHITECTURE = "BartForConditionalGeneration"
# The transformers class of a --task export per head kind; multiple choice has none for BART.
TASK_ARCHITECTURES = {"classification": "BartForSequenceClassification",
                      "span": "BartForQuestionAnswering"}


def _attention(ours: tuple[str, ...], theirs: str) -> list[Rule]:
  rules = []
  for name, hf in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
    rules += dense(ours + (name,), f"{theirs}.{hf}", bias=weights.FLATTEN)
  return rules + dense(ours + ("output",), f"{theirs}.out_proj", kernel=KERNEL_FROM_HEADS)


def weight_map(config: BartConfig) -> list[Rule]:
  """(our path, PyTorch name, transform) for every tensor of the model."""
  rules = [(("shared", "embedding"), "model.shared.weight", COPY),
           (("final_logits_bias",), "final_logits_bias", COPY)]
  for side in ("encoder", "decoder"):
    rules += [((f"{side}_embeddings", "positions", "embedding"),
               f"model.{side}.embed_positions.weight", COPY)]
    rules += layer_norm((f"{side}_embeddings", "layer_norm"), f"model.{side}.layernorm_embedding")
    for i in range(getattr(config, f"{side}_layers")):
      ours, theirs = (f"{side}_layers_{i}",), f"model.{side}.layers.{i}"
      rules += _attention(ours + ("self_attention",), f"{theirs}.self_attn")
      rules += layer_norm(ours + ("self_attention_norm",), f"{theirs}.self_attn_layer_norm")
      if side == "decoder":
        rules += _attention(ours + ("cross_attention",), f"{theirs}.encoder_attn")
        rules += layer_norm(ours + ("cross_attention_norm",), f"{theirs}.encoder_attn_layer_norm")
      rules += dense(ours + ("mlp", "fc1"), f"{theirs}.fc1")
      rules += dense(ours + ("mlp", "fc2"), f"{theirs}.fc2")
      rules += layer_norm(ours + ("mlp_norm",), f"{theirs}.final_layer_norm")
  return rules


def spec(config: BartConfig) -> WeightSpec:
  """The rules, plus the tied copies older checkpoints hold of the shared embeddings and the
  buffer that bare `BartModel` checkpoints lack (`final_logits_bias`: zeros from our init, as in
  transformers)."""
  shared = "model.shared.weight"
  return WeightSpec(
      weight_map(config), ARCHITECTURE,
      tied={"model.encoder.embed_tokens.weight": shared,
            "model.decoder.embed_tokens.weight": shared, "lm_head.weight": shared},
      ignored=("model.encoder.version", "model.decoder.version"),
      fresh={"final_logits_bias": "the LM head's zero bias buffer"})


def _normalize_names(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Bare `BartModel` checkpoints name tensors without the `model.` prefix."""
  if any(n.startswith("model.") for n in tensors):
    return dict(tensors)
  return {(f"model.{n}" if n.startswith(("shared.", "encoder.", "decoder.")) else n): x
          for n, x in tensors.items()}


def import_params(tensors: Mapping[str, np.ndarray], config: BartConfig,
                  abstract_params: Mapping[str, Any]) -> weights.Imported:
  """PyTorch-named tensors -> our parameter tree (see `weights.import_params`)."""
  return weights.import_params(_normalize_names(tensors), spec(config), config.param_dtype,
                               abstract_params)


def export_tensors(params: Mapping[str, Any], config: BartConfig,
                   dtype: str | None = None) -> dict[str, np.ndarray]:
  return weights.export_tensors(params, spec(config), dtype)


def hf_architecture(config: BartConfig) -> str:
  del config
  return ARCHITECTURE


def task_architectures(config: BartConfig) -> dict[str, str]:
  """The transformers class of a --task export, per head kind."""
  del config
  return TASK_ARCHITECTURES


def export_task_tensors(params: Mapping[str, Any], config: BartConfig, kind: str, index: int,
                        num_labels: int, dtype: str | None = None) -> dict[str, np.ndarray]:
  """BART plus one task head, under the names of `BartForSequenceClassification` or
  `BartForQuestionAnswering`; `index` is the head's position in its kind's stack."""
  out = {k: v for k, v in export_tensors(params, config, dtype).items()
         if k.startswith("model.")}
  heads = params["heads"]
  if kind == "classification":
    out |= head_linear(heads, "classification_dense", index, "classification_head.dense", dtype)
    out |= head_linear(heads, "classification_out_proj", index, "classification_head.out_proj",
                       dtype, slice(0, num_labels))
  elif kind == "span":
    out |= head_linear(heads, "span_qa_outputs", index, "qa_outputs", dtype)
  else:
    raise UserError(f"a BART {kind} head has no transformers counterpart")
  return dict(sorted(out.items()))
