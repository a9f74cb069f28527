"""Pretrained models onto the mesh: from a Hugging Face checkpoint or a muppet_jax checkpoint."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh

from muppet_jax import checkpointing, hf, partitioning
from muppet_jax.hf import checkpoint_files
from muppet_jax.models import bart, encoder, multitask
from muppet_jax.models.config import (BartConfig, ModelConfig, config_from_dict, config_from_hf,
                                     runtime_for)
from muppet_jax.models.heads import HeadLayout


@dataclasses.dataclass
class Pretrained:
  """A model's config and (sharded) parameters, with what export needs to write it back."""

  config: ModelConfig
  params: Any  # EncoderForMaskedLM's or Bart's params; a trained checkpoint's also have `heads`.
  hf_config: dict[str, Any]  # The source config.json, kept so export preserves its other fields.
  tokenizer_files: dict[str, bytes]
  layout: HeadLayout | None = None  # The task heads of a pre-finetuned checkpoint.
  tasks: list[dict[str, Any]] = dataclasses.field(default_factory=list)

  def metadata(self) -> dict[str, Any]:
    return {"model_config": self.config.to_dict(), "hf_config": self.hf_config,
            "tokenizer_files": checkpointing.encode_files(self.tokenizer_files)}


def _init_variables(config: ModelConfig, layout: HeadLayout | None, rng: jax.Array) -> dict:
  if layout is not None:
    return multitask.init_variables(multitask.build(config, layout), rng)
  if isinstance(config, BartConfig):
    return bart.init_variables(bart.Bart(config), rng)
  return encoder.init_variables(encoder.EncoderForMaskedLM(config), rng)


def abstract_params(config: ModelConfig, mesh: Mesh, layout: HeadLayout | None = None) -> Any:
  """The parameter tree (with the task heads of `layout`, if given) as ShapeDtypeStructs carrying
  their NamedShardings."""
  boxed = jax.eval_shape(lambda r: _init_variables(config, layout, r), jax.random.key(0))["params"]
  abstract = nn.meta.unbox(boxed)
  shardings = partitioning.logical_to_mesh_sharding(nn.get_partition_spec(boxed), abstract, mesh)
  return checkpointing.abstract_with_shardings(abstract, shardings)


def default_mesh() -> Mesh:
  """All devices on the fsdp axis: parameters sharded, nothing materialized whole."""
  return partitioning.make_mesh({"fsdp": -1})


def from_hf(path_or_name: str, mesh: Mesh | None = None, **runtime: Any) -> Pretrained:
  """Reads a Hugging Face RoBERTa/BERT masked-LM or BART checkpoint; `runtime` sets dtypes,
  dropout, ..."""
  mesh = mesh or default_mesh()
  ckpt = checkpoint_files.read_checkpoint(path_or_name)
  config = config_from_hf(ckpt.config, **runtime)
  target = abstract_params(config, mesh)
  params = hf.weights_for(config).import_params(ckpt.tensors, config, target)
  params = jax.tree.map(lambda x, t: jax.device_put(x, t.sharding), params, target)
  return Pretrained(config, params, ckpt.config, ckpt.tokenizer_files)


def from_checkpoint(directory: str | os.PathLike, mesh: Mesh | None = None,
                    step: int | None = None, **runtime: Any) -> tuple[int, Pretrained]:
  """Restores (step, model) from a muppet_jax checkpoint; each device reads only its shards."""
  mesh = mesh or default_mesh()
  step, meta = checkpointing.read_model_metadata(directory, step)
  # Checkpoints written before BART support name the config "encoder_config".
  config = config_from_dict(meta.get("model_config") or meta["encoder_config"])
  config = config.replace(**runtime_for(type(config), runtime))
  layout = None
  if "heads" in meta:
    heads = meta["heads"]
    layout = HeadLayout(tuple(heads["names"]), tuple(heads["kinds"]), heads["num_classes"])
  params = checkpointing.restore_params(directory, step, abstract_params(config, mesh, layout))
  return step, Pretrained(config, params, meta["hf_config"],
                          checkpointing.decode_files(meta["tokenizer_files"]), layout,
                          meta.get("tasks", []))
