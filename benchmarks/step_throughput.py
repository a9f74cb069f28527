"""The real multi-task packed train step at real sizes, for each lever: MFU, compile time, memory.

    python benchmarks/step_throughput.py [--sizes roberta-base,roberta-large,bart-base,bart-large]
        [--levers all] [--rows 32] [--length 512] [--target-length 128] [--dtype bfloat16]
        [--steps 10] [--run-on-cpu]

Random weights; synthetic rows packed with 8 segments of a heterogeneous head mix (three
classification heads, one of them regression, multiple choice, span, and for BART a summary
filling each row's target tokens). For each size and lever setting it compiles
`trainer.make_train_step` (AdamW update included) and prints the compile time, the compiled
step's model FLOPs (XLA's cost analysis of the step with its layers in a loop and no
rematerialization) and temporaries; on an accelerator it then times the step:
tokens/s, real tokens/s, TFLOP/s per device, MFU against the chip's peak
(`progress.PEAK_FLOPS`) and peak memory. On CPU the step is not timed unless --run-on-cpu
(a large model's step takes minutes there), and MFU is `nan`.

Levers, cumulative from the baseline (`--levers` names a comma-separated subset, or `all`):
  baseline      layers in a Python loop, remat none, attention xla, LM logits whole
                (lm_loss_chunk 0)
  scan          + one nn.scan over the layers (model.scan_layers)
  chunked_lm    + the LM loss over chunks of 16 target positions (BART only)
  dot_product   + the backend's fused attention, without attention dropout:
                  jax.nn.dot_product_attention (cuDNN flash attention on NVIDIA GPUs), the
                  Pallas splash kernel (attention_impl splash) on TPU
  save_dots     + remat save_dots
  remat_full    + remat full (instead of save_dots)

The last line:

  SUMMARY roberta_large_mfu=<x> bart_large_mfu=<y> compile_s=<z>

with the best MFU over the measured levers (a fraction; nan without an accelerator or when the
size wasn't run) and the compile seconds of roberta-large with scanned layers (the baseline's
where scan wasn't measured; nan when roberta-large wasn't run). Needs
neither seqio nor TensorFlow.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import jax
import jax.numpy as jnp

import synthetic
from muppet_jax import partitioning, progress, state, trainer
from muppet_jax.models import multitask
from muppet_jax.models.config import bart_config, roberta_config

LEVERS = {
    "baseline": dict(remat="none", attention_impl="xla", lm_chunk=0, scan_layers=False),
    "scan": dict(scan_layers=True),
    "chunked_lm": dict(lm_chunk=16),
    "dot_product": dict(attention_impl="dot_product", attention_dropout=0.0),
    "save_dots": dict(remat="save_dots"),
    "remat_full": dict(remat="full"),
}
SEGMENTS = 8
SIZES = [f"{family}-{scale}" for family in ("roberta", "bart")
         for scale in ("tiny", "base", "large")]


def settings(names: list[str], bart: bool) -> list[tuple[str, dict]]:
  """The cumulative settings of `names`, in LEVERS order; chunked_lm only for BART."""
  current, out = {}, []
  for name, change in LEVERS.items():
    if name == "chunked_lm" and not bart:
      continue
    current = {**current, **change}
    if name in names:
      out.append((name, dict(current)))
  return out


def measure(size: str, setting: dict, args: argparse.Namespace, accelerator: bool,
            flops: float | None = None) -> dict:
  """Compiles (and on an accelerator times) the step of `size` under `setting`; `flops`: the
  size's model FLOPs, counted here when not given."""
  family, scale = size.split("-")
  bart = family == "bart"
  model_changes = {k: v for k, v in setting.items() if k != "lm_chunk"}
  if model_changes["attention_impl"] == "dot_product" and jax.default_backend() == "tpu":
    model_changes["attention_impl"] = "splash"
  make = bart_config if bart else roberta_config
  config = make(scale, dtype=args.dtype, **model_changes)
  tasks = synthetic.TASKS if bart else synthetic.ENCODER_TASKS
  model = multitask.build(config, synthetic.layout(tasks))
  table = synthetic.task_table(tasks, lm_chunk=setting["lm_chunk"])
  tx = trainer.make_optimizer(1e-5, 10, 1000)
  mesh = partitioning.make_mesh({"fsdp": -1})
  abstract = state.abstract_state(model, mesh, tx)
  rows = args.rows * jax.device_count()
  batch = synthetic.synthetic_batch(rows, args.length, args.target_length if bart else 0,
                                    SEGMENTS, config.vocab_size, tasks)
  def make_step(network):
    return trainer.make_train_step(network, tx, table, 1, 0)
  start = time.perf_counter()
  step = trainer.compile_train_step(make_step(model), abstract, batch, rows, mesh)
  out = {"compile_s": time.perf_counter() - start, "flops": flops}
  if flops is None:  # With the layers in a loop, without rematerialization's recomputation
    # (XLA's count of a scanned step has one layer per stack): the same for every lever.
    out["flops"] = trainer.step_flops(
        make_step, model.clone(config=config.replace(remat="none")), tx, batch, rows, mesh)
  memory = step.memory_analysis()
  out["temp_gib"] = memory.temp_size_in_bytes / 2**30 if memory else math.nan
  if not (accelerator or args.run_on_cpu):
    return out
  train_state = state.init_state(model, abstract, jax.random.key(0), tx)
  sharded = jax.device_put({k: jnp.asarray(v) for k, v in batch.items()},
                           partitioning.batch_sharding(mesh))
  with partitioning.use_mesh(mesh):
    seconds, _, metrics = synthetic.time_steps(step, train_state, sharded, args.warmup,
                                               args.steps)
  tokens = batch["segment_ids"].size + batch["target_segment_ids"].size
  real = int((batch["segment_ids"] > 0).sum() + (batch["target_segment_ids"] > 0).sum())
  per_device = out["flops"] / seconds / jax.device_count()
  peak = progress.peak_flops(jax.devices()[0].device_kind)
  stats = jax.devices()[0].memory_stats() or {}
  out.update(tokens_s=tokens / seconds, real_tokens_s=real / seconds,
             tflops=per_device / 1e12, mfu=per_device / peak if peak else math.nan,
             peak_gib=stats.get("peak_bytes_in_use", math.nan) / 2**30,
             loss=float(metrics["loss_sum"]) / float(metrics["count"]))
  return out


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="roberta-base,roberta-large,bart-base,bart-large")
  parser.add_argument("--levers", default="", help="comma-separated LEVERS, or all (default: "
                      "all on an accelerator, baseline on CPU)")
  parser.add_argument("--rows", type=int, default=32, help="rows per device")
  parser.add_argument("--length", type=int, default=512)
  parser.add_argument("--target-length", type=int, default=128)
  parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--run-on-cpu", action="store_true", help="time the step on CPU too")
  args = parser.parse_args(argv)
  accelerator = jax.default_backend() != "cpu"
  names = (list(LEVERS) if args.levers == "all" or (not args.levers and accelerator)
           else args.levers.split(",") if args.levers else ["baseline"])
  unknown = set(names) - set(LEVERS)
  if unknown:
    parser.error(f"unknown levers {sorted(unknown)}; choose from {list(LEVERS)} or all")
  device = jax.devices()[0]
  print(f"{jax.device_count()} x {device.device_kind} ({jax.default_backend()}), jax "
        f"{jax.__version__}; {args.rows} rows/device x {args.length} tokens "
        f"(+ {args.target_length} summary tokens for BART), {SEGMENTS} segments/row, "
        f"{args.dtype}", flush=True)
  print(f"{'size':<14} {'lever':<12} {'compile s':>9} {'GFLOP/step':>11} {'temp GiB':>8} "
        f"{'tokens/s':>10} {'real tok/s':>10} {'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>8}",
        flush=True)
  sizes = args.sizes.split(",")
  unknown = set(sizes) - set(SIZES)
  if unknown:
    parser.error(f"unknown sizes {sorted(unknown)}; choose from {', '.join(SIZES)}")
  results = {}
  for size in sizes:
    flops = None
    for name, setting in settings(names, size.startswith("bart")):
      r = measure(size, setting, args, accelerator, flops)
      results[size, name], flops = r, r["flops"]
      nan = math.nan
      print(f"{size:<14} {name:<12} {r['compile_s']:>9.1f} {r['flops'] / 1e9:>11,.1f} "
            f"{r['temp_gib']:>8.1f} {r.get('tokens_s', nan):>10,.0f} "
            f"{r.get('real_tokens_s', nan):>10,.0f} {r.get('tflops', nan):>8.1f} "
            f"{r.get('mfu', nan):>6.3f} {r.get('peak_gib', nan):>8.1f}", flush=True)

  def best_mfu(size: str) -> float:
    values = [r["mfu"] for (s, _), r in results.items() if s == size and "mfu" in r]
    return max((v for v in values if not math.isnan(v)), default=math.nan)

  large = results.get(("roberta-large", "scan")) or results.get(("roberta-large", "baseline"))
  compile_s = large["compile_s"] if large else math.nan
  print(f"SUMMARY roberta_large_mfu={best_mfu('roberta-large'):.3f} "
        f"bart_large_mfu={best_mfu('bart-large'):.3f} compile_s={compile_s:.1f}")


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  main(sys.argv[1:])
