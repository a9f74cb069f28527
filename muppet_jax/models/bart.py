"""BART (encoder-decoder) in Flax linen, over padded or packed rows, with a decoding cache.

The structure is Hugging Face's `BartForConditionalGeneration`: token embeddings shared by encoder,
decoder and the LM head (plus `final_logits_bias`), learned positions at rows 2.. of each side's
table, `layernorm_embedding`, post-LayerNorm layers. The name map is in
`muppet_jax.hf.bart_weights`. Packed rows work as in the encoder: `segment_ids` number the
examples of a row (0 = padding); positions restart per segment, attention is block-diagonal, the
decoder's self-attention is causal within a segment and its cross-attention sees only its own
segment's encoder tokens.

Generation keeps a cache per decoder layer: the self-attention keys/values written so far
(static length) and the cross-attention keys/values, computed once from the encoder output.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from muppet_jax.models import attention, layers
from muppet_jax.models.config import BartConfig
from muppet_jax.models.heads import LMHeadInputs

Cache = dict[str, Any]  # Per layer: {"self": {"key", "value"}, "cross": {"key", "value"}}.


@flax.struct.dataclass
class Seq2SeqOutput:
  encoder_hidden_states: jax.Array  # [B, L, D]
  decoder_hidden_states: jax.Array  # [B, T, D]
  logits: jax.Array  # [B, T, vocab]


def _feed_forward(config: BartConfig, size: int) -> layers.FeedForward:
  """BART's feed-forward block `mlp`: `fc1`, `fc2`, with activation dropout."""
  return layers.FeedForward(config, size, ("fc1", "fc2"), config.activation_dropout, name="mlp")


def shift_right(ids: jax.Array, segment_ids: jax.Array, start_id: int, pad_id: int) -> jax.Array:
  """Decoder inputs of packed targets: each segment's tokens moved one right, `start_id` first."""
  previous = jnp.pad(ids[:, :-1], ((0, 0), (1, 0)), constant_values=start_id)
  same = jnp.pad(segment_ids[:, 1:] == segment_ids[:, :-1], ((0, 0), (1, 0)))
  shifted = jnp.where(same, previous, start_id)
  return jnp.where(segment_ids > 0, shifted, pad_id)


class EncoderLayer(nn.Module):
  config: BartConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: attention.Mask, deterministic: bool) -> jax.Array:
    cfg = self.config
    dropout = nn.Dropout(cfg.hidden_dropout)
    attn = layers.Attention(cfg, cfg.encoder_heads, name="self_attention")
    h = attn(x, attn.keys_values(x), mask, deterministic)
    x = layers.layer_norm(cfg, "self_attention_norm")(x + dropout(h, deterministic=deterministic))
    h = _feed_forward(cfg, cfg.encoder_ffn_size)(x, deterministic)
    x = layers.layer_norm(cfg, "mlp_norm")(x + dropout(h, deterministic=deterministic))
    return nn.with_logical_constraint(x, layers.BATCH_LENGTH_EMBED)


