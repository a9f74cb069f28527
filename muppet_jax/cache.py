"""Tokenizes every split of every task of a mixture once, into a token cache the trainer reads.

    python -m muppet_jax.cache --config=configs/prefinetune.py --out=/data/muppet_cache
    python -m muppet_jax.cache --config=configs/prefinetune.py:demo --out=/tmp/cache \\
        --config.data.mixture=muppet_demo --splits=train,validation
    # On many hosts at once, each taking its shards:
    python -m muppet_jax.cache --config=... --out=gs://bucket/cache --worker=$I --workers=$N

The config gives the mixture (`data.mixture`), the lengths (`data.max_length`,
`data.target_length`) and so the fingerprint the trainer checks; then train with
`--config.data.cache_dir=DIR`. A run that stops resumes where it stopped (whole shards are kept);
a cache made with another vocabulary, length or preprocessing is refused unless `--overwrite`.
See `muppet_jax.data.token_cache` for the format.
"""

from __future__ import annotations

import sys
import time

import tqdm
from absl import app, flags
from ml_collections import config_flags

from muppet_jax import cli, inputs, validation
from muppet_jax.data import token_cache
from muppet_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/prefinetune.py[:PRESET]",
                                          lock_config=True)
_OUT = flags.DEFINE_string("out", None, "the cache directory (local or gs://); default: the "
                           "config's data.cache_dir")
_SPLITS = flags.DEFINE_list("splits", ["train", "validation"], "splits to cache (those a task "
                            "has)")
_TASKS = flags.DEFINE_list("tasks", [], "only these tasks of the mixture")
_WORKER = flags.DEFINE_integer("worker", 0, "this process's index among --workers")
_WORKERS = flags.DEFINE_integer("workers", 1, "processes building the cache at once")
_RECORDS_PER_SHARD = flags.DEFINE_integer("records_per_shard", token_cache.RECORDS_PER_SHARD,
                                          "records per shard file (the unit of work)")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "rebuild splits cached with another "
                               "fingerprint (one worker only)")


def build(config, out: str, splits: list[str], only: list[str], worker: int, workers: int,
          records_per_shard: int, overwrite: bool) -> None:
  """Caches this worker's shards of every (task, split) of the config's mixture."""
  if not 0 <= worker < workers:
    raise UserError(f"--worker={worker} must be in [0, --workers={workers})")
  if records_per_shard < 1:
    raise UserError(f"--records_per_shard={records_per_shard} must be at least 1")
  if overwrite and workers > 1:
    raise UserError("--overwrite deletes caches that other workers may be writing; run it with "
                    "--workers=1 (or delete the directory first)")
  tasks = inputs.prepared_tasks(config)
  unknown = sorted(set(only) - {t.name for t in tasks})
  if unknown:
    raise UserError(f"--tasks names {unknown}, not in mixture {config.data.mixture!r}")
  lengths = {"inputs": config.data.max_length, "targets": config.data.target_length}
  for task in tasks:
    if only and task.name not in only:
      continue
    for split in [s for s in splits if s in task.splits]:
      start = time.perf_counter()
      bar = tqdm.tqdm(desc=f"{task.name}/{split}", unit=" records", disable=None,
                      total=task.source.num_input_examples(split))
      totals = token_cache.build_split(
          task, split, lengths, out, worker=worker, workers=workers,
          records_per_shard=records_per_shard, overwrite=overwrite, on_records=bar.update)
      bar.close()
      print(f"{task.name}/{split}: {totals['shards']} shards written ({totals['records']:,} "
            f"records, {totals['examples']:,} examples, {totals['tokens']:,} tokens) in "
            f"{time.perf_counter() - start:.1f}s", flush=True)
  print(f"token cache in {out}; train with --config.data.cache_dir={out}")


def main(argv: list[str]) -> None:
  del argv
  cli.absl_log_at_warning()
  with cli.user_errors():
    if _CONFIG.value is None:
      raise UserError("give --config=configs/prefinetune.py[:PRESET] and --out=DIR")
    out = _OUT.value or _CONFIG.value.data.cache_dir
    if not out:
      raise UserError("give --out=DIR (or set data.cache_dir in the config)")
    validation.check_numbers(_CONFIG.value)  # The lengths it caches at.
    validation.check_workdir(out, "--out")
    build(_CONFIG.value, out, _SPLITS.value, _TASKS.value, _WORKER.value, _WORKERS.value,
          _RECORDS_PER_SHARD.value, _OVERWRITE.value)


if __name__ == "__main__":
  with cli.user_errors():
    cli.check_config_flags(sys.argv[1:])
  app.run(main, flags_parser=cli.parse_flags)
