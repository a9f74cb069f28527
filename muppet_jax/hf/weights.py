"""Name maps between Hugging Face PyTorch checkpoints and our parameter trees, read both ways.

A model family's `WeightSpec` lists one rule per tensor: our parameter path, the PyTorch name, and
a transform hook (copy, flatten a bias, or transpose-and-reshape a linear kernel: PyTorch keeps
[out, in], Flax [in, out] with heads split out). Import and export are the same table read in
both directions; the families' tables are in `encoder_weights` and `bart_weights`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from muppet_jax.errors import UserError

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
Rule = tuple[Path, str, Transform]


def dense(path: Path, hf: str, kernel: Transform = KERNEL, bias: Transform = COPY) -> list[Rule]:
  return [(path + ("kernel",), f"{hf}.weight", kernel), (path + ("bias",), f"{hf}.bias", bias)]


def layer_norm(path: Path, hf: str) -> list[Rule]:
  return [(path + ("scale",), f"{hf}.weight", COPY), (path + ("bias",), f"{hf}.bias", COPY)]


@dataclasses.dataclass(frozen=True)
class WeightSpec:
  """Everything import and export need to know about one architecture's checkpoints."""

  rules: list[Rule]
  architecture: str  # The transformers class the rules describe.
  tied: Mapping[str, str] = dataclasses.field(default_factory=dict)  # Copy name -> source name.
  ignored: tuple[str, ...] = ()  # Name prefixes of tensors the model doesn't use.
  # Name prefix -> what it is: parts of the model that a checkpoint may lack as a whole (a bare
  # encoder's masked-LM head); they then start from the model's own initialization.
  fresh: Mapping[str, str] = dataclasses.field(default_factory=dict)
  # What they are -> rules: tensors beyond the model, kept under our paths when a checkpoint has
  # them (the encoder's pooler, which starts task heads); export does not write them.
  extra: Mapping[str, list[Rule]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Imported:
  """A checkpoint's tensors as our parameter tree, and an account of them."""

  params: dict[str, Any]  # Every tensor read; without the `fresh` parts.
  fresh: tuple[Path, ...]  # Our paths of the parts the checkpoint lacks, for the model to init.
  summary: str  # One line: what was loaded, what is newly initialized, what is unused.


def set_path(tree: dict, path: Path, value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def get_path(tree: Mapping, path: Path) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def import_params(tensors: Mapping[str, np.ndarray], spec: WeightSpec, param_dtype: str,
                  abstract_params: Mapping[str, Any]) -> Imported:
  """PyTorch-named tensors -> our parameter tree, checked against the model's shapes.

  `abstract_params` is the model's parameter tree (e.g. from `jax.eval_shape`), with the paths of
  `spec.extra` too; every tensor must be there with the right shape, except whole `fresh` parts
  and `extra` groups, and nothing unknown may be left over.
  """
  dtype = np.dtype(param_dtype)
  params: dict[str, Any] = {}
  missing, mismatched, loaded = [], [], []
  absent = {prefix: [r for r in spec.rules if r[1].startswith(prefix)] for prefix in spec.fresh
            if not any(n.startswith(prefix) for n in tensors)}
  fresh = [rule for rules in absent.values() for rule in rules]
  extra = [rule for rules in spec.extra.values() if any(r[1] in tensors for r in rules)
           for rule in rules]
  for path, name, transform in [r for r in spec.rules if r not in fresh] + extra:
    expected = tuple(get_path(abstract_params, path).shape)
    if name not in tensors:
      missing.append(name)
      continue
    x = tensors[name]
    if tuple(x.shape) != transform.hf_shape(expected):
      mismatched.append(f"{name} {tuple(x.shape)} vs expected {transform.hf_shape(expected)}")
      continue
    set_path(params, path, transform.to_flax(np.asarray(x), expected).astype(dtype))
    loaded.append(name)
  if mismatched:
    raise UserError(f"checkpoint does not match the config: {len(mismatched)} tensor(s) have other "
                    f"shapes, e.g. {'; '.join(mismatched[:3])}")
  if missing:
    raise UserError(f"checkpoint does not match a {spec.architecture}: {len(missing)} tensor(s) "
                    f"missing, e.g. {', '.join(missing[:3])}")
  for name, source in spec.tied.items():
    if name in tensors and not np.array_equal(tensors[name], tensors[source]):
      raise UserError(f"checkpoint has an untied {name} (differs from {source}); only tied "
                      "output embeddings are supported")
  known = {name for _, name, _ in spec.rules + extra}
  unknown = [n for n in tensors if n not in known and n not in spec.tied]
  unexpected = [n for n in unknown if not n.startswith(spec.ignored)]
  if unexpected:
    raise UserError(f"checkpoint does not match the config: {len(unexpected)} unexpected "
                    f"tensor(s), e.g. {', '.join(sorted(unexpected)[:3])}")
  summary = f"loaded {len(loaded)} tensors"
  for what, rules in spec.extra.items():
    if rules[0] in extra:
      summary += f", with {what}"
  news = [f"{spec.fresh[prefix]} ({rules[0][1]})" if len(rules) == 1
          else f"{spec.fresh[prefix]} ({prefix}*, {len(rules)} tensors)"
          for prefix, rules in absent.items()]
  summary += f"; newly initialized: {', '.join(news) or 'none'}; unused: {_grouped(unknown)}"
  return Imported(params, tuple(path for path, _, _ in fresh), summary)


def _grouped(names: list[str], shown: int = 4) -> str:
  """A few tensor names, a layer's (`x.weight`, `x.bias`) as one `x.*`."""
  groups: dict[str, int] = {}
  for name in sorted(names):
    stem, _, last = name.rpartition(".")
    key = f"{stem}.*" if last in ("weight", "bias") else name
    groups[key] = groups.get(key, 0) + 1
  items = [f"{key} ({n} tensors)" if n > 1 else key for key, n in list(groups.items())[:shown]]
  if len(groups) > shown:
    items.append(f"{len(groups) - shown} more")
  return ", ".join(items) or "none"


def export_tensors(params: Mapping[str, Any], spec: WeightSpec,
                   dtype: str | None = None) -> dict[str, np.ndarray]:
  """Our parameter tree -> tensors under the names transformers' `save_pretrained` writes."""
  out = {}
  for path, name, transform in spec.rules:
    x = transform.to_hf(np.asarray(get_path(params, path)))
    out[name] = x.astype(dtype) if dtype else x
  return out


def head_linear(heads: Mapping[str, Any], name: str, index: int, hf: str, dtype: str | None,
                columns: slice = slice(None)) -> dict[str, np.ndarray]:
  """One head of a stacked `heads/{name}_kernel|bias` pair as a PyTorch Linear `hf`."""
  kernel = np.asarray(heads[f"{name}_kernel"][index])[:, columns]
  bias = np.asarray(heads[f"{name}_bias"][index])[columns]
  return {f"{hf}.weight": kernel.T.astype(dtype or kernel.dtype),
          f"{hf}.bias": bias.astype(dtype or bias.dtype)}
