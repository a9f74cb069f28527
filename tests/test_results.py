"""Fine-tuning results gathered from the runs' results.json into a table and a plot."""

import json

import matplotlib.image
import pytest

from muppet_jax import results
from muppet_jax.errors import UserError

# (task, metric) x start x fraction -> the best value of each seed's run.
RUNS = {
    ("glue_rte", "accuracy"): {"runs/muppet/checkpoints": {0.1: [0.50, 0.60], 1.0: [0.70, 0.80]},
                               "roberta-base": {0.1: [0.40, 0.50], 1.0: [0.65, 0.75]}},
    ("glue_stsb", "pearson"): {"runs/muppet/checkpoints": {0.1: [0.80], 1.0: [0.90]},
                               "roberta-base": {0.1: [0.70], 1.0: [0.85]}},
}


@pytest.fixture
def sweep(tmp_path):
  for (task, metric), starts in RUNS.items():
    for start, fractions in starts.items():
      for fraction, values in fractions.items():
        for seed, value in enumerate(values):
          run = tmp_path / task / start.replace("/", "_") / f"f{fraction}_s{seed}"
          run.mkdir(parents=True)
          (run / "results.json").write_text(json.dumps({
              "task": task, "start": start, "fraction": fraction, "seed": seed,
              "metric": metric, "best": value, "best_step": 10}))
  return tmp_path


def test_the_table_is_computed_from_the_runs(sweep):
  rows = results.table(results.read([sweep])).splitlines()
  assert rows[0] == "| task | metric | `roberta-base` | `runs/muppet` |"  # Starts sorted.
  # Full data: mean ± std over seeds (numpy's population std), and the seed count.
  assert rows[2] == "| glue_rte | accuracy | 70.0 ± 5.0 (2) | 75.0 ± 5.0 (2) |"
  assert rows[3] == "| glue_stsb | pearson | 85.0 (1) | 90.0 (1) |"
  assert rows[4] == "| average of 2 tasks | | 77.5 | 82.5 |"


def test_summary_files_and_the_command_line(sweep, tmp_path, capsys):
  assert results.main([str(sweep), "--out", str(tmp_path / "out")]) == 0
  md = (tmp_path / "out" / "results.md").read_text()
  assert "| glue_rte | accuracy | 70.0 ± 5.0 (2) | 75.0 ± 5.0 (2) |" in md
  image = matplotlib.image.imread(tmp_path / "out" / "results.png")
  assert image.shape[0] == 350 and image.shape[1] == 900  # Two tasks side by side, dpi 100.
  assert "average of 2 tasks" in capsys.readouterr().out


def test_bad_directories_are_one_line(tmp_path):
  with pytest.raises(UserError, match="no results.json under"):
    results.read([tmp_path])
  (tmp_path / "results.json").write_text(json.dumps({"task": "x"}))
  with pytest.raises(UserError, match="has no 'start'; it is not a fine-tuning results file"):
    results.read([tmp_path])
