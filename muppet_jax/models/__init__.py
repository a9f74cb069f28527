"""Network definitions: the RoBERTa/BERT encoder and (later) BART."""

from muppet_jax.models.config import EncoderConfig, roberta_config
from muppet_jax.models.encoder import Encoder, EncoderForMaskedLM, MaskedLMOutput

__all__ = ["Encoder", "EncoderConfig", "EncoderForMaskedLM", "MaskedLMOutput", "roberta_config"]
