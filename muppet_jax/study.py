"""The task-count scaling study: pre-finetune on each mixture of a list, fine-tune every result
and the original model on a suite of tasks, and compare.

    python -m muppet_jax.study --config=configs/study.py:demo --workdir=runs/study
    python -m muppet_jax.study --config=configs/study.py --workdir=gs://bucket/study --dry-run

WORKDIR/pre/MIXTURE holds each pre-finetuning run, WORKDIR/finetune/START each start's
fine-tuning runs (`muppet_jax.finetune`; START is `original` or the mixture). A study resumes
where it stopped: finished pre-finetuning runs (their last step saved) and fine-tuning runs (their
results.json written) are skipped, others resume from their checkpoints. It ends by writing
WORKDIR/results.md and results.png: the suite's downstream score against the number of
pre-finetuning tasks, the original model as the baseline, computed from the runs' results.json.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import ml_collections
from absl import app, flags
from etils import epath

from muppet_jax import checkpointing, cli, finetune, inputs, progress, results, train
from muppet_jax.data import mixing
from muppet_jax.errors import UserError

_DRY_RUN = flags.DEFINE_bool("dry-run", False, "list the study's runs and which are done")
ORIGINAL = "original"


@dataclasses.dataclass(frozen=True)
class Start:
  """A model the suite is fine-tuned from: the original, or its pre-finetuning on a mixture."""

  name: str
  mixture: str | None  # None: the original model.
  num_tasks: int  # Pre-finetuning tasks (0 for the original).
  init_from: str
  finetune_dir: str


def starts(config: ml_collections.ConfigDict, workdir: str) -> list[Start]:
  """The original model, then one start per mixture of `config.mixtures`."""
  mixtures = [m.strip() for m in config.mixtures.split(",") if m.strip()]
  if not mixtures:
    raise UserError("mixtures is empty; give --config.mixtures=MIXTURE[,MIXTURE...]")
  out = [Start(ORIGINAL, None, 0, config.prefinetune.init_from,
               os.path.join(workdir, "finetune", ORIGINAL))]
  for mixture in mixtures:
    tasks = mixing.mixture_tasks(mixture)  # Unknown names fail here, before any run.
    out.append(Start(mixture, mixture, len(tasks),
                     os.path.join(workdir, "pre", mixture, "checkpoints"),
                     os.path.join(workdir, "finetune", mixture)))
  return out


def prefinetuned(start: Start, config: ml_collections.ConfigDict) -> bool:
  """Whether the start's pre-finetuning saved its last step."""
  if not epath.Path(start.init_from).is_dir():
    return False
  step, _ = checkpointing.read_model_metadata(start.init_from)
  return step >= config.prefinetune.total_steps


def finetune_config(config: ml_collections.ConfigDict, start: Start) -> ml_collections.ConfigDict:
  """The suite's fine-tuning config from `start` (a random original takes the model's shape)."""
  c = config.finetune.copy_and_resolve_references()
  c.init_from = start.init_from
  if not start.init_from:
    c.model = config.prefinetune.model.copy_and_resolve_references()
  return c


def plan_lines(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """The study's runs, one line each, with whether they are done."""
  lines = []
  for start in starts(config, workdir)[1:]:
    done = "done" if prefinetuned(start, config) else "to do"
    lines.append(f"pre-finetune on {start.mixture} ({start.num_tasks} tasks) -> "
                 f"{start.init_from}: {done}")
  for start in starts(config, workdir):
    for run in finetune.runs(finetune_config(config, start), start.finetune_dir):
      done = epath.Path(run.workdir, finetune.RESULTS_FILE).exists()
      lines.append(f"fine-tune {start.name} on {run.task} (fraction {run.fraction:g}, seed "
                   f"{run.seed}) -> {run.workdir}: {'done' if done else 'to do'}")
  return lines


def scaling_points(config: ml_collections.ConfigDict, workdir: str
                   ) -> list[tuple[Start, float]]:
  """Each start's suite score: the mean over the suite's tasks of the mean over seeds of the
  best validation value (the full train fraction), from the runs' results.json."""
  points = []
  for start in starts(config, workdir):
    runs = results.read([start.finetune_dir])
    full = max(r.fraction for r in runs)
    by_task: dict[str, list[float]] = {}
    for r in runs:
      if r.fraction == full:
        by_task.setdefault(r.task, []).append(r.best)
    points.append((start, sum(sum(v) / len(v) for v in by_task.values()) / len(by_task)))
  return points


def write_scaling(points: list[tuple[Start, float]], suite: str, out: str) -> tuple[str, str]:
  """WORKDIR/results.md (the table) and results.png (score against task count)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  lines = ["| start | pre-finetuning tasks | " + suite + " |", "|---|---|---|"]
  lines += [f"| {s.name} | {s.num_tasks} | {100 * score:.1f} |" for s, score in points]
  md, png = os.path.join(out, "results.md"), os.path.join(out, "results.png")
  epath.Path(md).write_text("# Task-count scaling\n\n" + "\n".join(lines)
                            + "\n\n![scaling](results.png)\n")
  figure = Figure(figsize=(5, 3.5), layout="constrained")
  FigureCanvasAgg(figure)
  axes = figure.subplots()
  original = [score for s, score in points if s.mixture is None]
  scaled = sorted((s.num_tasks, score) for s, score in points if s.mixture is not None)
  axes.plot([n for n, _ in scaled], [100 * v for _, v in scaled], marker="o",
            label="pre-finetuned")
  for score in original:
    axes.axhline(100 * score, color="gray", linestyle="--", label=ORIGINAL)
  axes.set(xlabel="pre-finetuning tasks", ylabel=suite)
  axes.legend(fontsize="small")
  figure.savefig(png, dpi=100)
  return md, png


def study(config: ml_collections.ConfigDict, workdir: str) -> list[tuple[Start, float]]:
  """Runs (or resumes) every pre-finetuning and fine-tuning run; returns each start's score."""
  inputs.register_tasks(config.prefinetune)
  all_starts = starts(config, workdir)
  for start in all_starts[1:]:
    if prefinetuned(start, config):
      progress.log(f"pre-finetuning on {start.mixture}: done already; skipped")
      continue
    pre = config.prefinetune.copy_and_resolve_references()
    pre.data.mixture = start.mixture
    progress.log(f"pre-finetuning on {start.mixture} ({start.num_tasks} tasks)")
    train.train(pre, os.path.dirname(start.init_from))
  for start in all_starts:
    progress.log(f"fine-tuning from {start.name}")
    finetune.finetune(finetune_config(config, start), start.finetune_dir)
  points = scaling_points(config, workdir)
  suite = "mean of " + config.finetune.finetune.task.replace(",", ", ")
  md, png = write_scaling(points, suite, workdir)
  progress.log(epath.Path(md).read_text().split("\n\n")[1])
  progress.log(f"wrote {md} and {png}")
  return points


def main(argv: list[str]) -> None:
  del argv
  config, workdir = train.command_setup("configs/study.py[:PRESET]")
  with cli.user_errors():
    if _DRY_RUN.value:
      inputs.register_tasks(config.prefinetune)
      print("\n".join(plan_lines(config, workdir)))
      return
    study(config, workdir)


if __name__ == "__main__":
  with cli.user_errors():  # Before absl, which reports these with a stack trace.
    cli.check_config_flags(sys.argv[1:])
  app.run(main, flags_parser=cli.parse_flags)
