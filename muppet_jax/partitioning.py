"""Device mesh, the logical-axis rules table, and the shardings they give.

Every parameter and main activation in the models carries logical axis names (`embed`, `heads`,
`activation_batch`, ...). `LOGICAL_AXIS_RULES` is the one place that maps them onto the mesh axes
`data` (pure data parallelism), `fsdp` (data parallelism with parameters and optimizer state
sharded) and `tensor` (Megatron-style model parallelism).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from muppet_jax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")

# Parameter axes are sharded over fsdp along `embed` and over tensor along the model-parallel
# dimension; activations are sharded over data and fsdp along the batch and over tensor along
# heads/mlp/vocab. Parameter and activation names differ because `embed` of a weight is sharded by
# fsdp while the `embed` of an activation is not (its batch already is).
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    # Parameters.
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("positions", None),
    ("token_types", None),
    ("task_heads", None),  # Stacked per-task heads: few and small, replicated.
    ("classes", None),
    ("layers", None),  # The stacked axis of scanned layers.
    # Activations.
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("activation_segments", None),
)


def mesh_shape(axis_sizes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolves sizes of (data, fsdp, tensor); one of them may be -1, meaning "the rest"."""
  unknown = set(axis_sizes) - set(MESH_AXES)
  if unknown:
    raise UserError(f"unknown mesh axes {sorted(unknown)}; the mesh axes are {MESH_AXES}")
  sizes = [int(axis_sizes.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise UserError(f"mesh {dict(zip(MESH_AXES, sizes))}: at most one axis may be -1 (the rest)")
  if any(s == 0 or s < -1 for s in sizes):
    raise UserError(f"mesh {dict(zip(MESH_AXES, sizes))}: sizes must be positive or -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise UserError(
          f"mesh {dict(zip(MESH_AXES, sizes))}: the fixed axes ({known} devices) do not divide "
          f"the {num_devices} available devices; choose sizes whose product divides {num_devices}")
    sizes[sizes.index(-1)] = num_devices // known
  elif known != num_devices:
    raise UserError(
        f"mesh {dict(zip(MESH_AXES, sizes))} needs {known} devices but {num_devices} are "
        "available; make the product of the sizes equal the device count or set one axis to -1")
  return tuple(sizes)


def make_mesh(axis_sizes: Mapping[str, int],
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: all), laid out for the interconnect."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(axis_sizes, len(devices))
  try:
    device_array = mesh_utils.create_device_mesh(shape, devices)
  except (ValueError, NotImplementedError, AssertionError):
    # Topology-aware placement is not available for every device kind (e.g. fake CPU devices).
    device_array = np.asarray(devices).reshape(shape)
  return Mesh(device_array, MESH_AXES)


def logical_to_mesh_sharding(logical_specs: Any, abstract: Any, mesh: Mesh,
                             rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES) -> Any:
  """NamedShardings for a tree of logical PartitionSpecs.

  A dimension whose size the assigned mesh axes do not divide (RoBERTa's vocabulary of 50265 over
  tensor=2, say) is replicated instead, so every model fits every mesh.
  """

  def one(spec: PartitionSpec, leaf: Any) -> NamedSharding:
    mesh_spec = nn.logical_to_mesh_axes(spec, rules)
    axes = []
    for dim, assigned in zip(leaf.shape, mesh_spec):
      names = (assigned,) if isinstance(assigned, str) else (assigned or ())
      ways = math.prod(mesh.shape[n] for n in names)
      axes.append(assigned if dim % ways == 0 else None)
    return NamedSharding(mesh, PartitionSpec(*axes))

  return jax.tree.map(one, logical_specs, abstract,
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches: rows split over the data-parallel axes (`data` and `fsdp`)."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


@contextlib.contextmanager
def use_mesh(mesh: Mesh) -> Iterator[None]:
  """Makes `mesh` and the rules table current, so that the models' logical constraints apply.

  Trace (jit) model code inside this context; outside it the constraints are no-ops.
  """
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_AXIS_RULES):
    yield
