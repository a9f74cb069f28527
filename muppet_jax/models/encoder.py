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

BATCH_LENGTH_EMBED = ("activation_batch", "activation_length", "activation_embed")


def _layer_norm(config: EncoderConfig, name: str) -> nn.LayerNorm:
  return layers.layer_norm(config.layer_norm_eps, config.compute_dtype, config.weights_dtype, name)


def _dense(config: EncoderConfig, features: int | tuple[int, ...], kernel_axes: tuple[str, ...],
           name: str, n_in: int = 1) -> layers.DenseGeneral:
  return layers.DenseGeneral(
      features=(features,) if isinstance(features, int) else features, kernel_axes=kernel_axes,
      n_in=n_in, stddev=config.initializer_range, dtype=config.compute_dtype,
      param_dtype=config.weights_dtype, name=name)


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
    self.layer_norm = _layer_norm(cfg, "layer_norm")
    self.dropout = nn.Dropout(cfg.hidden_dropout)

  def __call__(self, input_ids: jax.Array, position_ids: jax.Array, token_type_ids: jax.Array,
               deterministic: bool, noise: jax.Array | None = None) -> jax.Array:
    words = self.word_embeddings(input_ids)
    if noise is not None:  # R3F perturbs the token embeddings.
      words = words + noise.astype(words.dtype)
    x = (words + self.token_type_embeddings(token_type_ids)
         + self.position_embeddings(position_ids))
    x = self.dropout(self.layer_norm(x), deterministic=deterministic)
    return nn.with_logical_constraint(x, BATCH_LENGTH_EMBED)


class SelfAttention(nn.Module):
  config: EncoderConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
    cfg = self.config
    heads = (cfg.num_heads, cfg.head_dim)
    qkv_axes = ("embed", "heads", "kv")
    act_axes = ("activation_batch", "activation_length", "activation_heads", "activation_kv")
    q, k, v = (nn.with_logical_constraint(_dense(cfg, heads, qkv_axes, name)(x), act_axes)
               for name in ("query", "key", "value"))
    dropout_rng = None
    if cfg.attention_dropout > 0 and not deterministic:
      dropout_rng = self.make_rng("dropout")
    out = attention.attend(q, k, v, mask, impl=cfg.attention_impl,
                           dropout_rate=cfg.attention_dropout, dropout_rng=dropout_rng,
                           deterministic=deterministic)
    out = nn.with_logical_constraint(out, act_axes)
    return _dense(cfg, cfg.hidden_size, ("heads", "kv", "embed"), "output", n_in=2)(out)


class MLP(nn.Module):
  config: EncoderConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    h = _dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "intermediate")(x)
    h = layers.ACTIVATIONS[cfg.hidden_act](h)
    h = nn.with_logical_constraint(
        h, ("activation_batch", "activation_length", "activation_mlp"))
    return _dense(cfg, cfg.hidden_size, ("mlp", "embed"), "output")(h)


class EncoderLayer(nn.Module):
  """A post-LayerNorm transformer layer, as in BERT and RoBERTa."""

  config: EncoderConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
    cfg = self.config
    dropout = nn.Dropout(cfg.hidden_dropout)
    a = SelfAttention(cfg, name="attention")(x, mask, deterministic)
    x = _layer_norm(cfg, "attention_norm")(x + dropout(a, deterministic=deterministic))
    h = MLP(cfg, name="mlp")(x)
    x = _layer_norm(cfg, "mlp_norm")(x + dropout(h, deterministic=deterministic))
    return nn.with_logical_constraint(x, BATCH_LENGTH_EMBED)


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
    self.layers = [EncoderLayer(self.config) for _ in range(self.config.num_layers)]

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
    mask = attention.segment_mask(segment_ids)
    for layer in self.layers:
      x = layer(x, mask, deterministic)
    return x


class MaskedLMHead(nn.Module):
  """Dense + activation + LayerNorm, then logits tied to the word embeddings, plus a bias."""

  config: EncoderConfig

  @nn.compact
  def __call__(self, hidden: jax.Array, word_embeddings: jax.Array) -> jax.Array:
    cfg = self.config
    h = _dense(cfg, cfg.hidden_size, ("embed", "mlp"), "dense")(hidden)
    h = _layer_norm(cfg, "layer_norm")(layers.ACTIVATIONS[cfg.hidden_act](h))
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


def init_variables(model: nn.Module, rng: jax.Array) -> dict:
  """The model's (boxed, logically annotated) variables; shapes don't depend on the dummy input."""
  return model.init({"params": rng}, jnp.zeros((1, 8), jnp.int32))
