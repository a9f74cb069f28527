"""The pre-finetuning models: a pretrained network plus the stacked task heads.

Both read a batch of the stream (`muppet_jax.data.batching`) and return `HeadOutputs`.

- `MultiTaskEncoder`: RoBERTa/BERT. Parameter paths are those of `EncoderForMaskedLM` plus
  `heads/`, so pretrained weights load as they are. The masked-LM head is not trained (Muppet has
  no MLM loss) but is carried along so that the export is a complete `RobertaForMaskedLM`.
- `MultiTaskBart`: BART, parameter paths those of `Bart` plus `heads/`. As in Hugging Face's
  BART task models, the decoder reads the input shifted right; heads pool the decoder's state at
  each segment's final `</s>`. Summaries (`target_ids`) run through the decoder a second time,
  teacher-forced; the loss applies the LM head to those states a chunk at a time.

`embedding_noise` ([B, L, D], or None) is added to the input token embeddings (R3F).
"""

from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from muppet_jax.families import HeadLayout
from muppet_jax.models.bart import Bart, shift_right
from muppet_jax.models.config import BartConfig, EncoderConfig, ModelConfig
from muppet_jax.models.encoder import Encoder, MaskedLMHead
from muppet_jax.models.heads import HeadOutputs, TaskHeads

Batch = Mapping[str, jax.Array]


class MultiTaskEncoder(nn.Module):
  config: EncoderConfig
  layout: HeadLayout

  def setup(self):
    self.encoder = Encoder(self.config)
    self.mlm_head = MaskedLMHead(self.config)
    self.heads = TaskHeads(self.config, self.layout)

  def __call__(self, batch: Batch, deterministic: bool = True,
               embedding_noise: jax.Array | None = None) -> HeadOutputs:
    hidden = self.encoder(batch["input_ids"], segment_ids=batch["segment_ids"],
                          deterministic=deterministic, embedding_noise=embedding_noise)
    return self.heads(hidden, batch["segment_ids"], batch["seg_head"], batch["seg_start"],
                      deterministic)

  def initialize(self) -> HeadOutputs:
    """Creates every parameter, the masked-LM head's included (`layers.init_variables`)."""
    batch = dummy_batch()
    hidden = self.encoder(batch["input_ids"], segment_ids=batch["segment_ids"])
    self.mlm_head(hidden, self.encoder.embeddings.word_embeddings.embedding)
    return self.heads(hidden, batch["segment_ids"], batch["seg_head"], batch["seg_start"], True)


def segment_ends(segment_ids: jax.Array, num_segments: int) -> jax.Array:
  """[B, S]: the position of each segment's last token (0 for empty slots)."""
  slots = jnp.arange(num_segments) + 1
  in_segment = segment_ids[:, None, :] == slots[None, :, None]
  return jnp.max(jnp.where(in_segment, jnp.arange(segment_ids.shape[-1]), 0), axis=-1)


class MultiTaskBart(Bart):
  layout: HeadLayout = None  # Required; a default only because dataclass fields follow `config`.

  def setup(self):
    super().setup()
    self.heads = TaskHeads(self.config, self.layout)

  def __call__(self, batch: Batch, deterministic: bool = True,
               embedding_noise: jax.Array | None = None) -> HeadOutputs:
    cfg = self.config
    segments = batch["segment_ids"]
    encoded = self.encode(batch["input_ids"], segments, deterministic, embedding_noise)
    shifted = shift_right(batch["input_ids"], segments, cfg.decoder_start_token_id,
                          cfg.pad_token_id)
    hidden = self.decode(shifted, segments, encoded, segments, deterministic)
    outputs = self.heads(hidden, segments, batch["seg_head"],
                         segment_ends(segments, batch["seg_head"].shape[1]), deterministic)
    if batch["target_ids"].shape[1] == 0:  # The mixture has no summarization.
      return outputs
    targets = batch["target_segment_ids"]
    decoder_ids = shift_right(batch["target_ids"], targets, cfg.decoder_start_token_id,
                              cfg.pad_token_id)
    summaries = self.decode(decoder_ids, targets, encoded, segments, deterministic)
    return outputs.replace(lm=self.lm_head(summaries))

  def initialize(self) -> HeadOutputs:
    """Creates every parameter (`layers.init_variables`)."""
    return self(dummy_batch())


def build(config: ModelConfig, layout: HeadLayout) -> nn.Module:
  """The pre-finetuning model of `config`'s family."""
  if isinstance(config, BartConfig):
    return MultiTaskBart(config, layout)
  return MultiTaskEncoder(config, layout)


def dummy_batch(rows: int = 1, length: int = 8, segments: int = 2, targets: int = 4
                ) -> dict[str, jax.Array]:
  """The smallest batch with every array the models read (for `init` and shape evaluation)."""
  ids = jnp.zeros((rows, length), jnp.int32)
  slots = jnp.zeros((rows, segments), jnp.int32)
  target_ids = jnp.zeros((rows, targets), jnp.int32)
  return {"input_ids": ids, "segment_ids": jnp.ones_like(ids), "seg_head": slots,
          "seg_start": slots, "target_ids": target_ids,
          "target_segment_ids": jnp.ones_like(target_ids)}
