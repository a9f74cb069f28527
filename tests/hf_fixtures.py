"""Tiny random Hugging Face checkpoints (transformers + torch), made on the spot: no network."""

from __future__ import annotations

import json
import pathlib
from typing import NamedTuple

import safetensors.torch
import torch
import transformers

SPECIAL = {"roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
           "bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]}
VOCAB_SIZE = 99


class SavedModel(NamedTuple):
  model_type: str
  path: pathlib.Path


def tiny_config(model_type: str, **overrides) -> transformers.PretrainedConfig:
  common = dict(vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=37, max_position_embeddings=64)
  if model_type == "roberta":
    return transformers.RobertaConfig(**{**common, "type_vocab_size": 1, **overrides})
  return transformers.BertConfig(**{**common, "type_vocab_size": 2, **overrides})


def tiny_mlm(model_type: str, seed: int = 0, **overrides) -> transformers.PreTrainedModel:
  """A random masked-LM whose every tensor (biases and LayerNorms too) is non-trivial."""
  torch.manual_seed(seed)
  cls = {"roberta": transformers.RobertaForMaskedLM, "bert": transformers.BertForMaskedLM}
  model = cls[model_type](tiny_config(model_type, **overrides)).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return model


def tiny_bare(model_type: str, pooler: bool = True, seed: int = 0) -> transformers.PreTrainedModel:
  """A random bare encoder (`BertModel`, `RobertaModel`: no masked-LM head), every tensor
  non-trivial; with or without the pooler."""
  torch.manual_seed(seed)
  cls = {"roberta": transformers.RobertaModel, "bert": transformers.BertModel}
  model = cls[model_type](tiny_config(model_type), add_pooling_layer=pooler).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return model


def save_prefixed(model: transformers.PreTrainedModel, path: pathlib.Path) -> None:
  """`model` saved with its tensors named under the base model prefix (`bert.embeddings...`),
  as the encoder part of a task model's checkpoint names them."""
  model.save_pretrained(path)
  prefix = model.base_model_prefix
  safetensors.torch.save_file({f"{prefix}.{k}": v.contiguous()
                               for k, v in model.state_dict().items()},
                              path / "model.safetensors", metadata={"format": "pt"})


def save_tokenizer(model_type: str, path: pathlib.Path) -> None:
  """A small word-level tokenizer of the right class, saved with the usual files."""
  words = SPECIAL[model_type] + [f"w{i}" for i in range(VOCAB_SIZE - 5)]
  path.mkdir(parents=True, exist_ok=True)
  if model_type == "roberta":
    (path / "vocab.json").write_text(json.dumps({w: i for i, w in enumerate(words)}))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = transformers.RobertaTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
  else:
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = transformers.BertTokenizer(str(path / "vocab.txt"))
  tok.save_pretrained(path)


def save_tiny_mlm(model_type: str, path: pathlib.Path, **overrides) -> transformers.PreTrainedModel:
  model = tiny_mlm(model_type, **overrides)
  model.save_pretrained(path)
  save_tokenizer(model_type, path)
  return model


def load_mlm(path: pathlib.Path) -> transformers.PreTrainedModel:
  return transformers.AutoModelForMaskedLM.from_pretrained(path).eval()


def padded_batch(model_type: str, seed: int = 0):
  """input_ids, attention_mask, token_type_ids for a batch with right padding."""
  g = torch.Generator().manual_seed(seed)
  pad = tiny_config(model_type).pad_token_id
  ids = torch.randint(5, VOCAB_SIZE, (3, 20), generator=g)
  mask = torch.ones_like(ids)
  for row, length in enumerate([20, 13, 6]):
    ids[row, length:] = pad
    mask[row, length:] = 0
  types = torch.zeros_like(ids)
  if model_type == "bert":
    types[:, 8:] = 1
    types = types * mask
  return ids, mask, types


def tiny_bart_config(**overrides) -> transformers.BartConfig:
  """Tiny, with different encoder/decoder depths, heads and widths so that no map is symmetric."""
  return transformers.BartConfig(**{
      **dict(vocab_size=VOCAB_SIZE, d_model=32, encoder_layers=2, decoder_layers=3,
             encoder_attention_heads=4, decoder_attention_heads=2, encoder_ffn_dim=37,
             decoder_ffn_dim=41, max_position_embeddings=64, dropout=0.0,
             forced_eos_token_id=2),
      **overrides})


def tiny_bart(seed: int = 0, **overrides) -> transformers.BartForConditionalGeneration:
  """A random BART whose every tensor (biases, LayerNorms, final_logits_bias) is non-trivial.

  Perturbed strongly enough that outputs depend on the input, with EOS favoured and padding
  never generated, so that generated sequences end at different lengths.
  """
  torch.manual_seed(seed)
  model = transformers.BartForConditionalGeneration(tiny_bart_config(**overrides)).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.3 * torch.randn_like(p))
    model.final_logits_bias.normal_(0.0, 0.5)
    model.final_logits_bias[0, 2] += 3.0
    model.final_logits_bias[0, 1] -= 10.0
  return model


def save_tiny_bart(path: pathlib.Path, **overrides) -> transformers.BartForConditionalGeneration:
  model = tiny_bart(**overrides)
  model.save_pretrained(path)
  save_tokenizer("roberta", path)  # BART's tokenizer is RoBERTa's byte-level BPE.
  return model


def seq2seq_batch(seed: int = 0):
  """Encoder input_ids/attention_mask (right padding) and decoder inputs for 3 examples."""
  g = torch.Generator().manual_seed(seed)
  ids = torch.randint(5, VOCAB_SIZE, (3, 16), generator=g)
  ids[:, 0] = 0
  mask = torch.ones_like(ids)
  for row, length in enumerate([16, 11, 5]):
    ids[row, length - 1] = 2
    ids[row, length:] = 1
    mask[row, length:] = 0
  decoder = torch.randint(5, VOCAB_SIZE, (3, 9), generator=g)
  decoder[:, 0] = 2
  return ids, mask, decoder
