"""The RoBERTa/BERT encoder and its masked-LM head, in Flax linen.

Parameter names follow the module tree (`encoder/layers_3/attention/query/kernel`); the
Hugging Face name map lives in `muppet_jax.hf.encoder_weights`. Every parameter is created with
logical axis names and every main activation is constrained by them (see
`muppet_jax.partitioning.LOGICAL_AXIS_RULES`).
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from muppet_jax.models import attention, layers
from muppet_jax.models.config import EncoderConfig


@flax.struct.dataclass
class MaskedLMOutput:
  hidden_states: jax.Array  # [batch, length, hidden], the encoder's last layer.
  logits: jax.Array  # [batch, length, vocab]


class Embeddings(nn.Module):
  """Word + position + token-type embeddings, then LayerNorm and dropout."""

  config: EncoderConfig

  def setup(self):
    cfg = self.config

    def embed(rows: int, row_axis: str, name: str) -> nn.Embed:
      return nn.Embed(rows, cfg.hidden_size, dtype=cfg.compute_dtype,
                      param_dtype=cfg.weights_dtype, name=name,
                      embedding_init=layers.normal(cfg.initializer_range, row_axis, "embed"))

    self.word_embeddings = embed(cfg.vocab_size, "vocab", "word_embeddings")
    self.position_embeddings = embed(cfg.max_position_embeddings, "positions",
                                     "position_embeddings")
    self.token_type_embeddings = embed(cfg.type_vocab_size, "token_types",
                                       "token_type_embeddings")
    self.layer_norm = layers.layer_norm(cfg, "layer_norm")
    self.dropout = nn.Dropout(cfg.hidden_dropout)

  def __call__(self, input_ids: jax.Array, position_ids: jax.Array, token_type_ids: jax.Array,
               deterministic: bool, noise: jax.Array | None = None) -> jax.Array:
    words = self.word_embeddings(input_ids)
    if noise is not None:  # R3F perturbs the token embeddings.
      words = words + noise.astype(words.dtype)
    x = (words + self.token_type_embeddings(token_type_ids)
         + self.position_embeddings(position_ids))
    x = self.dropout(self.layer_norm(x), deterministic=deterministic)
    return nn.with_logical_constraint(x, layers.BATCH_LENGTH_EMBED)


class EncoderLayer(nn.Module):
  """A post-LayerNorm transformer layer, as in BERT and RoBERTa."""

  config: EncoderConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: attention.Mask, deterministic: bool) -> jax.Array:
    cfg = self.config
    dropout = nn.Dropout(cfg.hidden_dropout)
    a = layers.Attention(cfg, cfg.num_heads, name="attention")(x, None, mask, deterministic)
    x = layers.layer_norm(cfg, "attention_norm")(x + dropout(a, deterministic=deterministic))
    h = layers.FeedForward(cfg, cfg.intermediate_size, ("intermediate", "output"),
                           name="mlp")(x, deterministic)
    x = layers.layer_norm(cfg, "mlp_norm")(x + dropout(h, deterministic=deterministic))
    return nn.with_logical_constraint(x, layers.BATCH_LENGTH_EMBED)


class Encoder(nn.Module):
  """RoBERTa/BERT encoder over padded or packed rows.

  Inputs are [batch, length] int arrays. `attention_mask` (1 = token, 0 = padding) and/or
  `segment_ids` (1, 2, ... per packed example, 0 = padding) say what attends to what; with neither,
  every token is real. Positions restart at each segment (RoBERTa's start at pad_token_id + 1,
  padding gets pad_token_id) unless `position_ids` are given. `embedding_noise` [B, L, D] is
  added to the token embeddings (R3F).
  """

  config: EncoderConfig

  def setup(self):
    self.embeddings = Embeddings(self.config)
    cfg = self.config
    layer = layers.remat(EncoderLayer, cfg.remat, deterministic_arg=3)
    self.layers = (layers.ScannedLayers(layer, cfg, cfg.num_layers) if cfg.scan_layers
                   else [layer(cfg) for _ in range(cfg.num_layers)])

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
               segment_ids: jax.Array | None = None, token_type_ids: jax.Array | None = None,
               position_ids: jax.Array | None = None, deterministic: bool = True,
               embedding_noise: jax.Array | None = None) -> jax.Array:
    cfg = self.config
    if segment_ids is None:
      segment_ids = (jnp.ones_like(input_ids) if attention_mask is None
                     else attention_mask.astype(jnp.int32))
    elif attention_mask is not None:
      segment_ids = jnp.where(attention_mask > 0, segment_ids, 0)
    if position_ids is None:
      position_ids = attention.positions_in_segment(segment_ids) + cfg.position_offset
      if cfg.position_offset:  # RoBERTa gives padding the padding position.
        position_ids = jnp.where(segment_ids > 0, position_ids, cfg.pad_token_id)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)

    x = self.embeddings(input_ids, position_ids, token_type_ids, deterministic, embedding_noise)
    mask = attention.self_mask(segment_ids)
    if cfg.scan_layers:
      return self.layers(x, mask, deterministic=deterministic)
    for layer in self.layers:
      x = layer(x, mask, deterministic)
    return x


class MaskedLMHead(nn.Module):
  """Dense + activation + LayerNorm, then logits tied to the word embeddings, plus a bias."""

  config: EncoderConfig

  @nn.compact
  def __call__(self, hidden: jax.Array, word_embeddings: jax.Array) -> jax.Array:
    cfg = self.config
    h = layers.dense(cfg, cfg.hidden_size, ("embed", "mlp"), "dense")(hidden)
    h = layers.layer_norm(cfg, "layer_norm")(layers.ACTIVATIONS[cfg.hidden_act](h))
    bias = self.param("bias", layers.zeros("vocab"), (cfg.vocab_size,), cfg.weights_dtype)
    logits = jnp.einsum("bld,vd->blv", h, word_embeddings.astype(h.dtype)) + bias.astype(h.dtype)
    return nn.with_logical_constraint(
        logits, ("activation_batch", "activation_length", "activation_vocab"))


class EncoderForMaskedLM(nn.Module):
  """The encoder with its masked-LM head: everything a published RoBERTa/BERT checkpoint holds."""

  config: EncoderConfig

  def setup(self):
    self.encoder = Encoder(self.config)
    self.mlm_head = MaskedLMHead(self.config)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
               segment_ids: jax.Array | None = None, token_type_ids: jax.Array | None = None,
               position_ids: jax.Array | None = None,
               deterministic: bool = True) -> MaskedLMOutput:
    hidden = self.encoder(input_ids, attention_mask, segment_ids, token_type_ids, position_ids,
                          deterministic)
    logits = self.mlm_head(hidden, self.encoder.embeddings.word_embeddings.embedding)
    return MaskedLMOutput(hidden_states=hidden, logits=logits)

  def initialize(self) -> MaskedLMOutput:
    """Creates every parameter (`layers.init_variables`)."""
    return self(jnp.zeros((1, 8), jnp.int32))
