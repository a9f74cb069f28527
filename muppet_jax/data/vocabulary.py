"""A seqio.Vocabulary over a Hugging Face tokenizer (local directory or hub name).

Token ids stay Hugging Face ids everywhere (RoBERTa/BART: `<s>`=0, `<pad>`=1, `</s>`=2). seqio
pads with 0 and treats 0 as padding only in its feature converters and `trim_and_pad` helpers,
which muppet_jax never uses: tasks emit unpadded sequences, and `muppet_jax.data.batching` pads
with this vocabulary's `pad_id` and carries explicit segment ids, so `<s>`=0 is never mistaken
for padding. `pad_id` therefore reports the tokenizer's real pad id.
"""

from __future__ import annotations

import functools
import pathlib
import threading
from typing import Sequence

import numpy as np
import seqio
import tensorflow as tf
import tokenizers
import transformers

from muppet_jax.errors import UserError

_local = threading.local()


@functools.lru_cache(maxsize=16)
def _load_tokenizer(path_or_name: str) -> transformers.PreTrainedTokenizerFast:
  try:
    tokenizer = transformers.AutoTokenizer.from_pretrained(path_or_name)
  except (OSError, ValueError) as e:
    raise UserError(f"no Hugging Face tokenizer at {path_or_name!r} ({' '.join(str(e).split())})"
                    ) from e
  if not tokenizer.is_fast:
    raise UserError(f"the tokenizer at {path_or_name!r} is not a fast (Rust) tokenizer; "
                    "muppet_jax needs one for character offsets")
  return tokenizer


class HFVocabulary(seqio.Vocabulary):
  """Wraps `transformers.AutoTokenizer.from_pretrained(path_or_name)`.

  `encode` never adds special tokens (seqio's contract); the task preprocessors add `<s>`/`</s>`
  (or `[CLS]`/`[SEP]`) through `special_template`.
  """

  def __init__(self, path_or_name: str | pathlib.Path):
    self._path = str(path_or_name)
    super().__init__(extra_ids=0)

  @property
  def path(self) -> str:
    return self._path

  @property
  def tokenizer(self) -> transformers.PreTrainedTokenizerFast:
    """Loaded on first use, so that registering tasks never touches the disk or the network."""
    return _load_tokenizer(self._path)

  def backend(self, max_length: int | None = None, strategy: str = "longest_first",
              stride: int = 0) -> tokenizers.Tokenizer:
    """This thread's copy of the Rust tokenizer, truncating to `max_length` (with special
    tokens). Truncation is mutable state of a tokenizer (a fast tokenizer's call sets it before
    encoding), so threads that share one and want different lengths race; private copies with
    the truncation fixed once need no lock."""
    backends = _local.__dict__.setdefault("backends", {})
    key = (self._path, max_length, strategy, stride)
    if key not in backends:
      tok = tokenizers.Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
      tok.no_padding()
      if max_length:
        tok.enable_truncation(max_length, stride=stride, strategy=strategy)
      else:
        tok.no_truncation()
      backends[key] = tok
    return backends[key]

  @property
  def _base_vocab_size(self) -> int:
    return len(self.tokenizer)

  @property
  def eos_id(self) -> int | None:
    return self.tokenizer.sep_token_id if self.tokenizer.eos_token_id is None else (
        self.tokenizer.eos_token_id)

  @property
  def bos_id(self) -> int | None:
    return self.tokenizer.cls_token_id if self.tokenizer.bos_token_id is None else (
        self.tokenizer.bos_token_id)

  @property
  def pad_id(self) -> int:
    return self.tokenizer.pad_token_id

  @property
  def unk_id(self) -> int | None:
    return self.tokenizer.unk_token_id

  def special_template(self) -> tuple[list[int], list[int], list[int]]:
    """(prefix, separator between a pair, suffix): RoBERTa `<s>`,`</s></s>`,`</s>`; BERT
    `[CLS]`,`[SEP]`,`[SEP]`. Read off the tokenizer itself so any family comes out right."""
    enc = self.backend().encode("a", "b")
    ids, seq = enc.ids, enc.sequence_ids
    first_a, last_a = seq.index(0), len(seq) - 1 - seq[::-1].index(0)
    first_b, last_b = seq.index(1), len(seq) - 1 - seq[::-1].index(1)
    return ids[:first_a], ids[last_a + 1:first_b], ids[last_b + 1:]

  def _encode(self, s: str) -> list[int]:
    return self.backend().encode(s, add_special_tokens=False).ids

  def _decode(self, ids: Sequence[int]) -> str:
    return self.tokenizer.decode(list(ids), skip_special_tokens=True)  # Decoding sets nothing.

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    def encode(text: bytes) -> np.ndarray:
      return np.asarray(self._encode(text.decode("utf-8")), np.int32)

    ids = tf.numpy_function(encode, [s], tf.int32, stateful=False)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    def decode(batch: np.ndarray) -> np.ndarray:
      rows = batch.reshape(-1, batch.shape[-1])
      out = [self._decode([i for i in row if i != self.pad_id]).encode("utf-8") for row in rows]
      return np.asarray(out, object).reshape(batch.shape[:-1])

    return tf.numpy_function(decode, [ids], tf.string, stateful=False)

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, HFVocabulary):
      return False
    return self.tokenizer.get_vocab() == other.tokenizer.get_vocab() and (
        self.special_template() == other.special_template())

  def __hash__(self) -> int:  # Consistent with __eq__, which subclasses (the demo's) share.
    return hash(len(self.tokenizer))

  def __repr__(self) -> str:
    return f"HFVocabulary({self._path!r}, size={self.vocab_size})"
