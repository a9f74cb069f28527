"""Network definitions: the RoBERTa/BERT encoder and BART."""

from muppet_jax.models.bart import Bart, Seq2SeqOutput
from muppet_jax.models.config import BartConfig, EncoderConfig, bart_config, roberta_config
from muppet_jax.models.encoder import Encoder, EncoderForMaskedLM, MaskedLMOutput

__all__ = ["Bart", "BartConfig", "Encoder", "EncoderConfig", "EncoderForMaskedLM",
           "MaskedLMOutput", "Seq2SeqOutput", "bart_config", "roberta_config"]
