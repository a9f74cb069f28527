"""Multi-task pre-finetuning.

    python -m muppet_jax.train --config=configs/prefinetune.py:demo --workdir=/tmp/muppet_demo
    python -m muppet_jax.train --config=configs/prefinetune.py --workdir=gs://bucket/run \\
        --config.total_steps=20000 --config.mesh.fsdp=-1
    python -m muppet_jax.train --config=configs/prefinetune_bart.py --workdir=gs://bucket/bart

A run reads top to bottom: mesh and input pipeline, starting model, the multi-task model with its
loss and optimizer, the train state (resumed from the workdir's latest complete checkpoint, or
fresh), the compiled step, then the loop with logging, evaluation and checkpoints. SIGTERM (a TPU
preemption) saves and exits. A step whose loss, gradients or new parameters are not finite is
dropped and, by `config.nonfinite`, stops the run (a user error: one line, exit status 2) or is
counted and skipped; nothing non-finite is ever saved. The pieces live in the modules of their
concern; see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import app, flags
from etils import epath
from ml_collections import config_flags

from muppet_jax import checkpointing, cli, evaluation, inputs, losses, partitioning, pretrained
from muppet_jax import progress, r3f, state, trainer, validation
from muppet_jax.errors import UserError
from muppet_jax.metric_writer import MetricWriter
from muppet_jax.models import multitask
from muppet_jax.preemption import Preemption


# Called after every evaluation with (step, metrics, params, checkpoint metadata); True ends the
# run there (early stopping). Fine-tuning keeps its best step with it.
EvalHook = Callable[[int, dict[str, float], Any, dict[str, Any]], bool]


def train(config: ml_collections.ConfigDict, workdir: str, on_eval: EvalHook | None = None,
          reuse_heads: bool = False) -> dict[str, float]:
  """Runs (or resumes) pre-finetuning in `workdir`; returns the last evaluation's metrics.
  `reuse_heads`: the tasks' heads start from a pre-finetuned `init_from`'s trained ones."""
  # --------------------------------------------------------------- Mesh and input pipeline ---
  # Everything checked before anything is built: a mistake costs no compile.
  mesh, tasks = validation.check(config, workdir)
  progress.log(progress.cluster_line(mesh), every_host=True)
  start = pretrained.from_config(config, inputs.vocabulary(tasks), mesh, keep_heads=reuse_heads)
  stream = inputs.train_stream(config, seq2seq=start.seq2seq)
  progress.log(progress.task_lines(stream))
  if reuse_heads:
    start = pretrained.reuse_heads(start, stream.layout, stream.task_heads)

  # ------------------------------------------------------------ Model, loss and optimizer ---
  model = multitask.build(start.config, stream.layout)
  table = losses.TaskTable.build(stream.tasks, config.data.max_length, start.config.vocab_size,
                                 config.loss_scaling, config.label_smoothing,
                                 config.lm_loss_chunk)
  tx = trainer.optimizer(config)
  metadata = start.metadata(stream.layout, stream.task_heads)

  # ----------------------------------------------------- Train state: resumed or fresh ---
  abstract = state.abstract_state(model, mesh, tx)
  guard = trainer.NonfiniteGuard(config.nonfinite, config.nonfinite_max_skips)
  checkpoints = checkpointing.TrainCheckpoints(workdir, keep=config.checkpoint.keep)
  # The latest complete step that restores (one line for each newer one that doesn't).
  resumed = checkpoints.restore_latest(abstract, stream, metadata)
  if resumed is None:
    first_step = 0
    train_state = state.init_state(model, abstract, jax.random.key(config.seed), tx,
                                   start.params)
  else:
    first_step, train_state = resumed
    progress.log(f"resumed from {workdir} at step {first_step}")

  # --------------------------------------------------------------------- Compiled step ---
  regularizer = r3f.R3FConfig(config.r3f.weight, config.r3f.noise_type, config.r3f.eps)
  def make_step(network: nn.Module):
    return trainer.make_train_step(network, tx, table, config.microbatches, config.seed,
                                   regularizer)
  compile_start = time.perf_counter()
  train_step = trainer.compile_train_step(make_step(model), abstract, stream.empty_batch(),
                                          config.data.batch_size, mesh)
  seconds = time.perf_counter() - compile_start
  flops = None
  if start.config.scan_layers:  # XLA's count of the compiled step has one layer per stack.
    flops = trainer.step_flops(make_step, model, tx, stream.empty_batch(),
                               config.data.batch_size, mesh)
  flops_per_step = progress.log_compiled(train_step, seconds, stream, abstract.params, mesh,
                                         flops)
  evaluator = evaluation.Evaluator(config, stream.tasks, stream.layout, model, start.config,
                                   state.shardings(abstract.params), mesh)
  batch_sharding = partitioning.batch_sharding(mesh)

  # ------------------------------------------------------------------------------ Loop ---
  writer = MetricWriter(workdir)
  if bad_rows := inputs.bad_row_metrics(stream.tasks):  # data.bad_rows=skip's counts.
    writer.write(first_step, bad_rows)

  def evaluate(step: int) -> tuple[dict[str, float], bool]:
    """The metrics, and whether `on_eval` ends the run."""
    metrics, samples = evaluator(train_state.params)
    writer.write(step, metrics)
    progress.log(progress.eval_lines(step, metrics, samples))
    return metrics, bool(on_eval and on_eval(step, metrics, train_state.params, metadata))

  last_eval, early = {}, False
  if config.eval.at_start and first_step == 0:  # The starting point, to compare against.
    last_eval, _ = evaluate(0)  # Training has yet to start: nothing to stop.
  meter = progress.Meter(config, flops_per_step, first_step)
  step = first_step
  try:
    with stream, Preemption() as preemption:
      while step < config.total_steps:
        local = next(stream)
        with partitioning.use_mesh(mesh):
          train_state, metrics = train_step(train_state,
                                            inputs.global_batch(local, batch_sharding))
        step += 1
        meter.add(metrics, local)
        last = step == config.total_steps
        logs = step % config.log_every_steps == 0 or last
        evals = step % config.eval.every_steps == 0 or last
        stop = preemption.requested()
        saves = step % config.checkpoint.every_steps == 0 or last or stop
        # Steps are checked one late, except before anything reads or saves the state.
        failed = guard.check(step, metrics, local["seg_task"], now=logs or evals or saves)
        if failed:
          bad_step, bad, seg_task = failed
          writer.write(bad_step, {**{name: float("nan") for name in bad},
                                  "skipped_steps": guard.in_a_row})
          tasks = [stream.tasks[i].name for i in np.unique(seg_task) if i >= 0]
          raise UserError(guard.message(bad_step, bad, tasks, checkpoints.last_good()))
        if logs:
          summary = meter.summary(step)
          writer.write(step, summary)
          progress.log(meter.line(step, summary))
        if evals:
          last_eval, early = evaluate(step)
        if saves or early:
          checkpoints.save(step, train_state, metadata, stream)
        if stop:
          progress.log(f"SIGTERM: saved step {step}; rerun the same command to resume")
          break
        if early and not last:
          progress.log(f"stopped early at step {step}")
          break
    checkpoints.wait()
  finally:  # Also when the run stops on an error: no save left half-written, no open files.
    meter.close()
    checkpoints.close()
    writer.close()
  progress.log(progress.done_message(step, workdir, writer))
  return last_eval


# Shared by the commands that train (`muppet_jax.finetune` too).
CONFIG = config_flags.DEFINE_config_file("config", None, "configs/FILE.py[:PRESET]",
                                         lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, logs and metrics go")
MULTIHOST = flags.DEFINE_bool("multihost", False, "call jax.distributed.initialize() first (TPU "
                              "pods, or GPU clusters with the coordinator set in the environment)")


def main(argv: list[str]) -> None:
  del argv
  config, workdir = command_setup("configs/prefinetune.py[:PRESET]")
  with cli.user_errors():
    train(config, workdir)


def command_setup(config_usage: str) -> tuple[ml_collections.ConfigDict, str]:
  """The command line's config and workdir, after what every training command sets up first:
  absl's log level, the cluster (--multihost) and the compilation cache."""
  cli.absl_log_at_warning()
  if CONFIG.value is None or not WORKDIR.value:
    with cli.user_errors():
      raise UserError(f"give --config={config_usage} and --workdir=DIR")
  if MULTIHOST.value:
    # CPU processes need an implementation of cross-process collectives (TPUs and GPUs have
    # their own); jax.distributed finds its peers in a TPU pod's, SLURM's, Open MPI's or
    # Kubernetes' environment.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize()
  with cli.user_errors():
    use_compilation_cache(CONFIG.value.compilation_cache_dir, WORKDIR.value)
  return CONFIG.value, WORKDIR.value


def use_compilation_cache(directory: str, workdir: str) -> None:
  """XLA's persistent cache in `directory` ("" = $JAX_COMPILATION_CACHE_DIR where set, else
  WORKDIR/compilation_cache; "none" = off)."""
  if directory == "none":
    return
  directory = directory or os.environ.get("JAX_COMPILATION_CACHE_DIR")
  if directory:  # Checked now: jax would only warn once per program it can't cache.
    try:
      epath.Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise UserError(f"the compilation cache {directory} can't be created ({e.strerror or e}); "
                      "set --config.compilation_cache_dir to a writable directory, or =none"
                      ) from e
  else:  # The workdir is checked with the rest of the config; nothing is written to it yet.
    directory = os.path.join(workdir, "compilation_cache")
  jax.config.update("jax_compilation_cache_dir", directory)
  # Every compiled program is worth keeping: a restart recompiles the same ones.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


if __name__ == "__main__":
  with cli.user_errors():  # Before absl, which reports these with a stack trace.
    cli.check_config_flags(sys.argv[1:])
  app.run(main, flags_parser=cli.parse_flags)
