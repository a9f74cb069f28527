"""Model configs: the architecture of a RoBERTa/BERT encoder or a BART encoder-decoder, plus the
runtime choices around it (dtypes, dropout, attention implementation)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

from muppet_jax.errors import UserError
from muppet_jax.models.attention import IMPLS as ATTENTION_IMPLS

# model_type values (as in Hugging Face config.json) that share RoBERTa's architecture: position ids
# start at pad_token_id + 1 instead of 0.
ROBERTA_FAMILY = ("roberta", "xlm-roberta")
SUPPORTED_MODEL_TYPES = ROBERTA_FAMILY + ("bert",)
# Rematerialization of each transformer layer in the backward pass: "none" keeps every
# activation, "full" keeps only the layer's input, "save_dots" keeps the matmul outputs.
REMAT_POLICIES = ("none", "full", "save_dots")
DTYPES = ("float32", "bfloat16", "float16")
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")


class _ConfigMethods:
  """What both model configs do alike: checks of the shared fields, dtypes, dict round trips."""

  def _check(self, ok: bool, message: str) -> None:
    if not ok:
      raise UserError(f"{type(self).__name__}: {message}")

  def _check_common(self) -> None:
    check = self._check
    check(self.dtype in DTYPES, f"dtype={self.dtype!r}; choose one of {DTYPES}")
    check(self.param_dtype in DTYPES,
          f"param_dtype={self.param_dtype!r}; choose one of {DTYPES}")
    check(self.attention_impl in ATTENTION_IMPLS,
          f"attention_impl={self.attention_impl!r}; choose one of {ATTENTION_IMPLS}")
    check(self.remat in REMAT_POLICIES, f"remat={self.remat!r}; choose one of {REMAT_POLICIES}")
    check(self.hidden_act in ACTIVATIONS,
          f"hidden_act={self.hidden_act!r} is not supported; supported: {ACTIVATIONS}")

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def weights_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def replace(self, **changes: Any):
    unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
    if unknown:
      raise UserError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]):
    return cls().replace(**d)


@dataclasses.dataclass(frozen=True)
class EncoderConfig(_ConfigMethods):
  """A RoBERTa- or BERT-architecture encoder.

  The architecture fields mirror Hugging Face's config.json; the runtime fields (dtypes, dropout,
  attention implementation) are ours and may differ from run to run with the same weights.
  """

  # Architecture.
  model_type: str = "roberta"
  vocab_size: int = 50265
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 514
  type_vocab_size: int = 1
  pad_token_id: int = 1
  layer_norm_eps: float = 1e-5
  hidden_act: str = "gelu"
  initializer_range: float = 0.02
  # Runtime.
  dtype: str = "float32"  # Compute dtype of activations and matmuls.
  param_dtype: str = "float32"
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  # "xla": attention written out in jnp (CPU/TPU). "dot_product": jax.nn.dot_product_attention,
  # which runs cuDNN flash attention on NVIDIA GPUs (and XLA elsewhere).
  attention_impl: str = "xla"
  remat: str = "none"  # One of REMAT_POLICIES.
  # One nn.scan over the layers (compiled once, parameters stacked on a `layers` axis; see
  # `scan_layout`) instead of a Python loop that traces each layer.
  scan_layers: bool = False

  def __post_init__(self):
    self._check(self.model_type in SUPPORTED_MODEL_TYPES,
                f"unknown architecture model_type={self.model_type!r}; supported: "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    self._check(self.hidden_size % self.num_heads == 0,
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
    self._check_common()

  @property
  def position_offset(self) -> int:
    """Position id of a sequence's first token: RoBERTa counts from pad_token_id + 1."""
    return self.pad_token_id + 1 if self.model_type in ROBERTA_FAMILY else 0

  @property
  def max_length(self) -> int:
    """Longest sequence (or packed row) the position table covers."""
    return self.max_position_embeddings - self.position_offset

  @classmethod
  def from_hf_config(cls, hf: Mapping[str, Any], **runtime: Any) -> EncoderConfig:
    """Reads a Hugging Face config.json dict; `runtime` sets dtypes, dropout and attention."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
      raise UserError(
          f"unknown architecture: config.json has model_type={model_type!r}; muppet_jax's "
          f"encoder supports {', '.join(SUPPORTED_MODEL_TYPES)}")
    try:
      arch = dict(
          model_type=model_type,
          vocab_size=hf["vocab_size"],
          hidden_size=hf["hidden_size"],
          num_layers=hf["num_hidden_layers"],
          num_heads=hf["num_attention_heads"],
          intermediate_size=hf["intermediate_size"],
          max_position_embeddings=hf["max_position_embeddings"],
          type_vocab_size=hf.get("type_vocab_size", 2),
          pad_token_id=hf.get("pad_token_id", 1 if model_type in ROBERTA_FAMILY else 0),
          layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
          hidden_act=hf.get("hidden_act", "gelu"),
          initializer_range=hf.get("initializer_range", 0.02),
          hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
          attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
      )
    except KeyError as e:
      raise UserError(f"config.json lacks the field {e.args[0]!r} that a {model_type} needs") from e
    if hf.get("position_embedding_type", "absolute") != "absolute":
      raise UserError(f"position_embedding_type={hf['position_embedding_type']!r} is not "
                      "supported; only 'absolute' position embeddings are")
    return cls(**{**arch, **runtime})

  def to_hf_config(self, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The architecture as config.json fields, on top of `base` (the source checkpoint's config)."""
    hf = dict(base or {})
    hf.update(
        model_type=self.model_type,
        vocab_size=self.vocab_size,
        hidden_size=self.hidden_size,
        num_hidden_layers=self.num_layers,
        num_attention_heads=self.num_heads,
        intermediate_size=self.intermediate_size,
        max_position_embeddings=self.max_position_embeddings,
        type_vocab_size=self.type_vocab_size,
        pad_token_id=self.pad_token_id,
        layer_norm_eps=self.layer_norm_eps,
        hidden_act=self.hidden_act,
        initializer_range=self.initializer_range,
    )
    return hf


