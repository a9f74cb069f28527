"""Fine-tuning on one target task, from a pre-finetuned (or any) start.

    python -m muppet_jax.finetune --config=configs/finetune.py:demo --workdir=runs/demo_ft
    python -m muppet_jax.finetune --config=configs/finetune.py:glue --workdir=runs/rte \\
        --config.finetune.task=glue_rte --config.init_from=runs/muppet/checkpoints \\
        --config.finetune.train_fraction=0.1,1 --config.finetune.seeds=1,2,3

Each run is the pre-finetuning trainer (`train.train`) on the task alone, from the weights of
`init_from` (no optimizer state or step), with its head new or reused from the start's trained
head of the task. Every evaluation is compared by the task's main metric (its first), and the
best step's parameters are kept as a model checkpoint in `RUN/best` (exportable with
`python -m muppet_jax.export --checkpoint RUN/best --task TASK`); `finetune.patience` stops a run
that stopped improving. Each (task, train fraction, seed) is its own run: in WORKDIR itself when
there is one, in `WORKDIR/TASK_fFRACTION_sSEED` otherwise. A run writes `RUN/results.json` when it
ends; rerunning the command skips the runs that have one and resumes the others.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import sys
from typing import Any, Callable

import jax
import ml_collections
from absl import app
from etils import epath

from muppet_jax import checkpointing, cli, inputs, progress, results, train
from muppet_jax.data.task_info import get_task
from muppet_jax.errors import UserError

# The paper's fine-tuning recipe per family (RoBERTa's published ones: GLUE for classification
# and regression, RACE for multiple choice, SQuAD for spans; BART's for CNN/DailyMail, whose 20k
# updates of ~64 documents are about 4 epochs). A preset leaves these keys unset (None) and each
# task takes its family's values; a key set on the command line wins.
RECIPES: dict[str, dict[str, float]] = {
    "classification": {"optimizer.learning_rate": 1e-5, "optimizer.weight_decay": 0.1,
                       "data.batch_size": 32, "finetune.epochs": 10},
    "regression": {"optimizer.learning_rate": 1e-5, "optimizer.weight_decay": 0.1,
                   "data.batch_size": 32, "finetune.epochs": 10},
    "multiple_choice": {"optimizer.learning_rate": 1e-5, "optimizer.weight_decay": 0.1,
                        "data.batch_size": 16, "finetune.epochs": 4},
    "span": {"optimizer.learning_rate": 1.5e-5, "optimizer.weight_decay": 0.01,
             "data.batch_size": 48, "finetune.epochs": 2},
    "summarization": {"optimizer.learning_rate": 3e-5, "optimizer.weight_decay": 0.01,
                      "data.batch_size": 64, "finetune.epochs": 4},
}
RESULTS_FILE = "results.json"
BEST_DIR = "best"
# configs/finetune.py's demo start: the model of the README's quick start.
DEMO_START = "runs/demo/checkpoints"


@dataclasses.dataclass
class BestStep:
  """The best evaluation so far by one metric (higher is better; ties keep the earlier step, and
  NaN never wins), and whether `patience` evaluations have passed without a new best."""

  metric: str
  patience: int = 0  # 0: never stop.
  step: int | None = None
  value: float = -math.inf
  metrics: dict[str, float] = dataclasses.field(default_factory=dict)
  evals_since: int = 0

  def update(self, step: int, metrics: dict[str, float]) -> bool:
    """Takes the evaluation of `step`; True when it is the new best."""
    value = metrics.get(self.metric, math.nan)
    if self.step is None or (not math.isnan(value) and value > self.value):
      self.step, self.metrics, self.evals_since = step, dict(metrics), 0
      self.value = -math.inf if math.isnan(value) else value
      return True
    self.evals_since += 1
    return False

  @property
  def stop(self) -> bool:
    return self.patience > 0 and self.evals_since >= self.patience


@dataclasses.dataclass(frozen=True)
class Run:
  task: str
  fraction: float
  seed: int
  workdir: str


def _values(text: str, parse: Callable[[str], Any], key: str) -> list[Any]:
  try:
    values = [parse(v.strip()) for v in text.split(",") if v.strip()]
  except ValueError as e:
    raise UserError(f"finetune.{key}={text!r} is not a comma-separated list of "
                    f"{parse.__name__}s") from e
  if not values:
    raise UserError(f"finetune.{key} is empty; give at least one value "
                    f"(--config.finetune.{key}=...)")
  return values


def runs(config: ml_collections.ConfigDict, workdir: str) -> list[Run]:
  """The runs of `config.finetune`: every task x train fraction x seed."""
  f = config.finetune
  if not f.task:
    raise UserError("no task to fine-tune on; give --config.finetune.task=TASK (a registered "
                    "task, or several, comma-separated)")
  if f.head not in ("new", "reuse"):
    raise UserError(f"finetune.head={f.head!r}; choose new or reuse")
  if f.epochs is not None and f.epochs < 0:
    raise UserError(f"finetune.epochs={f.epochs} must be 0 (steps as set) or more")
  if not 0 <= f.warmup_fraction < 1:
    raise UserError(f"finetune.warmup_fraction={f.warmup_fraction} must be in [0, 1)")
  if f.patience < 0:
    raise UserError(f"finetune.patience={f.patience} must be 0 (never stop) or more")
  tasks = _values(f.task, str, "task")
  fractions = _values(f.train_fraction, float, "train_fraction")
  for fraction in fractions:
    if not 0 < fraction <= 1:
      raise UserError(f"finetune.train_fraction {fraction} is not in (0, 1]")
  seeds = _values(f.seeds, int, "seeds")
  several = len(tasks) * len(fractions) * len(seeds) > 1
  return [Run(t, fr, s, os.path.join(workdir, f"{t}_f{fr:g}_s{s}") if several else workdir)
          for t in tasks for fr in fractions for s in seeds]


def run_config(config: ml_collections.ConfigDict, run: Run) -> ml_collections.ConfigDict:
  """The trainer's config of `run`: its task, fraction and seeds, its family's recipe for the
  keys left unset; with `finetune.epochs`, the steps, warmup and evaluations of that many passes
  over its train examples."""
  c = config.copy_and_resolve_references()
  info = get_task(run.task).info
  for key, value in RECIPES[info.family].items():
    section, name = key.split(".")
    if c[section][name] is None:
      c[section][name] = value
  c.data.mixture = run.task
  c.data.train_fraction = run.fraction
  c.seed = c.data.seed = run.seed
  if c.finetune.epochs > 0:
    sequences = math.ceil(run.fraction * info.train_size) * (
        info.num_classes if info.family == "multiple_choice" else 1)
    per_epoch = max(1, math.ceil(sequences / c.data.batch_size))
    c.total_steps = math.ceil(c.finetune.epochs * per_epoch)
    c.optimizer.warmup_steps = round(c.finetune.warmup_fraction * c.total_steps)
    c.eval.every_steps = per_epoch
  return c


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
  """JSON has no NaN: such values (e.g. the correlation of constant predictions) become null."""
  return {k: v if math.isfinite(v) else None for k, v in metrics.items()}


def run_one(config: ml_collections.ConfigDict, run: Run) -> dict[str, Any]:
  """Fine-tunes `run` (or resumes it) and returns its results (also in RUN/results.json)."""
  workdir = epath.Path(run.workdir)
  if (workdir / RESULTS_FILE).exists():
    progress.log(f"{run.workdir} has its results already; skipped")
    return json.loads((workdir / RESULTS_FILE).read_text())
  c = run_config(config, run)
  metric = get_task(run.task).info.metrics[0]  # The task's main one.
  best = BestStep(f"eval/{run.task}/{metric}", config.finetune.patience)
  if (workdir / BEST_DIR).is_dir():  # A resumed run: its best so far.
    _, meta = checkpointing.read_model_metadata(workdir / BEST_DIR)
    best.update(meta["finetune"]["step"], meta["finetune"]["metrics"])
  last_step = best.step or 0

  def on_eval(step: int, metrics: dict[str, float], params: Any, metadata: dict[str, Any]
              ) -> bool:
    nonlocal last_step
    last_step = step
    if best.update(step, metrics):
      checkpointing.save_model(workdir / BEST_DIR, params,
                               {**metadata, "finetune": {"step": step, "metrics": metrics}},
                               step=step, keep=1)
    return best.stop

  train.train(c, run.workdir, on_eval=on_eval, reuse_heads=config.finetune.head == "reuse")
  best_metrics = _finite(best.metrics)
  outcome = {"task": run.task, "start": config.init_from, "head": config.finetune.head,
             "fraction": run.fraction, "seed": run.seed, "metric": metric,
             "recipe": {"learning_rate": c.optimizer.learning_rate,
                        "weight_decay": c.optimizer.weight_decay,
                        "batch_size": c.data.batch_size, "total_steps": c.total_steps,
                        "warmup_steps": c.optimizer.warmup_steps},
             "best": best_metrics.get(best.metric), "best_step": best.step,
             "best_metrics": best_metrics, "last_step": last_step,
             "checkpoint": str(workdir / BEST_DIR)}
  if jax.process_index() == 0:
    (workdir / RESULTS_FILE).write_text(json.dumps(outcome, indent=1) + "\n")
  return outcome


def result_line(r: dict[str, Any]) -> str:
  best = "none" if r["best"] is None else f"{r['best']:.4f}"
  return (f"{r['task']} fraction {r['fraction']:g} seed {r['seed']}: best "
          f"{r['metric']} {best} at step {r['best_step']} (of "
          f"{r['last_step']}); {r['checkpoint']}")


def summary_line(outcomes: list[dict[str, Any]]) -> str:
  """Each (task, fraction)'s best values: their mean, and their spread over seeds."""
  groups: dict[tuple[str, float], list[float]] = {}
  for r in outcomes:
    groups.setdefault((r["task"], r["fraction"]), []).append(r["best"])
  parts = []
  for (task, fraction), values in groups.items():
    values = [v for v in values if v is not None]
    if not values:
      parts.append(f"{task} f{fraction:g} none")
      continue
    spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    parts.append(f"{task} f{fraction:g} {statistics.mean(values):.4f}{spread} "
                 f"({len(values)} seed{'s' if len(values) > 1 else ''})")
  return f"{len(outcomes)} run{'s' if len(outcomes) > 1 else ''} done: {'; '.join(parts)}"


