"""Tokenization of whole blocks of records by family, in the Rust tokenizer, into `Examples`.

A record is one example in its family's text format (see `preprocessors`); encoding a block of
them is one `encode_batch` call, which tokenizes on all cores with the GIL released, on the
calling thread's own copy of the tokenizer (`HFVocabulary.backend`), so no lock is needed.

`Examples` holds a block columnar (flat token arrays with lengths), which is what the token cache
stores, what the block shuffle permutes, and what the packer slices from.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tokenizers

from muppet_jax.data.vocabulary import HFVocabulary

SPAN_STRIDE = 128
# Bump when the encoders below change what they produce: token caches record it.
ENCODER_VERSION = 1

Columns = Mapping[str, np.ndarray]


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """Concatenation of arange(s, s + n) for each (s, n)."""
  lengths = np.asarray(lengths, np.int64)
  total = int(lengths.sum())
  if total == 0:
    return np.zeros(0, np.int64)
  offsets = np.cumsum(lengths) - lengths
  return np.repeat(np.asarray(starts, np.int64) - offsets, lengths) + np.arange(total)


def _offsets(lengths: np.ndarray) -> np.ndarray:
  return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])


def _flat(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
  lengths = np.fromiter(map(len, rows), np.int32, count=len(rows))
  tokens = np.fromiter(itertools.chain.from_iterable(rows), np.int32, count=int(lengths.sum()))
  return tokens, lengths


@dataclasses.dataclass(frozen=True)
class Examples:
  """A block of tokenized examples, columnar.

  tokens           int32[N]  every input sequence of every example, concatenated
  sequence_lengths int32[Q]  length of each sequence
  sequences        int32[E]  sequences per example (1, or the number of choices)
  targets          int32[M]  every example's summary tokens, concatenated
  target_lengths   int32[E]
  label int32[E], score float32[E], span int32[E, 2]: as in `preprocessors`
  per_record       int32[R]  examples made from each record (span windows: 0 or more)
  """

  tokens: np.ndarray
  sequence_lengths: np.ndarray
  sequences: np.ndarray
  targets: np.ndarray
  target_lengths: np.ndarray
  label: np.ndarray
  score: np.ndarray
  span: np.ndarray
  per_record: np.ndarray

  FIELDS = ("tokens", "sequence_lengths", "sequences", "targets", "target_lengths", "label",
            "score", "span", "per_record")

  @classmethod
  def build(cls, sequences: Sequence[Sequence[int]], per_example: Sequence[int],
            targets: Sequence[Sequence[int]] | None = None, label: Any = None, score: Any = None,
            span: Any = None, per_record: Any = None) -> Examples:
    tokens, lengths = _flat(sequences)
    n = len(per_example)
    target_tokens, target_lengths = _flat(targets) if targets is not None else (
        np.zeros(0, np.int32), np.zeros(n, np.int32))
    return cls(tokens, lengths, np.asarray(per_example, np.int32), target_tokens,
               target_lengths,
               np.full(n, -1, np.int32) if label is None else np.asarray(label, np.int32),
               np.zeros(n, np.float32) if score is None else np.asarray(score, np.float32),
               np.full((n, 2), -1, np.int32) if span is None else
               np.asarray(span, np.int32).reshape(n, 2),
               np.ones(n, np.int32) if per_record is None else np.asarray(per_record, np.int32))

  @classmethod
  def concatenate(cls, blocks: Sequence[Examples]) -> Examples:
    return cls(*(np.concatenate([getattr(b, f) for b in blocks]) for f in cls.FIELDS))

  def __len__(self) -> int:
    return len(self.sequences)

  def take(self, index: np.ndarray) -> Examples:
    """The examples at `index`, in that order (each one then counts as its own record)."""
    index = np.asarray(index, np.int64)
    sequence_index = ranges(_offsets(self.sequences)[index], self.sequences[index])
    lengths = self.sequence_lengths[sequence_index]
    tokens = self.tokens[ranges(_offsets(self.sequence_lengths)[sequence_index], lengths)]
    target_lengths = self.target_lengths[index]
    targets = self.targets[ranges(_offsets(self.target_lengths)[index], target_lengths)]
    return Examples(tokens, lengths, self.sequences[index], targets, target_lengths,
                    self.label[index], self.score[index], self.span[index],
                    np.ones(len(index), np.int32))

  def select_records(self, index: np.ndarray) -> Examples:
    """The examples of the records at `index`, in that order, with their record structure."""
    index = np.asarray(index, np.int64)
    part = self.take(ranges(_offsets(self.per_record)[index], self.per_record[index]))
    return dataclasses.replace(part, per_record=np.asarray(self.per_record[index], np.int32))

  def rows(self, task: int) -> list[tuple]:
    """One tuple per example, for the packer: (task, sequence lengths, token array, offset of
    the example's first token in it, target array, offset, target length, label, score, span
    start, span end). The arrays are the block's own, shared by all its rows."""
    if not len(self):
      return []
    starts = _offsets(self.sequences)
    example_tokens = np.add.reduceat(self.sequence_lengths.astype(np.int64), starts[:-1])
    token_starts = (np.cumsum(example_tokens) - example_tokens).tolist()
    target_starts = (np.cumsum(self.target_lengths) - self.target_lengths).tolist()
    lengths, starts = self.sequence_lengths.tolist(), starts.tolist()
    tokens, targets = self.tokens, self.targets
    if len(lengths) == len(self):  # One sequence per example: the common case, made quickly.
      per_example = [(n,) for n in lengths]
    else:
      per_example = [tuple(lengths[a:b]) for a, b in zip(starts[:-1], starts[1:])]
    return [(task, ls, tokens, t0, targets, g0, gn, label, score, s0, s1)
            for ls, t0, g0, gn, label, score, (s0, s1) in zip(
                per_example, token_starts, target_starts, self.target_lengths.tolist(),
                self.label.tolist(), self.score.tolist(), self.span.tolist())]


