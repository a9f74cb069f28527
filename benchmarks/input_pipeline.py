"""Input-pipeline throughput against the tokenizer's own limit, and the train loop it feeds.

    python benchmarks/input_pipeline.py [--batches 150] [--loop-steps 150]

On `muppet_demo` and on a GLUE-like length mix (synthetic tasks whose token lengths follow the
medians of CoLA, SST-2, MRPC, QQP, STS-B, MNLI, QNLI and RTE under RoBERTa's BPE, log-normal
spread), at 32 rows x 512 tokens, side by side, in real (non-pad) input tokens per second:

  (a) the limit: the Rust tokenizer's `encode_batch(_fast)` on all cores over the same texts,
      alone (ids only: the token lists the stream needs too);
  (b) the live stream (`MixtureStream`: tokenizing, shuffling, packing, on its threads);
  (c) the cached stream (the same batches, read from a token cache built here first);

then (d) the demo train loop (the demo preset's model and compiled step) fed by the live stream,
and by the cached one, against the same loop fed one constant pre-made batch, in steps/s; and
the fraction of real tokens in padded vs packed batches. The last line:

  SUMMARY live_vs_tokenizer=<b/a> cached_tokens_per_s_per_core=<c / cores> loop_vs_synthetic=<d>

with (b/a) and (c) of the GLUE-like mix (the realistic lengths; both mixes are in the table) and
(d) of the live stream.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import tasks  # noqa: E402,F401  (registers the tasks and mixtures)
from muppet_jax import (  # noqa: E402
    cli, inputs, losses, partitioning, pretrained, r3f, state, trainer)
from muppet_jax.data import demo, mixing, token_cache  # noqa: E402
from muppet_jax.data.batching import MixtureStream, StreamConfig  # noqa: E402
from muppet_jax.data.local_files import add_file_task  # noqa: E402
from muppet_jax.models import multitask  # noqa: E402
from tasks import demo as demo_tasks  # noqa: E402

# Median tokens per example (both texts of a pair) and train size, per GLUE task.
GLUE_LENGTHS = {"cola": (11, 8551), "sst2": (13, 67349), "mrpc": (53, 3668),
                "qqp": (30, 363846), "stsb": (31, 5749), "mnli": (40, 392702),
                "qnli": (50, 104743), "rte": (70, 2490)}
ROWS, LENGTH, TARGETS = 32, 512, 64


def _glue_like_mixture(directory: str, most_rows: int = 25_000) -> str:
  """Registers one synthetic task per GLUE task, with its length distribution and its train
  size (up to `most_rows` rows written); returns the mixture's name."""
  rng = np.random.default_rng(0)
  # Words that the demo tokenizer keeps whole, so that n words make n tokens.
  words = demo.NAMES + demo.CITIES + demo.ITEMS + demo.PLACES + demo.WEATHER
  names = []
  for name, (median, size) in GLUE_LENGTHS.items():
    path = os.path.join(directory, f"{name}.jsonl")
    with open(path, "w") as f:
      for _ in range(min(size, most_rows)):
        n = max(1, int(rng.lognormal(np.log(median), 0.5)) - 2)  # <s>, </s> make up the rest.
        f.write(json.dumps({"text_a": " ".join(rng.choice(words, n)), "label": 0}) + "\n")
    add_file_task(f"glue_like_{name}", "classification", num_classes=2, train=path,
                  vocabulary=demo_tasks.VOCABULARY, train_size=size)
    names.append(f"glue_like_{name}")
  mixing.add_mixture("glue_like", names)
  return "glue_like"


def _tokenizer_inputs(task, lengths) -> list:
  """What the task's encoder hands `encode_batch`: texts, or (text, text) pairs."""
  out = []
  for columns in task.text_dataset("train", lengths).batch(1024).as_numpy_iterator():
    text = {k: v for k, v in columns.items() if v.dtype == object}
    if "text_a" in text:
      out += [(a.decode(), b.decode()) if b else a.decode()
              for a, b in zip(text["text_a"], text["text_b"])]
    elif "choices" in text:
      out += [(c.decode(), x.decode()) for c, xs in zip(text["context"], text["choices"])
              for x in xs]
    elif "question" in text:
      out += [(q.decode(), c.decode()) for q, c in zip(text["question"], text["context"])]
    else:
      out += [d.decode() for d in text["document"]] + [s.decode() for s in text["summary"]]
  return out


def tokenizer_inputs(mixture: str) -> list:
  """Every train record of the mixture, as the tokenizer receives it."""
  return [x for t in mixing.mixture_tasks(mixture)
          for x in _tokenizer_inputs(t, {"inputs": LENGTH, "targets": TARGETS})]


def tokenizer_limit(texts: list) -> float:
  """Real tokens/s of `encode_batch` alone, in blocks of 1024, over `texts`."""
  backend = demo_tasks.VOCABULARY.backend(LENGTH)
  encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # No offsets: faster.
  encode(texts[:1024])
  start = time.perf_counter()
  tokens = sum(len(e.ids) for i in range(0, len(texts), 1024)
               for e in encode(texts[i:i + 1024]))
  return tokens / (time.perf_counter() - start)


def stream_rate(mixture: str, batches: int, cache_dir: str | None = None) -> float:
  """Real tokens/s of the stream after its first batch (which starts every reader)."""
  config = StreamConfig(mixture, batch_size=ROWS, max_length=LENGTH, target_length=TARGETS)
  with MixtureStream(config, cache_dir=cache_dir) as stream:
    next(stream)
    tokens, start = 0, time.perf_counter()
    for _ in range(batches):
      tokens += int((next(stream)["segment_ids"] > 0).sum())
    return tokens / (time.perf_counter() - start)


