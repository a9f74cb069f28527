"""Pre-finetuning configs: `--config=configs/prefinetune.py:PRESET`, then `--config.KEY=VALUE`.

Presets:
  roberta_large (default)  the paper's setup: RoBERTa-large on the 42-task `muppet_roberta`
                           mixture, length 512, heterogeneous batches.
  roberta_base             the same from RoBERTa-base.
  demo                     a tiny random encoder on the offline `muppet_demo` suite: no network,
                           a few minutes on 2 CPU cores.

The keys and their meaning: `muppet_jax/base_config.py`. Hyperparameters for the large runs (the
paper doesn't publish them): AdamW with lr 2e-5 (its suggested 1e-5..3e-5 range for large
models), betas (0.9, 0.98) and eps 1e-6 as in RoBERTa's fine-tuning, weight decay 0.01, 6% linear
warmup then linear decay, clipping at norm 1. A batch of 256 packed rows of 512 tokens holds
~1-2k examples (~1M tokens, the order of the paper's 64-GPU updates); 10k steps are about three
passes over the 4.8M examples.
"""

from __future__ import annotations

import ml_collections

from muppet_jax.base_config import base_config
from muppet_jax.errors import UserError


def get_config(preset: str = "roberta_large") -> ml_collections.ConfigDict:
  c = base_config()
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
    raise UserError(f"unknown preset {preset!r} of configs/prefinetune.py; choose "
                    "roberta_large, roberta_base or demo")
  c.lock()  # An override of a key that doesn't exist is an error.
  return c
