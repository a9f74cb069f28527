"""Rows of your own data that don't fit their task: with `data.bad_rows=error` the run stops at
start with one line naming the file and line; with `skip` they are left out, counted per task in
the start-up log and the metrics. A label outside its task's classes never reaches the loss."""

import json
import os
import pathlib
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import tensorflow as tf

from configs import prefinetune
from muppet_jax import inputs, losses, progress
from muppet_jax.data import batching, demo, records, rows, tasks_file, token_cache
from muppet_jax.data.local_files import add_file_task
from muppet_jax.data.task_info import TaskInfo, add_task, get_task
from muppet_jax.errors import UserError
from muppet_jax.models.heads import HeadOutputs
from tasks import demo as demo_tasks
from tests import run_helpers

ROOT = pathlib.Path(__file__).parent.parent
FIX = r"; fix or remove the row \(data.bad_rows=skip leaves bad rows out\)$"
SPAN = {"question": "where?", "context": "he lives in rome"}


@pytest.mark.parametrize("family,classes,labels,row,expected", [
    ("classification", 2, (), {"text_a": "hi", "label": "1"}, {"label": 1, "text_b": ""}),
    ("classification", 2, (), {"text_a": "hi", "text_b": " ", "label": 0}, {"text_b": " "}),
    ("classification", 2, (), {"label": 1}, "no 'text_a'; a classification row needs text_a"),
    ("classification", 2, (), {"text_a": None, "label": 1}, "no 'text_a'"),
    ("classification", 2, (), {"text_a": " \t", "label": 1}, "empty 'text_a'$"),
    ("classification", 2, (), {"text_a": "hi", "label": "7"},
     r"^label '7' is not an integer in 0..1 \(2 classes\)$"),
    ("classification", 2, (), {"text_a": "hi", "label": -1}, "label -1 is not an integer in 0..1"),
    ("classification", 2, (), {"text_a": "hi", "label": "1.5"}, "label '1.5' is not an integer"),
    ("classification", 2, (), {"text_a": "hi", "label": "abc"}, "^label 'abc' is not a number$"),
    ("classification", 2, (), {"text_a": "hi", "label": ""}, "^label '' is not a number$"),
    ("classification", 2, ("neg", "pos"), {"text_a": "hi", "label": "pos"}, {"label": 1}),
    ("classification", 2, ("neg", "pos"), {"text_a": "hi", "label": "Pos"},
     r"^label 'Pos' is not one of \['neg', 'pos'\] or an integer in 0..1 \(2 classes\)$"),
    ("regression", 1, (), {"text_a": "hi", "label": "2.5"}, {"label": 2.5}),
    ("regression", 1, (), {"text_a": "hi", "label": "nan"}, "^label nan is not a finite number$"),
    ("regression", 1, (), {"text_a": "hi", "label": "inf"}, "label inf is not a finite number"),
    ("multiple_choice", 2, (), {"context": "c", "choices": ["a", "b"], "label": 1}, {"label": 1}),
    ("multiple_choice", 2, (), {"context": "c", "choices": ["a", ""], "label": 0},
     "^choice 1 is empty$"),
    ("multiple_choice", 2, (), {"context": "c", "choices": ["a", "b"], "label": 2},
     r"label 2 is not an integer in 0..1 \(2 choices\)"),
    ("span", 1, (), {**SPAN, "answer_start": 12, "answer_text": "rome"}, {"answer_start": 12}),
    ("span", 1, (), {**SPAN, "answer_start": "3", "answer_text": "rome"},
     r"^answer_text 'rome' is not the context's text at answer_start 3 \('live'\)$"),
    ("span", 1, (), {**SPAN, "answer_start": 14, "answer_text": "rome"},
     r"^answer_start 14 with answer_text 'rome' is outside the context \(16 characters\)$"),
    ("span", 1, (), {**SPAN, "answer_start": -1, "answer_text": "he"}, "outside the context"),
    ("span", 1, (), {**SPAN, "answer_start": 0, "answer_text": ""}, "^empty 'answer_text'$"),
    ("span", 1, (), {**SPAN, "answer_start": 1.5, "answer_text": "e"},
     "answer_start 1.5 is not an integer"),
    ("summarization", 1, (), {"document": "a text", "summary": "short"}, {"summary": "short"}),
    ("summarization", 1, (), {"document": "a text", "summary": ""}, "^empty 'summary'$"),
    ("summarization", 1, (), {"document": "", "summary": "s"}, "^empty 'document'$"),
])
def test_row_checks(family, classes, labels, row, expected):
  parse = rows.row_parser(family, classes, labels=labels)
  if isinstance(expected, str):
    with pytest.raises(ValueError, match=expected):
      parse(row)
  else:
    record = parse(row)
    assert {k: record[k] for k in expected} == expected


