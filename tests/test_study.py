"""The task-count scaling study on the demo suite: every run, the scaling table from the runs'
results.json, and a resumed study that redoes nothing finished."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from muppet_jax import study, train
from configs import study as study_configs

pytestmark = pytest.mark.slow  # Scheduled first (conftest.py).

ROOT = pathlib.Path(__file__).parent.parent


def _config():
  config = study_configs.get_config("demo")
  config.unlock()
  config.update_from_flattened_dict({
      "prefinetune.total_steps": 8, "prefinetune.eval.every_steps": 8,
      "prefinetune.checkpoint.every_steps": 8, "prefinetune.eval.max_batches": 1,
      "finetune.total_steps": 6, "finetune.eval.every_steps": 3,
      "finetune.eval.max_batches": 2, "finetune.checkpoint.every_steps": 6})
  return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("study"))
  config = _config()
  return config, workdir, study.study(config, workdir)


def test_a_study_pre_finetunes_fine_tunes_and_tabulates(finished):
  config, workdir, points = finished
  assert [(s.name, s.num_tasks) for s, _ in points] == [
      ("original", 0), ("muppet_demo_n2", 2), ("muppet_demo_n4", 4)]
  for start, score in points:
    result = json.loads(pathlib.Path(start.finetune_dir, "results.json").read_text())
    assert result["task"] == "demo_review" and result["best"] == score
    assert result["start"] == start.init_from
  table = pathlib.Path(workdir, "results.md").read_text()
  for start, score in points:
    assert f"| {start.name} | {start.num_tasks} | {100 * score:.1f} |" in table
  assert pathlib.Path(workdir, "results.png").stat().st_size > 0
  # The pre-finetuned starts are the mixtures' final checkpoints.
  assert all(study.prefinetuned(s, config) for s, _ in points[1:])


def test_the_table_is_computed_from_the_runs_results(finished):
  config, workdir, points = finished
  path = pathlib.Path(points[1][0].finetune_dir, "results.json")
  result = json.loads(path.read_text())
  path.write_text(json.dumps({**result, "best": 0.25}))
  try:
    assert [score for _, score in study.scaling_points(config, workdir)][1] == 0.25
  finally:
    path.write_text(json.dumps(result))


def test_a_resumed_study_redoes_only_what_is_unfinished(finished, monkeypatch):
  config, workdir, _ = finished
  calls = []
  real = train.train
  monkeypatch.setattr(train, "train", lambda c, w, **kw: calls.append(w) or real(c, w, **kw))
  study.study(config, workdir)
  assert calls == []
  os.remove(os.path.join(workdir, "finetune", "muppet_demo_n2", "results.json"))
  assert any("muppet_demo_n2" in line and "to do" in line
             for line in study.plan_lines(config, workdir))
  study.study(config, workdir)
  assert calls == [os.path.join(workdir, "finetune", "muppet_demo_n2")]


def test_dry_run_lists_the_runs(tmp_path):
  done = subprocess.run(
      [sys.executable, "-m", "muppet_jax.study", "--config=configs/study.py:demo",
       f"--workdir={tmp_path}", "--dry-run"], cwd=ROOT, capture_output=True, text=True,
      timeout=300)
  assert done.returncode == 0, done.stderr
  assert done.stdout.splitlines() == [
      f"pre-finetune on muppet_demo_n2 (2 tasks) -> {tmp_path}/pre/muppet_demo_n2/checkpoints: "
      "to do",
      f"pre-finetune on muppet_demo_n4 (4 tasks) -> {tmp_path}/pre/muppet_demo_n4/checkpoints: "
      "to do",
      *(f"fine-tune {s} on demo_review (fraction 1, seed 0) -> {tmp_path}/finetune/{s}: "
        "to do" for s in ("original", "muppet_demo_n2", "muppet_demo_n4"))]
  assert not any(tmp_path.iterdir())  # A dry run writes nothing.