def roberta_config(size: str, **runtime: Any) -> EncoderConfig:
  """Architecture of the published RoBERTa checkpoints (`tiny` is ours, for tests and demos)."""
  sizes = {
      "tiny": dict(vocab_size=1024, hidden_size=64, num_layers=2, num_heads=4,
                   intermediate_size=128, max_position_embeddings=130),
      "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
      "large": dict(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096),
  }
  if size not in sizes:
    raise UserError(f"unknown RoBERTa size {size!r}; choose one of {sorted(sizes)}")
  return EncoderConfig(**{**sizes[size], **runtime})


@dataclasses.dataclass(frozen=True)
class BartConfig(_ConfigMethods):
  """A BART encoder-decoder (post-LayerNorm, learned positions offset by 2, tied LM head).

  Architecture fields mirror Hugging Face's BartConfig under the names `EncoderConfig` uses where
  they mean the same thing; the runtime fields are shared with `EncoderConfig`.
  """

  # Architecture.
  model_type: str = "bart"
  vocab_size: int = 50265
  hidden_size: int = 1024  # d_model.
  encoder_layers: int = 12
  decoder_layers: int = 12
  encoder_heads: int = 16
  decoder_heads: int = 16
  encoder_ffn_size: int = 4096
  decoder_ffn_size: int = 4096
  max_position_embeddings: int = 1024
  pad_token_id: int = 1
  bos_token_id: int = 0
  eos_token_id: int = 2
  decoder_start_token_id: int = 2
  hidden_act: str = "gelu"
  scale_embedding: bool = False  # Multiply token embeddings by sqrt(hidden_size).
  layer_norm_eps: float = 1e-5
  initializer_range: float = 0.02  # init_std.
  # Runtime.
  dtype: str = "float32"
  param_dtype: str = "float32"
  hidden_dropout: float = 0.1  # HF `dropout`.
  attention_dropout: float = 0.0
  activation_dropout: float = 0.0
  attention_impl: str = "xla"
  remat: str = "none"  # One of REMAT_POLICIES.
  # One nn.scan over the layers (compiled once, parameters stacked on a `layers` axis; see
  # `scan_layout`) instead of a Python loop that traces each layer.
  scan_layers: bool = False

  # BART learns positions 0..max_position_embeddings-1 at rows 2.. of its table.
  position_offset = 2

  def __post_init__(self):
    self._check(self.model_type == "bart", f"model_type={self.model_type!r}; expected 'bart'")
    for side in ("encoder", "decoder"):
      heads = getattr(self, f"{side}_heads")
      self._check(self.hidden_size % heads == 0,
                  f"hidden_size={self.hidden_size} is not divisible by {side}_heads={heads}")
    self._check_common()

  @property
  def max_length(self) -> int:
    """Longest sequence (or packed row) the position table covers, on either side."""
    return self.max_position_embeddings

  @property
  def embed_scale(self) -> float:
    return self.hidden_size ** 0.5 if self.scale_embedding else 1.0

  @classmethod
  def from_hf_config(cls, hf: Mapping[str, Any], **runtime: Any) -> BartConfig:
    if hf.get("model_type") != "bart":
      raise UserError(f"config.json has model_type={hf.get('model_type')!r}, not 'bart'")
    if hf.get("normalize_before") or hf.get("add_final_layer_norm"):
      raise UserError("pre-LayerNorm (mBART-style) checkpoints are not supported; only BART's "
                      "post-LayerNorm architecture is")
    try:
      arch = dict(
          vocab_size=hf["vocab_size"], hidden_size=hf["d_model"],
          encoder_layers=hf["encoder_layers"], decoder_layers=hf["decoder_layers"],
          encoder_heads=hf["encoder_attention_heads"],
          decoder_heads=hf["decoder_attention_heads"],
          encoder_ffn_size=hf["encoder_ffn_dim"], decoder_ffn_size=hf["decoder_ffn_dim"],
          max_position_embeddings=hf["max_position_embeddings"],
          pad_token_id=hf.get("pad_token_id", 1), bos_token_id=hf.get("bos_token_id", 0),
          eos_token_id=hf.get("eos_token_id", 2),
          decoder_start_token_id=hf.get("decoder_start_token_id", 2),
          hidden_act=hf.get("activation_function", "gelu"),
          scale_embedding=hf.get("scale_embedding", False),
          initializer_range=hf.get("init_std", 0.02),
          hidden_dropout=hf.get("dropout", 0.1),
          attention_dropout=hf.get("attention_dropout", 0.0),
          activation_dropout=hf.get("activation_dropout", 0.0))
    except KeyError as e:
      raise UserError(f"config.json lacks the field {e.args[0]!r} that a bart needs") from e
    return cls(**{**arch, **runtime})

  def to_hf_config(self, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    hf = dict(base or {})
    hf.update(
        model_type="bart", vocab_size=self.vocab_size, d_model=self.hidden_size,
        encoder_layers=self.encoder_layers, decoder_layers=self.decoder_layers,
        encoder_attention_heads=self.encoder_heads, decoder_attention_heads=self.decoder_heads,
        encoder_ffn_dim=self.encoder_ffn_size, decoder_ffn_dim=self.decoder_ffn_size,
        max_position_embeddings=self.max_position_embeddings, pad_token_id=self.pad_token_id,
        bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id,
        decoder_start_token_id=self.decoder_start_token_id,
        activation_function=self.hidden_act, scale_embedding=self.scale_embedding,
        init_std=self.initializer_range, is_encoder_decoder=True)
    hf.setdefault("forced_eos_token_id", self.eos_token_id)
    return hf


ModelConfig = EncoderConfig | BartConfig


def runtime_for(cls: type, runtime: Mapping[str, Any]) -> dict[str, Any]:
  """The runtime settings `cls` has (activation_dropout is BART's only)."""
  names = {f.name for f in dataclasses.fields(cls)}
  return {k: v for k, v in runtime.items() if k in names}


def config_from_hf(hf: Mapping[str, Any], **runtime: Any) -> ModelConfig:
  """The model config of a Hugging Face config.json, BART or encoder."""
  cls = BartConfig if hf.get("model_type") == "bart" else EncoderConfig
  return cls.from_hf_config(hf, **runtime_for(cls, runtime))


def config_from_dict(d: Mapping[str, Any]) -> ModelConfig:
  return (BartConfig if d.get("model_type") == "bart" else EncoderConfig).from_dict(d)


def bart_config(size: str, **runtime: Any) -> BartConfig:
  """Architecture of the published BART checkpoints (`tiny` is ours, for tests and demos)."""
  sizes = {
      "tiny": dict(vocab_size=1024, hidden_size=64, encoder_layers=2, decoder_layers=2,
                   encoder_heads=4, decoder_heads=4, encoder_ffn_size=128, decoder_ffn_size=128,
                   max_position_embeddings=256),
      "base": dict(hidden_size=768, encoder_layers=6, decoder_layers=6, encoder_heads=12,
                   decoder_heads=12, encoder_ffn_size=3072, decoder_ffn_size=3072),
      "large": {},
  }
  if size not in sizes:
    raise UserError(f"unknown BART size {size!r}; choose one of {sorted(sizes)}")
  return BartConfig(**{**sizes[size], **runtime})
