"""Block encoders against the transformers tokenizer's own call (truncation, pairs, doc-stride
windows with offsets), for RoBERTa's byte-level BPE and BERT's WordPiece; and no race between
threads that truncate differently."""

import concurrent.futures

import numpy as np
import pytest

from muppet_jax.data import demo, encoding
from muppet_jax.data.vocabulary import HFVocabulary
from tasks import demo as demo_tasks
from tests import hf_fixtures

RNG = np.random.default_rng(0)
WORDS = demo.NAMES + demo.CITIES + demo.ITEMS + demo.PLACES + demo.WEATHER


def _text(n: int) -> str:
  return " ".join(RNG.choice(WORDS, n))


@pytest.fixture(scope="module", params=["roberta", "bert"])
def vocab(request, tmp_path_factory):
  if request.param == "roberta":
    return demo_tasks.VOCABULARY
  path = tmp_path_factory.mktemp("bert_tokenizer")
  hf_fixtures.save_tokenizer("bert", path)
  return HFVocabulary(path)


def _hf(vocab, *texts, **kwargs):
  return vocab.tokenizer(*texts, **kwargs)


def test_pairs_and_single_texts_truncate_like_transformers(vocab):
  a = [_text(int(n)) for n in RNG.integers(1, 40, 64)]
  b = [_text(int(n)) if i % 3 else "" for i, n in enumerate(RNG.integers(1, 40, 64))]
  got = encoding.encode_classification(
      vocab, {"text_a": np.asarray(a, object), "text_b": np.asarray(b, object),
              "label": np.arange(64) % 3}, {"inputs": 24})
  rows = got.rows(0)
  for (x, y), row in zip(zip(a, b), rows):
    want = _hf(vocab, x, y or None, truncation="longest_first" if y else True,
               max_length=24)["input_ids"]
    assert row[2][row[3]:row[3] + row[1][0]].tolist() == want
  assert got.label.tolist() == (np.arange(64) % 3).tolist()
  assert any(len(r) == 1 and r[0] == 24 for r in (row[1] for row in rows))  # Some truncated.


def test_regression_labels_become_scores(vocab):
  got = encoding.encode_classification(
      vocab, {"text_a": np.asarray(["a b", "c"], object), "text_b": np.asarray(["", ""], object),
              "label": np.asarray([0.5, 4.0], np.float32)}, {"inputs": 16})
  assert got.score.tolist() == [0.5, 4.0] and got.label.tolist() == [-1, -1]


def test_choices_are_context_choice_pairs(vocab):
  contexts = [_text(30), _text(5)]
  choices = [[_text(3), _text(12), _text(1)], [_text(2), _text(2), _text(40)]]
  got = encoding.encode_multiple_choice(
      vocab, {"context": np.asarray(contexts, object), "choices": np.asarray(choices, object),
              "label": np.asarray([2, 0])}, {"inputs": 20})
  assert got.sequences.tolist() == [3, 3] and got.label.tolist() == [2, 0]
  for context, row_choices, row in zip(contexts, choices, got.rows(0)):
    offset = row[3]
    for choice, length in zip(row_choices, row[1]):
      want = _hf(vocab, context, choice, truncation="longest_first", max_length=20)["input_ids"]
      assert row[2][offset:offset + length].tolist() == want
      offset += length


def _reference_windows(vocab, question, context, start, answer, max_length):
  """The doc-stride windows holding the answer, from transformers' overflow and offsets."""
  enc = _hf(vocab, question, context, truncation="only_second", max_length=max_length,
            stride=min(encoding.SPAN_STRIDE, max_length // 4), return_overflowing_tokens=True,
            return_offsets_mapping=True)
  windows = []
  for w, ids in enumerate(enc["input_ids"]):
    offsets, seq = enc["offset_mapping"][w], enc.sequence_ids(w)
    context_tokens = [i for i, s in enumerate(seq) if s == 1]
    first, last = context_tokens[0], context_tokens[-1]
    if offsets[first][0] > start or offsets[last][1] < start + len(answer):
      continue
    s = next(i for i in context_tokens if offsets[i][1] > start)
    e = next(i for i in reversed(context_tokens) if offsets[i][0] < start + len(answer))
    windows.append((ids, s, e))
  return windows


def test_span_windows_match_transformers_overflow(vocab):
  questions, contexts, starts, answers = [], [], [], []
  for n in RNG.integers(5, 60, 24):
    words = list(RNG.choice(WORDS, int(n)))
    k = int(RNG.integers(0, len(words) - 1))
    answer = " ".join(words[k:k + 2])
    context = " ".join(words)
    questions.append(_text(3))
    contexts.append(context)
    starts.append(len(" ".join(words[:k])) + (1 if k else 0))
    answers.append(answer)
  got = encoding.encode_span(
      vocab, {"question": np.asarray(questions, object), "context": np.asarray(contexts, object),
              "answer_start": np.asarray(starts), "answer_text": np.asarray(answers, object)},
      {"inputs": 24})
  want = [w for args in zip(questions, contexts, starts, answers)
          for w in _reference_windows(vocab, *args, 24)]
  assert [(r[2][r[3]:r[3] + r[1][0]].tolist(), r[9], r[10]) for r in got.rows(0)] == want
  assert got.per_record.sum() == len(want) and (got.per_record > 1).any()


def test_summaries_truncate_documents_and_targets_separately(vocab):
  docs, sums = [_text(50), _text(4)], [_text(30), _text(2)]
  got = encoding.encode_summarization(
      vocab, {"document": np.asarray(docs, object), "summary": np.asarray(sums, object)},
      {"inputs": 32, "targets": 10})
  for doc, summary, row in zip(docs, sums, got.rows(0)):
    assert row[2][row[3]:row[3] + row[1][0]].tolist() == _hf(
        vocab, doc, truncation=True, max_length=32)["input_ids"]
    assert row[4][row[5]:row[5] + row[6]].tolist() == _hf(
        vocab, summary, truncation=True, max_length=10)["input_ids"]


def test_threads_truncating_differently_do_not_race(vocab):
  """Each thread has its own tokenizer copies: a shared one's truncation setting would leak
  from one thread's call into another's."""
  texts = np.asarray([_text(60) for _ in range(256)], object)
  columns = {"text_a": texts, "text_b": np.asarray([""] * 256, object),
             "label": np.zeros(256, int)}

  def lengths(max_length):
    return set(encoding.encode_classification(vocab, columns,
                                              {"inputs": max_length}).sequence_lengths.tolist())

  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    results = list(pool.map(lengths, [8, 40] * 20))
  assert all(r == {8} for r in results[::2]) and all(r == {40} for r in results[1::2])


def test_take_and_select_records_keep_examples_whole(vocab):
  got = encoding.encode_multiple_choice(
      vocab, {"context": np.asarray(["a", "b c", "d e f"], object),
              "choices": np.asarray([["x", "y"], ["z", "w w"], ["v", "u u u"]], object),
              "label": np.asarray([0, 1, 0])}, {"inputs": 16})
  rows = got.rows(0)
  picked = got.take(np.asarray([2, 0])).rows(0)
  for a, b in zip(picked, [rows[2], rows[0]]):
    assert a[1] == b[1] and a[7] == b[7]
    assert a[2][a[3]:a[3] + sum(a[1])].tolist() == b[2][b[3]:b[3] + sum(b[1])].tolist()
  assert got.select_records(np.asarray([1])).label.tolist() == [1]
