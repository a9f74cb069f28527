"""Building blocks with logical axis names on every parameter, shared by the model families.

Each block takes the model's config (`EncoderConfig` or `BartConfig`: both have the dtypes,
`initializer_range`, `layer_norm_eps`, `hidden_act` and dropout fields used here) and its
parameter names, so that each family keeps the names its Hugging Face map expects.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from muppet_jax.models import attention

BATCH_LENGTH_EMBED = ("activation_batch", "activation_length", "activation_embed")
HEAD_ACTIVATIONS = ("activation_batch", "activation_length", "activation_heads", "activation_kv")

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # Hugging Face's "gelu" is the erf form.
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def normal(stddev: float, *names: str | None) -> nn.initializers.Initializer:
  return nn.with_logical_partitioning(nn.initializers.normal(stddev), names)


def zeros(*names: str | None) -> nn.initializers.Initializer:
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def ones(*names: str | None) -> nn.initializers.Initializer:
  return nn.with_logical_partitioning(nn.initializers.ones_init(), names)


class DenseGeneral(nn.Module):
  """x @ kernel + bias over the last `n_in` axes of x, with outputs of shape `features`.

  Unlike flax's DenseGeneral, the kernel is created at its true (e.g. [embed, heads, kv]) shape,
  so its logical axis names apply while it is created (flax's creates it flat, then reshapes).
  """

  features: tuple[int, ...]
  kernel_axes: tuple[str, ...]  # Logical names of the input axes, then of the features.
  n_in: int = 1
  stddev: float = 0.02
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_shape = x.shape[-self.n_in:]
    kernel = self.param("kernel", normal(self.stddev, *self.kernel_axes),
                        in_shape + self.features, self.param_dtype)
    bias = self.param("bias", zeros(*self.kernel_axes[self.n_in:]), self.features,
                      self.param_dtype)
    contract = (tuple(range(x.ndim - self.n_in, x.ndim)), tuple(range(self.n_in)))
    y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype), (contract, ((), ())))
    return y + bias.astype(self.dtype)


def dense(config: Any, features: int | tuple[int, ...], kernel_axes: tuple[str, ...], name: str,
          n_in: int = 1) -> DenseGeneral:
  """A `DenseGeneral` in the model's dtypes and initialization."""
  return DenseGeneral(
      features=(features,) if isinstance(features, int) else features, kernel_axes=kernel_axes,
      n_in=n_in, stddev=config.initializer_range, dtype=config.compute_dtype,
      param_dtype=config.weights_dtype, name=name)


def layer_norm(config: Any, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=config.compute_dtype,
                      param_dtype=config.weights_dtype, name=name,
                      scale_init=ones("embed"), bias_init=zeros("embed"))


class Attention(nn.Module):
  """Multi-head attention with biases (`query`, `key`, `value`, `output`); queries from x, keys
  and values from x, from `keys_values(source)` or from a decoding cache."""

  config: Any
  num_heads: int

  def setup(self):
    cfg = self.config
    heads = (self.num_heads, cfg.hidden_size // self.num_heads)
    self.query = dense(cfg, heads, ("embed", "heads", "kv"), "query")
    self.key = dense(cfg, heads, ("embed", "heads", "kv"), "key")
    self.value = dense(cfg, heads, ("embed", "heads", "kv"), "value")
    self.output = dense(cfg, cfg.hidden_size, ("heads", "kv", "embed"), "output", n_in=2)

  def keys_values(self, source: jax.Array) -> dict[str, jax.Array]:
    return {"key": nn.with_logical_constraint(self.key(source), HEAD_ACTIVATIONS),
            "value": nn.with_logical_constraint(self.value(source), HEAD_ACTIVATIONS)}

  def __call__(self, x: jax.Array, kv: dict[str, jax.Array] | None, mask: attention.Mask,
               deterministic: bool) -> jax.Array:
    """`kv` None: self-attention over x."""
    cfg = self.config
    q = nn.with_logical_constraint(self.query(x), HEAD_ACTIVATIONS)
    kv = self.keys_values(x) if kv is None else kv
    dropout_rng = None
    if cfg.attention_dropout > 0 and not deterministic:
      dropout_rng = self.make_rng("dropout")
    out = attention.attend(q, kv["key"], kv["value"], mask, impl=cfg.attention_impl,
                           dropout_rate=cfg.attention_dropout, dropout_rng=dropout_rng,
                           deterministic=deterministic)
    return self.output(nn.with_logical_constraint(out, HEAD_ACTIVATIONS))


class FeedForward(nn.Module):
  """dense (`names[0]`) -> activation -> dropout -> dense (`names[1]`)."""

  config: Any
  size: int
  names: tuple[str, str]
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    cfg = self.config
    h = ACTIVATIONS[cfg.hidden_act](dense(cfg, self.size, ("embed", "mlp"), self.names[0])(x))
    h = nn.with_logical_constraint(h, ("activation_batch", "activation_length", "activation_mlp"))
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return dense(cfg, cfg.hidden_size, ("mlp", "embed"), self.names[1])(h)


_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat(layer: type[nn.Module], policy: str, deterministic_arg: int) -> type[nn.Module]:
  """`layer` recomputed in the backward pass as `policy` (`config.REMAT_POLICIES`) says;
  its `deterministic` flag, argument `deterministic_arg` of `__call__` (self is 0), is static.
  Parameter names and values are unchanged."""
  if policy == "none":
    return layer
  return nn.remat(layer, policy=_REMAT_POLICIES[policy], static_argnums=(deterministic_arg,))


def init_variables(model: nn.Module, rng: jax.Array) -> dict:
  """The boxed (logically annotated) variables of a model with an argument-free `initialize`
  method, which creates every parameter from dummy inputs (shapes don't depend on them)."""
  # The attention implementations have no parameters; the dummy inputs are shorter than the
  # splash kernel's tiles.
  model = model.clone(config=model.config.replace(attention_impl="xla"))
  return model.init({"params": rng}, method="initialize")


class _ScanStep(nn.Module):
  """One layer as a scan step: (carry, broadcast inputs) -> (carry, nothing)."""

  layer: type[nn.Module]
  config: Any
  deterministic: bool

  @nn.compact
  def __call__(self, x: jax.Array, *inputs: Any) -> tuple[jax.Array, None]:
    out = self.layer(self.config, name="layer")(x, *inputs, self.deterministic)
    return (out[0] if isinstance(out, tuple) else out), None


class ScannedLayers(nn.Module):
  """`length` layers of class `layer` as one `nn.scan`: traced and compiled once, parameters
  stacked along a leading `layers` axis (`scan_layout` converts between the layouts)."""

  layer: type[nn.Module]
  config: Any
  length: int

  @nn.compact
  def __call__(self, x: jax.Array, *inputs: Any, deterministic: bool) -> jax.Array:
    scan = nn.scan(_ScanStep, variable_axes={"params": 0},
                   split_rngs={"params": True, "dropout": True}, in_axes=nn.broadcast,
                   length=self.length, metadata_params={nn.PARTITION_NAME: "layers"})
    x, _ = scan(self.layer, self.config, deterministic, name="stack")(x, *inputs)
    return x
