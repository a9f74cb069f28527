"""Forward+backward throughput of the encoder, beside transformers' PyTorch model of the same size.

    python benchmarks/encoder_throughput.py [--size base] [--batch 8] [--length 128] [--steps 3]

Both sides train a masked-LM step (dropout on, loss over every position, gradients of all
parameters) on the same shapes in the same process and report tokens/s; the JAX/PyTorch ratio is
the figure to compare across machines. On CPU, XLA keeps bfloat16 matmuls in float32, so bfloat16
there measures memory traffic, not tensor-core speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from muppet_jax.models import EncoderForMaskedLM, roberta_config
from muppet_jax.models.layers import init_variables


def _time(step: Callable[[], None], warmup: int, steps: int) -> float:
  """Seconds per step, after `warmup` untimed steps (which include compilation)."""
  for _ in range(warmup):
    step()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  return (time.perf_counter() - start) / steps


def jax_step_time(size: str, dtype: str, ids: np.ndarray, labels: np.ndarray, warmup: int,
                  steps: int, attention: str = "xla") -> float:
  # cuDNN's fused attention has no attention-probability dropout.
  config = roberta_config(size, dtype=dtype, attention_impl=attention,
                          attention_dropout=0.0 if attention == "dot_product" else 0.1)
  model = EncoderForMaskedLM(config)
  params = nn.meta.unbox(init_variables(model, jax.random.key(0)))["params"]

  @jax.jit
  def grad_step(params, ids, labels, rng):
    def loss_fn(p):
      logits = model.apply({"params": p}, ids, deterministic=False, rngs={"dropout": rng}).logits
      return optax.softmax_cross_entropy_with_integer_labels(
          logits.astype(jnp.float32), labels).mean()
    return jax.value_and_grad(loss_fn)(params)

  ids, labels = jnp.asarray(ids), jnp.asarray(labels)
  rng = jax.random.key(1)
  return _time(lambda: jax.block_until_ready(grad_step(params, ids, labels, rng)), warmup, steps)


def torch_step_time(size: str, dtype: str, ids: np.ndarray, labels: np.ndarray, warmup: int,
                    steps: int) -> float:
  import torch
  import transformers

  device = "cuda" if torch.cuda.is_available() else "cpu"
  config = roberta_config(size)
  hf_config = transformers.RobertaConfig(**config.to_hf_config())
  model = transformers.RobertaForMaskedLM(hf_config).train().to(device)
  ids_t, labels_t = torch.from_numpy(ids).to(device), torch.from_numpy(labels).to(device)

  def step():
    with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
      loss = model(input_ids=ids_t, labels=labels_t).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    if device == "cuda":
      torch.cuda.synchronize()

  return _time(step, warmup, steps)


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", default="base", choices=["tiny", "base", "large"])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--length", type=int, default=128)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--attention", default="xla", choices=["xla", "dot_product"],
                      help="JAX attention implementation (dot_product: cuDNN on NVIDIA GPUs)")
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
  args = parser.parse_args(argv)

  config = roberta_config(args.size)
  rng = np.random.default_rng(0)
  ids = rng.integers(3, config.vocab_size, (args.batch, args.length)).astype(np.int64)
  labels = rng.integers(3, config.vocab_size, (args.batch, args.length)).astype(np.int64)
  tokens = args.batch * args.length
  print(f"roberta-{args.size}: batch {args.batch} x length {args.length} = {tokens} tokens/step, "
        f"forward+backward, attention {args.attention}; jax {jax.__version__} on {jax.devices()[0].device_kind} "
        f"x{jax.device_count()}, {os.cpu_count()} CPU cores")
  print(f"{'dtype':<10}{'JAX tok/s':>12}{'PyTorch tok/s':>16}{'JAX/PyTorch':>14}")
  for dtype in args.dtypes.split(","):
    jax_rate = tokens / jax_step_time(args.size, dtype, ids, labels, args.warmup, args.steps,
                                      args.attention)
    if args.no_torch:
      print(f"{dtype:<10}{jax_rate:>12.0f}{'-':>16}{'-':>14}", flush=True)
      continue
    torch_rate = tokens / torch_step_time(args.size, dtype, ids, labels, args.warmup, args.steps)
    print(f"{dtype:<10}{jax_rate:>12.0f}{torch_rate:>16.0f}{jax_rate / torch_rate:>14.2f}",
          flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
