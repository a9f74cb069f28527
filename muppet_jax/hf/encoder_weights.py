"""Name map between Hugging Face RoBERTa/BERT masked-LM checkpoints and `EncoderForMaskedLM`.

One rule per tensor: our parameter path, the PyTorch name, and a transform hook (copy, flatten a
bias, or transpose-and-reshape a linear kernel: PyTorch keeps [out, in], Flax [in, out] with heads
split out). Import and export are the same table read in both directions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from muppet_jax.errors import UserError
from muppet_jax.models.config import EncoderConfig

# model_type -> (prefix of the encoder's tensors, transformers masked-LM class).
ARCHITECTURES = {
    "roberta": ("roberta", "RobertaForMaskedLM"),
    "xlm-roberta": ("roberta", "XLMRobertaForMaskedLM"),
    "bert": ("bert", "BertForMaskedLM"),
}

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Transform:
  """How a tensor's PyTorch layout relates to ours.

  kind "copy": same layout; "flatten": PyTorch holds it flat (per-head biases); "kernel": a linear
  weight, transposed, whose first `n_in` Flax axes are the input features.
  """

  kind: str
  n_in: int = 1

  def hf_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
    if self.kind == "copy":
      return tuple(shape)
    if self.kind == "flatten":
      return (math.prod(shape),)
    return (math.prod(shape[self.n_in:]), math.prod(shape[:self.n_in]))

  def to_flax(self, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return x.T.reshape(shape) if self.kind == "kernel" else x.reshape(shape)

  def to_hf(self, x: np.ndarray) -> np.ndarray:
    if self.kind == "kernel":
      return x.reshape(math.prod(x.shape[:self.n_in]), -1).T
    return x.reshape(-1) if self.kind == "flatten" else x


COPY, FLATTEN = Transform("copy"), Transform("flatten")
KERNEL, KERNEL_FROM_HEADS = Transform("kernel", 1), Transform("kernel", 2)


def _dense(path: Path, hf: str, kernel: Transform = KERNEL,
           bias: Transform = COPY) -> list[tuple[Path, str, Transform]]:
  return [(path + ("kernel",), f"{hf}.weight", kernel), (path + ("bias",), f"{hf}.bias", bias)]


def _layer_norm(path: Path, hf: str) -> list[tuple[Path, str, Transform]]:
  return [(path + ("scale",), f"{hf}.weight", COPY), (path + ("bias",), f"{hf}.bias", COPY)]


def weight_map(config: EncoderConfig) -> list[tuple[Path, str, Transform]]:
  """(our path, PyTorch name, transform) for every tensor of the masked-LM model."""
  p = ARCHITECTURES[config.model_type][0]
  emb = ("encoder", "embeddings")
  rules = [
      (emb + ("word_embeddings", "embedding"), f"{p}.embeddings.word_embeddings.weight", COPY),
      (emb + ("position_embeddings", "embedding"), f"{p}.embeddings.position_embeddings.weight",
       COPY),
      (emb + ("token_type_embeddings", "embedding"),
       f"{p}.embeddings.token_type_embeddings.weight", COPY),
      *_layer_norm(emb + ("layer_norm",), f"{p}.embeddings.LayerNorm"),
  ]
  for i in range(config.num_layers):
    ours, theirs = ("encoder", f"layers_{i}"), f"{p}.encoder.layer.{i}"
    for name in ("query", "key", "value"):
      rules += _dense(ours + ("attention", name), f"{theirs}.attention.self.{name}",
                      bias=FLATTEN)
    rules += _dense(ours + ("attention", "output"), f"{theirs}.attention.output.dense",
                    kernel=KERNEL_FROM_HEADS)
    rules += _layer_norm(ours + ("attention_norm",), f"{theirs}.attention.output.LayerNorm")
    rules += _dense(ours + ("mlp", "intermediate"), f"{theirs}.intermediate.dense")
    rules += _dense(ours + ("mlp", "output"), f"{theirs}.output.dense")
    rules += _layer_norm(ours + ("mlp_norm",), f"{theirs}.output.LayerNorm")
  head = "lm_head" if p == "roberta" else "cls.predictions"
  transform = "lm_head" if p == "roberta" else "cls.predictions.transform"
  rules += _dense(("mlm_head", "dense"), f"{transform}.dense")
  rules += _layer_norm(("mlm_head", "layer_norm"),
                       f"{transform}.layer_norm" if p == "roberta" else f"{transform}.LayerNorm")
  rules.append((("mlm_head", "bias"), f"{head}.bias", COPY))
  return rules


def _tied_and_ignored(config: EncoderConfig) -> tuple[dict[str, str], tuple[str, ...]]:
  """Tensors a checkpoint may hold beyond the map: tied copies (name -> the tensor it must equal)
  and parts no masked-LM model uses (the NSP and pooler heads, position-id buffers)."""
  p = ARCHITECTURES[config.model_type][0]
  head = "lm_head" if p == "roberta" else "cls.predictions"
  tied = {f"{head}.decoder.weight": f"{p}.embeddings.word_embeddings.weight",
          f"{head}.decoder.bias": f"{head}.bias"}
  ignored = (f"{p}.embeddings.position_ids", f"{p}.pooler.", "cls.seq_relationship.")
  return tied, ignored


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


def _set(tree: dict, path: Path, value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: Mapping, path: Path) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def import_params(tensors: Mapping[str, np.ndarray], config: EncoderConfig,
                  abstract_params: Mapping[str, Any]) -> dict[str, Any]:
  """PyTorch-named tensors -> our parameter tree, checked against the model's shapes.

  `abstract_params` is the model's parameter tree (e.g. from `jax.eval_shape`); every tensor must
  be there with the right shape, and nothing unknown may be left over.
  """
  prefix = ARCHITECTURES[config.model_type][0]
  tensors = _normalize_names(tensors, prefix)
  tied, ignored = _tied_and_ignored(config)
  dtype = np.dtype(config.param_dtype)
  params: dict[str, Any] = {}
  missing, mismatched = [], []
  for path, name, transform in weight_map(config):
    expected = tuple(_get(abstract_params, path).shape)
    if name not in tensors:
      missing.append(name)
      continue
    x = tensors[name]
    if tuple(x.shape) != transform.hf_shape(expected):
      mismatched.append(f"{name} {tuple(x.shape)} vs expected {transform.hf_shape(expected)}")
      continue
    _set(params, path, transform.to_flax(np.asarray(x), expected).astype(dtype))
  if mismatched:
    raise UserError(f"checkpoint does not match the config: {len(mismatched)} tensor(s) have other "
                    f"shapes, e.g. {'; '.join(mismatched[:3])}")
  if missing:
    raise UserError(f"checkpoint does not match a {ARCHITECTURES[config.model_type][1]}: "
                    f"{len(missing)} tensor(s) missing, e.g. {', '.join(missing[:3])}")
  known = {name for _, name, _ in weight_map(config)}
  for name, source in tied.items():
    if name in tensors and not np.array_equal(tensors[name], tensors[source]):
      raise UserError(f"checkpoint has an untied {name} (differs from {source}); only tied "
                      "masked-LM decoders are supported")
  unexpected = [n for n in tensors
                if n not in known and n not in tied and not n.startswith(ignored)]
  if unexpected:
    raise UserError(f"checkpoint does not match the config: {len(unexpected)} unexpected "
                    f"tensor(s), e.g. {', '.join(sorted(unexpected)[:3])}")
  return params


def export_tensors(params: Mapping[str, Any], config: EncoderConfig,
                   dtype: str | None = None) -> dict[str, np.ndarray]:
  """Our parameter tree -> tensors under the names transformers' `save_pretrained` writes."""
  out = {}
  for path, name, transform in weight_map(config):
    x = transform.to_hf(np.asarray(_get(params, path)))
    out[name] = x.astype(dtype) if dtype else x
  return out


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

  def linear(name: str, hf: str, columns: slice = slice(None)) -> None:
    kernel = np.asarray(heads[f"{name}_kernel"][index])[:, columns]
    bias = np.asarray(heads[f"{name}_bias"][index])[columns]
    out[f"{hf}.weight"] = kernel.T.astype(dtype or kernel.dtype)
    out[f"{hf}.bias"] = bias.astype(dtype or bias.dtype)

  if kind == "classification":
    linear("classification_dense", "classifier.dense")
    linear("classification_out_proj", "classifier.out_proj", slice(0, num_labels))
  elif kind == "multiple_choice":
    linear("multiple_choice_pooler", "roberta.pooler.dense")
    linear("multiple_choice_classifier", "classifier")
  else:
    linear("span_qa_outputs", "qa_outputs")
  return dict(sorted(out.items()))
