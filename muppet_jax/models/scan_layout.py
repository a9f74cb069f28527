"""Parameters of layers in a loop (`layers_0`, `layers_1`, ...: Hugging Face's layout, and every
checkpoint format's) or scanned (`layers/stack/layer`, stacked on a leading axis), converted to
what a model config (`scan_layers`) runs."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from muppet_jax.models.config import BartConfig, ModelConfig


def _groups(config: ModelConfig) -> list[tuple[str, str, int]]:
  """(parent entry, "" for the top, prefix, number of layers) of each stack of layers."""
  if isinstance(config, BartConfig):
    return [("", "encoder_layers", config.encoder_layers),
            ("", "decoder_layers", config.decoder_layers)]
  return [("encoder", "layers", config.num_layers)]


def stack(node: dict, prefix: str, length: int) -> dict:
  """`{prefix}_0 ... {prefix}_{length-1}` -> `{prefix}/stack/layer`, stacked on a new axis 0."""
  node = dict(node)
  layers = [node.pop(f"{prefix}_{i}") for i in range(length)]
  node[prefix] = {"stack": {"layer": jax.tree.map(lambda *x: jnp.stack(x), *layers)}}
  return node


def unstack(node: dict, prefix: str) -> dict:
  """The inverse of `stack`."""
  node = dict(node)
  stacked = node.pop(prefix)["stack"]["layer"]
  for i in range(jax.tree.leaves(stacked)[0].shape[0]):
    node[f"{prefix}_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
  return node


def match(params: Any, config: ModelConfig) -> Any:
  """`params` (either layout; parts without layers pass through) in `config`'s layout."""
  params = dict(params)
  for parent, prefix, length in _groups(config):
    node = dict(params.get(parent, {}) if parent else params)
    if config.scan_layers and f"{prefix}_0" in node:
      node = stack(node, prefix, length)
    elif not config.scan_layers and prefix in node:
      node = unstack(node, prefix)
    else:
      continue
    if parent:
      params[parent] = node
    else:
      params = node
  return params
