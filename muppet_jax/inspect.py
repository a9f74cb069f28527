"""Looks inside seqio tasks and mixtures, without ever asking for input.

    python -m muppet_jax.inspect --list
    python -m muppet_jax.inspect --mixture muppet_demo [--examples 2] [--max-length 512]
    python -m muppet_jax.inspect --tasks-file my_tasks.yaml --tokenizer bert-base-uncased \
        --mixture my_mix

For a mixture (or a single task): each task's family, output-space size n, head, train size and
share of the mixture; N decoded examples per task; token-length p50/p90/p99 and the truncation
rate at --max-length; and the fraction of real (non-pad) tokens in padded vs packed batches.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import seqio

from muppet_jax import cli, inputs
from muppet_jax.data import batching, mixing, task_modules, tasks_file
from muppet_jax.data.task_info import MuppetTask, check_prepared
from muppet_jax.errors import UserError

# Lengths are measured untruncated up to this multiple of --max-length.
_MEASURE_FACTOR = 8


def list_registered() -> str:
  lines = ["mixtures:"]
  for name in sorted(seqio.MixtureRegistry.names()):
    lines.append(f"  {name:<28} {len(seqio.MixtureRegistry.get(name).tasks)} tasks")
  lines.append("tasks:")
  for name in sorted(seqio.TaskRegistry.names()):
    task = seqio.TaskRegistry.get(name)
    info = getattr(task, "info", None)
    detail = f"{info.family:<16} {info.description}" if info else "(no Muppet metadata)"
    lines.append(f"  {name:<28} {detail}")
  return "\n".join(lines)


def _n(task: MuppetTask, max_length: int) -> str:
  if task.info.family == "summarization":
    try:
      return str(task.output_features["inputs"].vocabulary.vocab_size)
    except UserError:
      return "|V|"
  return str(task.info.output_space_size(max_length, 0))


def task_table(name: str, max_length: int, shared_heads: bool = True) -> str:
  tasks = mixing.mixture_tasks(name)
  shares = mixing.rates(name)
  rows = [("task", "family", "n", "head", "train size", "share %")]
  for t in tasks:
    rows.append((t.name, t.info.family, _n(t, max_length), t.task_head(shared_heads).head,
                 f"{t.info.train_size:,}", f"{100 * shares[t.name]:.2f}"))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def task_report(task: MuppetTask, examples: int, max_length: int, target_length: int,
                sample: int) -> str:
  """Decoded examples and length statistics of one task's train split."""
  check_prepared(task)
  tokenizer = task.output_features["inputs"].vocabulary.tokenizer
  lengths = {"inputs": max_length * _MEASURE_FACTOR, "targets": target_length * _MEASURE_FACTOR}
  dataset = task.get_dataset(lengths, split="train", shuffle=False, num_epochs=1,
                             trim_output_features=False, try_in_mem_cache=False).take(sample)
  seq_lengths, lines = [], [f"== {task.name} ({task.info.family})"]
  for i, ex in enumerate(dataset.as_numpy_iterator()):
    seq_lengths.extend(ex["input_lengths"].tolist())
    if i < examples:
      parts = np.split(ex["inputs"], np.cumsum(ex["input_lengths"])[:-1])
      for j, part in enumerate(parts):
        lines.append(f"  [{i}.{j}] {tokenizer.decode(part[:max_length])}")
      label = {"classification": f"label={ex['label']}", "regression": f"score={ex['score']:.3f}",
               "multiple_choice": f"answer=choice {ex['label']}",
               "span": f"answer={tokenizer.decode(ex['inputs'][ex['span'][0]:ex['span'][1] + 1])!r}",
               "summarization": f"summary={tokenizer.decode(ex['targets'])!r}"}
      lines.append(f"        {label[task.info.family]}")
  if seq_lengths:
    p50, p90, p99 = np.percentile(seq_lengths, [50, 90, 99])
    truncated = np.mean(np.asarray(seq_lengths) > max_length)
    lines.append(f"  tokens per sequence over {len(seq_lengths)}: p50 {p50:.0f}, p90 {p90:.0f}, "
                 f"p99 {p99:.0f}; truncated at {max_length}: {100 * truncated:.1f}%")
  return "\n".join(lines)


def real_token_fractions(name: str, max_length: int, target_length: int, batch_size: int = 16,
                         batches: int = 8) -> tuple[float, float]:
  """Fraction of real tokens in (padded, packed) batches of the mixture's stream."""
  fractions = []
  for packing in (False, True):
    with batching.MixtureStream(batching.StreamConfig(
        name, batch_size=batch_size, max_length=max_length, target_length=target_length,
        packing=packing)) as stream:
      fractions.append(float(np.mean([(next(stream)["segment_ids"] > 0).mean()
                                      for _ in range(batches)])))
  return fractions[0], fractions[1]


def main(argv: list[str]) -> int:
  parser = cli.ArgumentParser(prog="python -m muppet_jax.inspect", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--list", action="store_true", help="list registered tasks and mixtures")
  parser.add_argument("--mixture", help="mixture or task name")
  parser.add_argument("--examples", type=int, default=2, help="decoded examples per task")
  parser.add_argument("--max-length", type=int, default=512)
  parser.add_argument("--target-length", type=int, default=128)
  parser.add_argument("--sample", type=int, default=500,
                      help="examples per task for the length statistics")
  parser.add_argument("--tasks-file", default="",
                      help="a JSON/YAML tasks file whose tasks and mixtures to register first")
  parser.add_argument("--tokenizer", default="",
                      help="the tasks file's tokenizer, where it names none (the model's: a "
                           "Hugging Face directory or hub name, or a muppet_jax checkpoint)")
  parser.add_argument("--task-modules", default="",
                      help="comma-separated Python modules (names or .py paths) to import first")
  args = parser.parse_args(argv)
  for name, least in (("max_length", 1), ("target_length", 1), ("examples", 0), ("sample", 1)):
    if getattr(args, name) < least:
      flag = f"--{name.replace('_', '-')}"
      raise UserError(f"{flag}={getattr(args, name)} must be at least {least}")
  import tasks  # noqa: F401  (registers the tasks and mixtures)

  task_modules.import_task_modules(args.task_modules)
  if args.tasks_file:
    tasks_file.register(args.tasks_file, lambda: inputs.start_tokenizer(args.tokenizer))

  if args.list:
    print(list_registered())
    return 0
  if not args.mixture:
    parser.error("give --mixture NAME or --list")
  print(task_table(args.mixture, args.max_length))
  missing = []
  for task in mixing.mixture_tasks(args.mixture):
    try:
      print(task_report(task, args.examples, args.max_length, args.target_length, args.sample))
    except UserError as e:
      missing.append(str(e))
      print(f"== {task.name}: not available: {e}")
  if missing:
    print(f"error: {len(missing)} dataset(s) of {args.mixture} are not prepared (see above); "
          "batch statistics need all of them", file=sys.stderr)
    return 2
  padded, packed = real_token_fractions(args.mixture, args.max_length, args.target_length)
  print(f"real (non-pad) tokens at length {args.max_length}: padded {100 * padded:.1f}%, "
        f"packed {100 * packed:.1f}% ({packed / padded:.2f}x)")
  return 0


if __name__ == "__main__":
  cli.run(main)
