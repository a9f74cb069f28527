"""Bad inputs to every command line: each ends with exactly one `error: ...` line naming what and
where, a non-zero status and no traceback, before anything is compiled, and leaves an existing
workdir's checkpoints as they were. `--debug` shows the traceback instead.

One row of CASES per mistake. The command lines run as children of `tests.cli_zygote`, which
imports the heavy libraries once (a start costs ~10 s of CPU otherwise), two at a time, all in
one module fixture; each case then checks its own result. `{name}` in a case's arguments is a
path of the fixture's world (see `world`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from muppet_jax import cli
from muppet_jax.data import demo
from muppet_jax.errors import UserError
from tests import hf_fixtures

ROOT = pathlib.Path(__file__).parent.parent
RUN = pathlib.Path(__file__).parent / "fixtures" / "checkpoints_v1" / "roberta"
DEMO = "--config=configs/prefinetune.py:demo"


@dataclasses.dataclass(frozen=True)
class Case:
  """`python -m muppet_jax.{command} *args` fails with one `error:` line matching `error`."""

  id: str
  command: str
  args: tuple[str, ...]
  error: str  # A regex searched in the error line.
  seconds: float = 20.0  # Generous (two at a time on 2 busy cores): most take under 1 s.


def train(id: str, error: str, *args: str, workdir: str = "{run}") -> Case:
  """A demo training run on `workdir` (default: the saved run, whose checkpoints must stay)."""
  return Case(id, "train", (DEMO, f"--workdir={workdir}", *args), error)


# A new mistake is one row: `train(id, error regex, *flags)` for the trainer (on the saved run's
# workdir unless `workdir=`), `Case(id, command, args, error regex)` for any command line; paths
# as `{tmp}/...`, `{run}`, `{hf}`, ... (the `paths` of `world`).
CASES = [
    # Config: keys, types, presets.
    train("unknown_key", r"unknown config key 'nope'; configs/prefinetune\.py has ",
          "--config.nope=1"),
    train("bad_type", r"total_steps=abc.*total_steps must be of type int",
          "--config.total_steps=abc"),
    train("bad_bool", r"data\.packing must be of type bool", "--config.data.packing=maybe"),
    train("not_a_section", r"mesh must be of type ConfigDict", "--config.mesh=3"),
    Case("unknown_preset", "train", ("--config=configs/prefinetune.py:nope", "--workdir={run}"),
         r"unknown preset 'nope' of configs/prefinetune\.py; choose roberta_large"),
    Case("unknown_bart_preset", "train",
         ("--config=configs/prefinetune_bart.py:large", "--workdir={run}"),
         r"unknown preset 'large' of configs/prefinetune_bart\.py; choose bart_large or demo"),
    Case("config_file_missing", "train", ("--config=configs/nope.py", "--workdir={run}"),
         r"config file configs/nope\.py does not exist"),
    train("misspelled_flag", r"Unknown command line flag 'wrkdir'", "--wrkdir=x"),
    Case("train_no_workdir", "train", (DEMO,),
         r"give --config=configs/prefinetune\.py\[:PRESET\] and --workdir=DIR"),
    Case("finetune_no_config", "finetune", ("--workdir={tmp}/ft",),
         r"give --config=configs/finetune\.py\[:PRESET\] and --workdir=DIR"),
    train("cache_dir_unwritable", r"compilation cache /proc/nope/cache can't be created .*"
          r"--config\.compilation_cache_dir", "--config.compilation_cache_dir=/proc/nope/cache"),
    train("unknown_nonfinite_mode", r"nonfinite='nope' is not one of stop, skip",
          "--config.nonfinite=nope"),
    train("nonfinite_max_skips_0", r"nonfinite_max_skips=0 must be at least 1",
          "--config.nonfinite_max_skips=0"),
    # Config: counts, intervals and lengths.
    train("total_steps_0", r"^error: total_steps=0 must be at least 1; set --config\.total_steps",
          "--config.total_steps=0"),
    train("eval_every_0", r"eval\.every_steps=0 must be at least 1", "--config.eval.every_steps=0"),
    train("checkpoint_every_0", r"checkpoint\.every_steps=0 must be at least 1",
          "--config.checkpoint.every_steps=0"),
    train("log_every_0", r"log_every_steps=0 must be at least 1", "--config.log_every_steps=0"),
    train("keep_0", r"checkpoint\.keep=0 must be at least 1", "--config.checkpoint.keep=0"),
    train("microbatches_0", r"microbatches=0 must be at least 1", "--config.microbatches=0"),
    train("negative_target_length", r"data\.target_length=-1 must be at least 1",
          "--config.data.target_length=-1"),
    train("max_segments_0", r"data\.max_segments=0 must be at least 1",
          "--config.data.max_segments=0"),
    train("num_beams_0", r"eval\.generation\.num_beams=0 must be at least 1",
          "--config.eval.generation.num_beams=0"),
    train("heads_not_dividing", r"model\.hidden_size=130 must be a multiple of model\.num_heads=4",
          "--config.model.hidden_size=130"),
    train("splash_length", r"data\.max_length=100: attention_impl='splash' tiles rows by 128",
          "--config.model.attention_impl=splash", "--config.data.max_length=100"),
    Case("splash_target_length", "train",
         ("--config=configs/prefinetune_bart.py:demo", "--workdir={run}",
          "--config.model.attention_impl=splash"),
         r"data\.target_length=32: attention_impl='splash' tiles rows by 128 tokens; set "
         r"--config\.data\.target_length to a multiple of 128"),
    train("unknown_batching", r"data\.batching='bogus'; choose heterogeneous or homogeneous",
          "--config.data.batching=bogus"),
    train("max_length_0", r"data\.max_length=0 must be at least 1", "--config.data.max_length=0"),
    train("train_fraction_0", r"data\.train_fraction=0\.0 must be in \(0, 1\]",
          "--config.data.train_fraction=0"),
    # Mesh and batches against the 8 test devices.
    train("mesh_not_dividing", r"mesh \{'data': 3, .*do not divide the 8 available devices",
          "--config.mesh.data=3"),
    train("mesh_too_small", r"mesh .* needs 4 devices but 8 are available",
          "--config.mesh.data=2", "--config.mesh.fsdp=2"),
    train("mesh_axis_0", r"mesh .*: sizes must be positive or -1", "--config.mesh.tensor=0"),
    train("microbatches_not_dividing", r"data\.batch_size=16 .* x microbatches \(4\)",
          "--config.microbatches=4"),
    train("batch_not_divisible", r"data\.batch_size=12 must be a multiple of data\*fsdp \(8\)",
          "--config.data.batch_size=12"),
    train("eval_batch_not_divisible", r"eval\.batch_size=4 must be a multiple of data\*fsdp \(8\)",
          "--config.eval.batch_size=4"),
    # Mixtures, tasks files and data files.
    train("unknown_mixture", r"unknown mixture or task 'nope'", "--config.data.mixture=nope"),
    train("tasks_file_missing", r"tasks file .*nope\.json does not exist",
          "--config.data.tasks_file={tmp}/nope.json", "--config.data.mixture=mine"),
    train("data_file_missing", r"missing\.tsv", "--config.data.tasks_file={missing_tasks}",
          "--config.data.mixture=mine"),
    train("header_only_tsv", r"header\.json: task 'mine': .*header\.tsv has no rows",
          "--config.data.tasks_file={header_tasks}", "--config.data.mixture=mine"),
    train("empty_tsv", r"empty\.tsv", "--config.data.tasks_file={empty_tasks}",
          "--config.data.mixture=mine"),
    # Rows of a tasks file's data: each names its file and line.
    train("row_missing_field", r"missing_row\.jsonl, line 2: no 'text_a' \(column 'text'\)",
          "--config.data.tasks_file={missing_row_tasks}", "--config.data.mixture=mine"),
    train("row_label_out_of_range", r"label\.tsv, line 3: label '7' is not one of \['no', "
          r"'yes'\] or an integer in 0\.\.1 \(2 classes\)",
          "--config.data.tasks_file={label_row_tasks}", "--config.data.mixture=mine"),
    train("row_label_not_an_int", r"nonint\.tsv, line 3: label '1\.5' is not one of .* or an "
          r"integer in 0\.\.1", "--config.data.tasks_file={nonint_row_tasks}",
          "--config.data.mixture=mine"),
    train("row_empty_field", r"blank\.tsv, line 3: empty 'text_a' \(column 'text'\)",
          "--config.data.tasks_file={blank_row_tasks}", "--config.data.mixture=mine"),
    train("row_short", r"short\.tsv, line 3: 1 tab-separated fields, the header names 2",
          "--config.data.tasks_file={short_row_tasks}", "--config.data.mixture=mine"),
    train("row_long", r"long\.tsv, line 3: 3 tab-separated fields, the header names 2",
          "--config.data.tasks_file={long_row_tasks}", "--config.data.mixture=mine"),
    train("bad_rows_mode", r"data\.bad_rows='drop'; choose error \(stop at a bad row\) or skip",
          "--config.data.bad_rows=drop"),
    Case("inspect_bad_row", "inspect", ("--tasks-file", "{label_row_tasks}", "--mixture", "mine"),
         r"label\.tsv, line 3: label '7'"),
    Case("cache_bad_row", "cache", (DEMO, "--out={tmp}/cache", "--config.data.mixture=mine",
                                    "--config.data.tasks_file={label_row_tasks}"),
         r"label\.tsv, line 3: label '7'"),
    # Starting models.
    train("init_from_missing", r"nope_model is not a directory \(it does not exist\); pass a "
          "Hugging Face checkpoint", "--config.init_from={tmp}/nope_model"),
    train("init_from_truncated", r"trunc/model\.safetensors is truncated or corrupt",
          "--config.init_from={trunc}"),
    train("init_from_not_a_model", r"junk holds no muppet_jax checkpoint \(found: notes\.txt\)",
          "--config.init_from={junk}"),
    train("init_from_a_workdir", r"run is a training workdir, not a checkpoint directory; pass "
          r".*run/checkpoints", "--config.init_from={run}"),
    # Workdirs.
    train("workdir_a_file", r"--workdir=.*a_file is not a directory", workdir="{a_file}"),
    train("workdir_in_a_file", r"--workdir=.*a_file/run is not a directory \(.*a_file is a "
          r"file\)", workdir="{a_file}/run"),
    # The other training commands reach the same checks.
    Case("finetune_bad_start", "finetune",
         ("--config=configs/finetune.py:demo", "--workdir={tmp}/ft",
          "--config.init_from={tmp}/nope_model"), r"nope_model is not a directory \(it does not "),
    Case("finetune_unknown_preset", "finetune",
         ("--config=configs/finetune.py:nope", "--workdir={tmp}/ft"),
         r"unknown preset 'nope' of configs/finetune\.py"),
    Case("study_unknown_preset", "study", ("--config=configs/study.py:nope", "--workdir={tmp}/st"),
         r"unknown preset 'nope' of configs/study\.py"),
    Case("study_steps_0", "study", ("--config=configs/study.py:demo", "--workdir={tmp}/st",
                                    "--config.prefinetune.total_steps=0"),
         r"total_steps=0 must be at least 1"),
    # inspect, cache, convert, export, results.
    Case("inspect_max_length_0", "inspect", ("--mixture", "muppet_demo", "--max-length", "0"),
         r"--max-length=0 must be at least 1"),
    Case("inspect_no_mixture", "inspect", (), r"give --mixture NAME or --list; see python -m "),
    Case("inspect_examples_negative", "inspect", ("--mixture", "muppet_demo", "--examples", "-1"),
         r"--examples=-1 must be at least 0"),
    Case("inspect_not_an_int", "inspect", ("--mixture", "muppet_demo", "--sample", "many"),
         r"argument --sample: invalid int value: 'many'"),
    Case("inspect_unknown_mixture", "inspect", ("--mixture", "nope"),
         r"unknown mixture or task 'nope'"),
    Case("cache_bad_worker", "cache", (DEMO, "--out={tmp}/cache", "--worker=3", "--workers=2"),
         r"--worker=3 must be in \[0, --workers=2\)"),
    Case("cache_out_a_file", "cache", (DEMO, "--out={a_file}"), r"--out=.*a_file is not a dir"),
    Case("cache_no_out", "cache", (DEMO,), r"give --out=DIR \(or set data\.cache_dir"),
    Case("cache_no_config", "cache", ("--out={tmp}/cache",), r"give --config=configs/"),
    Case("cache_shard_0", "cache", (DEMO, "--out={tmp}/cache", "--records_per_shard=0"),
         r"--records_per_shard=0 must be at least 1"),
    Case("cache_unknown_task", "cache", (DEMO, "--out={tmp}/cache", "--tasks=nope"),
         r"--tasks names \['nope'\], not in mixture 'muppet_demo'"),
    Case("cache_lengths", "cache", (DEMO, "--out={tmp}/cache", "--config.data.max_length=0"),
         r"data\.max_length=0 must be at least 1"),
    Case("convert_truncated", "convert", ("--from-hf", "{trunc}", "--out", "{tmp}/c1"),
         r"trunc/model\.safetensors is truncated or corrupt"),
    Case("convert_not_a_model", "convert", ("--from-hf", "{junk}", "--out", "{tmp}/c2"),
         r"junk is not a Hugging Face checkpoint: it has no config\.json"),
    Case("convert_missing", "convert", ("--from-hf", "{tmp}/nope_model", "--out", "{tmp}/c3"),
         r"nope_model is not a directory \(it does not exist\)"),
    Case("convert_out_not_empty", "convert", ("--from-hf", "{hf}", "--out", "{junk}"),
         r"junk already exists and is not empty"),
    Case("convert_no_from", "convert", ("--out", "{tmp}/c4"),
         r"the following arguments are required: --from-hf; see python -m muppet_jax\.convert"),
    Case("export_no_checkpoint", "export", ("--checkpoint", "{empty}", "--out", "{tmp}/e1"),
         r"empty holds no muppet_jax checkpoint"),
    Case("export_a_workdir", "export", ("--checkpoint", "{run}", "--out", "{tmp}/e4"),
         r"run is a training workdir, not a checkpoint directory; pass .*run/checkpoints"),
    Case("export_an_hf_model", "export", ("--checkpoint", "{hf}", "--out", "{tmp}/e5"),
         r"hf is a Hugging Face model, not a muppet_jax checkpoint"),
    Case("export_missing", "export", ("--checkpoint", "{tmp}/nope", "--out", "{tmp}/e2"),
         r"nope does not exist"),
    Case("export_out_not_empty", "export", ("--checkpoint", "{run}/checkpoints", "--out", "{junk}"),
         r"junk already exists and is not empty"),
    Case("export_bad_dtype", "export", ("--checkpoint", "{run}/checkpoints", "--out", "{tmp}/e3",
                                        "--dtype", "int8"), r"argument --dtype: invalid choice"),
    Case("results_no_runs", "results", ("{empty}",), r"no results\.json under .*empty"),
    Case("results_missing_dir", "results", ("{tmp}/nope",), r"no results\.json under .*nope"),
    Case("results_no_args", "results", (), r"the following arguments are required: DIR"),
]


def _digest(directory: pathlib.Path) -> dict[str, str]:
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


def _tasks_file(path: pathlib.Path, tokenizer: pathlib.Path, train: str) -> str:
  path.write_text(json.dumps({
      "tokenizer": str(tokenizer),
      "tasks": [{"name": "mine", "family": "classification", "train": train,
                 "labels": ["no", "yes"], "columns": {"text_a": "text"}}]}))
  return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """The paths the cases name, every case's (status, stdout, stderr, seconds), and the saved
  run's file hashes before and after them all."""
  tmp = tmp_path_factory.mktemp("bad_inputs")
  demo.tokenizer_path()  # Built once here, not by every case at once.
  run = tmp / "run"
  shutil.copytree(RUN, run)
  hf = tmp / "hf"
  hf_fixtures.save_tiny_mlm("roberta", hf)
  trunc = tmp / "trunc"
  shutil.copytree(hf, trunc)
  weights = (trunc / "model.safetensors").read_bytes()
  (trunc / "model.safetensors").write_bytes(weights[:len(weights) // 2])
  (tmp / "junk").mkdir()
  (tmp / "junk" / "notes.txt").write_text("not a model\n")
  (tmp / "empty").mkdir()
  (tmp / "a_file").write_text("a file, not a directory\n")
  (tmp / "header.tsv").write_text("text\tlabel\n")
  (tmp / "empty.tsv").write_text("")
  bad_rows = {  # {NAME_row_tasks}: a tasks file whose data file has a bad row.
      "missing": ("missing_row.jsonl", '{"text": "a", "label": "no"}\n{"label": "yes"}\n'),
      "label": ("label.tsv", "text\tlabel\na\tno\nb\t7\n"),
      "nonint": ("nonint.tsv", "text\tlabel\na\tno\nb\t1.5\n"),
      "blank": ("blank.tsv", "text\tlabel\na\tno\n \tyes\n"),
      "short": ("short.tsv", "text\tlabel\na\tno\nb\n"),
      "long": ("long.tsv", "text\tlabel\na\tno\nb\tc\tyes\n")}
  for file, text in bad_rows.values():
    (tmp / file).write_text(text)
  paths = {
      "tmp": str(tmp), "run": str(run), "hf": str(hf), "trunc": str(trunc),
      "junk": str(tmp / "junk"), "empty": str(tmp / "empty"), "a_file": str(tmp / "a_file"),
      "missing_tasks": _tasks_file(tmp / "missing.json", hf, "missing.tsv"),
      "header_tasks": _tasks_file(tmp / "header.json", hf, "header.tsv"),
      "empty_tasks": _tasks_file(tmp / "empty.json", hf, "empty.tsv"),
      **{f"{name}_row_tasks": _tasks_file(tmp / f"{name}_row.json", hf, file)
         for name, (file, _) in bad_rows.items()},
  }
  before = _digest(run)
  cases = [{"id": c.id, "module": f"muppet_jax.{c.command}",
            "args": [a.format(**paths) for a in c.args]} for c in CASES]
  (tmp / "cases.json").write_text(json.dumps(cases))
  (tmp / "out").mkdir()
  done = subprocess.run([sys.executable, "-m", "tests.cli_zygote", tmp / "cases.json",
                         tmp / "out"], capture_output=True, text=True, cwd=ROOT, check=True)
  results = {}
  for name, (status, seconds) in json.loads(done.stdout.splitlines()[-1]).items():
    output = [(tmp / "out" / f"{name}.{s}").read_text() for s in ("out", "err")]
    results[name] = (status, *output, seconds)
  return paths, results, before, _digest(run)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_error_line(case, world):
  paths, results, before, after = world
  status, stdout, stderr, seconds = results[case.id]
  assert status != 0, stdout + stderr
  assert "Traceback" not in stderr, stderr
  errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, stderr
  assert re.search(case.error, errors[0]), errors[0]
  assert "compiled train step" not in stdout + stderr  # It failed before compiling.
  assert seconds < case.seconds
  if "{run}" in " ".join(case.args):
    assert after == before  # The saved run's checkpoints are as they were.


def test_debug_shows_the_traceback(world):
  """A real `python -m` start, whose --debug turns the one line into the UserError's traceback
  (MUPPET_DEBUG=1 does the same; 0 leaves it to the flag)."""
  paths, _, _, _ = world
  done = subprocess.run(
      [sys.executable, "-m", "muppet_jax.train", DEMO, f"--workdir={paths['tmp']}/debug",
       "--config.total_steps=0", "--debug"], capture_output=True, text=True, cwd=ROOT,
      env={**os.environ, "MUPPET_DEBUG": "0"})
  assert done.returncode != 0
  assert "Traceback (most recent call last)" in done.stderr
  assert "muppet_jax.errors.UserError: total_steps=0 must be at least 1" in done.stderr
  assert "\nerror: " not in done.stderr
  assert not os.path.exists(f"{paths['tmp']}/debug")  # Nothing made.


@pytest.mark.parametrize("env,shown", [("1", True), ("0", False), ("", False)])
def test_muppet_debug_turns_the_line_into_the_traceback(monkeypatch, capsys, env, shown):
  monkeypatch.setenv("MUPPET_DEBUG", env)
  with pytest.raises(UserError if shown else SystemExit):
    with cli.user_errors():
      raise UserError("a mistake")
  assert capsys.readouterr().err == ("" if shown else "error: a mistake\n")
  with pytest.raises(KeyError):  # Not a user error: its traceback, always.
    with cli.user_errors():
      raise KeyError("a bug")
