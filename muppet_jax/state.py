"""The train state, and its abstract form: every array's shape, dtype and `NamedSharding` before
anything is allocated.

`abstract_state` is the one place where shardings come from: the model's parameters are created
under `jax.eval_shape` with their logical axis names still attached, the optimizer state is
created from those annotated parameters (so its per-parameter moments carry the same names), and
the rules table maps every name to the mesh. Initialization, orbax restore and conversion all
start from it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec

from muppet_jax import partitioning
from muppet_jax.hf import encoder_weights
from muppet_jax.models import layers, scan_layout


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any  # None for a state of parameters only.


def abstract_state(model: nn.Module, mesh: Mesh,
                   tx: optax.GradientTransformation | None = None) -> TrainState:
  """`model`'s train state as ShapeDtypeStructs carrying their NamedShardings on `mesh`; without
  `tx`, the parameters only (opt_state None)."""

  def init(rng: jax.Array) -> TrainState:
    params = layers.init_variables(model, rng)["params"]
    return TrainState(jnp.zeros((), jnp.int32), params, None if tx is None else tx.init(params))

  def place(leaf: Any) -> Any:
    names = leaf.names if isinstance(leaf, nn.Partitioned) else ()
    value = nn.meta.unbox(leaf)
    if not isinstance(value, jax.ShapeDtypeStruct):  # An empty placeholder (optax's MaskedNode).
      return value
    sharding = partitioning.logical_to_mesh_sharding(PartitionSpec(*names), value, mesh)
    return jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding)

  boxed = jax.eval_shape(init, jax.random.key(0))
  return jax.tree.map(place, boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def shardings(abstract: Any) -> Any:
  """The NamedShardings of an abstract tree (e.g. of `abstract_state`)."""
  return jax.tree.map(lambda a: a.sharding, abstract)


def init_state(model: nn.Module, abstract: TrainState, rng: jax.Array,
               tx: optax.GradientTransformation | None = None,
               pretrained: Any = None) -> TrainState:
  """A fresh train state, created directly in the shards of `abstract` (no host ever holds a
  whole array): new parameters, except the top-level entries of `pretrained`, taken as given.
  Its `pooler` (a RoBERTa/BERT checkpoint's, which no network has) starts the task heads that
  transformers' task models start from it (`encoder_weights.heads_from_pooler`)."""

  def init(rng: jax.Array, kept: Any) -> TrainState:
    kept = dict(kept)
    pooler = kept.pop(encoder_weights.POOLER, None)
    kept = scan_layout.match(kept, model.config)  # Loop or scanned layers, as the model runs.
    params = {**nn.meta.unbox(layers.init_variables(model, rng))["params"], **kept}
    if pooler is not None and "heads" in params:
      params["heads"] = encoder_weights.heads_from_pooler(params["heads"], pooler, model.config)
    return TrainState(jnp.zeros((), jnp.int32), params, None if tx is None else tx.init(params))

  # Outside `partitioning.use_mesh`: out_shardings place the arrays; the models' activation
  # constraints have nothing to do in an init.
  return jax.jit(init, out_shardings=shardings(abstract))(rng, pretrained or {})
