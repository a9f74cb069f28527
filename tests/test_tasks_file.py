"""Tasks files: own tasks from TSV/CSV/JSONL files, TFDS and `datasets`, with column mappings and
label names; task modules; and the one-line errors of malformed files."""

import json
import textwrap

import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from muppet_jax import inputs
from muppet_jax.data import demo, mixing, task_modules, tasks_file
from muppet_jax.data.task_info import get_task
from muppet_jax.data.vocabulary import HFVocabulary
from muppet_jax.errors import UserError

LENGTHS = {"inputs": 64, "targets": 16}


@pytest.fixture
def tokenizer():
  return str(demo.tokenizer_path())  # Built on first use: a path alone doesn't build it.


def _records(name, split="train"):
  (block,) = get_task(name).text_blocks(split, LENGTHS, block_size=100)
  return {k: v.tolist() for k, v in block.items()}


def _write(path, data):
  path.write_text(json.dumps(data) if path.suffix == ".json" else data)
  return str(path)


def test_files_with_headers_column_maps_and_label_names(tmp_path, tokenizer, registry):
  (tmp_path / "news").mkdir()
  (tmp_path / "news" / "train.tsv").write_text("Sci/Tech\tnew chip, fast\n3\tthe final\n\n")
  (tmp_path / "sst.csv").write_text('sentence,polarity\n"good, really",positive\n'
                                    '"two\nlines",0\n')
  (tmp_path / "mc.csv").write_text("q,A,B,C,answer\nsky is,red,blue,green,B\n")
  (tmp_path / "sim.jsonl").write_text(json.dumps({"s1": "a", "s2": "b", "score": 3.5}) + "\n")
  (tmp_path / "qa.jsonl").write_text(json.dumps({"q": "who?", "passage": "ann ran", "start": 0,
                                                 "answer": "ann"}) + "\n")
  (tmp_path / "sum.csv").write_text('article,highlights\n"a long, long text",short\n')
  # sst.csv through a URL, read as gs:// files are (tf.io.gfile).
  path = _write(tmp_path / "tasks.yaml", textwrap.dedent("""\
      tasks:
        - name: my_news
          family: classification
          train: news/*.tsv
          header: [topic, text]
          columns: {text_a: text, label: topic}
          labels: [World, Sports, Business, Sci/Tech]
        - {name: my_sst, family: classification, train: "file://TMP/sst.csv",
           columns: {text_a: sentence, label: polarity}, labels: [negative, positive]}
        - {name: my_mc, family: multiple_choice, train: mc.csv,
           columns: {context: q, choices: [A, B, C], label: answer}, labels: [A, B, C]}
        - {name: my_sim, family: regression, train: sim.jsonl,
           columns: {text_a: s1, text_b: s2, label: score}}
        - {name: my_qa, family: span, train: qa.jsonl, columns: {question: q,
           context: passage, answer_start: start, answer_text: answer}}
        - {name: my_sum, family: summarization, train: sum.csv,
           columns: {document: article, summary: highlights}}
      mixtures:
        my_mix: [my_news, my_sst, my_mc, my_sim, demo_sentiment]
      """).replace("TMP", str(tmp_path)))
  registered = tasks_file.register(path, lambda: tokenizer)
  assert registered == tasks_file.Registered(
      ("my_news", "my_sst", "my_mc", "my_sim", "my_qa", "my_sum"), ("my_mix",))
  # String labels by name, integer labels as indices; CSV quoting; headerless TSV.
  assert _records("my_news") == {"text_a": ["new chip, fast", "the final"], "text_b": ["", ""],
                                 "label": [3, 3]}
  assert _records("my_sst") == {"text_a": ["good, really", "two\nlines"], "text_b": ["", ""],
                                "label": [1, 0]}
  assert _records("my_mc") == {"context": ["sky is"], "choices": [["red", "blue", "green"]],
                               "label": [1]}
  assert _records("my_sim") == {"text_a": ["a"], "text_b": ["b"], "label": [3.5]}
  assert _records("my_qa") == {"question": ["who?"], "context": ["ann ran"], "answer_start": [0],
                               "answer_text": ["ann"]}
  assert _records("my_sum") == {"document": ["a long, long text"], "summary": ["short"]}
  news = get_task("my_news")
  assert (news.info.num_classes, news.info.train_size) == (4, 2)
  assert news.task_head().labels == ("World", "Sports", "Business", "Sci/Tech")
  assert get_task("my_mc").info.num_classes == 3
  # Rates by size, own tasks and the demo's together.
  rates = mixing.rates("my_mix")
  assert rates["my_news"] == pytest.approx(2 / (2 + 2 + 1 + 1 + 3000))
  # The same file again is a no-op; the tokenized examples are what the labels say.
  assert tasks_file.register(path, lambda: tokenizer) == registered
  (example,) = get_task("my_mc").get_dataset(LENGTHS, split="train", shuffle=False,
                                             try_in_mem_cache=False).as_numpy_iterator()
  assert example["label"] == 1 and len(example["input_lengths"]) == 3