@pytest.mark.parametrize("name,content,problem", [
    ("short.tsv", "text_a\tlabel\nhi\t1\noops\n",
     "line 3: 1 tab-separated fields, the header names 2"),
    ("long.tsv", "text_a\tlabel\nhi\t1\n\na\tb\t1\n",
     "line 4: 3 tab-separated fields, the header names 2"),
    ("long.csv", 'text_a,label\nhi,1\n"a, b",c,1\n',
     "line 3: 3 comma-separated fields, the header names 2"),
    ("label.csv", 'text_a,label\n"two\nlines",1\nhi,7\n',
     r"line 4: label '7' is not an integer in 0..1 \(2 classes\)"),
    ("empty.jsonl", '{"text_a": "hi", "label": 1}\n{"text_a": "", "label": 0}\n',
     "line 2: empty 'text_a'"),
    ("list.jsonl", '{"text_a": "hi", "label": 1}\n[1, 2]\n',
     r"line 2: expected a JSON object, got b'\[1, 2\]"),
    ("broken.jsonl", '{"text_a": "hi", "label": 1}\n{"text_a": "hi"\n', "line 2: Expecting"),
])
def test_a_bad_row_stops_registration_naming_its_file_and_line(tmp_path, name, content, problem):
  path = tmp_path / name
  path.write_text(content)
  with pytest.raises(rows.BadRow, match=f"^{path}, {problem}.*{FIX}"):
    add_file_task("bad_rows_file", "classification", num_classes=2, train=str(path),
                  vocabulary=demo_tasks.VOCABULARY)
  assert "bad_rows_file" not in seqio.TaskRegistry.names()


def test_a_file_without_rows_is_named(tmp_path):
  (tmp_path / "train.tsv").write_text("text_a\tlabel\nhi\t1\n")
  (tmp_path / "dev.tsv").write_text("text_a\tlabel\n\n")
  with pytest.raises(UserError, match=f"^{tmp_path / 'dev.tsv'} has no rows; add rows or leave "
                                      "the file out$"):
    add_file_task("bad_rows_empty", "classification", num_classes=2,
                  train=str(tmp_path / "train.tsv"), validation=str(tmp_path / "dev.tsv"),
                  vocabulary=demo_tasks.VOCABULARY)


def _skip_data(directory: pathlib.Path) -> str:
  """A tasks file of a TSV with 6 good rows and 3 bad ones, and a JSONL dev file with 1."""
  good = [f"w{i} x\t{i % 2}" for i in range(6)]
  lines = good[:2] + ["short row"] + good[2:4] + ["a\tb\t1", "too big\t2"] + good[4:]
  (directory / "train.tsv").write_text("text\tlabel\n" + "\n".join(lines) + "\n")
  (directory / "dev.jsonl").write_text("".join(
      json.dumps(r) + "\n" for r in [{"text": "a", "label": 0}, {"label": 1},
                                     {"text": "b", "label": 1}]))
  task = {"name": "my_skip", "family": "classification", "train": "train.tsv",
          "validation": "dev.jsonl", "columns": {"text_a": "text"}, "labels": ["no", "yes"]}
  path = directory / "tasks.json"
  path.write_text(json.dumps({"tasks": [task], "mixtures": {"my_skip_mix": ["my_skip"]}}))
  return str(path)