def build_cache(mixture: str, directory: str) -> float:
  """Builds the train splits' cache; returns its real tokens/s."""
  start, tokens = time.perf_counter(), 0
  for task in mixing.mixture_tasks(mixture):
    tokens += token_cache.build_split(task, "train", {"inputs": LENGTH, "targets": TARGETS},
                                      directory)["tokens"]
  return tokens / (time.perf_counter() - start)


def loop_rates(steps: int, cache_dir: str) -> tuple[float, float, float]:
  """Steps/s of the demo's train loop fed by its live stream, by the stream read from a token
  cache (built here), and by one constant batch."""
  config = cli.load_config(os.path.join(os.path.dirname(__file__), os.pardir, "configs",
                                        "prefinetune.py") + ":demo")
  mesh = partitioning.make_mesh(dict(config.mesh))
  tasks_ = inputs.prepared_tasks(config)
  start = pretrained.from_config(config, inputs.vocabulary(tasks_), mesh)
  lengths = {"inputs": config.data.max_length, "targets": config.data.target_length}
  for task in tasks_:
    token_cache.build_split(task, "train", lengths, cache_dir)
  live = inputs.train_stream(config, seq2seq=False)
  model = multitask.build(start.config, live.layout)
  table = losses.TaskTable.build(live.tasks, config.data.max_length, start.config.vocab_size,
                                 config.loss_scaling, config.label_smoothing)
  tx = trainer.optimizer(config)
  abstract = state.abstract_state(model, mesh, tx)
  train_state = state.init_state(model, abstract, jax.random.key(0), tx, start.params)
  step = trainer.compile_train_step(
      trainer.make_train_step(model, tx, table, config.microbatches, config.seed,
                              r3f.R3FConfig(0.0, "uniform", 1e-5)),
      abstract, live.empty_batch(), config.data.batch_size, mesh)
  sharding = partitioning.batch_sharding(mesh)
  constant = next(live)

  def run(batches) -> float:
    nonlocal train_state
    for _ in range(10):  # Warm up.
      train_state, metrics = step(train_state, inputs.global_batch(next(batches), sharding))
    jax.block_until_ready(metrics)
    begin = time.perf_counter()
    for _ in range(steps):
      with partitioning.use_mesh(mesh):
        train_state, metrics = step(train_state, inputs.global_batch(next(batches), sharding))
    jax.block_until_ready(metrics)
    return steps / (time.perf_counter() - begin)

  before = run(iter(lambda: constant, None))
  with live:
    real = run(live)
  config.unlock()
  config.data.cache_dir = cache_dir
  with inputs.train_stream(config, seq2seq=False) as cached_stream:
    cached = run(cached_stream)
  after = run(iter(lambda: constant, None))  # Before and after: the machine's drift cancels.
  return real, cached, (before + after) / 2


def packing_efficiency(mixture: str, batches: int) -> str:
  fractions = {}
  for packing, segments in ((False, 1), (True, 16)):
    config = StreamConfig(mixture, batch_size=ROWS, max_length=LENGTH, packing=packing,
                          max_segments=segments)
    with MixtureStream(config) as stream:
      fractions[segments] = np.mean([(next(stream)["segment_ids"] > 0).mean()
                                     for _ in range(batches)])
  return (f"GLUE-like lengths at {LENGTH}: real tokens padded {100 * fractions[1]:.1f}%, packed "
          f"{100 * fractions[16]:.1f}% with max_segments=16 ({fractions[16] / fractions[1]:.1f}x)")


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batches", type=int, default=150)
  parser.add_argument("--loop-steps", type=int, default=150)
  args = parser.parse_args(argv)
  cores = os.cpu_count() or 1
  rows = {}
  with tempfile.TemporaryDirectory() as directory:
    glue = _glue_like_mixture(directory)
    for mixture in ("muppet_demo", glue):
      cache_dir = os.path.join(directory, f"cache_{mixture}")
      texts = tokenizer_inputs(mixture)
      before = tokenizer_limit(texts)
      live = stream_rate(mixture, args.batches)
      # Measured before and after the stream: a drift in the machine's speed cancels.
      rows[mixture] = {"limit": (before + tokenizer_limit(texts)) / 2, "live": live,
                       "build": build_cache(mixture, cache_dir),
                       "cached": stream_rate(mixture, args.batches, cache_dir)}
      print(f"measured {mixture}", flush=True)
    efficiency = packing_efficiency(glue, 20)
    real, cached, synthetic = loop_rates(args.loop_steps, os.path.join(directory, "demo_run"))
  print(f"\nreal input tokens/s at {ROWS} x {LENGTH}, {cores} CPU cores")
  print(f"{'mixture':<12} {'(a) tokenizer':>14} {'(b) live':>12} {'b/a':>6} "
        f"{'cache build':>12} {'(c) cached':>12} {'c/core':>11}")
  for mixture, r in rows.items():
    print(f"{mixture:<12} {r['limit']:>14,.0f} {r['live']:>12,.0f} "
          f"{r['live'] / r['limit']:>6.2f} {r['build']:>12,.0f} {r['cached']:>12,.0f} "
          f"{r['cached'] / cores:>11,.0f}")
  print(f"(d) demo train loop: {real:.1f} steps/s on the live stream ({real / synthetic:.2f}), "
        f"{cached:.1f} on the cached one ({cached / synthetic:.2f}), {synthetic:.1f} on one "
        "constant batch")
  print(efficiency)
  g = rows[glue]
  print(f"SUMMARY live_vs_tokenizer={g['live'] / g['limit']:.2f} "
        f"cached_tokens_per_s_per_core={g['cached'] / cores:.0f} "
        f"loop_vs_synthetic={real / synthetic:.2f}")


if __name__ == "__main__":
  main(sys.argv[1:])
