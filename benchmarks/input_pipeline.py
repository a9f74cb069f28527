"""Input-pipeline throughput and packing efficiency.

    python benchmarks/input_pipeline.py [--batches 50] [--batch-size 32] [--max-length 512]

1. Throughput of `MixtureStream` on `muppet_demo` (tokenization, sampling and packing on the
   host's CPU): examples/s and real tokens/s, after the first batch (which fills the shuffle
   buffers).
2. The fraction of real (non-pad) tokens in padded vs packed batches at --max-length, on a
   GLUE-like length distribution: synthetic tasks whose token lengths follow the medians of
   CoLA, SST-2, MRPC, QQP, STS-B, MNLI, QNLI and RTE under RoBERTa's BPE (log-normal spread).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tasks  # noqa: E402,F401  (registers the tasks and mixtures)
from muppet_jax.data import demo, mixing  # noqa: E402
from muppet_jax.data.batching import MixtureStream, StreamConfig  # noqa: E402
from muppet_jax.data.local_files import add_file_task  # noqa: E402
from tasks import demo as demo_tasks  # noqa: E402

# Median tokens per example (both texts of a pair) and train size, per GLUE task.
GLUE_LENGTHS = {"cola": (11, 8551), "sst2": (13, 67349), "mrpc": (53, 3668),
                "qqp": (30, 363846), "stsb": (31, 5749), "mnli": (40, 392702),
                "qnli": (50, 104743), "rte": (70, 2490)}


def throughput(batches: int, batch_size: int, max_length: int) -> None:
  stream = MixtureStream(StreamConfig("muppet_demo", batch_size=batch_size,
                                      max_length=max_length, target_length=64))
  start = time.perf_counter()
  next(stream)
  first = time.perf_counter() - start
  examples = tokens = 0
  start = time.perf_counter()
  for _ in range(batches):
    batch = next(stream)
    examples += len(np.unique(batch["seg_example"][batch["seg_example"] >= 0]))
    tokens += int((batch["segment_ids"] > 0).sum())
  seconds = time.perf_counter() - start
  print(f"muppet_demo stream, {batch_size} x {max_length}: first batch {first:.1f}s; then "
        f"{examples / seconds:,.0f} examples/s, {tokens / seconds:,.0f} real tokens/s, "
        f"{batches / seconds:.1f} batches/s ({os.cpu_count()} CPU cores)")


def _glue_like_mixture(directory: str) -> str:
  """Registers one synthetic task per GLUE task, with its length distribution; returns the
  mixture's name."""
  rng = np.random.default_rng(0)
  # Words that the demo tokenizer keeps whole, so that n words make n tokens.
  words = demo.NAMES + demo.CITIES + demo.ITEMS + demo.PLACES + demo.WEATHER
  names = []
  for name, (median, size) in GLUE_LENGTHS.items():
    path = os.path.join(directory, f"{name}.jsonl")
    with open(path, "w") as f:
      for _ in range(2000):
        n = max(1, int(rng.lognormal(np.log(median), 0.5)) - 2)  # <s>, </s> make up the rest.
        f.write(json.dumps({"text_a": " ".join(rng.choice(words, n)), "label": 0}) + "\n")
    add_file_task(f"glue_like_{name}", "classification", num_classes=2, train=path,
                  vocabulary=demo_tasks.VOCABULARY, train_size=size)
    names.append(f"glue_like_{name}")
  mixing.add_mixture("glue_like", names)
  return "glue_like"


def packing_efficiency(batches: int, batch_size: int, max_length: int) -> None:
  with tempfile.TemporaryDirectory() as directory:
    mixture = _glue_like_mixture(directory)
    fractions = {}
    for packing, segments in ((False, 1), (True, 16), (True, 64)):
      stream = MixtureStream(StreamConfig(mixture, batch_size=batch_size, max_length=max_length,
                                          packing=packing, max_segments=segments))
      fractions[segments] = np.mean([(next(stream)["segment_ids"] > 0).mean()
                                     for _ in range(batches)])
  print(f"GLUE-like lengths at {max_length}: real tokens padded {100 * fractions[1]:.1f}%, "
        f"packed {100 * fractions[16]:.1f}% with max_segments=16 "
        f"({fractions[16] / fractions[1]:.1f}x), {100 * fractions[64]:.1f}% with 64 "
        f"({fractions[64] / fractions[1]:.1f}x)")


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batches", type=int, default=50)
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--max-length", type=int, default=512)
  args = parser.parse_args(argv)
  throughput(args.batches, args.batch_size, args.max_length)
  packing_efficiency(min(args.batches, 20), args.batch_size, args.max_length)


if __name__ == "__main__":
  main(sys.argv[1:])