def _encode(tokenizer: tokenizers.Tokenizer, inputs: list) -> list[list[int]]:
  """Token ids of each input (a text or a pair); without the character offsets, which only
  span windows need."""
  fast = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
  return [e.ids for e in fast(inputs)]


def _text(x: Any) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def _texts(column: np.ndarray) -> list[str]:
  return [_text(x) for x in column.tolist()]


def encode_classification(vocabulary: HFVocabulary, columns: Columns,
                          lengths: Mapping[str, int]) -> Examples:
  """text_a, text_b ("" for single texts), label (int; float for regression). Pairs are
  truncated longest-first."""
  pairs = [(a, b) if b else a for a, b in zip(_texts(columns["text_a"]),
                                              _texts(columns["text_b"]))]
  ids = _encode(vocabulary.backend(lengths["inputs"]), pairs)
  label = np.asarray(columns["label"])
  if np.issubdtype(label.dtype, np.floating):  # Regression: the label is the score.
    return Examples.build(ids, [1] * len(ids), score=label)
  return Examples.build(ids, [1] * len(ids), label=label)


def encode_multiple_choice(vocabulary: HFVocabulary, columns: Columns,
                           lengths: Mapping[str, int]) -> Examples:
  """context, choices[k], label: k sequences `context + choice`, one example."""
  contexts = _texts(columns["context"])
  choices = [_texts(np.asarray(c)) for c in columns["choices"]]
  pairs = [(context, choice) for context, row in zip(contexts, choices) for choice in row]
  ids = _encode(vocabulary.backend(lengths["inputs"]), pairs)
  return Examples.build(ids, [len(row) for row in choices], label=columns["label"])


def _span_window(encoding: tokenizers.Encoding, answer_start: int,
                 answer_end: int) -> tuple[int, int] | None:
  """(start, end) token positions of the answer in this window; None if not wholly inside."""
  sequence_ids = np.asarray([-1 if s is None else s for s in encoding.sequence_ids])
  context = np.flatnonzero(sequence_ids == 1)
  if answer_start < 0 or not len(context):
    return None
  offsets = np.asarray(encoding.offsets)[context]
  if offsets[0, 0] > answer_start or offsets[-1, 1] < answer_end:
    return None
  start = context[np.argmax(offsets[:, 1] > answer_start)]
  end = context[len(context) - 1 - np.argmax(offsets[::-1, 0] < answer_end)]
  return int(start), int(end)


def encode_span(vocabulary: HFVocabulary, columns: Columns,
                lengths: Mapping[str, int]) -> Examples:
  """question, context, answer_start (characters), answer_text: one example per doc-stride
  window of the context (overlap SPAN_STRIDE tokens) that holds the whole answer."""
  max_length = lengths["inputs"]
  tok = vocabulary.backend(max_length, "only_second", min(SPAN_STRIDE, max_length // 4))
  encodings = tok.encode_batch(list(zip(_texts(columns["question"]),
                                        _texts(columns["context"]))))
  ids, spans, per_record = [], [], []
  for encoding, start, text in zip(encodings, columns["answer_start"].tolist(),
                                   _texts(columns["answer_text"])):
    kept = 0
    for window in [encoding, *encoding.overflowing]:
      span = _span_window(window, int(start), int(start) + len(text))
      if span is not None:
        ids.append(window.ids)
        spans.append(span)
        kept += 1
    per_record.append(kept)
  return Examples.build(ids, [1] * len(ids), span=spans, per_record=per_record)


def encode_summarization(vocabulary: HFVocabulary, columns: Columns,
                         lengths: Mapping[str, int]) -> Examples:
  """document, summary: inputs `<s> document </s>`, targets `<s> summary </s>`."""
  documents = _encode(vocabulary.backend(lengths["inputs"]), _texts(columns["document"]))
  summaries = _encode(vocabulary.backend(lengths.get("targets", 128)),
                      _texts(columns["summary"]))
  return Examples.build(documents, [1] * len(documents), targets=summaries)


ENCODERS: dict[str, Callable[[HFVocabulary, Columns, Mapping[str, int]], Examples]] = {
    "classification": encode_classification,
    "regression": encode_classification,
    "multiple_choice": encode_multiple_choice,
    "span": encode_span,
    "summarization": encode_summarization,
}
