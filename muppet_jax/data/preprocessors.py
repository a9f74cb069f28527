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
that are cut into doc-stride windows (overlap `encoding.SPAN_STRIDE` tokens); windows that don't
contain the whole answer are dropped, so each kept window is a training example with a correct
span.

The tokenizing itself is `muppet_jax.data.encoding`'s, which the input stream calls on whole
blocks of records; the seqio preprocessors here run it one record at a time, for seqio users and
inspection, so both give the same tokens.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import seqio
import tensorflow as tf

from muppet_jax.data import encoding

UNIFORM_SPEC = {
    "inputs": tf.TensorSpec([None], tf.int32),
    "input_lengths": tf.TensorSpec([None], tf.int32),
    "targets": tf.TensorSpec([None], tf.int32),
    "label": tf.TensorSpec([], tf.int32),
    "score": tf.TensorSpec([], tf.float32),
    "span": tf.TensorSpec([2], tf.int32),
}

# Each family's text format: the fields its formatter produces.
TEXT_FIELDS = {
    "classification": ("text_a", "text_b", "label"),
    "regression": ("text_a", "text_b", "label"),
    "multiple_choice": ("context", "choices", "label"),
    "span": ("question", "context", "answer_start", "answer_text"),
    "summarization": ("document", "summary"),
}


def family_tokenizer(family: str) -> Callable[..., tf.data.Dataset]:
  """The seqio preprocessor of `family`: its text format to uniform examples."""
  encode, fields = encoding.ENCODERS[family], TEXT_FIELDS[family]

  def preprocess(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature],
                 sequence_length: Mapping[str, int]) -> tf.data.Dataset:
    vocabulary = output_features["inputs"].vocabulary

    def encode_record(*values):
      ex = encode(vocabulary, {k: np.asarray([v]) for k, v in zip(fields, values)},
                  sequence_length)
      starts = np.concatenate([[0], np.cumsum(ex.sequences)[:-1]]).astype(np.int64)
      per_example = (np.add.reduceat(ex.sequence_lengths, starts) if len(ex) else
                     np.zeros(0, np.int32))
      return (ex.tokens, np.asarray(per_example, np.int32), ex.sequence_lengths, ex.sequences,
              ex.targets, ex.target_lengths, ex.label, ex.score, ex.span.reshape(-1, 2))

    def examples(record):
      out = tf.numpy_function(encode_record, [record[k] for k in fields],
                              (tf.int32,) * 6 + (tf.int32, tf.float32, tf.int32),
                              stateful=False)
      for tensor, shape in zip(out, [[None]] * 8 + [[None, 2]]):
        tensor.set_shape(shape)
      tokens, per_example, lengths, sequences, targets, target_lengths, label, score, span = out
      return tf.data.Dataset.from_tensor_slices({
          "inputs": tf.RaggedTensor.from_row_lengths(tokens, per_example),
          "input_lengths": tf.RaggedTensor.from_row_lengths(lengths, sequences),
          "targets": tf.RaggedTensor.from_row_lengths(targets, target_lengths),
          "label": label, "score": score, "span": span})

    def dense(ex):
      return {k: v if isinstance(v, tf.Tensor) else v.to_tensor() for k, v in ex.items()}

    return dataset.flat_map(examples).map(dense)

  preprocess.__name__ = f"tokenize_{family}"
  return preprocess


FAMILY_TOKENIZERS = {family: family_tokenizer(family) for family in TEXT_FIELDS}
