"""Hugging Face checkpoints: files (`checkpoint_files`) and per-family name maps."""

from __future__ import annotations

import types

from muppet_jax.hf import bart_weights, encoder_weights
from muppet_jax.models.config import BartConfig, ModelConfig


def weights_for(config: ModelConfig) -> types.ModuleType:
  """The name-map module of `config`'s family: `bart_weights` or `encoder_weights`.

  Both offer import_params, export_tensors, hf_architecture, task_architectures and
  export_task_tensors with the same signatures.
  """
  return bart_weights if isinstance(config, BartConfig) else encoder_weights
