"""Pretrained encoders onto the mesh: from a Hugging Face checkpoint or a muppet_jax checkpoint."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh

from muppet_jax import checkpointing, partitioning
from muppet_jax.hf import checkpoint_files, encoder_weights
from muppet_jax.models.config import EncoderConfig
from muppet_jax.models import multitask
from muppet_jax.models.encoder import EncoderForMaskedLM, init_variables
from muppet_jax.models.heads import HeadLayout


@dataclasses.dataclass
class Pretrained:
  """An encoder's config and (sharded) parameters, with what export needs to write it back."""

  config: EncoderConfig
  params: Any  # EncoderForMaskedLM's params; a trained checkpoint's also have `heads`.
  hf_config: dict[str, Any]  # The source config.json, kept so export preserves its other fields.
  tokenizer_files: dict[str, bytes]
  layout: HeadLayout | None = None  # The task heads of a pre-finetuned checkpoint.
  tasks: list[dict[str, Any]] = dataclasses.field(default_factory=list)

  def metadata(self) -> dict[str, Any]:
    return {"encoder_config": self.config.to_dict(), "hf_config": self.hf_config,
            "tokenizer_files": checkpointing.encode_files(self.tokenizer_files)}


def abstract_params(config: EncoderConfig, mesh: Mesh, layout: HeadLayout | None = None) -> Any:
  """The model's parameter tree as ShapeDtypeStructs carrying their NamedShardings."""
  if layout is None:
    init = lambda r: init_variables(EncoderForMaskedLM(config), r)  # noqa: E731
  else:
    init = lambda r: multitask.init_variables(multitask.MultiTaskEncoder(config, layout), r)  # noqa: E731
  boxed = jax.eval_shape(init, jax.random.key(0))["params"]
  abstract = nn.meta.unbox(boxed)
  shardings = partitioning.logical_to_mesh_sharding(nn.get_partition_spec(boxed), abstract, mesh)
  return checkpointing.abstract_with_shardings(abstract, shardings)


def default_mesh() -> Mesh:
  """All devices on the fsdp axis: parameters sharded, nothing materialized whole."""
  return partitioning.make_mesh({"fsdp": -1})


def from_hf(path_or_name: str, mesh: Mesh | None = None, **runtime: Any) -> Pretrained:
  """Reads a Hugging Face RoBERTa/BERT masked-LM checkpoint; `runtime` sets dtypes, dropout, ..."""
  mesh = mesh or default_mesh()
  ckpt = checkpoint_files.read_checkpoint(path_or_name)
  config = EncoderConfig.from_hf_config(ckpt.config, **runtime)
  target = abstract_params(config, mesh)
  params = encoder_weights.import_params(ckpt.tensors, config, target)
  params = jax.tree.map(lambda x, t: jax.device_put(x, t.sharding), params, target)
  return Pretrained(config, params, ckpt.config, ckpt.tokenizer_files)


def from_checkpoint(directory: str | os.PathLike, mesh: Mesh | None = None,
                    step: int | None = None, **runtime: Any) -> tuple[int, Pretrained]:
  """Restores (step, model) from a muppet_jax checkpoint; each device reads only its shards."""
  mesh = mesh or default_mesh()
  step, meta = checkpointing.read_model_metadata(directory, step)
  config = EncoderConfig.from_dict(meta["encoder_config"]).replace(**runtime)
  layout = None
  if "heads" in meta:
    heads = meta["heads"]
    layout = HeadLayout(tuple(heads["names"]), tuple(heads["kinds"]), heads["num_classes"])
  params = checkpointing.restore_params(directory, step, abstract_params(config, mesh, layout))
  return step, Pretrained(config, params, meta["hf_config"],
                          checkpointing.decode_files(meta["tokenizer_files"]), layout,
                          meta.get("tasks", []))
