"""BART pre-finetuning throughput: the compiled multi-task train step and summary generation.

    python benchmarks/bart_throughput.py train [--size large] [--batch 8] [--length 512]
        [--target-length 128] [--r3f] [--dtype bfloat16]
    python benchmarks/bart_throughput.py generate [--size large] [--batch 16] [--beams 4]
        [--torch]

`train` runs `trainer.make_train_step` (AdamW update included) on synthetic heterogeneous packed
batches: every row holds classification, multiple-choice, span and summarization segments, with
summaries in the decoder's target rows. It prints steps/s, tokens/s, the compiled step's TFLOP/s
and, on chips with a known peak, MFU. `generate` times jit-compiled beam search over documents of
--length tokens up to --max-length summary tokens, and with --torch transformers' `generate` on
the same model and inputs. Neither needs seqio or TensorFlow.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import synthetic
from muppet_jax import generation, partitioning, progress, r3f, state, trainer
from muppet_jax.models import bart, multitask
from muppet_jax.models.config import bart_config
from muppet_jax.models.layers import init_variables

def train(args: argparse.Namespace) -> None:
  config = bart_config(args.size, dtype=args.dtype, attention_impl=args.attention)
  model = multitask.build(config, synthetic.layout())
  table = synthetic.task_table()
  tx = trainer.make_optimizer(1e-5, 10, 1000)
  mesh = partitioning.make_mesh({"fsdp": 1}, jax.devices()[:1])
  train_state = state.init_state(model, state.abstract_state(model, mesh, tx), jax.random.key(0),
                                 tx)
  regularizer = r3f.R3FConfig(1.0 if args.r3f else 0.0)
  step = jax.jit(trainer.make_train_step(model, tx, table, args.microbatches, 0, regularizer),
                 donate_argnums=0)
  batch = jax.tree.map(jnp.asarray, synthetic.synthetic_batch(
      args.batch, args.length, args.target_length, args.segments, config.vocab_size))
  compiled = step.lower(train_state, batch).compile()
  flops = progress.compiled_flops(compiled)
  memory = compiled.memory_analysis()
  seconds, _, metrics = synthetic.time_steps(compiled, train_state, batch, args.warmup,
                                             args.steps)
  tokens = args.batch * (args.length + args.target_length)
  kind = jax.devices()[0].device_kind
  peak = progress.peak_flops(kind)
  print(f"bart-{args.size} train step ({args.dtype}, attention {args.attention}, "
        f"R3F {'on' if args.r3f else 'off'}): batch {args.batch} x ({args.length} + "
        f"{args.target_length} target) tokens, {args.segments} segments/row; {kind}")
  print(f"  {1 / seconds:.2f} steps/s, {tokens / seconds:,.0f} tokens/s, "
        f"{flops / seconds / 1e12:.1f} TFLOP/s" +
        (f", MFU {100 * flops / seconds / peak:.1f}%" if peak else "") +
        (f", {memory.temp_size_in_bytes / 2**30:.1f} GiB temporaries" if memory else "") +
        f"; loss {float(metrics['loss_sum']) / float(metrics['count']):.3f}")


def generate(args: argparse.Namespace) -> None:
  config = bart_config(args.size, dtype=args.dtype, attention_impl=args.attention)
  model = bart.Bart(config)
  params = jax.jit(lambda r: nn.meta.unbox(init_variables(model, r))["params"])(
      jax.random.key(0))
  rng = np.random.default_rng(0)
  ids = rng.integers(3, config.vocab_size, (args.batch, args.length)).astype(np.int32)
  ids[:, 0], ids[:, -1] = config.bos_token_id, config.eos_token_id
  mask = np.ones_like(ids)
  # min_length = max_length: every run decodes all steps, so both sides do the same work.
  gen = generation.GenerationConfig(max_length=args.max_length, num_beams=args.beams,
                                    length_penalty=2.0, no_repeat_ngram_size=3,
                                    min_length=args.max_length,
                                    forced_bos_token_id=config.bos_token_id)
  fn = jax.jit(functools.partial(generation.generate, model, config=gen))
  jax.block_until_ready(fn(params, ids, mask))
  start = time.perf_counter()
  for _ in range(args.steps):
    out = fn(params, ids, mask)
  jax.block_until_ready(out)
  seconds = (time.perf_counter() - start) / args.steps
  print(f"bart-{args.size} beam search ({args.beams} beams, {args.dtype}): {args.batch} documents "
        f"x {args.length} tokens -> {args.max_length} tokens; {jax.devices()[0].device_kind}")
  print(f"  JAX: {args.batch / seconds:.1f} summaries/s ({seconds:.2f} s per batch)")
  if args.torch:
    import torch
    import transformers
    device = "cuda" if torch.cuda.is_available() else "cpu"
    hf = transformers.BartForConditionalGeneration(transformers.BartConfig(
        **config.to_hf_config())).eval().to(device)
    if args.dtype == "bfloat16":
      hf = hf.to(torch.bfloat16)
    ids_t, mask_t = torch.tensor(ids, device=device), torch.tensor(mask, device=device)

    def run():
      with torch.no_grad():
        return hf.generate(input_ids=ids_t, attention_mask=mask_t, max_length=args.max_length,
                           min_length=args.max_length, num_beams=args.beams, length_penalty=2.0,
                           no_repeat_ngram_size=3, forced_bos_token_id=config.bos_token_id,
                           do_sample=False)
    run()
    if device == "cuda":
      torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
      run()
    if device == "cuda":
      torch.cuda.synchronize()
    torch_seconds = (time.perf_counter() - start) / args.steps
    print(f"  transformers {transformers.__version__} (PyTorch {torch.__version__}, {device}): "
          f"{args.batch / torch_seconds:.1f} summaries/s; JAX/PyTorch "
          f"{torch_seconds / seconds:.2f}x")


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("mode", choices=["train", "generate"])
  parser.add_argument("--size", default="large", choices=["tiny", "base", "large"])
  parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
  parser.add_argument("--attention", default="xla", choices=["xla", "dot_product"])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--length", type=int, default=512)
  parser.add_argument("--target-length", type=int, default=128)
  parser.add_argument("--max-length", type=int, default=128, help="generated tokens (generate)")
  parser.add_argument("--segments", type=int, default=8)
  parser.add_argument("--microbatches", type=int, default=1)
  parser.add_argument("--beams", type=int, default=4)
  parser.add_argument("--r3f", action="store_true")
  parser.add_argument("--torch", action="store_true", help="also time transformers' generate")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  args = parser.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  (train if args.mode == "train" else generate)(args)


if __name__ == "__main__":
  main(sys.argv[1:])