def test_skip_leaves_bad_rows_out_and_counts_them(tmp_path, registry):
  path = _skip_data(tmp_path)
  train, dev = tmp_path / "train.tsv", tmp_path / "dev.jsonl"
  tokenizer = str(demo.tokenizer_path())
  tasks_file.register(path, lambda: tokenizer, bad_rows="skip")
  task = get_task("my_skip")
  assert task.info.train_size == 6
  assert records.bad_rows(task) == {
      "train": records.BadRows(3, f"{train}, line 4: 1 tab-separated fields, the header names 2"),
      "validation": records.BadRows(1, f"{dev}, line 2: no 'text_a' (column 'text'); a "
                                       "classification row needs text_a, text_b, label")}
  assert inputs.bad_row_metrics([task, get_task("demo_sentiment")]) == {
      "bad_rows/my_skip/train": 3.0, "bad_rows/my_skip/validation": 1.0}
  (block,) = task.text_blocks("train", {"inputs": 32}, block_size=64)
  assert block["text_a"].tolist() == [f"w{i} x" for i in range(6)]
  assert block["label"].tolist() == [0, 1] * 3
  (block,) = task.text_blocks("validation", {"inputs": 32}, block_size=64, start=1)
  assert block["text_a"].tolist() == ["b"]  # Records are counted without the bad rows.
  seqio_view = task.source.get_dataset("train", shuffle=False).as_numpy_iterator()
  assert [r["text_a"] for r in seqio_view] == [f"w{i} x".encode() for i in range(6)]

  # The same file again in the other mode checks its rows again.
  with pytest.raises(rows.BadRow, match=f"^{train}, line 4: 1 tab-separated"):
    tasks_file.register(path, lambda: tokenizer)
  tasks_file.register(path, lambda: tokenizer, bad_rows="skip")
  assert records.bad_rows(task)["train"].count == 3

  config = batching.StreamConfig("my_skip_mix", batch_size=4, max_length=32)
  with batching.MixtureStream(config) as stream:
    assert stream.tasks == [task]
    assert (f"  my_skip: bad rows skipped (data.bad_rows=skip): 3 train and 1 validation; the "
            f"first: {train}, line 4: 1 tab-separated") in progress.task_lines(stream)
    live = [next(stream) for _ in range(3)]
  # A token cache holds the good rows only, and gives the live batches.
  lengths = {"inputs": 32, "targets": config.target_length}
  assert token_cache.build_split(task, "train", lengths, tmp_path / "cache")["records"] == 6
  with batching.MixtureStream(config, cache_dir=str(tmp_path / "cache")) as stream:
    assert not stream.live_tasks
    for batch in live:
      np.testing.assert_equal(next(stream), batch)


def test_skip_with_every_row_bad_and_unknown_modes_are_one_line_errors(tmp_path, registry):
  (tmp_path / "t.tsv").write_text("text_a\tlabel\nhi\t5\nho\t6\n")
  with pytest.raises(UserError, match=r"^all 2 train rows are bad, the first: .*t.tsv, line 2: "
                                      r"label '5' is not an integer in 0..1 \(2 classes\); check "
                                      "the task's columns and labels$"):
    add_file_task("bad_rows_all", "classification", num_classes=2,
                  train=str(tmp_path / "t.tsv"), vocabulary=demo_tasks.VOCABULARY,
                  bad_rows="skip")
  config = run_helpers.short_demo(prefinetune, **{"data.bad_rows": "drop"})
  with pytest.raises(UserError, match=r"^data.bad_rows='drop'; choose error \(stop at a bad "
                                      r"row\) or skip \(leave bad rows out, counted\)$"):
    inputs.register_tasks(config)


