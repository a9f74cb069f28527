"""Building blocks with logical axis names on every parameter, shared by the model families."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

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


def layer_norm(epsilon: float, dtype: jnp.dtype, param_dtype: jnp.dtype,
               name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, name=name,
                      scale_init=ones("embed"), bias_init=zeros("embed"))
