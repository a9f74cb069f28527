"""The keys every pre-finetuning config has, with the large-run defaults; the files in `configs/`
start from here and set their presets (`--config=configs/FILE.py:PRESET`)."""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Where the model starts: a Hugging Face directory or hub name, or a muppet_jax checkpoint
  # directory (from `muppet_jax.convert` or training). Empty: random init from `model`.
  c.init_from = "roberta-large"
  # Architecture for random init (`architecture` roberta or bart; BART uses num_layers on each
  # side and intermediate_size for its feed-forward layers), plus runtime settings applied to any
  # start (activation_dropout: BART only).
  c.model = ml_collections.ConfigDict(dict(
      architecture="roberta",
      vocab_size=0,  # 0: the tasks' vocabulary size.
      hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
      max_position_embeddings=514,
      dtype="bfloat16", param_dtype="float32", attention_impl="xla", remat="none",
      scan_layers=False,
      hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.0))
  c.data = ml_collections.ConfigDict(dict(
      mixture="muppet_roberta", batch_size=256, max_length=512, packing=True, max_segments=16,
      target_length=128,  # Summary tokens per row (BART with summarization tasks).
      temperature=1.0, rate_cap=0, shared_heads=True, batching="heterogeneous", seed=0,
      # A token cache (`python -m muppet_jax.cache`): tasks found there are read from it, the
      # others tokenized live. Empty: all live.
      cache_dir="",
      # Your own tasks and mixtures, registered before `mixture` is resolved: a JSON/YAML
      # tasks file (muppet_jax/data/tasks_file.py), and comma-separated Python modules (names
      # or .py paths) that register seqio tasks when imported.
      tasks_file="", task_modules="",
      # A tasks file's row that doesn't fit its task (a missing or empty field, a wrong number
      # of columns, a label outside the task's classes, an answer not in its context): "error"
      # stops the run at start with one line naming it; "skip" leaves such rows out, counted
      # per task in the start-up log and the metrics (bad_rows/TASK/SPLIT).
      bad_rows="error",
      # Train on the first fraction (0, 1] of each task's train split (sample efficiency).
      train_fraction=1.0))
  c.loss_scaling = True  # Divide each example's loss by log n of its task.
  c.label_smoothing = 0.1  # Of the summaries' cross-entropy.
  # Summary positions whose LM logits ([rows, positions, vocab], float32) exist at once in the
  # loss; 0: all of them (the memory of a 50k vocabulary times every target token).
  c.lm_loss_chunk = 16
  # R3F: loss + weight * symmetric KL between clean and embedding-noised outputs (0: off).
  c.r3f = ml_collections.ConfigDict(dict(weight=0.0, noise_type="uniform", eps=1e-5))
  c.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=2e-5, warmup_steps=600, weight_decay=0.01, b1=0.9, b2=0.98, eps=1e-6,
      clip_norm=1.0))
  c.total_steps = 10_000
  # A step whose loss, gradient norm or updated parameters' norm is not finite is dropped (the state
  # stays as it was, and nothing non-finite is ever saved); then "stop" ends the run with one
  # line naming the step, its tasks and the last good checkpoint, and "skip" goes on, counting
  # it (`skipped_steps` in the metrics), until `nonfinite_max_skips` in a row stop it.
  c.nonfinite = "stop"
  c.nonfinite_max_skips = 10
  c.microbatches = 1  # Gradient accumulation inside the step.
  c.seed = 0
  c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))  # -1: the rest.
  c.log_every_steps = 50
  # XLA's persistent compilation cache, so that a restarted run skips compiling (command line
  # runs): "" is $JAX_COMPILATION_CACHE_DIR where set (one cache for many runs), else
  # WORKDIR/compilation_cache; "none" turns it off; any other value is the path.
  c.compilation_cache_dir = ""
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=1000, keep=3))
  c.eval = ml_collections.ConfigDict(dict(
      every_steps=2000, batch_size=64, max_batches=50,
      at_start=False,  # Also evaluate the starting model (step 0).
      # Summaries are generated (BART's summarizers' settings) and scored with ROUGE.
      # max_length 0: data.target_length.
      generation=ml_collections.ConfigDict(dict(
          num_beams=4, length_penalty=2.0, no_repeat_ngram_size=3, min_length=0,
          max_length=0))))
  return c
