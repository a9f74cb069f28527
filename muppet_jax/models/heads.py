"""Task heads with the structure of Hugging Face's task models, stacked so that one compiled step
serves any mix of tasks.

- classification/regression, one per dataset, like `RobertaClassificationHead` and
  `BartClassificationHead`: dropout, dense, tanh, dropout, out_proj on the segment's pooling
  token's state (RoBERTa: the encoder's `<s>`; BART: the decoder's final `</s>`);
- multiple choice, one per family (or per dataset), like `RobertaForMultipleChoice`: pooler
  (dense + tanh on the pooling token), dropout, one score per choice;
- span, one per family (or per dataset), like `RobertaForQuestionAnswering` and
  `BartForQuestionAnswering`: start/end logits on every token;
- summarization ("lm" heads) trains BART's LM head and adds no parameters.

Each kind's heads are stacked along a leading `task_heads` axis. Every segment's outputs are
computed by all heads of the kind and the segment's own head is selected by index: no Python
branching on tasks, static shapes, and the head FLOPs are negligible next to the encoder's.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from muppet_jax.families import HeadLayout
from muppet_jax.models import layers
from muppet_jax.models.config import ModelConfig


@flax.struct.dataclass
class LMHeadInputs:
  """What the tied LM head needs, not its [B, T, vocab] logits: the loss makes those a few
  target positions at a time (`losses.over_target_chunks`), so they never exist whole."""

  hidden: jax.Array  # [B, T, D]: the decoder's states over the target tokens.
  embedding: jax.Array  # [vocab, D]: the tied token embeddings.
  bias: jax.Array  # [vocab]

  def logits(self, hidden: jax.Array) -> jax.Array:
    """[..., D] states -> [..., vocab] logits, in the states' dtype."""
    logits = jnp.einsum("...d,vd->...v", hidden, self.embedding.astype(hidden.dtype))
    return logits + self.bias.astype(logits.dtype)


@flax.struct.dataclass
class HeadOutputs:
  class_logits: jax.Array  # [B, S, num_classes]: the segment's own classification head.
  choice_scores: jax.Array  # [B, S]: multiple-choice score of each segment (one per choice).
  span_logits: jax.Array  # [B, S, L, 2]: start/end logits of each segment over the row's tokens.
  lm: LMHeadInputs | None = None  # Over the target tokens (BART with summaries).


class TaskHeads(nn.Module):
  config: ModelConfig
  layout: HeadLayout

  def _weights(self, name: str, heads: int, features: int, out_axis: str):
    cfg = self.config
    kernel = self.param(f"{name}_kernel", layers.normal(cfg.initializer_range, "task_heads",
                                                        "embed", out_axis),
                        (heads, cfg.hidden_size, features), cfg.weights_dtype)
    bias = self.param(f"{name}_bias", layers.zeros("task_heads", out_axis), (heads, features),
                      cfg.weights_dtype)
    return kernel.astype(cfg.compute_dtype), bias.astype(cfg.compute_dtype)

  @nn.compact
  def __call__(self, hidden: jax.Array, segment_ids: jax.Array, seg_head: jax.Array,
               seg_pool: jax.Array, deterministic: bool) -> HeadOutputs:
    """`seg_pool`: [B, S] position of the token whose state pools each segment."""
    cfg, layout = self.config, self.layout
    dropout = nn.Dropout(cfg.hidden_dropout)
    kind_index = jnp.asarray(layout.index_in_kind(), jnp.int32)[jnp.maximum(seg_head, 0)]
    # The pooling state of every segment: [B, S, D].
    pooled = jnp.take_along_axis(hidden, jnp.maximum(seg_pool, 0)[..., None], axis=1)
    pooled = nn.with_logical_constraint(
        pooled, ("activation_batch", "activation_segments", "activation_embed"))
    b, s = seg_head.shape

    def pick(per_head: jax.Array, count: int) -> jax.Array:
      """[B, S, H, ...] -> [B, S, ...]: each segment's own head."""
      index = jnp.clip(kind_index, 0, count - 1).reshape(b, s, 1, *([1] * (per_head.ndim - 3)))
      return jnp.take_along_axis(per_head, index, axis=2)[:, :, 0]

    class_logits = jnp.zeros((b, s, layout.num_classes), cfg.compute_dtype)
    if n := layout.count("classification"):
      w1, b1 = self._weights("classification_dense", n, cfg.hidden_size, "mlp")
      w2, b2 = self._weights("classification_out_proj", n, layout.num_classes, "classes")
      x = dropout(pooled, deterministic=deterministic)
      x = jnp.tanh(jnp.einsum("bsd,hde->bshe", x, w1) + b1)
      x = dropout(x, deterministic=deterministic)
      class_logits = pick(jnp.einsum("bshe,hec->bshc", x, w2) + b2, n)

    choice_scores = jnp.zeros((b, s), cfg.compute_dtype)
    if n := layout.count("multiple_choice"):
      w1, b1 = self._weights("multiple_choice_pooler", n, cfg.hidden_size, "mlp")
      w2, b2 = self._weights("multiple_choice_classifier", n, 1, "classes")
      x = jnp.tanh(jnp.einsum("bsd,hde->bshe", pooled, w1) + b1)
      x = dropout(x, deterministic=deterministic)
      choice_scores = pick(jnp.einsum("bshe,hec->bshc", x, w2) + b2, n)[..., 0]

    length = hidden.shape[1]
    span_logits = jnp.zeros((b, s, length, 2), cfg.compute_dtype)
    if n := layout.count("span"):
      w, bias = self._weights("span_qa_outputs", n, 2, "classes")
      per_token = jnp.einsum("bld,hdc->blhc", hidden, w) + bias  # [B, L, H, 2]
      index = jnp.clip(kind_index, 0, n - 1)  # [B, S]
      span_logits = jax.vmap(lambda tok, idx: tok[:, idx].transpose(1, 0, 2))(per_token, index)
      in_segment = segment_ids[:, None, :] == (jnp.arange(s) + 1)[None, :, None]
      span_logits = jnp.where(in_segment[..., None], span_logits, jnp.finfo(jnp.float32).min)
    return HeadOutputs(class_logits, choice_scores, span_logits)