def test_catalog_tasks_in_a_mixture_take_the_files_tokenizer(tmp_path, tokenizer, registry):
  (tmp_path / "a.jsonl").write_text(json.dumps({"text_a": "x", "label": 1}) + "\n")
  catalog_task = get_task("glue_rte")
  assert catalog_task.vocabulary.path != tokenizer
  path = _write(tmp_path / "tasks.json", {
      "tasks": [{"name": "my_a", "family": "classification", "train": "a.jsonl",
                 "num_classes": 2}],
      "mixtures": {"my_with_rte": ["my_a", "glue_rte"]}})
  try:
    tasks_file.register(path, lambda: tokenizer)
    assert {t.vocabulary.path for t in mixing.mixture_tasks("my_with_rte")} == {tokenizer}
    assert get_task("glue_rte").source is catalog_task.source
  finally:  # Put the catalog's own registration back.
    seqio.TaskRegistry.remove("glue_rte")
    seqio.TaskRegistry.add_provider("glue_rte", catalog_task)


def test_a_tfds_task(tmp_path, tokenizer, registry):
  data = {"question": ["is it?", "no?"], "passage": ["it is", "maybe"], "answer": [1, 0]}
  features = tfds.features.FeaturesDict({
      "question": tfds.features.Text(), "passage": tfds.features.Text(),
      "answer": tfds.features.ClassLabel(names=["no", "yes"])})
  tfds.dataset_builders.TfDataBuilder(
      name="muppet_tiny", config="plain", version="1.0.0", data_dir=str(tmp_path / "tfds"),
      features=features,
      split_datasets={"train": tf.data.Dataset.from_tensor_slices(data),
                      "dev": tf.data.Dataset.from_tensor_slices(data).take(1)},
  ).download_and_prepare()
  path = _write(tmp_path / "tasks.json", {"tasks": [{
      "name": "my_tfds", "family": "classification", "tfds": "muppet_tiny/plain:1.0.0",
      "data_dir": "tfds", "splits": {"train": "train", "validation": "dev"},
      "columns": {"text_a": "question", "text_b": "passage", "label": "answer"},
      "labels": ["no", "yes"]}]})
  tasks_file.register(path, lambda: tokenizer)
  assert get_task("my_tfds").info.train_size == 2
  assert _records("my_tfds") == {"text_a": ["is it?", "no?"], "text_b": ["it is", "maybe"],
                                 "label": [1, 0]}
  assert _records("my_tfds", "validation")["text_a"] == ["is it?"]


def test_a_hugging_face_datasets_task(tmp_path, tokenizer, registry):
  pytest.importorskip("datasets")
  (tmp_path / "hub").mkdir()
  for split, rows in {"train": [("the end", "Sports"), ("new chip", "Sci/Tech")],
                      "test": [("vote", "World")]}.items():
    (tmp_path / "hub" / f"{split}.jsonl").write_text(
        "".join(json.dumps({"text": t, "topic": y}) + "\n" for t, y in rows))
  path = _write(tmp_path / "tasks.json", {"tasks": [{
      "name": "my_hf", "family": "classification", "hf_dataset": str(tmp_path / "hub"),
      "splits": {"train": "train", "validation": "test"},
      "columns": {"text_a": "text", "label": "topic"},
      "labels": ["World", "Sports", "Business", "Sci/Tech"]}]})
  tasks_file.register(path, lambda: tokenizer)
  assert get_task("my_hf").info.train_size == 2
  assert _records("my_hf")["label"] == [1, 3]
  assert _records("my_hf", "validation") == {"text_a": ["vote"], "text_b": [""], "label": [0]}


def test_task_modules_register_tasks(tmp_path, registry):
  module = tmp_path / "more_tasks.py"
  module.write_text(textwrap.dedent("""\
      from muppet_jax.data.local_files import add_file_task
      from tasks import demo
      add_file_task("my_module_task", "classification", num_classes=2,
                    train=__file__.replace("more_tasks.py", "t.jsonl"),
                    vocabulary=demo.VOCABULARY)
      """))
  (tmp_path / "t.jsonl").write_text(json.dumps({"text_a": "hi", "label": 1}) + "\n")
  task_modules.import_task_modules(f" {module} ,json")
  assert _records("my_module_task")["label"] == [1]
  task_modules.import_task_modules(str(module))  # Imported once: no second registration.
  with pytest.raises(UserError, match="task module 'no_such_pkg.tasks' is not importable"):
    task_modules.import_task_modules("no_such_pkg.tasks")
  with pytest.raises(UserError, match="task module .*missing.py does not exist"):
    task_modules.import_task_modules(str(tmp_path / "missing.py"))


TASK = {"name": "my_t", "family": "classification", "train": "t.tsv", "labels": ["a", "b"]}