class DecoderLayer(nn.Module):
  config: BartConfig

  def setup(self):
    cfg = self.config
    self.self_attention = layers.Attention(cfg, cfg.decoder_heads)
    self.self_attention_norm = layers.layer_norm(cfg, "self_attention_norm")
    self.cross_attention = layers.Attention(cfg, cfg.decoder_heads)
    self.cross_attention_norm = layers.layer_norm(cfg, "cross_attention_norm")
    self.mlp = _feed_forward(cfg, cfg.decoder_ffn_size)
    self.mlp_norm = layers.layer_norm(cfg, "mlp_norm")
    self.dropout = nn.Dropout(cfg.hidden_dropout)

  def __call__(self, x: jax.Array, encoder_hidden: jax.Array | None, self_mask: attention.Mask,
               cross_mask: attention.Mask, deterministic: bool, cache: Cache | None = None,
               index: jax.Array | None = None) -> tuple[jax.Array, Cache | None]:
    """Full sequences (cache None), or one step at `index` reading and updating `cache`."""
    if cache is None:
      self_kv = self.self_attention.keys_values(x)
      cross_kv = self.cross_attention.keys_values(encoder_hidden)
    else:
      new = self.self_attention.keys_values(x)
      self_kv = {k: jax.lax.dynamic_update_slice_in_dim(cache["self"][k], new[k], index, axis=1)
                 for k in ("key", "value")}
      cross_kv = cache["cross"]
      cache = {"self": self_kv, "cross": cross_kv}
    drop = lambda h: self.dropout(h, deterministic=deterministic)  # noqa: E731
    x = self.self_attention_norm(x + drop(self.self_attention(x, self_kv, self_mask,
                                                              deterministic)))
    x = self.cross_attention_norm(x + drop(self.cross_attention(x, cross_kv, cross_mask,
                                                                deterministic)))
    x = self.mlp_norm(x + drop(self.mlp(x, deterministic)))
    return nn.with_logical_constraint(x, layers.BATCH_LENGTH_EMBED), cache

  def cross_cache(self, encoder_hidden: jax.Array) -> dict[str, jax.Array]:
    return self.cross_attention.keys_values(encoder_hidden)


class _Embedder(nn.Module):
  """One side's learned positions and `layernorm_embedding`, over given token embeddings."""

  config: BartConfig

  @nn.compact
  def __call__(self, tokens: jax.Array, positions: jax.Array, deterministic: bool) -> jax.Array:
    cfg = self.config
    table = nn.Embed(cfg.max_position_embeddings + cfg.position_offset, cfg.hidden_size,
                     dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype,
                     embedding_init=layers.normal(cfg.initializer_range, "positions", "embed"),
                     name="positions")
    x = tokens + table(positions + cfg.position_offset)
    x = layers.layer_norm(cfg, "layer_norm")(x)
    x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
    return nn.with_logical_constraint(x, layers.BATCH_LENGTH_EMBED)


