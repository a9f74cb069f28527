"""BART pre-finetuning configs: `--config=configs/prefinetune_bart.py:PRESET`, then
`--config.KEY=VALUE` (keys: `muppet_jax/base_config.py`).

Presets:
  bart_large (default)  BART-large on all 46 tasks (`muppet_bart`, the four families with
                        summarization), length 512 with 128 summary tokens per row,
                        heterogeneous batches, R3F on (the paper found it pivotal for BART).
  demo                  a tiny random BART on the offline `muppet_demo` suite, summarization
                        included: no network, a few minutes on 2 CPU cores.

Hyperparameters for bart_large (not published with the paper): AdamW lr 1e-5 (BART is less
stable than RoBERTa), betas (0.9, 0.98), eps 1e-6, weight decay 0.01, warmup 600 steps then
linear decay, clipping at norm 1; label smoothing 0.1 and R3F with weight 1 and U(-1e-5, 1e-5)
embedding noise (fairseq's R3F defaults). Summaries are evaluated with beam search (4 beams,
length penalty 2, no repeated trigrams: the settings of Hugging Face's BART summarizers) and
ROUGE-1/2/L.
"""

from __future__ import annotations

import ml_collections

from muppet_jax.base_config import base_config
from muppet_jax.errors import UserError


def get_config(preset: str = "bart_large") -> ml_collections.ConfigDict:
  c = base_config()
  c.init_from = "facebook/bart-large"
  c.model.update(architecture="bart", activation_dropout=0.1)
  c.data.mixture = "muppet_bart"
  c.optimizer.learning_rate = 1e-5
  c.r3f.weight = 1.0
  if preset == "bart_large":
    pass
  elif preset == "demo":
    c.init_from = ""
    c.model.update(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=256,
                   max_position_embeddings=128, dtype="float32", hidden_dropout=0.0,
                   attention_dropout=0.0, activation_dropout=0.0)
    c.data.update(mixture="muppet_demo", batch_size=16, max_length=128, target_length=32,
                  max_segments=16)
    c.optimizer.update(learning_rate=1e-3, warmup_steps=60)
    c.r3f.weight = 0.0
    # Copying names from the document into the summary (cross-attention) is learned last, after
    # step ~500; the encoder-only tasks are solved by step ~300.
    c.total_steps = 1000
    c.checkpoint.update(every_steps=250, keep=2)
    c.eval.update(every_steps=500, batch_size=16, max_batches=25, at_start=True)
    c.eval.generation.update(num_beams=1, length_penalty=1.0, no_repeat_ngram_size=0)
  else:
    raise UserError(f"unknown preset {preset!r} of configs/prefinetune_bart.py; choose "
                    "bart_large or demo")
  c.lock()  # An override of a key that doesn't exist is an error.
  return c