@pytest.mark.parametrize("change,problem", [
    ({"family": "ranking"}, r"task 'my_t': unknown family 'ranking'; families are "
                            r"classification, regression, multiple_choice, span, summarization"),
    ({"columns": {"text_a": "sentence"}}, r"t.tsv has columns \['text_a', 'label'\]; missing "
                                          r"\['sentence'\]: map the task's fields"),
    ({"train": "missing.tsv"}, r"task 'my_t': no files match \[.*missing.tsv'\]"),
    ({"name": "glue_rte"}, r"task 'glue_rte': the name 'glue_rte' is taken by a registered "
                           r"task .*give yours another name"),
    ({"lables": ["a"]}, r"unknown key\(s\) \['lables'\]; a task's keys are"),
    ({"tfds": "glue/rte"}, "give the task's data as exactly one of train"),
    ({"labels": ["a", "b"], "num_classes": 3}, "the class count is ambiguous"),
    ({"columns": {"question": "q"}}, r"columns maps \['question'\], not fields of a "
                                     "classification task"),
    ({"family": "regression"}, "labels are for classification and multiple choice tasks"),
    ({"header": "text_a"}, "header must be a list of column names"),
])
def test_malformed_task_definitions_are_one_line_errors(tmp_path, tokenizer, registry, change,
                                                        problem):
  (tmp_path / "t.tsv").write_text("text_a\tlabel\nhi\ta\n")
  path = _write(tmp_path / "tasks.json", {"tasks": [{**TASK, **change}]})
  with pytest.raises(UserError, match=f"^{tmp_path}/tasks.json: .*{problem}") as e:
    tasks_file.register(path, lambda: tokenizer)
  assert "\n" not in str(e.value)


def test_malformed_files_and_unknown_labels(tmp_path, tokenizer, registry):
  bad_yaml = _write(tmp_path / "bad.yaml", "tasks: [ {name: x\n")
  with pytest.raises(UserError, match=f"^{bad_yaml}: not valid YAML"):
    tasks_file.register(bad_yaml, lambda: tokenizer)
  with pytest.raises(UserError, match="tasks file .*nope.yaml does not exist"):
    tasks_file.register(str(tmp_path / "nope.yaml"), lambda: tokenizer)
  top = _write(tmp_path / "top.json", {"task": []})
  with pytest.raises(UserError, match=r"a tasks file is a mapping with keys \['mixtures', "):
    tasks_file.register(top, lambda: tokenizer)
  mix = _write(tmp_path / "mix.json", {"mixtures": {"my_m": ["glue_rte", "my_typo"]}})
  with pytest.raises(UserError, match=f"^{mix}: mixture 'my_m': unknown task 'my_typo'"):
    tasks_file.register(mix, lambda: tokenizer)
  # A label that isn't one of the names is the data file's one-line error, when registered.
  (tmp_path / "t.tsv").write_text("text_a\tlabel\nhi\ta\nho\tc\n")
  with pytest.raises(UserError, match=r"t.tsv, line 3: label 'c' is not one of \['a', 'b'\] "
                                      r"or an integer in 0..1 \(2 classes\); fix or remove"):
    tasks_file.register(_write(tmp_path / "ok.json", {"tasks": [TASK]}), lambda: tokenizer)


def test_the_tokenizer_comes_from_the_file_or_the_starting_model(tmp_path, tiny_mlm, registry):
  (tmp_path / "t.jsonl").write_text(json.dumps({"text_a": "w1 w2", "label": 1}) + "\n")
  task = {"name": "my_tok", "family": "classification", "train": "t.jsonl", "num_classes": 2}
  path = _write(tmp_path / "tasks.json", {"tasks": [task]})
  tasks_file.register(path, lambda: inputs.start_tokenizer(str(tiny_mlm.path)))
  assert get_task("my_tok").vocabulary.path == str(tiny_mlm.path)
  with pytest.raises(UserError, match="names no tokenizer, and there is no starting model"):
    inputs.start_tokenizer("")
  named = _write(tmp_path / "named.json", {"tokenizer": str(tiny_mlm.path),
                                           "tasks": [{**task, "name": "my_tok2"}]})
  tasks_file.register(named, lambda: pytest.fail("the file names its tokenizer"))


def test_a_checkpoints_tokenizer_is_written_once_to_the_cache(tmp_path, tiny_mlm):
  from muppet_jax import convert
  checkpoint = convert.convert(str(tiny_mlm.path), tmp_path / "ckpt")
  path = inputs.start_tokenizer(str(checkpoint))
  assert path.startswith(str(demo.cache_dir()))
  saved = HFVocabulary(str(tiny_mlm.path)).tokenizer
  assert HFVocabulary(path).tokenizer.get_vocab() == saved.get_vocab()
  assert inputs.start_tokenizer(str(checkpoint)) == path  # Written once.
