"""Attention over packed rows: segment-id masks, per-segment positions, three implementations.

A packed row holds several examples back to back; `segment_ids` numbers them 1, 2, ... and marks
padding with 0. Attention is block-diagonal per segment, so a packed row computes exactly what
the examples would compute one per row.

- `xla`: written out in jnp, the dense mask applied to the logits (any backend; attention
  dropout);
- `dot_product`: `jax.nn.dot_product_attention` with the dense mask (cuDNN flash attention on
  NVIDIA GPUs);
- `splash`: the Pallas splash attention kernel (TPU), which reads the segment ids rather than a
  dense [B, 1, Q, K] mask and skips the blocks above a causal diagonal. Off TPU it runs in
  Pallas' interpret mode: correct, slow, for tests.
"""

from __future__ import annotations

import math

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from muppet_jax.errors import UserError

IMPLS = ("xla", "dot_product", "splash")


def _same_segment(q_segment_ids: jax.Array, kv_segment_ids: jax.Array) -> jax.Array:
  """[batch, 1, q, k]: a query attends to the non-padding keys of its own segment."""
  same = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
  return (same & (kv_segment_ids[:, None, :] > 0))[:, None]


def segment_mask(segment_ids: jax.Array) -> jax.Array:
  """[batch, 1, q, k] boolean mask: a token attends to the non-padding tokens of its segment."""
  return _same_segment(segment_ids, segment_ids)


@flax.struct.dataclass
class Mask:
  """Which keys each query attends to: the dense mask, and the segment ids it was made of (with
  causality) for the splash kernel; None where there are none (a decoding step's mask)."""

  dense: jax.Array  # [batch, 1, q, k] bool
  q_segments: jax.Array | None = None  # [batch, q]: 0 is padding.
  kv_segments: jax.Array | None = None  # [batch, k]
  causal: bool = flax.struct.field(pytree_node=False, default=False)


def self_mask(segment_ids: jax.Array, causal: bool = False) -> Mask:
  """Self-attention within each segment (and to earlier tokens only, if `causal`)."""
  dense = segment_mask(segment_ids)
  if causal:
    length = segment_ids.shape[-1]
    dense = dense & (jnp.arange(length)[:, None] >= jnp.arange(length)[None, :])[None, None]
  return Mask(dense, segment_ids, segment_ids, causal)


def cross_mask(q_segment_ids: jax.Array, kv_segment_ids: jax.Array) -> Mask:
  """Queries attend to the keys of their own segment (a decoder's to its encoder's)."""
  return Mask(_same_segment(q_segment_ids, kv_segment_ids), q_segment_ids, kv_segment_ids)


def positions_in_segment(segment_ids: jax.Array) -> jax.Array:
  """Each token's index within its (contiguous) segment; restarts at 0 where the id changes."""
  length = segment_ids.shape[-1]
  index = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), segment_ids.shape)
  starts = jnp.concatenate(
      [jnp.ones_like(segment_ids[:, :1], dtype=bool),
       segment_ids[:, 1:] != segment_ids[:, :-1]], axis=-1)
  start_index = jax.lax.cummax(jnp.where(starts, index, 0), axis=segment_ids.ndim - 1)
  return index - start_index


def attend(query: jax.Array, key: jax.Array, value: jax.Array, mask: Mask, *,
           impl: str, dropout_rate: float = 0.0, dropout_rng: jax.Array | None = None,
           deterministic: bool = True) -> jax.Array:
  """Scaled dot-product attention; query/key/value are [batch, length, heads, head_dim]."""
  if impl not in IMPLS:
    raise UserError(f"unknown attention_impl {impl!r}; choose one of {', '.join(IMPLS)}")
  if impl != "xla" and dropout_rate > 0 and not deterministic:
    raise UserError(f"attention_impl={impl!r} has no attention-probability dropout; set "
                    "attention_dropout=0.0 or use attention_impl='xla'")
  if impl == "splash" and mask.q_segments is not None:
    return _splash(query, key, value, mask)
  if impl == "dot_product":
    # cuDNN's fused kernel takes only half-precision inputs; elsewhere the call runs on XLA.
    use_cudnn = jax.default_backend() == "gpu" and query.dtype in (jnp.bfloat16, jnp.float16)
    return jax.nn.dot_product_attention(query, key, value, mask=mask.dense,
                                        implementation="cudnn" if use_cudnn else None)
  # `xla`, and splash's decoding steps (one query: nothing for the kernel to tile).
  mask = mask.dense
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


def _block(length: int) -> int:
  """The kernel's tile along a sequence (a multiple of 128): 512 tokens or fewer, dividing
  `length`."""
  return next(b for b in (512, 256, 128) if length % b == 0)


def _splash(query: jax.Array, key: jax.Array, value: jax.Array, mask: Mask) -> jax.Array:
  """The splash kernel per row, inside a `shard_map` over the mesh in use (a Pallas kernel is
  not partitioned by XLA): rows split as the batch is, heads as the heads are."""
  # A TPU kernel: imported when chosen, not by every model.
  from jax.experimental.pallas.ops.tpu import splash_attention as splash

  q_len, kv_len = query.shape[1], key.shape[1]
  if q_len % 128 or kv_len % 128:
    raise UserError(f"attention_impl='splash' tiles sequences by 128 tokens; these are {q_len} "
                    f"and {kv_len} long: set data.max_length (and data.target_length) to "
                    "multiples of 128, or use attention_impl='xla'")
  # Padding (id 0) attends to padding, never to a real token; a padding query with no padding key
  # (a decoder's targets over an unpadded row) gets uniform weights, finite: the kernel masks
  # with a finite value and skips only the blocks that the static (full or causal) mask rules out.
  bq, bkv = _block(q_len), _block(kv_len)
  blocks = splash.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv, block_q_dkv=bq,
                             block_kv_dkv=bkv, block_kv_dkv_compute=bkv, block_q_dq=bq,
                             block_kv_dq=bkv)
  shape = (q_len, kv_len)

  def local(q, k, v, q_ids, kv_ids):
    heads = q.shape[2]
    base = splash.CausalMask(shape) if mask.causal else splash.FullMask(shape)
    kernel = splash.make_splash_mha(splash.MultiHeadMask([base] * heads), head_shards=1,
                                    q_seq_shards=1, block_sizes=blocks,
                                    interpret=jax.default_backend() != "tpu")

    def row(q, k, v, q_ids, kv_ids):  # The kernel's layout: [heads, length, head_dim].
      out = kernel(q.swapaxes(0, 1), k.swapaxes(0, 1), v.swapaxes(0, 1),
                   segment_ids=splash.SegmentIds(q_ids, kv_ids))
      return out.swapaxes(0, 1)
    return jax.vmap(row)(q, k, v, q_ids, kv_ids)

  # The kernel doesn't scale the logits.
  query = (query * (1 / math.sqrt(query.shape[-1]))).astype(query.dtype)
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return local(query, key, value, mask.q_segments, mask.kv_segments)
  heads = nn.logical_to_mesh_axes(("activation_batch", None, "activation_heads", None))
  rows = nn.logical_to_mesh_axes(("activation_batch", None))
  return jax.shard_map(local, mesh=mesh, in_specs=(heads, heads, heads, rows, rows),
                       out_specs=heads, check_vma=False)(query, key, value, mask.q_segments,
                                                          mask.kv_segments)
