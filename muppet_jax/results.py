"""Fine-tuning results side by side: every run's `results.json` gathered into a table
(`results.md`: tasks x starts, mean and spread over seeds, the suite's average) and a plot
(`results.png`: each task's metric against the train fraction, one line per start).

    python -m muppet_jax.results DIR [DIR ...] [--out OUT_DIR]

The tables are computed from the runs' files, never typed in; a start is named by its
`init_from` (the pre-finetuned checkpoint, or the model it started from).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import pathlib
from typing import Iterable, Sequence

import numpy as np

from muppet_jax import cli
from muppet_jax.errors import UserError

RESULTS_FILE = "results.json"


@dataclasses.dataclass(frozen=True)
class Result:
  """One fine-tuning run's outcome: its best validation value of `metric`."""

  task: str
  start: str
  fraction: float
  seed: int
  metric: str
  best: float


def read(directories: Iterable[str | os.PathLike]) -> list[Result]:
  """Every `results.json` under `directories` (searched recursively)."""
  out = []
  for directory in directories:
    paths = sorted(pathlib.Path(directory).rglob(RESULTS_FILE))
    if not paths:
      raise UserError(f"no {RESULTS_FILE} under {directory}; fine-tuning runs write one each")
    for path in paths:
      data = json.loads(path.read_text())
      try:
        out.append(Result(str(data["task"]), str(data["start"]), float(data["fraction"]),
                          int(data["seed"]), str(data["metric"]),
                          math.nan if data["best"] is None else float(data["best"])))
      except KeyError as e:
        raise UserError(f"{path} has no {e.args[0]!r}; it is not a fine-tuning results file"
                        ) from None
  return out


def _short(start: str) -> str:
  """A start's name in a table: its last path parts that aren't `checkpoints`."""
  parts = [p for p in pathlib.PurePath(start).parts if p not in ("checkpoints", "best", "/")]
  return "/".join(parts[-2:]) or start


def _grouped(results: Sequence[Result]) -> dict[tuple[str, str, float], list[float]]:
  """(task, start, fraction) -> the runs' best values (one per seed)."""
  groups = collections.defaultdict(list)
  for r in results:
    groups[(r.task, r.start, r.fraction)].append(r.best)
  return groups


def table(results: Sequence[Result]) -> str:
  """A markdown table of the runs with the most training data of each task: tasks x starts,
  mean ± standard deviation over seeds (and their count), then the average over the tasks
  that every start has."""
  groups = _grouped(results)
  tasks = sorted({r.task for r in results})
  starts = sorted({r.start for r in results})
  metric = {r.task: r.metric for r in results}
  full = {t: max(r.fraction for r in results if r.task == t) for t in tasks}
  header = ["task", "metric", *(f"`{_short(s)}`" for s in starts)]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  means = collections.defaultdict(dict)
  for t in tasks:
    cells = [t + (f" ({full[t]:g} of train)" if full[t] < 1 else ""), metric[t]]
    for s in starts:
      values = groups.get((t, s, full[t]))
      if not values:
        cells.append("-")
        continue
      means[s][t] = float(np.mean(values))
      spread = f" ± {100 * np.std(values):.1f}" if len(values) > 1 else ""
      cells.append(f"{100 * means[s][t]:.1f}{spread} ({len(values)})")
    lines.append("| " + " | ".join(cells) + " |")
  shared = [t for t in tasks if all(t in means[s] for s in starts)]
  if len(shared) > 1:
    average = [f"{100 * np.mean([means[s][t] for t in shared]):.1f}" for s in starts]
    lines.append(f"| average of {len(shared)} tasks | | " + " | ".join(average) + " |")
  return "\n".join(lines)


def plot(results: Sequence[Result], path: str | os.PathLike) -> None:
  """Each task's metric against the train fraction, one line per start (error bars: the
  standard deviation over seeds)."""
  # The object-oriented API: no pyplot global state, no display needed.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  groups = _grouped(results)
  tasks = sorted({r.task for r in results})
  figure = Figure(figsize=(4.5 * len(tasks), 3.5), layout="constrained")
  FigureCanvasAgg(figure)
  for axes, task in zip(figure.subplots(1, len(tasks), squeeze=False)[0], tasks):
    for start in sorted({r.start for r in results if r.task == task}):
      fractions = sorted({f for (t, s, f) in groups if t == task and s == start})
      values = [groups[(task, start, f)] for f in fractions]
      axes.errorbar(fractions, [np.mean(v) for v in values], yerr=[np.std(v) for v in values],
                    marker="o", capsize=3, label=_short(start))
    axes.set_xscale("log" if len({r.fraction for r in results}) > 2 else "linear")
    axes.set(title=task, xlabel="fraction of the train split",
             ylabel=next(r.metric for r in results if r.task == task))
    axes.legend(fontsize="small")
  figure.savefig(path, dpi=100)


def write_summary(results: Sequence[Result], out: str | os.PathLike) -> tuple[pathlib.Path,
                                                                              pathlib.Path]:
  """Writes `results.md` and `results.png` into `out`; returns their paths."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  md, png = out / "results.md", out / "results.png"
  md.write_text(f"# Fine-tuning results\n\n{table(results)}\n\n![results](results.png)\n")
  plot(results, png)
  return md, png


def main(argv: list[str]) -> int:
  parser = cli.ArgumentParser(prog="python -m muppet_jax.results", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("directories", nargs="+", metavar="DIR",
                      help="fine-tuning workdirs (searched for results.json)")
  parser.add_argument("--out", default=None, help="where results.md/png go (default: the first "
                      "DIR)")
  args = parser.parse_args(argv)
  md, png = write_summary(read(args.directories), args.out or args.directories[0])
  print(md.read_text().split("\n\n")[1])
  print(f"wrote {md} and {png}")
  return 0


if __name__ == "__main__":
  cli.run(main)
