"""Fine-tuning configs: `--config=configs/finetune.py:PRESET`, then `--config.KEY=VALUE`.

Presets:
  glue  (default)  the paper's GLUE fine-tuning of a Muppet model, from
                   `facebook/muppet-roberta-large`, on one or more GLUE tasks of the catalog
                   (`--config.finetune.task=glue_rte`; default: all but WNLI, each its own run).
  superglue        the SuperGLUE tasks of the catalog (BoolQ, CB, COPA, MultiRC, WiC and RTE;
                   WSC and ReCoRD are not in it), each its own run.
  squad            SQuAD v1.1.
                   These three leave the learning rate, weight decay, batch size and epochs unset:
                   each task takes its family's recipe (`muppet_jax.finetune.RECIPES`; e.g.
                   classification: RoBERTa's GLUE recipe, AdamW lr 1e-5, betas (0.9, 0.98), eps
                   1e-6, weight decay 0.1, batch 32 unpacked, 10 epochs with 6% warmup then linear
                   decay, evaluation every epoch; multiple choice: RACE's, lr 1e-5, batch 16, 4
                   epochs; spans: SQuAD's, lr 1.5e-5, batch 48, 2 epochs); a key set on the
                   command line wins.
  demo             the demo pre-finetuning's model (`runs/demo/checkpoints`, from the README's
                   quick start; `--config.init_from=DIR` for another) fine-tuned on
                   `demo_review`, which the demo pre-finetuning left out: offline, about a minute
                   on 2 CPU cores.

The keys of `base_config.py` plus `finetune` (read by `muppet_jax.finetune`): the task (its
train and validation splits; `data.mixture` is set to it), how its head starts, the runs of a
sample-efficiency sweep and early stopping.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

from muppet_jax.base_config import base_config
from muppet_jax.errors import UserError

DEMO_START = "runs/demo/checkpoints"
GLUE = "glue_cola,glue_sst2,glue_mrpc,glue_qqp,glue_stsb,glue_mnli,glue_qnli,glue_rte"
SUPERGLUE = "super_glue_boolq,super_glue_cb,copa,super_glue_multirc,super_glue_wic,glue_rte"


def get_config(preset: str = "glue") -> ml_collections.ConfigDict:
  c = base_config()
  c.finetune = ml_collections.ConfigDict(dict(
      # Registered task names, comma-separated: each is fine-tuned on its own.
      task="",
      # "new": the task's head starts afresh; "reuse": from the start's trained head of that
      # task (a pre-finetuned muppet_jax checkpoint).
      head="new",
      # Comma-separated: every (fraction, seed) pair is a run. A fraction f in (0, 1] trains on
      # the first f of the train split (data.train_fraction); a seed sets seed and data.seed.
      train_fraction="1", seeds="0",
      # Evaluations without a new best before the run stops (0: never).
      patience=0,
      # > 0: total_steps from this many passes over the (fraction of the) train split at
      # data.batch_size sequences a step (exact with data.packing=false), the warmup that
      # fraction of them, and an evaluation every pass. 0: total_steps, warmup_steps and
      # eval.every_steps as set.
      epochs=0.0, warmup_fraction=0.06))
  c.checkpoint.keep = 1  # Resuming needs the last; the kept model is the best step's.
  c.eval.max_batches = 1_000_000  # All of the validation split: the best step is chosen on it.
  if preset in ("glue", "superglue", "squad"):
    c.init_from = "facebook/muppet-roberta-large"
    c.finetune.task = {"glue": GLUE, "superglue": SUPERGLUE, "squad": "squad"}[preset]
    c.data.packing = False  # One example a row, as the recipes' batch sizes count them.
    # Unset: the task's family's recipe (muppet_jax.finetune.RECIPES).
    c.optimizer.learning_rate = placeholder(float)
    c.optimizer.weight_decay = placeholder(float)
    c.data.batch_size = placeholder(int)
    c.finetune.epochs = placeholder(float)
  elif preset == "demo":
    c.init_from = DEMO_START
    c.finetune.task = "demo_review"
    c.model.update(dtype="float32", hidden_dropout=0.0, attention_dropout=0.0)
    c.data.update(batch_size=16, max_length=128, max_segments=16)
    c.optimizer.update(learning_rate=2e-4, warmup_steps=20)
    c.total_steps = 200
    c.log_every_steps = 50
    c.checkpoint.every_steps = 100
    c.eval.update(every_steps=50, batch_size=16, at_start=True)
  else:
    raise UserError(f"unknown preset {preset!r} of configs/finetune.py; choose glue, superglue, "
                    "squad or demo")
  c.lock()  # An override of a key that doesn't exist is an error.
  return c
