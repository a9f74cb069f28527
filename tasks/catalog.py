"""The Muppet catalog: 46 datasets in four families, as seqio tasks over TensorFlow Datasets.

Each entry names the TFDS dataset (with the split names it has), a formatter from its real
feature spec to the family's text format (`muppet_jax.data.preprocessors`), and its TaskInfo.
Train sizes are those of the TFDS train splits (after the filters noted), so mixture rates are
known without downloading anything. Datasets without a TFDS builder come from TFDS's
`huggingface:` namespace (prepare with `tfds build huggingface:NAME`, which needs `datasets`).

The tokenizer is RoBERTa's byte-level BPE, which BART shares. `register_catalog` registers the
same tasks under another vocabulary (e.g. BERT's) with a name prefix.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import seqio
import tensorflow as tf

from muppet_jax.data.task_info import TaskInfo, add_task
from muppet_jax.data.vocabulary import HFVocabulary

DEFAULT_VOCABULARY = "roberta-large"
TRAIN_VALIDATION = {"train": "train", "validation": "validation"}
TRAIN_TEST = {"train": "train", "validation": "test"}  # No public validation split.

Formatter = Callable[[tf.data.Dataset], tf.data.Dataset]


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
  name: str
  tfds: tuple[str, ...]  # One or more TFDS datasets (configs), concatenated.
  splits: dict[str, str]
  formatter: Formatter
  info: TaskInfo


def _map(fn: Callable[[dict], dict], keep: Callable[[dict], tf.Tensor] | None = None) -> Formatter:
  def formatter(dataset: tf.data.Dataset) -> tf.data.Dataset:
    # The formatters are plain tensor code: autograph has nothing to convert.
    if keep is not None:
      dataset = dataset.filter(tf.autograph.experimental.do_not_convert(keep))
    return dataset.map(tf.autograph.experimental.do_not_convert(fn),
                       num_parallel_calls=tf.data.AUTOTUNE)

  return formatter


def pair(a: str, b: str | None = None, label: str = "label") -> Formatter:
  """Classification or regression on one text field or a pair of them."""
  return _map(lambda ex: {"text_a": ex[a], "text_b": ex[b] if b else tf.constant(""),
                          "label": ex[label]})


def _join(*parts) -> tf.Tensor:
  return tf.strings.join(list(parts))


def _index_of(values: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.argmax(tf.cast(tf.equal(values, value), tf.int32)), tf.int64)


def _has(values: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
  return tf.reduce_any(tf.equal(values, value))


# Classification and regression (26).
_CLASSIFICATION = [
    ("glue_cola", "glue/cola:2.0.0", pair("sentence"), 2, 8551),
    ("glue_sst2", "glue/sst2:2.0.0", pair("sentence"), 2, 67349),
    ("glue_mrpc", "glue/mrpc:2.0.0", pair("sentence1", "sentence2"), 2, 3668),
    ("glue_qqp", "glue/qqp:2.0.0", pair("question1", "question2"), 2, 363846),
    ("glue_stsb", "glue/stsb:2.0.0", pair("sentence1", "sentence2"), 1, 5749),
    ("glue_mnli", "glue/mnli:2.0.0", pair("premise", "hypothesis"), 3, 392702),
    ("glue_qnli", "glue/qnli:2.0.0", pair("question", "sentence"), 2, 104743),
    ("glue_rte", "glue/rte:2.0.0", pair("sentence1", "sentence2"), 2, 2490),
    ("glue_wnli", "glue/wnli:2.0.0", pair("sentence1", "sentence2"), 2, 635),
    ("super_glue_boolq", "super_glue/boolq:1.0.2", pair("question", "passage"), 2, 9427),
    ("super_glue_cb", "super_glue/cb:1.0.2", pair("premise", "hypothesis"), 3, 250),
    ("super_glue_wic", "super_glue/wic:1.0.2",
     _map(lambda ex: {"text_a": _join(ex["word"], ": ", ex["sentence1"]),
                      "text_b": ex["sentence2"], "label": ex["label"]}), 2, 5428),
    ("super_glue_multirc", "super_glue/multirc:1.0.2",
     _map(lambda ex: {"text_a": ex["paragraph"],
                      "text_b": _join(ex["question"], " ", ex["answer"]), "label": ex["label"]}),
     2, 27243),
    ("anli_r1", "anli/r1:0.1.0", pair("context", "hypothesis"), 3, 16946),
    ("anli_r2", "anli/r2:0.1.0", pair("context", "hypothesis"), 3, 45460),
    ("anli_r3", "anli/r3:0.1.0", pair("context", "hypothesis"), 3, 100459),
    # SNLI marks examples without a gold label with -1.
    ("snli", "snli:1.1.0", _map(lambda ex: {"text_a": ex["premise"], "text_b": ex["hypothesis"],
                                      "label": ex["label"]}, keep=lambda ex: ex["label"] >= 0),
     3, 549367),
    ("imdb", "imdb_reviews:1.0.0", pair("text"), 2, 25000),
    ("yelp_polarity", "yelp_polarity_reviews:0.2.0", pair("text"), 2, 560000),
    ("ag_news", "ag_news_subset:1.0.0", pair("title", "description"), 4, 120000),
    ("trec", "trec:1.0.0", pair("text", label="label-coarse"), 6, 5452),
    ("scitail", "sci_tail:1.0.0", pair("premise", "hypothesis"), 2, 23596),
    ("paws", "paws_wiki:1.1.0", pair("sentence1", "sentence2"), 2, 49401),
    # Polarity is 0 (negative) or 4 (positive); the few neutral (2) test tweets are dropped.
    ("sentiment140", "sentiment140:1.0.0",
     _map(lambda ex: {"text_a": ex["text"], "text_b": tf.constant(""),
                      "label": tf.cast(ex["polarity"] // 4, tf.int64)},
          keep=lambda ex: tf.not_equal(ex["polarity"], 2)), 2, 1600000),
    # Toxic when at least half of the raters said so (the usual binarization).
    ("civil_comments", "civil_comments:1.2.4",
     _map(lambda ex: {"text_a": ex["text"], "text_b": tf.constant(""),
                      "label": tf.cast(ex["toxicity"] >= 0.5, tf.int64)}), 2, 1804874),
    ("dbpedia14", "huggingface:dbpedia_14/dbpedia_14:2.0.0", pair("title", "content"), 14, 560000),
]
_SPLITS = {"glue_mnli": {"train": "train", "validation": "validation_matched"}}
_NO_VALIDATION = {"imdb", "yelp_polarity", "ag_news", "trec", "sentiment140", "dbpedia14"}


def _choices(context_fn, choices_fn, label_fn, keep=None) -> Formatter:
  return _map(lambda ex: {"context": context_fn(ex), "choices": choices_fn(ex),
                          "label": label_fn(ex)}, keep)


def _keyed_choices(n: int) -> Formatter:
  """question, choices {label, text}, answerKey naming the right choice's label; questions
  without exactly `n` choices (or whose key names none of them) are dropped."""
  return _choices(lambda ex: ex["question"], lambda ex: ex["choices"]["text"],
                  lambda ex: _index_of(ex["choices"]["label"], ex["answerKey"]),
                  keep=lambda ex: tf.logical_and(tf.size(ex["choices"]["text"]) == n,
                                                 _has(ex["choices"]["label"], ex["answerKey"])))


def _around_blank(sentence: tf.Tensor) -> tf.Tensor:
  """[text before the blank "_", text after it]."""
  return tf.strings.split(sentence, "_", maxsplit=1)


def _race(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """One example per question of an article."""
  def per_question(ex):
    n = tf.shape(ex["questions"])[0]
    return tf.data.Dataset.from_tensor_slices({
        "context": tf.repeat(ex["article"], n),
        "choices": tf.strings.join([tf.repeat(ex["questions"][:, None], 4, axis=1), " ",
                                    ex["options"].to_tensor() if isinstance(
                                        ex["options"], tf.RaggedTensor) else ex["options"]]),
        "label": tf.argmax(tf.cast(tf.equal(ex["answers"][:, None], [["A", "B", "C", "D"]]),
                                   tf.int32), axis=1),
    })
  return dataset.flat_map(per_question)


# Commonsense multiple choice (10).
_MULTIPLE_CHOICE = [
    ("hellaswag", ("hellaswag:1.1.0",), TRAIN_VALIDATION,
     _choices(lambda ex: ex["context"], lambda ex: ex["endings"], lambda ex: ex["label"],
              keep=lambda ex: tf.size(ex["endings"]) == 4), 4, 39905),
    ("cosmos_qa", ("cosmos_qa:1.0.0",), TRAIN_VALIDATION,
     _choices(lambda ex: _join(ex["context"], " ", ex["question"]),
              lambda ex: tf.stack([ex[f"answer{i}"] for i in range(4)]),
              lambda ex: ex["label"]), 4, 25262),
    ("piqa", ("piqa:1.0.0",), TRAIN_VALIDATION,
     _choices(lambda ex: ex["goal"], lambda ex: tf.stack([ex["sol1"], ex["sol2"]]),
              lambda ex: ex["label"]), 2, 16113),
    ("openbookqa", ("openbookqa:0.1.0",), TRAIN_VALIDATION,
     _choices(lambda ex: ex["question"]["stem"],
              lambda ex: tf.stack([ex["question"][f"choice_{c}"] for c in "ABCD"]),
              lambda ex: ex["answerKey"]), 4, 4957),
    # The blank "_" is filled with each option: context = text before it, choice = option + rest.
    ("winogrande", ("winogrande:1.2.0",), {"train": "train_xl", "validation": "validation"},
     _choices(lambda ex: _around_blank(ex["sentence"])[0],
              lambda ex: tf.stack([_join(ex["option1"], _around_blank(ex["sentence"])[1]),
                                   _join(ex["option2"], _around_blank(ex["sentence"])[1])]),
              lambda ex: ex["label"]), 2, 40398),
    # ARC-Easy and ARC-Challenge together; the ~1% of questions without exactly 4 choices dropped.
    ("arc", ("ai2_arc/ARC-Easy:1.0.0", "ai2_arc/ARC-Challenge:1.0.0"), TRAIN_VALIDATION,
     _keyed_choices(4), 4, 3347),
    ("qasc", ("qasc:0.1.0",), TRAIN_VALIDATION, _keyed_choices(8), 8, 8134),
    # CoS-E carries the CommonsenseQA questions; the answer is given as text.
    ("commonsense_qa", ("cos_e:0.0.1",), TRAIN_VALIDATION,
     _choices(lambda ex: ex["question"], lambda ex: ex["choices"],
              lambda ex: _index_of(ex["choices"], ex["answer"]),
              keep=lambda ex: tf.logical_and(tf.size(ex["choices"]) == 5,
                                             _has(ex["choices"], ex["answer"]))), 5, 9741),
    ("copa", ("super_glue/copa:1.0.2",), TRAIN_VALIDATION,
     _choices(lambda ex: _join(ex["premise"], " What was the ", ex["question"], "?"),
              lambda ex: tf.stack([ex["choice1"], ex["choice2"]]), lambda ex: ex["label"]),
     2, 400),
    ("race", ("race/high:2.0.0", "race/middle:2.0.0"), {"train": "train", "validation": "dev"}, _race, 4,
     87866),
]


def _squad(ex):
  return {"question": ex["question"], "context": ex["context"],
          "answer_start": tf.cast(ex["answers"]["answer_start"][0], tf.int64),
          "answer_text": ex["answers"]["text"][0]}


def _mrqa(ex):
  """The first detected answer's first character span (MRQA's `end` is inclusive)."""
  spans = ex["detected_answers"]["char_spans"]
  start = tf.cast(spans["start"][0][0], tf.int64)
  end = tf.cast(spans["end"][0][0], tf.int64)
  return {"question": ex["question"], "context": ex["context"], "answer_start": start,
          "answer_text": tf.strings.substr(ex["context"], start, end - start + 1)}


# Extractive reading comprehension (6).
_SPAN = [
    ("squad", "squad/v1.1:3.0.0", _map(_squad), 87599),
    ("newsqa", "mrqa/news_qa:1.0.0", _map(_mrqa), 74160),
    ("triviaqa", "mrqa/trivia_qa:1.0.0", _map(_mrqa), 61688),
    ("searchqa", "mrqa/search_qa:1.0.0", _map(_mrqa), 117384),
    ("hotpotqa", "mrqa/hotpot_qa:1.0.0", _map(_mrqa), 72928),
    ("natural_questions", "mrqa/natural_questions:1.0.0", _map(_mrqa), 104071),
]


def _summary(document: str, summary: str) -> Formatter:
  return _map(lambda ex: {"document": ex[document], "summary": ex[summary]})


# Summarization (4), BART only.
_SUMMARIZATION = [
    ("cnn_dailymail", "cnn_dailymail:3.4.0", TRAIN_VALIDATION, _summary("article", "highlights"),
     287113),
    ("gigaword", "gigaword:1.2.0", TRAIN_VALIDATION, _summary("document", "summary"), 3803957),
    # Reddit TIFU has only a train split: the last 5% serve as validation.
    ("reddit_tifu", "reddit_tifu/long:1.1.2", {"train": "train[:95%]", "validation": "train[95%:]"},
     _summary("documents", "tldr"), 40032),
    ("aeslc", "aeslc:1.0.0", TRAIN_VALIDATION, _summary("email_body", "subject_line"), 14436),
]


# GLUE's own metrics where they aren't plain accuracy.
_METRICS = {"glue_cola": ("matthews", "accuracy"), "glue_mrpc": ("f1", "accuracy"),
            "glue_qqp": ("f1", "accuracy"), "super_glue_multirc": ("f1", "accuracy")}


def entries() -> list[CatalogEntry]:
  out = []
  for name, tfds_name, formatter, classes, size in _CLASSIFICATION:
    family = "regression" if name == "glue_stsb" else "classification"
    splits = _SPLITS.get(name, TRAIN_TEST if name in _NO_VALIDATION else TRAIN_VALIDATION)
    out.append(CatalogEntry(name, (tfds_name,), splits, formatter,
                            TaskInfo(family, classes, size, metrics=_METRICS.get(name, ()),
                                     description=tfds_name)))
  for name, tfds_names, splits, formatter, choices, size in _MULTIPLE_CHOICE:
    out.append(CatalogEntry(name, tfds_names, splits, formatter,
                            TaskInfo("multiple_choice", choices, size,
                                     description=", ".join(tfds_names))))
  for name, tfds_name, formatter, size in _SPAN:
    out.append(CatalogEntry(name, (tfds_name,), TRAIN_VALIDATION, formatter,
                            TaskInfo("span", 1, size, description=tfds_name)))
  for name, tfds_name, splits, formatter, size in _SUMMARIZATION:
    out.append(CatalogEntry(name, (tfds_name,), splits, formatter,
                            TaskInfo("summarization", 1, size, description=tfds_name)))
  return out


class ConcatTfdsSource(seqio.FunctionDataSource):
  """Several TFDS configs read as one task (ARC Easy + Challenge, RACE high + middle)."""

  def __init__(self, names: tuple[str, ...], splits: dict[str, str]):
    self.sources = [seqio.TfdsDataSource(tfds_name=n, splits=splits) for n in names]
    super().__init__(self._dataset, splits=list(splits))

  def _dataset(self, split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    datasets = [s.get_dataset(split, shuffle=shuffle_files, seed=seed) for s in self.sources]
    out = datasets[0]
    for ds in datasets[1:]:
      out = out.concatenate(ds)
    return out


def register_catalog(vocabulary: HFVocabulary, prefix: str = "") -> list[str]:
  """Registers every catalog task as `prefix + name`; returns the names."""
  names = []
  for entry in entries():
    source = (seqio.TfdsDataSource(tfds_name=entry.tfds[0], splits=entry.splits)
              if len(entry.tfds) == 1 else ConcatTfdsSource(entry.tfds, entry.splits))
    add_task(prefix + entry.name, source, entry.formatter, entry.info, vocabulary)
    names.append(prefix + entry.name)
  return names


TASKS = register_catalog(HFVocabulary(DEFAULT_VOCABULARY))
