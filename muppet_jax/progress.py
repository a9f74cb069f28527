"""What a run reports as it goes (process 0): its tasks and their rates, the compiled step's cost,
and per log interval the losses, learning rate, throughput, TFLOP/s per device, MFU and ETA, as
metrics and console lines."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from etils import epath
from jax.sharding import Mesh

from muppet_jax import losses, trainer

if TYPE_CHECKING:  # Benchmarks use this module without ml_collections, seqio or TensorFlow.
  import ml_collections

  from muppet_jax.data.batching import MixtureStream
  from muppet_jax.metric_writer import MetricWriter

# Peak dense bf16 FLOP/s per chip, for MFU.
PEAK_FLOPS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
              "TPU v6 lite": 918e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
              "NVIDIA A100": 312e12}


def peak_flops(device_kind: str) -> float | None:
  """The chip's peak, from its `device_kind` (e.g. "NVIDIA H100 80GB HBM3"); None if unknown."""
  return next((v for k, v in PEAK_FLOPS.items() if device_kind.startswith(k)), None)


def log(message: str, every_host: bool = False) -> None:
  """Prints on the first host (the run's log), or on each (its own facts, in per-host logs)."""
  if every_host or jax.process_index() == 0:
    tqdm.tqdm.write(message)


def compiled_flops(compiled: jax.stages.Compiled) -> float:
  """FLOPs of one call of `compiled`, from XLA's cost analysis (0 where it has none)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", 0.0))


def cluster_line(mesh: Mesh) -> str:
  """Which process this is of how many, their devices, and the mesh over them."""
  kinds = sorted({d.device_kind for d in jax.devices()})
  return (f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} "
          f"local of {jax.device_count()} devices ({', '.join(kinds)}), mesh {dict(mesh.shape)}")


def task_lines(stream: MixtureStream) -> str:
  """The stream's tasks with their train sizes and sampling rates, two to a line, the mixture's
  tasks it leaves out, and the bad rows each task left out (`data.bad_rows=skip`)."""
  c, total = stream.config, sum(stream.rates)
  cells = [(t.name, f"{t.info.train_size:,}", f"{100 * r / total:.3g}%")
           for t, r in zip(stream.tasks, stream.rates)]
  widths = [max(len(cell[i]) for cell in cells) for i in range(3)]
  cells = [f"{name:<{widths[0]}}  {size:>{widths[1]}}  {share:>{widths[2]}}"
           for name, size, share in cells]
  rows = -(-len(cells) // 2)  # Down the first column, then the second.
  cap = f"{c.rate_cap:,}" if c.rate_cap else "none"
  lines = [f"{len(cells)} tasks of {c.mixture}, train size and sampling rate "
           f"(temperature {c.temperature:g}, cap {cap}):"]
  lines += ["  " + "    ".join(cells[i::rows]) for i in range(rows)]
  # Not at the top: seqio, which the benchmarks go without.
  from muppet_jax.data import mixing, records
  trained = {t.name for t in stream.tasks}
  left_out = [t.name for t in mixing.mixture_tasks(c.mixture) if t.name not in trained]
  if left_out:
    lines.append(f"  left out ({', '.join(c.exclude_families)}, which this model can't train): "
                 f"{', '.join(left_out)}")
  for task in stream.tasks:
    if bad := records.bad_rows(task):
      counts = " and ".join(f"{b.count:,} {split}" for split, b in bad.items())
      lines.append(f"  {task.name}: bad rows skipped (data.bad_rows=skip): {counts}; the first: "
                   f"{next(iter(bad.values())).first}")
  return "\n".join(lines)


def log_compiled(compiled: jax.stages.Compiled, seconds: float, stream: MixtureStream,
                 params: Any, mesh: Mesh, flops: float | None = None) -> float:
  """Logs the train step's compile time (short when the persistent cache had it), its memory
  per device (where XLA reports it) and the run's size; returns the step's FLOPs (`flops`, or
  the compiled step's own count)."""
  memory = compiled.memory_analysis()
  line = f"compiled train step in {seconds:.1f} s"
  if memory is not None:
    line += (f": {memory.temp_size_in_bytes / 2**20:,.0f} MiB temporaries, "
             f"{memory.argument_size_in_bytes / 2**20:,.0f} MiB arguments, "
             f"{memory.output_size_in_bytes / 2**20:,.0f} MiB outputs per device")
  log(line)
  flops = compiled_flops(compiled) if flops is None else flops
  size = sum(x.size for x in jax.tree.leaves(params))
  log(f"{len(stream.tasks)} tasks, {len(stream.layout.names)} heads, {size / 1e6:.1f}M "
      f"parameters, mesh {dict(mesh.shape)}, {flops / 1e12:.3f} TFLOP per step")
  return flops


class Meter:
  """Sums the train step's metrics between log lines and turns them into the logged figures."""

  def __init__(self, config: ml_collections.ConfigDict, flops_per_step: float, first_step: int):
    self.config, self.flops_per_step = config, flops_per_step
    self.peak = peak_flops(jax.devices()[0].device_kind)
    o = config.optimizer
    self.schedule = trainer.learning_rate_schedule(o.learning_rate, o.warmup_steps,
                                                   config.total_steps)
    # The bar is for terminals; logs redirected to a file get the ETA in each console line.
    self.bar = tqdm.tqdm(total=config.total_steps, initial=first_step, desc="train", unit="step",
                         disable=jax.process_index() != 0 or not sys.stderr.isatty())
    self._reset(first_step)

  def _reset(self, step: int) -> None:
    self.sums, self.real_tokens = None, 0
    self.tick, self.tick_step = time.perf_counter(), step

  def add(self, metrics: Mapping[str, jax.Array], local_batch: Mapping[str, np.ndarray]) -> None:
    """One step's (on-device) metrics, and this host's batch for its count of real tokens."""
    self.real_tokens += int((local_batch["segment_ids"] > 0).sum())
    self.sums = metrics if self.sums is None else jax.tree.map(jnp.add, self.sums, metrics)
    self.bar.update(1)

  def summary(self, step: int) -> dict[str, float]:
    """The figures since the last summary, which is where the next one starts."""
    sums, c = jax.device_get(self.sums), self.config
    seconds, steps = time.perf_counter() - self.tick, step - self.tick_step
    # Dropped (non-finite) steps are out of the sums; none applied: no loss to report.
    skipped = int(sums.get("skipped", 0))
    applied = steps - skipped
    out = {**losses.family_means(sums),
           "grad_norm": float(sums["grad_norm"]) / applied if applied else float("nan"),
           "learning_rate": float(self.schedule(step)),
           "steps_per_second": steps / seconds,
           "tokens_per_second": steps * c.data.batch_size * c.data.max_length / seconds,
           "real_tokens_per_second": self.real_tokens * jax.process_count() / seconds,
           "tflops_per_device":
               self.flops_per_step * steps / seconds / 1e12 / jax.device_count()}
    if self.peak:
      out["mfu"] = out["tflops_per_device"] * 1e12 / self.peak
    if skipped:
      out["skipped_steps"] = skipped
      if not applied:
        out["loss"] = float("nan")
    self._reset(step)
    return out

  def line(self, step: int, out: Mapping[str, float]) -> str:
    """The console line of a summary."""
    families = " ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in out.items()
                        if k.startswith("loss/"))
    r3f = f" r3f {out['r3f']:.2e}" if "r3f" in out else ""
    mfu = f", MFU {100 * out['mfu']:.1f}%" if "mfu" in out else ""
    eta = (self.config.total_steps - step) / out["steps_per_second"] / 60
    skipped = (f" | skipped {out['skipped_steps']} non-finite step(s)"
               if "skipped_steps" in out else "")
    return (f"step {step}: loss {out['loss']:.4f} {families}{r3f}{skipped} | lr "
            f"{out['learning_rate']:.2e} | {out['steps_per_second']:.2f} steps/s, "
            f"{out['tokens_per_second']:,.0f} tok/s ({out['real_tokens_per_second']:,.0f} real), "
            f"{out['tflops_per_device']:.2f} TFLOP/s/device{mfu} | ETA {eta:.1f} min")

  def close(self) -> None:
    self.bar.close()


def eval_lines(step: int, metrics: Mapping[str, float],
               samples: Mapping[str, tuple[str, str]]) -> str:
  """An evaluation's family averages, then each summarization task's first summary."""
  families = ", ".join(f"{k[len('eval/family/'):]} {v:.3f}" for k, v in metrics.items()
                       if k.startswith("eval/family/"))
  return "\n".join([f"eval at step {step}: {families}"] + [
      f"  {task}: {generated!r} (reference: {reference!r})"
      for task, (generated, reference) in samples.items()])


def done_message(step: int, workdir: str, writer: MetricWriter) -> str:
  checkpoints = epath.Path(workdir) / "checkpoints"
  return (f"done at step {step}.\n  checkpoints: {checkpoints}\n  TensorBoard: tensorboard "
          f"--logdir {writer.tensorboard_dir}\n  metrics: {writer.jsonl}\n  export: python -m "
          f"muppet_jax.export --checkpoint {checkpoints} --out HF_DIR [--task TASK]")