class Bart(nn.Module):
  """BART with its LM head: `BartForConditionalGeneration`'s computation and parameters."""

  config: BartConfig

  def setup(self):
    cfg = self.config
    self.shared = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.compute_dtype,
                           param_dtype=cfg.weights_dtype,
                           embedding_init=layers.normal(cfg.initializer_range, "vocab", "embed"))
    self.encoder_embeddings = _Embedder(cfg)
    encoder_layer = layers.remat(EncoderLayer, cfg.remat, deterministic_arg=3)
    self.encoder_layers = (
        layers.ScannedLayers(encoder_layer, cfg, cfg.encoder_layers) if cfg.scan_layers
        else [encoder_layer(cfg) for _ in range(cfg.encoder_layers)])
    self.decoder_embeddings = _Embedder(cfg)
    decoder_layer = layers.remat(DecoderLayer, cfg.remat, deterministic_arg=5)
    self.decoder_layers = (
        layers.ScannedLayers(decoder_layer, cfg, cfg.decoder_layers) if cfg.scan_layers
        else [decoder_layer(cfg) for _ in range(cfg.decoder_layers)])
    # A buffer in Hugging Face (zeros in the published checkpoints), carried for export.
    self.final_logits_bias = self.param("final_logits_bias", layers.zeros(None, "vocab"),
                                        (1, cfg.vocab_size), cfg.weights_dtype)

  def _tokens(self, ids: jax.Array) -> jax.Array:
    return self.shared(ids) * jnp.asarray(self.config.embed_scale, self.config.compute_dtype)

  def encode(self, input_ids: jax.Array, segment_ids: jax.Array, deterministic: bool = True,
             embedding_noise: jax.Array | None = None) -> jax.Array:
    """Encoder states [B, L, D]; `embedding_noise` is added to the token embeddings (R3F)."""
    tokens = self._tokens(input_ids)
    if embedding_noise is not None:
      tokens = tokens + embedding_noise.astype(tokens.dtype)
    positions = attention.positions_in_segment(segment_ids)
    x = self.encoder_embeddings(tokens, positions, deterministic)
    mask = attention.self_mask(segment_ids)
    if self.config.scan_layers:
      return self.encoder_layers(x, mask, deterministic=deterministic)
    for layer in self.encoder_layers:
      x = layer(x, mask, deterministic)
    return x

  def decode(self, decoder_ids: jax.Array, decoder_segment_ids: jax.Array,
             encoder_hidden: jax.Array, encoder_segment_ids: jax.Array,
             deterministic: bool = True) -> jax.Array:
    """Decoder states [B, T, D] for whole (teacher-forced) decoder inputs."""
    positions = attention.positions_in_segment(decoder_segment_ids)
    x = self.decoder_embeddings(self._tokens(decoder_ids), positions, deterministic)
    self_mask = attention.self_mask(decoder_segment_ids, causal=True)
    cross_mask = attention.cross_mask(decoder_segment_ids, encoder_segment_ids)
    if self.config.scan_layers:
      return self.decoder_layers(x, encoder_hidden, self_mask, cross_mask,
                                 deterministic=deterministic)
    for layer in self.decoder_layers:
      x, _ = layer(x, encoder_hidden, self_mask, cross_mask, deterministic)
    return x

  def lm_head(self, decoder_hidden: jax.Array) -> LMHeadInputs:
    return LMHeadInputs(decoder_hidden, self.shared.embedding, self.final_logits_bias[0])

  def lm_logits(self, decoder_hidden: jax.Array) -> jax.Array:
    return nn.with_logical_constraint(self.lm_head(decoder_hidden).logits(decoder_hidden),
                                      ("activation_batch", "activation_length",
                                       "activation_vocab"))

  def __call__(self, input_ids: jax.Array, decoder_ids: jax.Array,
               segment_ids: jax.Array | None = None, decoder_segment_ids: jax.Array | None = None,
               deterministic: bool = True) -> Seq2SeqOutput:
    """Teacher-forced forward pass; segment ids default to all tokens real, one segment a row."""
    if segment_ids is None:
      segment_ids = jnp.ones_like(input_ids)
    if decoder_segment_ids is None:
      decoder_segment_ids = jnp.ones_like(decoder_ids)
    encoded = self.encode(input_ids, segment_ids, deterministic)
    decoded = self.decode(decoder_ids, decoder_segment_ids, encoded, segment_ids, deterministic)
    return Seq2SeqOutput(encoded, decoded, self.lm_logits(decoded))

  # Incremental decoding (generation).

  def init_cache(self, encoder_hidden: jax.Array, max_length: int) -> list[Cache]:
    """Empty self-attention caches of `max_length` steps, and the cross-attention keys/values."""
    cfg = self.config
    b = encoder_hidden.shape[0]
    shape = (b, max_length, cfg.decoder_heads, cfg.hidden_size // cfg.decoder_heads)
    empty = jnp.zeros(shape, cfg.compute_dtype)
    return [{"self": {"key": empty, "value": empty}, "cross": layer.cross_cache(encoder_hidden)}
            for layer in self.decoder_layers]

  def decode_step(self, token: jax.Array, index: jax.Array, cache: list[Cache],
                  encoder_segment_ids: jax.Array) -> tuple[jax.Array, list[Cache]]:
    """Logits [B, vocab] of the next token after `token` [B] at decoder position `index`."""
    max_length = cache[0]["self"]["key"].shape[1]
    positions = jnp.full((token.shape[0], 1), index, jnp.int32)
    x = self.decoder_embeddings(self._tokens(token[:, None]), positions, True)
    self_mask = attention.Mask((jnp.arange(max_length) <= index)[None, None, None, :])
    cross_mask = attention.Mask((encoder_segment_ids > 0)[:, None, None, :])
    new_cache = []
    for layer, layer_cache in zip(self.decoder_layers, cache):
      x, layer_cache = layer(x, None, self_mask, cross_mask, True, layer_cache, index)
      new_cache.append(layer_cache)
    return self.lm_logits(x)[:, 0], new_cache

  def initialize(self) -> Seq2SeqOutput:
    """Creates every parameter (`layers.init_variables`)."""
    ids = jnp.zeros((1, 8), jnp.int32)
    return self(ids, ids)
