"""Family preprocessors: from each family's text format to one uniform token format.

A task's formatter turns its raw examples (TFDS fields, file columns) into its family's text
format; the family tokenizer here turns that into token ids, so every task of every family yields
examples with the same structure (which seqio mixtures require):

  inputs         int32[total]   all model input sequences of the example, concatenated; each one
                                complete with special tokens (RoBERTa `<s> a </s></s> b </s>`)
  input_lengths  int32[k]       length of each sequence: k = 1, or the number of choices
  targets        int32[t]       summary tokens (`<s> ... </s>`); empty for other families
  label          int32          class, or index of the correct choice; -1 where unused
  score          float32        regression target; 0 where unused
  span           int32[2]       answer start/end token positions (inclusive) in `inputs`; -1 where
                                unused

Text formats (what formatters must produce):
  classification / regression: text_a, text_b ("" for single texts), label (int / float)
  multiple_choice: context, choices (string vector, fixed length per task), label
  span: question, context, answer_start (character offset), answer_text
  summarization: document, summary

Long inputs: pairs are truncated longest-first to the `inputs` length. Span contexts longer than
that are cut into doc-stride windows (overlap `SPAN_STRIDE` tokens); windows that don't contain
the whole answer are dropped, so each kept window is a training example with a correct span.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import seqio
import tensorflow as tf

from muppet_jax.data.vocabulary import TOKENIZER_LOCK

SPAN_STRIDE = 128

UNIFORM_SPEC = {
    "inputs": tf.TensorSpec([None], tf.int32),
    "input_lengths": tf.TensorSpec([None], tf.int32),
    "targets": tf.TensorSpec([None], tf.int32),
    "label": tf.TensorSpec([], tf.int32),
    "score": tf.TensorSpec([], tf.float32),
    "span": tf.TensorSpec([2], tf.int32),
}


def _text(x: bytes) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def _tokenizer(output_features: Mapping[str, seqio.Feature]):
  return output_features["inputs"].vocabulary.tokenizer


def _uniform(inputs, input_lengths, targets=None, label=-1, score=0.0, span=(-1, -1)) -> dict:
  return {
      "inputs": tf.cast(inputs, tf.int32),
      "input_lengths": tf.cast(input_lengths, tf.int32),
      "targets": tf.zeros([0], tf.int32) if targets is None else tf.cast(targets, tf.int32),
      "label": tf.cast(label, tf.int32),
      "score": tf.cast(score, tf.float32),
      "span": tf.cast(span, tf.int32),
  }


def _encode_pair(tokenizer, a: str, b: str, max_length: int) -> list[int]:
  with TOKENIZER_LOCK:
    return tokenizer(a, b or None, truncation="longest_first" if b else True,
                     max_length=max_length)["input_ids"]


def tokenize_classification(dataset: tf.data.Dataset, output_features, sequence_length):
  """text_a, text_b, label (int for classification, float for regression) -> uniform."""
  tokenizer, max_length = _tokenizer(output_features), sequence_length["inputs"]

  def encode(a, b):
    return np.asarray(_encode_pair(tokenizer, _text(a), _text(b), max_length), np.int32)

  def fn(ex):
    ids = tf.numpy_function(encode, [ex["text_a"], ex["text_b"]], tf.int32, stateful=False)
    ids.set_shape([None])
    regression = ex["label"].dtype.is_floating
    return _uniform(ids, tf.shape(ids)[:1],
                    label=-1 if regression else ex["label"],
                    score=ex["label"] if regression else 0.0)

  return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def tokenize_multiple_choice(dataset: tf.data.Dataset, output_features, sequence_length):
  """context, choices[k], label -> k sequences `context + choice`, kept together."""
  tokenizer, max_length = _tokenizer(output_features), sequence_length["inputs"]

  def encode(context, choices):
    rows = [_encode_pair(tokenizer, _text(context), _text(c), max_length) for c in choices]
    return (np.asarray([t for row in rows for t in row], np.int32),
            np.asarray([len(row) for row in rows], np.int32))

  def fn(ex):
    ids, lengths = tf.numpy_function(encode, [ex["context"], ex["choices"]],
                                     (tf.int32, tf.int32), stateful=False)
    ids.set_shape([None])
    lengths.set_shape([None])
    return _uniform(ids, lengths, label=ex["label"])

  return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def span_windows(tokenizer, question: str, context: str, answer_start: int, answer_text: str,
                 max_length: int, stride: int = SPAN_STRIDE) -> list[tuple[list[int], int, int]]:
  """(ids, start, end) per doc-stride window of `question + context` holding the whole answer."""
  answer_end = answer_start + len(answer_text)  # Exclusive, in characters.
  with TOKENIZER_LOCK:
    enc = tokenizer(question, context, truncation="only_second", max_length=max_length,
                    stride=min(stride, max_length // 4), return_overflowing_tokens=True,
                    return_offsets_mapping=True)
  windows = []
  for w, ids in enumerate(enc["input_ids"]):
    offsets, seq = enc["offset_mapping"][w], enc.sequence_ids(w)
    context_tokens = [i for i, s in enumerate(seq) if s == 1]
    if answer_start < 0 or not context_tokens:
      continue
    first, last = context_tokens[0], context_tokens[-1]
    if offsets[first][0] > answer_start or offsets[last][1] < answer_end:
      continue  # The answer is not (wholly) inside this window.
    start = next(i for i in context_tokens if offsets[i][1] > answer_start)
    end = next(i for i in reversed(context_tokens) if offsets[i][0] < answer_end)
    windows.append((ids, start, end))
  return windows


def tokenize_span(dataset: tf.data.Dataset, output_features, sequence_length):
  """question, context, answer_start, answer_text -> one example per answer-holding window."""
  tokenizer, max_length = _tokenizer(output_features), sequence_length["inputs"]

  def encode(question, context, start, text):
    windows = span_windows(tokenizer, _text(question), _text(context), int(start), _text(text),
                           max_length)
    return (np.asarray([t for ids, _, _ in windows for t in ids], np.int32),
            np.asarray([len(ids) for ids, _, _ in windows], np.int32),
            np.asarray([[s, e] for _, s, e in windows], np.int32).reshape(-1, 2))

  def fn(ex):
    ids, lengths, spans = tf.numpy_function(
        encode, [ex["question"], ex["context"], ex["answer_start"], ex["answer_text"]],
        (tf.int32, tf.int32, tf.int32), stateful=False)
    ids.set_shape([None])
    lengths.set_shape([None])
    spans.set_shape([None, 2])
    starts = tf.cumsum(lengths, exclusive=True)
    return tf.data.Dataset.from_tensor_slices((starts, lengths, spans)).map(
        lambda start, length, span: _uniform(ids[start:start + length], [length], span=span))

  return dataset.flat_map(fn)


def tokenize_summarization(dataset: tf.data.Dataset, output_features, sequence_length):
  """document, summary -> inputs `<s> document </s>`, targets `<s> summary </s>`."""
  tokenizer = _tokenizer(output_features)
  max_in, max_out = sequence_length["inputs"], sequence_length.get("targets", 128)

  def encode(document, summary):
    with TOKENIZER_LOCK:
      ids = tokenizer(_text(document), truncation=True, max_length=max_in)["input_ids"]
      target = tokenizer(_text(summary), truncation=True, max_length=max_out)["input_ids"]
    return np.asarray(ids, np.int32), np.asarray(target, np.int32)

  def fn(ex):
    ids, target = tf.numpy_function(encode, [ex["document"], ex["summary"]],
                                    (tf.int32, tf.int32), stateful=False)
    ids.set_shape([None])
    target.set_shape([None])
    return _uniform(ids, tf.shape(ids)[:1], targets=target)

  return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


FAMILY_TOKENIZERS = {
    "classification": tokenize_classification,
    "regression": tokenize_classification,
    "multiple_choice": tokenize_multiple_choice,
    "span": tokenize_span,
    "summarization": tokenize_summarization,
}