def finetune(config: ml_collections.ConfigDict, workdir: str) -> list[dict[str, Any]]:
  """Every run of `config.finetune`, one after the other; each one's results."""
  if "finetune" not in config:
    raise UserError("the config has no finetune section; fine-tune with "
                    "--config=configs/finetune.py[:PRESET] (or a config built on it)")
  if config.init_from == DEMO_START and not os.path.isdir(DEMO_START):
    raise UserError(f"no pre-finetuned demo model in {DEMO_START}; run the demo pre-finetuning "
                    "first (python -m muppet_jax.train --config=configs/prefinetune.py:demo "
                    "--workdir=runs/demo) or give --config.init_from=CHECKPOINT")
  inputs.register_tasks(config)
  planned = runs(config, workdir)
  for run in planned:
    get_task(run.task)  # Every name checked before the first run starts.
  outcomes = []
  for run in planned:
    outcomes.append(run_one(config, run))
    progress.log(result_line(outcomes[-1]))
  progress.log(summary_line(outcomes))
  if len(planned) > 1 and jax.process_index() == 0:  # A suite or sweep: its table and plot.
    md, png = results.write_summary(results.read([workdir]), workdir)
    progress.log(f"wrote {md} and {png}")
  return outcomes


def main(argv: list[str]) -> None:
  del argv
  config, workdir = train.command_setup("configs/finetune.py[:PRESET]")  # Its flags too.
  with cli.user_errors():
    finetune(config, workdir)


if __name__ == "__main__":
  with cli.user_errors():  # Before absl, which reports these with a stack trace.
    cli.check_config_flags(sys.argv[1:])
  app.run(main, flags_parser=cli.parse_flags)
