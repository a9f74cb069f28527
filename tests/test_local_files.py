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
    add_file_task("file_none", "classification", num_classes=2, train=str(tmp_path / "x.tsv"),
                  vocabulary=demo_tasks.VOCABULARY)
  (tmp_path / "bad.tsv").write_text("sentence\tlabel\nhi\t1\n")
  with pytest.raises(UserError, match=r"missing \['text_a'\]"):
    add_file_task("file_bad", "classification", num_classes=2, train=str(tmp_path / "bad.tsv"),
                  vocabulary=demo_tasks.VOCABULARY)
  with pytest.raises(UserError, match="unknown task family"):
    add_file_task("file_fam", "ranking", train=str(tmp_path / "bad.tsv"),
                  vocabulary=demo_tasks.VOCABULARY)


def _read_all(task):
  return [b for b in task.text_blocks("train", LENGTHS, block_size=16)]


@pytest.mark.parametrize("family,classes,row,problem", [
    ("classification", 2, {"label": 1}, r"no 'text_a'; a classification row needs text_a, "
                                        r"text_b, label"),
    ("classification", 2, {"text_a": "hi", "label": 2},
     r"label 2 is not an integer in 0..1 \(2 classes\)"),
    ("classification", 2, {"text_a": "hi", "label": 0.5}, "label 0.5 is not an integer in 0..1"),
    ("classification", 2, {"text_a": "hi", "label": "pos"}, "label 'pos' is not a number"),
    ("regression", 1, {"text_a": "hi", "label": None}, "no 'label'"),
    ("multiple_choice", 3, {"context": "c", "choices": ["a", "b"], "label": 0},
     "choices must be a list of 3 texts"),
    ("multiple_choice", 2, {"context": "c", "choices": ["a", "b"], "label": 2},
     r"label 2 is not an integer in 0..1 \(2 choices\)"),
    ("span", 1, {"question": "q", "context": "c", "answer_text": "a"}, "no 'answer_start'"),
])
def test_a_bad_jsonl_row_is_one_line_naming_file_line_and_field(tmp_path, family, classes, row,
                                                                 problem):
  good = {"classification": {"text_a": "fine", "label": 0},
          "regression": {"text_a": "fine", "label": 0.5},
          "multiple_choice": {"context": "c", "choices": ["a"] * classes, "label": 0},
          "span": {"question": "q", "context": "c", "answer_start": 0, "answer_text": "c"}}
  path = tmp_path / "train.jsonl"
  path.write_text(json.dumps(good[family]) + "\n\n" + json.dumps(row) + "\n")
  with pytest.raises(UserError, match=f"^{path}, line 3: {problem}.*; fix or remove the row"):
    add_file_task(f"file_bad_{family}", family, num_classes=classes, train=str(path),
                  vocabulary=demo_tasks.VOCABULARY)  # Every row is checked here.


def test_tsv_rows_short_of_columns_and_files_with_their_own_column_order(tmp_path):
  (tmp_path / "a.tsv").write_text("text_a\tlabel\nfirst\t1\n")
  (tmp_path / "b.tsv").write_text("label\tother\ttext_a\n0\tx\tsecond\n\n1\ty\tthird\n")
  task = add_file_task("file_tsv_orders", "classification", num_classes=2,
                       train=str(tmp_path / "*.tsv"), vocabulary=demo_tasks.VOCABULARY)
  assert task.info.train_size == 3
  (block,) = _read_all(task)
  assert block["text_a"].tolist() == ["first", "second", "third"]
  assert block["label"].tolist() == [1, 0, 1] and block["text_b"].tolist() == [""] * 3
  (tmp_path / "b.tsv").write_text("label\tother\ttext_a\n0\tx\n")
  with pytest.raises(UserError, match=r"b.tsv, line 2: 2 tab-separated fields, the header "
                                      r"names 3; fix or remove the row"):
    _read_all(task)
  seqio.TaskRegistry.remove(task.name)
