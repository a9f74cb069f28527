"""Pre-finetuning configs: `--config=configs/prefinetune.py:PRESET`, then `--config.KEY=VALUE`.

Presets:
  roberta_large (default)  the paper's setup: RoBERTa-large on the 42-task `muppet_roberta`
                           mixture, length 512, heterogeneous batches.
  roberta_base             the same from RoBERTa-base.
  demo                     a tiny random encoder on the offline `muppet_demo` suite: no network,
                           a few minutes on 2 CPU cores.

Hyperparameters for the large runs (the paper doesn't publish them): AdamW with lr 2e-5 (its
suggested 1e-5..3e-5 range for large models), betas (0.9, 0.98) and eps 1e-6 as in RoBERTa's
fine-tuning, weight decay 0.01, 6% linear warmup then linear decay, clipping at norm 1. A batch
of 256 packed rows of 512 tokens holds ~1-2k examples (~1M tokens, the order of the paper's 64-GPU
updates); 10k steps are about three passes over the 4.8M examples.
"""

from __future__ import annotations

import ml_collections


def _base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Where the encoder starts: a Hugging Face directory or hub name, or a muppet_jax checkpoint
  # directory (from `muppet_jax.convert` or training). Empty: random init from `model`.
  c.init_from = "roberta-large"
  # Architecture for random init, plus runtime settings applied to any start.
  c.model = ml_collections.ConfigDict(dict(
      vocab_size=0,  # 0: the tasks' vocabulary size.
      hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
      max_position_embeddings=514,
      dtype="bfloat16", param_dtype="float32", attention_impl="xla",
      hidden_dropout=0.1, attention_dropout=0.1))
  c.data = ml_collections.ConfigDict(dict(
      mixture="muppet_roberta", batch_size=256, max_length=512, packing=True, max_segments=16,
      temperature=1.0, rate_cap=0, shared_heads=True, batching="heterogeneous", seed=0))
  c.loss_scaling = True  # Divide each example's loss by log n of its task.
  c.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=2e-5, warmup_steps=600, weight_decay=0.01, b1=0.9, b2=0.98, eps=1e-6,
      clip_norm=1.0))
  c.total_steps = 10_000
  c.microbatches = 1  # Gradient accumulation inside the step.
  c.seed = 0
  c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))  # -1: the rest.
  c.log_every_steps = 50
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=1000, keep=3))
  c.eval = ml_collections.ConfigDict(dict(every_steps=2000, batch_size=64, max_batches=50))
  return c


def get_config(preset: str = "roberta_large") -> ml_collections.ConfigDict:
  c = _base()
  if preset == "roberta_large":
    pass
  elif preset == "roberta_base":
    c.init_from = "roberta-base"
    c.optimizer.learning_rate = 3e-5
  elif preset == "demo":
    c.init_from = ""
    c.model.update(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=256,
                   max_position_embeddings=130, dtype="float32", hidden_dropout=0.0,
                   attention_dropout=0.0)
    c.data.update(mixture="muppet_demo", batch_size=16, max_length=128, max_segments=16)
    c.optimizer.update(learning_rate=1e-3, warmup_steps=60)
    c.total_steps = 600
    c.log_every_steps = 50
    c.checkpoint.update(every_steps=200, keep=2)
    c.eval.update(every_steps=300, batch_size=16, max_batches=25)
  else:
    raise ValueError(f"unknown preset {preset!r}; choose roberta_large, roberta_base or demo")
  c.lock()  # An override of a key that doesn't exist is an error.
  return c
