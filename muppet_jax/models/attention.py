"""Attention over packed rows: segment-id masks, per-segment positions, two implementations.

A packed row holds several examples back to back; `segment_ids` numbers them 1, 2, ... and marks
padding with 0. Attention is block-diagonal per segment, so a packed row computes exactly what
the examples would compute one per row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from muppet_jax.errors import UserError


def segment_mask(segment_ids: jax.Array) -> jax.Array:
  """[batch, 1, q, k] boolean mask: a token attends to the non-padding tokens of its segment."""
  same = segment_ids[:, :, None] == segment_ids[:, None, :]
  return (same & (segment_ids[:, None, :] > 0))[:, None, :, :]


def positions_in_segment(segment_ids: jax.Array) -> jax.Array:
  """Each token's index within its (contiguous) segment; restarts at 0 where the id changes."""
  length = segment_ids.shape[-1]
  index = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), segment_ids.shape)
  starts = jnp.concatenate(
      [jnp.ones_like(segment_ids[:, :1], dtype=bool),
       segment_ids[:, 1:] != segment_ids[:, :-1]], axis=-1)
  start_index = jax.lax.cummax(jnp.where(starts, index, 0), axis=segment_ids.ndim - 1)
  return index - start_index


def attend(query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array, *,
           impl: str, dropout_rate: float = 0.0, dropout_rng: jax.Array | None = None,
           deterministic: bool = True) -> jax.Array:
  """Scaled dot-product attention; query/key/value are [batch, length, heads, head_dim]."""
  if impl == "dot_product":
    if dropout_rate > 0 and not deterministic:
      raise UserError("attention_impl='dot_product' has no attention-probability dropout; set "
                      "attention_dropout=0.0 or use attention_impl='xla'")
    # cuDNN's fused kernel takes only half-precision inputs; elsewhere the call runs on XLA.
    use_cudnn = jax.default_backend() == "gpu" and query.dtype in (jnp.bfloat16, jnp.float16)
    return jax.nn.dot_product_attention(query, key, value, mask=mask,
                                        implementation="cudnn" if use_cudnn else None)
  if impl != "xla":
    raise UserError(f"unknown attention_impl {impl!r}; choose 'xla' or 'dot_product'")

  depth = query.shape[-1]
  logits = jnp.einsum("bqnh,bknh->bnqk", query, key, preferred_element_type=jnp.float32)
  logits = logits / jnp.sqrt(depth).astype(jnp.float32)
  # A finite fill keeps fully masked (padding) rows free of NaNs.
  logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  if dropout_rate > 0 and not deterministic:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
  return jnp.einsum("bnqk,bknh->bqnh", probs.astype(value.dtype), value)
