"""Task-count scaling study configs: `--config=configs/study.py:PRESET`, then `--config.KEY=VALUE`.

Presets:
  roberta (default)  RoBERTa-base pre-finetuned on each of `muppet_roberta_n10` ... `_n40` and the
                     full `muppet_roberta`, then every result and RoBERTa-base itself fine-tuned
                     on the GLUE tasks: the paper's scaling curve (Figure 1).
  demo               a tiny random encoder pre-finetuned on `muppet_demo_n2` and `_n4`, then it
                     and each result fine-tuned on `demo_review` (which no demo mixture holds):
                     offline, a few minutes on 2 CPU cores.

Keys: `mixtures` (comma-separated), `prefinetune` (configs/prefinetune.py's keys; its
`init_from` is the original model, the baseline) and `finetune` (configs/finetune.py's keys; its
`init_from` is set per start).
"""

from __future__ import annotations

import ml_collections

from configs import finetune, prefinetune
from muppet_jax.errors import UserError


def get_config(preset: str = "roberta") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  if preset == "roberta":
    c.mixtures = ",".join([*(f"muppet_roberta_n{n}" for n in range(10, 45, 5)),
                           "muppet_roberta"])
    c.prefinetune = prefinetune.get_config("roberta_base")
    c.finetune = finetune.get_config("glue")
    c.finetune.unlock()
    c.finetune.init_from = ""
  elif preset == "demo":
    c.mixtures = "muppet_demo_n2,muppet_demo_n4"
    c.prefinetune = prefinetune.get_config("demo")
    c.prefinetune.unlock()
    c.prefinetune.total_steps = 300
    c.prefinetune.eval.every_steps = 300
    c.prefinetune.checkpoint.every_steps = 300
    c.finetune = finetune.get_config("demo")
    c.finetune.unlock()
    c.finetune.init_from = ""
    c.finetune.total_steps = 100
    c.finetune.eval.every_steps = 25
  else:
    raise UserError(f"unknown preset {preset!r} of configs/study.py; choose roberta or demo")
  # XLA's persistent compilation cache, shared by all the study's runs ("" = WORKDIR's).
  c.compilation_cache_dir = ""
  c.lock()  # An override of a key that doesn't exist is an error.
  return c
