"""The encoder with its masked-LM head and the stacked task heads: the pre-finetuning model.

Parameter paths are those of `EncoderForMaskedLM` plus `heads/`, so pretrained weights load as
they are. The masked-LM head is not trained during pre-finetuning (Muppet has no MLM loss) but is
carried along so that the exported checkpoint is a complete `RobertaForMaskedLM`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from muppet_jax.models.config import EncoderConfig
from muppet_jax.models.encoder import Encoder, MaskedLMHead
from muppet_jax.models.heads import HeadLayout, HeadOutputs, TaskHeads


class MultiTaskEncoder(nn.Module):
  config: EncoderConfig
  layout: HeadLayout

  def setup(self):
    self.encoder = Encoder(self.config)
    self.mlm_head = MaskedLMHead(self.config)
    self.heads = TaskHeads(self.config, self.layout)

  def __call__(self, input_ids: jax.Array, segment_ids: jax.Array, seg_head: jax.Array,
               seg_start: jax.Array, deterministic: bool = True) -> HeadOutputs:
    hidden = self.encoder(input_ids, segment_ids=segment_ids, deterministic=deterministic)
    return self.heads(hidden, segment_ids, seg_head, seg_start, deterministic)

  def initialize(self, input_ids: jax.Array, segment_ids: jax.Array, seg_head: jax.Array,
                 seg_start: jax.Array) -> HeadOutputs:
    """Creates every parameter, the masked-LM head's included (use as `init`'s method)."""
    hidden = self.encoder(input_ids, segment_ids=segment_ids)
    self.mlm_head(hidden, self.encoder.embeddings.word_embeddings.embedding)
    return self.heads(hidden, segment_ids, seg_head, seg_start, True)


def init_variables(model: MultiTaskEncoder, rng: jax.Array) -> dict:
  """Boxed (logically annotated) variables; the shapes don't depend on the dummy inputs."""
  ids = jnp.zeros((1, 8), jnp.int32)
  slots = jnp.zeros((1, 2), jnp.int32)
  return model.init({"params": rng}, ids, jnp.ones_like(ids), slots, slots,
                    method=MultiTaskEncoder.initialize)