def _formatted_task(name, family, classes, label):
  """A task whose formatter (the tf.data path, which no row check sees) gives `label` to its
  fourth example."""
  def dataset_fn(split, shuffle_files=False, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_tensor_slices({"text": [f"row {i}" for i in range(8)]})

  def formatter(dataset):
    def format_one(i, ex):
      value = tf.where(i == 3, label, 0.0 if family == "regression" else 0)
      return {"text_a": ex["text"], "text_b": "", "label": value}
    return dataset.enumerate().map(format_one)
  return add_task(name, seqio.FunctionDataSource(dataset_fn, splits=["train"]), formatter,
                  TaskInfo(family, classes, 8), demo_tasks.VOCABULARY)


@pytest.mark.parametrize("family,classes,label,problem", [
    ("classification", 3, 3, r"label 3, not in 0..2 \(3 classes\)"),
    ("classification", 3, -2, r"label -2, not in 0..2 \(3 classes\)"),
    ("regression", 1, float("nan"), "score nan, not finite"),
])
def test_labels_outside_the_task_stop_the_stream(registry, family, classes, label, problem):
  task = _formatted_task("bad_rows_formatted", family, classes, label)
  stream = batching.MixtureStream(batching.StreamConfig(task.name, batch_size=4, max_length=16))
  with stream, pytest.raises(UserError, match=f"^task 'bad_rows_formatted': a train example has "
                                              f"{problem}; fix the task's data or its formatter$"):
    next(stream)


def test_the_loss_takes_labels_as_they_are():
  """No clipping: a label past the class logits is NaN, not the last class's loss."""
  table = losses.TaskTable(names=("cls",), families=(0,), num_classes=(3,), divisors=(1.0,))
  logits = jnp.asarray([[[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]]])
  outputs = HeadOutputs(logits, jnp.zeros((1, 2)), jnp.zeros((1, 2, 4, 2)))

  def loss(label):
    batch = {"seg_task": np.array([[0, -1]]), "seg_label": np.array([[label, -1]]),
             "seg_score": np.zeros((1, 2), np.float32), "seg_example": np.array([[0, -1]]),
             "seg_choice": np.array([[0, -1]]), "seg_span": np.full((1, 2, 2), -1)}
    return np.asarray(losses.per_example_losses(outputs, batch, table)[0])[0]

  log_softmax = np.log(np.exp([0.5, -1.0, 2.0]) / np.exp([0.5, -1.0, 2.0]).sum())
  np.testing.assert_allclose(loss(2), [-log_softmax[2], 0.0], rtol=1e-6)
  past = loss(5)
  assert np.isnan(past[0]) and past[1] == 0.0


def _own_task(directory: pathlib.Path, name: str, file: str, content: str, **spec) -> str:
  (directory / file).write_text(content)
  task = {"name": name, "family": "classification", "train": file, "num_classes": 2,
          "columns": {"text_a": "text"}, **spec}
  path = directory / f"{name}.json"
  path.write_text(json.dumps({"tokenizer": str(demo.tokenizer_path()), "tasks": [task]}))
  return str(path)


def _train(tasks, mixture, workdir, *extra) -> list[str]:
  return [sys.executable, "-m", "muppet_jax.train", "--config=configs/prefinetune.py:demo",
          f"--workdir={workdir}", f"--config.data.tasks_file={tasks}",
          f"--config.data.mixture={mixture}", "--config.total_steps=2",
          "--config.eval.every_steps=2", "--config.checkpoint.every_steps=2",
          "--config.eval.max_batches=1", "--config.log_every_steps=2", *extra]


def test_the_command_line_stops_at_a_bad_row_or_skips_it(tmp_path):
  texts = [f"w{i} x" for i in range(8)]
  missing = "".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(texts))
  missing = missing.replace('"text": "w2 x", ', "")  # Line 3 has no text.
  tsv = ["text\tlabel"] + [f"{t}\t{i % 2}" for i, t in enumerate(texts)]
  label = "\n".join(tsv[:5] + ["w9 x\t7"] + tsv[5:]) + "\n"  # Line 6.
  short = "\n".join(tsv[:2] + ["w9 x"] + tsv[2:]) + "\n"  # Line 3.
  names = ["my_missing", "my_label", "my_short"]
  cases = [
      (_own_task(tmp_path, names[0], "missing.jsonl", missing),
       f"{tmp_path / 'missing.jsonl'}, line 3: no 'text_a' (column 'text'); a classification "
       "row needs text_a, text_b, label"),
      (_own_task(tmp_path, names[1], "label.tsv", label),
       f"{tmp_path / 'label.tsv'}, line 6: label '7' is not an integer in 0..1 (2 classes)"),
      (_own_task(tmp_path, names[2], "short.tsv", short),
       f"{tmp_path / 'short.tsv'}, line 3: 1 tab-separated fields, the header names 2")]
  everything = json.loads(pathlib.Path(cases[0][0]).read_text())
  everything["tasks"] += [json.loads(pathlib.Path(t).read_text())["tasks"][0] for t, _ in cases[1:]]
  everything["mixtures"] = {"my_all": names}
  (tmp_path / "all.json").write_text(json.dumps(everything))
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  skip = subprocess.Popen(  # Alongside the others.
      _train(tmp_path / "all.json", "my_all", tmp_path / "skip", "--config.data.bad_rows=skip"),
      cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    for (tasks, problem), name in zip(cases, names):
      start = time.perf_counter()
      run = subprocess.run(_train(tasks, name, tmp_path / name), cwd=ROOT, env=env, text=True,
                           capture_output=True, timeout=120)
      assert run.returncode == 2, run.stderr[-3000:]
      assert time.perf_counter() - start < 60
      assert "Traceback" not in run.stderr
      noise = run_helpers.noise_lines(run.stderr)
      assert [line for line in run.stderr.splitlines() if line not in noise] == [
          f"error: {problem}; fix or remove the row (data.bad_rows=skip leaves bad rows out)"]
      assert not (tmp_path / name).exists()  # Stopped before it touched the workdir.
    out, err = skip.communicate(timeout=300)
  finally:
    skip.kill()
  assert skip.returncode == 0, err[-3000:]
  for name, (_, problem) in zip(names, cases):
    assert f"  {name}: bad rows skipped (data.bad_rows=skip): 1 train; the first: {problem}\n" in (
        out)
  assert "done at step 2." in out
