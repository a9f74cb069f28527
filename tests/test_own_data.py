"""A new user's path, from the command line alone: a bare pretrained encoder (BERT or RoBERTa,
as transformers saves it) and a tasks file of their own files -> train -> export --task ->
transformers, whose predictions on the validation file are muppet_jax's."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import transformers

from muppet_jax import evaluation, inputs, partitioning, pretrained, state
from muppet_jax.data.task_info import get_task
from muppet_jax.models import multitask
from configs import prefinetune
from tests import hf_fixtures, run_helpers

ROOT = pathlib.Path(__file__).parent.parent
LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def _texts(rng, n):
  return [" ".join(f"w{i}" for i in rng.integers(0, 60, rng.integers(3, 12))) for _ in range(n)]


def _data(directory: pathlib.Path) -> pathlib.Path:
  """A headerless TSV with string labels, a CSV with other column names, a JSONL task."""
  rng = np.random.default_rng(0)
  for split, n in (("train", 40), ("dev", 12)):
    news = zip(rng.choice(LABELS, n), _texts(rng, n))
    (directory / f"news_{split}.tsv").write_text("".join(f"{y}\t{t}\n" for y, t in news))
    pairs = zip(_texts(rng, n), _texts(rng, n), rng.choice(["no", "yes"], n))
    (directory / f"pairs_{split}.csv").write_text(
        "premise,hypothesis,verdict\n" + "".join(f'"{a}","{b}",{y}\n' for a, b, y in pairs))
  (directory / "scores.jsonl").write_text("".join(
      json.dumps({"sentence": t, "score": float(s)}) + "\n"
      for t, s in zip(_texts(rng, 30), rng.uniform(0, 5, 30))))
  tasks = {
      "tasks": [
          {"name": "my_news", "family": "classification", "train": "news_train.tsv",
           "validation": "news_dev.tsv", "header": ["topic", "text"],
           "columns": {"text_a": "text", "label": "topic"}, "labels": LABELS},
          {"name": "my_pairs", "family": "classification", "train": "pairs_train.csv",
           "validation": "pairs_dev.csv",
           "columns": {"text_a": "premise", "text_b": "hypothesis", "label": "verdict"},
           "labels": ["no", "yes"]},
          {"name": "my_scores", "family": "regression", "train": "scores.jsonl",
           "columns": {"text_a": "sentence", "label": "score"}}],
      "mixtures": {"my_mix": ["my_news", "my_pairs", "my_scores"]}}
  path = directory / "tasks.json"
  path.write_text(json.dumps(tasks))
  return path


def _run(module, *args):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _bare_encoder(model_type: str, path: pathlib.Path) -> None:
  config = hf_fixtures.tiny_config(model_type)
  cls = {"bert": transformers.BertModel, "roberta": transformers.RobertaModel}[model_type]
  torch.manual_seed(0)
  cls(config).save_pretrained(path)
  hf_fixtures.save_tokenizer(model_type, path)


def _our_predictions(tasks_file, start, workdir, task_name):
  """muppet_jax's predictions on the task's validation file, one example per row, in order."""
  config = run_helpers.short_demo(prefinetune, init_from=str(start), **{
      "data.tasks_file": str(tasks_file), "data.mixture": "my_mix", "data.max_length": 48,
      "data.packing": False})
  tasks = inputs.prepared_tasks(config)
  mesh = partitioning.make_mesh({"fsdp": 1}, jax.devices()[:1])
  _, model = pretrained.from_checkpoint(workdir / "checkpoints", mesh=mesh)
  network = multitask.build(model.config, model.layout)
  shardings = state.shardings(pretrained.abstract_params(model.config, mesh, model.layout))
  evaluator = evaluation.Evaluator(config, tasks, model.layout, network, model.config,
                                   shardings, mesh)
  return evaluator.predict(get_task(task_name), model.params).pred


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_own_files_to_a_transformers_classifier(tmp_path, registry, model_type):
  start = tmp_path / f"bare_{model_type}"
  _bare_encoder(model_type, start)
  tasks_file = _data(tmp_path)
  workdir, out = tmp_path / "run", tmp_path / "hf_news"
  trained = _run("muppet_jax.train", "--config=configs/prefinetune.py:demo",
                 f"--workdir={workdir}", f"--config.init_from={start}",
                 f"--config.data.tasks_file={tasks_file}", "--config.data.mixture=my_mix",
                 "--config.data.max_length=48", "--config.total_steps=6",
                 "--config.eval.every_steps=6", "--config.checkpoint.every_steps=6")
  assert "newly initialized" in trained.stdout + trained.stderr  # The bare encoder's MLM head.
  _run("muppet_jax.export", "--checkpoint", str(workdir / "checkpoints"), "--out", str(out),
       "--task", "my_news")

  hf, info = transformers.AutoModelForSequenceClassification.from_pretrained(
      out, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert type(hf).__name__ == {"bert": "BertForSequenceClassification",
                               "roberta": "RobertaForSequenceClassification"}[model_type]
  assert hf.config.id2label == dict(enumerate(LABELS))
  texts = [line.split("\t")[1].rstrip("\n")
           for line in (tmp_path / "news_dev.tsv").read_text().splitlines()]
  classify = transformers.pipeline("text-classification", model=str(out), device="cpu")
  theirs = [p["label"] for p in classify(texts)]
  ours = [LABELS[i] for i in _our_predictions(tasks_file, start, workdir, "my_news")]
  assert len(ours) == len(texts) == 12
  assert theirs == ours
