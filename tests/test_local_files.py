"""Tasks from TSV and JSONL files, one per family."""

import json

import numpy as np
import pytest
import seqio

from muppet_jax.data.local_files import add_file_task
from muppet_jax.errors import UserError
from tasks import demo as demo_tasks

LENGTHS = {"inputs": 64, "targets": 16}


def _examples(name):
  task = seqio.get_mixture_or_task(name)
  return list(task.get_dataset(LENGTHS, split="train", shuffle=False, trim_output_features=False,
                               try_in_mem_cache=False).as_numpy_iterator())


def _decode(ids):
  return demo_tasks.VOCABULARY.tokenizer.decode(ids, skip_special_tokens=True)


def test_tsv_classification_with_pairs(tmp_path):
  (tmp_path / "train.tsv").write_text("text_a\ttext_b\tlabel\nthe cat\tthe dog\t1\nred\tblue\t0\n")
  task = add_file_task("file_tsv_pairs", "classification", num_classes=2,
                       train=str(tmp_path / "train.tsv"), vocabulary=demo_tasks.VOCABULARY)
  assert task.info.train_size == 2 and task.info.head == "task"
  out = _examples("file_tsv_pairs")
  assert [e["label"] for e in out] == [1, 0]
  assert _decode(out[0]["inputs"]) == "the catthe dog"


def test_tsv_single_text_regression(tmp_path):
  (tmp_path / "a.tsv").write_text("label\ttext_a\n2.5\tgood\n")
  add_file_task("file_tsv_reg", "regression", train=str(tmp_path / "*.tsv"),
                vocabulary=demo_tasks.VOCABULARY, train_size=100)
  (ex,) = _examples("file_tsv_reg")
  assert ex["score"] == pytest.approx(2.5) and ex["label"] == -1


def test_jsonl_multiple_choice_span_and_summarization(tmp_path):
  rows = {
      "mc": [{"context": "a lemon is", "choices": ["red", "yellow", "blue"], "label": 1}],
      "span": [{"question": "where ?", "context": "he lives in rome .", "answer_start": 12,
                "answer_text": "rome"}],
      "sum": [{"document": "anna bought pens at the market .", "summary": "anna bought pens"}],
  }
  for name, lines in rows.items():
    (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
  add_file_task("file_mc", "multiple_choice", num_classes=3, train=str(tmp_path / "mc.jsonl"),
                vocabulary=demo_tasks.VOCABULARY)
  add_file_task("file_span", "span", train=str(tmp_path / "span.jsonl"),
                vocabulary=demo_tasks.VOCABULARY)
  add_file_task("file_sum", "summarization", train=str(tmp_path / "sum.jsonl"),
                vocabulary=demo_tasks.VOCABULARY)
  (mc,) = _examples("file_mc")
  assert len(mc["input_lengths"]) == 3 and mc["label"] == 1
  seqs = np.split(mc["inputs"], np.cumsum(mc["input_lengths"])[:-1])
  assert _decode(seqs[1]).endswith("yellow")
  (span,) = _examples("file_span")
  assert _decode(span["inputs"][span["span"][0]:span["span"][1] + 1]).strip() == "rome"
  (summary,) = _examples("file_sum")
  assert _decode(summary["targets"]) == "anna bought pens"


def test_bad_files_are_clear_errors(tmp_path):
  with pytest.raises(UserError, match="no files match"):
    add_file_task("file_none", "classification", train=str(tmp_path / "x.tsv"),
                  vocabulary=demo_tasks.VOCABULARY)
  (tmp_path / "bad.tsv").write_text("sentence\tlabel\nhi\t1\n")
  with pytest.raises(UserError, match=r"missing \['text_a'\]"):
    add_file_task("file_bad", "classification", train=str(tmp_path / "bad.tsv"),
                  vocabulary=demo_tasks.VOCABULARY)
  with pytest.raises(UserError, match="unknown task family"):
    add_file_task("file_fam", "ranking", train=str(tmp_path / "bad.tsv"),
                  vocabulary=demo_tasks.VOCABULARY)
