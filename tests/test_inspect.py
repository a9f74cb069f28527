"""python -m muppet_jax.inspect: listing, the per-task report, and missing datasets."""

import os
import pathlib
import re
import subprocess
import sys

from muppet_jax import inspect as inspect_cli

ROOT = pathlib.Path(__file__).parent.parent


def test_list_names_every_task_and_mixture(capsys):
  assert inspect_cli.main(["--list"]) == 0
  out = capsys.readouterr().out
  for name in ("muppet_demo", "muppet_roberta_n25", "muppet_bart", "glue_mnli", "demo_span",
               "natural_questions", "reddit_tifu"):
    assert re.search(rf"^  {name} ", out, re.M), name


def test_mixture_report(capsys):
  assert inspect_cli.main(["--mixture", "muppet_demo", "--examples", "1", "--max-length", "64",
                           "--sample", "50"]) == 0
  out = capsys.readouterr().out
  shares = [float(m) for m in re.findall(r"^demo_\w+\s+\w+\s+\d+\s+\w+\s+[\d,]+\s+([\d.]+)", out,
                                         re.M)]
  assert len(shares) == 7 and abs(sum(shares) - 100) < 0.1
  assert len(re.findall(r"tokens per sequence over \d+: p50 \d+, p90 \d+, p99 \d+", out)) == 7
  assert re.search(r"answer=' [a-z]+'", out)  # The span answer, decoded.
  padded, packed = map(float, re.search(r"padded ([\d.]+)%, packed ([\d.]+)%", out).groups())
  assert packed > 2 * padded


def test_missing_dataset_says_how_to_prepare_it(tmp_path):
  done = subprocess.run([sys.executable, "-m", "muppet_jax.inspect", "--mixture", "glue_cola"],
                        capture_output=True, text=True, cwd=ROOT, timeout=300,
                        env={**os.environ, "TFDS_DATA_DIR": str(tmp_path)})
  assert done.returncode == 2
  assert "Traceback" not in done.stderr + done.stdout
  assert "`tfds build glue/cola`" in done.stdout
  assert done.stderr.strip().splitlines()[-1].startswith("error: 1 dataset(s) of glue_cola")
