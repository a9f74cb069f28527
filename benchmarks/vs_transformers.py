"""Real tokens/s of our packed train step beside transformers' PyTorch with dynamic padding, on CPU.

    python benchmarks/vs_transformers.py [--sizes base,small] [--steps 4] [--length 512,256]

Both sides train one 2-class classification task on the same synthetic examples: random token
ids between `<s>` and `</s>`, their lengths following the GLUE-like mix of
`benchmarks/input_pipeline.py` (each example's task drawn in proportion to its train size, its
length log-normal around the task's median with sigma 0.5), taken in the same order. float32,
dropout 0.1, train mode, a full AdamW update per step, on every CPU core:

  ours:   the repository's compiled multi-task train step (`trainer.make_train_step`: gradient
          clipping and AdamW included) on rows of --length tokens packed first-fit by the stream's
          packer (`BatchBuilder`, up to --max-segments examples a row), --tokens per step; each
          length in --length is measured and the fastest is the one compared;
  theirs: `RobertaForSequenceClassification` of the same size from a random `RobertaConfig`,
          fused `torch.optim.AdamW` and gradient clipping (the `Trainer`'s defaults), on batches
          padded to their longest example (`DataCollatorWithPadding`) in random order (the
          `Trainer`'s default), as many examples a batch as make our step's real tokens on
          average; also, as a second figure, with `group_by_length=True` (batches cut from groups
          of 50 batches sorted by length, as `LengthGroupedSampler` cuts them).

Batches are made before the clock starts (neither side's input pipeline is timed); compilation and
--warmup steps are not timed. The sides of a size take their steps in turn, so that a change in
the machine's load (other processes) falls on all of them alike. Per size (`base`: RoBERTa-base;
`small`: 6 layers, hidden 512, 8 heads, MLP 2048, the same vocabulary) it prints each side's real
(non-pad) tokens per step, the share of computed tokens that are real, real tokens/s, and
ours/theirs. The last line:

  SUMMARY real_tokens_ratio=<ours/theirs>

for the base size (the last size run if base is not) against random-order dynamic padding.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from input_pipeline import GLUE_LENGTHS  # noqa: E402
from muppet_jax import losses, partitioning, state, trainer  # noqa: E402
from muppet_jax.data.packing import BatchBuilder, Shape  # noqa: E402
from muppet_jax.families import FAMILIES, HeadLayout  # noqa: E402
from muppet_jax.models import multitask  # noqa: E402
from muppet_jax.models.config import EncoderConfig, roberta_config  # noqa: E402

SIZES = {"base": roberta_config("base"),
         "small": roberta_config("base").replace(num_layers=6, hidden_size=512, num_heads=8,
                                                 intermediate_size=2048)}
BOS, PAD, EOS = 0, 1, 2  # RoBERTa's <s>, <pad>, </s>.
SIGMA = 0.5  # Of the log-normal lengths, as in input_pipeline's GLUE-like mixture.
MISSES = 4  # Examples that don't fit before a batch is full, as in `MixtureStream`.
GROUP_BATCHES = 50  # `LengthGroupedSampler` sorts groups of this many batches by length.


@dataclasses.dataclass(frozen=True)
class Examples:
  """Examples back to back in one token array (how the packer reads them)."""

  tokens: np.ndarray
  offsets: np.ndarray
  lengths: np.ndarray
  labels: np.ndarray

  def ids(self, i: int) -> np.ndarray:
    return self.tokens[self.offsets[i]:self.offsets[i] + self.lengths[i]]


@dataclasses.dataclass
class Side:
  """One way of training: its step over its i-th batch (returning when done), and each batch's
  real and computed (padding included) token counts."""

  name: str
  step: Callable[[int], None]
  real: list[int]
  computed: list[int]
  seconds: float = 0.0  # Of the timed steps.

  def timed(self, warmup: int) -> tuple[int, int]:
    """Real and computed tokens of the timed steps."""
    return sum(self.real[warmup:]), sum(self.computed[warmup:])

  def rate(self, warmup: int) -> float:
    """Real tokens/s of the timed steps."""
    return self.timed(warmup)[0] / self.seconds


def make_examples(count: int, longest: int, vocab_size: int, seed: int = 0) -> Examples:
  """`count` examples of the GLUE-like length mix, truncated to `longest` tokens."""
  rng = np.random.default_rng(seed)
  medians, sizes = (np.asarray(v, np.float64) for v in zip(*GLUE_LENGTHS.values()))
  task = rng.choice(len(medians), count, p=sizes / sizes.sum())
  lengths = np.clip(rng.lognormal(np.log(medians[task]), SIGMA).astype(np.int64), 3, longest)
  offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  tokens = rng.integers(3, vocab_size, int(lengths.sum())).astype(np.int32)
  tokens[offsets], tokens[offsets + lengths - 1] = BOS, EOS
  return Examples(tokens, offsets, lengths, rng.integers(0, 2, count).astype(np.int32))


def packed_batches(examples: Examples, shape: Shape, count: int) -> list[dict[str, np.ndarray]]:
  """`count` batches packed from the examples in order as the stream packs them: an example
  that doesn't fit waits for the next batch, and a batch is full after MISSES of them."""
  empty = np.zeros(0, np.int32)
  rows = ((0, (int(n),), examples.tokens, int(o), empty, 0, 0, int(y), 0.0, -1, -1)
          for o, n, y in zip(examples.offsets, examples.lengths, examples.labels))
  waiting: list[tuple] = []
  batches = []
  for _ in range(count):
    builder = BatchBuilder(shape, head_of=[0], family_of=[0], pad_id=PAD, example_base=0)
    waiting = [row for row in waiting if not builder.place(row)]
    misses = 0
    while misses < MISSES:
      row = next(rows)
      if not builder.place(row):
        waiting.append(row)
        misses += 1
    batches.append(builder.arrays())
  return batches


def ours(config: EncoderConfig, examples: Examples, lengths: list[int], tokens: int,
         segments: int, count: int) -> list[Side]:
  """Our compiled train step on `count` packed batches of about `tokens` tokens, per row length
  in `lengths`. The lengths' steps share one train state: each passes it on to the next."""
  layout = HeadLayout(("glue_like",), ("classification",), 2)
  model = multitask.build(config, layout)
  # Divided by log 2: Muppet's loss scaling of a 2-class task.
  table = losses.TaskTable(("glue_like",), (FAMILIES.index("classification"),), (2,),
                           (float(np.log(2)),))
  tx = trainer.make_optimizer(1e-5, 10, 1000)
  mesh = partitioning.make_mesh({"data": -1})
  abstract = state.abstract_state(model, mesh, tx)
  train_state = state.init_state(model, abstract, jax.random.key(0), tx)
  train_step = trainer.make_train_step(model, tx, table, 1, 0)
  sharding = partitioning.batch_sharding(mesh)

  def side(length: int) -> Side:
    rows = max(1, tokens // length)
    batches = packed_batches(examples, Shape(rows, length, 0, segments, True, 1), count)
    compiled = trainer.compile_train_step(train_step, abstract, batches[0], rows, mesh)
    on_device = [jax.device_put(b, sharding) for b in batches]

    def step(i: int) -> None:
      nonlocal train_state
      train_state, metrics = compiled(train_state, on_device[i])
      jax.block_until_ready((train_state, metrics))

    return Side(f"ours: packed {rows} x {length}", step,
                [int((b["segment_ids"] > 0).sum()) for b in batches],
                [b["segment_ids"].size for b in batches])

  return [side(length) for length in lengths]


def padded_batches(examples: Examples, order: np.ndarray,
                   batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
  """Batches of `order`'s examples, each padded to its longest (`DataCollatorWithPadding`)."""
  out = []
  for start in range(0, len(order) - batch_size + 1, batch_size):
    chosen = order[start:start + batch_size]
    ids = np.full((batch_size, examples.lengths[chosen].max()), PAD, np.int64)
    for row, i in enumerate(chosen):
      ids[row, :examples.lengths[i]] = examples.ids(i)
    out.append((ids, examples.labels[chosen]))
  return out


def grouped_order(examples: Examples, batch_size: int, warmup: int, steps: int) -> np.ndarray:
  """Batches' examples as `group_by_length=True` batches them: a group of GROUP_BATCHES batches
  sorted by length, longest first. Warm-up takes the first batches; the timed ones are spread
  evenly over the group, so that a few steps see its range of lengths, not only its longest."""
  group = np.arange(GROUP_BATCHES * batch_size)
  ordered = group[np.argsort(-examples.lengths[group], kind="stable")]
  timed = ((np.arange(steps) + 0.5) * (GROUP_BATCHES - warmup) / steps).astype(int) + warmup
  picks = [*range(warmup), *timed]
  return np.concatenate([ordered[p * batch_size:(p + 1) * batch_size] for p in picks])


def theirs(config: EncoderConfig, examples: Examples, batch_size: int, warmup: int,
           steps: int) -> list[Side]:
  """transformers' `RobertaForSequenceClassification` train step on padded batches of
  `batch_size` examples, in random order and grouped by length (one model for both)."""
  import torch
  import transformers

  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  hf_config = transformers.RobertaConfig(
      **config.to_hf_config(), num_labels=2, hidden_dropout_prob=config.hidden_dropout,
      attention_probs_dropout_prob=config.attention_dropout)
  model = transformers.RobertaForSequenceClassification(hf_config).train()
  # The Trainer's defaults: fused AdamW (`adamw_torch_fused`), gradients clipped to norm 1.
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
  attention = model.config._attn_implementation

  def side(name: str, order: np.ndarray) -> Side:
    batches = [(torch.from_numpy(ids), torch.from_numpy(ids != PAD).long(),
                torch.from_numpy(labels).long())
               for ids, labels in padded_batches(examples, order, batch_size)]

    def step(i: int) -> None:
      ids, mask, labels = batches[i]
      model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      optimizer.step()
      optimizer.zero_grad(set_to_none=True)

    return Side(f"theirs: padded {batch_size} ex, {name} ({attention})", step,
                [int(mask.sum()) for _, mask, _ in batches],
                [mask.numel() for _, mask, _ in batches])

  return [side("random order", np.arange((warmup + steps) * batch_size)),
          side("group_by_length", grouped_order(examples, batch_size, warmup, steps))]


def measure(sides: list[Side], warmup: int, steps: int) -> None:
  """Warms every side up, then times their steps taking turns."""
  for i in range(warmup):
    for side in sides:
      side.step(i)
  for i in range(warmup, warmup + steps):
    for side in sides:
      start = time.perf_counter()
      side.step(i)
      side.seconds += time.perf_counter() - start


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="base,small")
  parser.add_argument("--steps", type=int, default=4, help="timed steps per side")
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--length", default="512,256",
                      help="packed row length(s) of ours, comma-separated; the fastest counts")
  parser.add_argument("--tokens", type=int, default=1024,
                      help="tokens (rows x length) per step of ours")
  parser.add_argument("--max-segments", type=int, default=16)
  args = parser.parse_args(argv)
  sizes = args.sizes.split(",")
  unknown = set(sizes) - set(SIZES)
  if unknown:
    parser.error(f"unknown sizes {sorted(unknown)}; choose from {sorted(SIZES)}")
  lengths = [int(n) for n in args.length.split(",")]
  count = args.warmup + args.steps
  # One set of examples for every size and side. Truncated to the shortest row: at 256 that
  # shortens about 1 example in 10,000, at 512 none.
  examples = make_examples(200_000, min(lengths), SIZES[sizes[0]].vocab_size)
  print(f"{os.cpu_count()} CPU cores, jax {jax.__version__}; GLUE-like lengths: mean "
        f"{examples.lengths.mean():.1f}, median {np.median(examples.lengths):.0f}, max "
        f"{examples.lengths.max()} tokens; float32, dropout 0.1, {args.steps} timed steps after "
        f"{args.warmup} warm-up", flush=True)
  ratios = {}
  for size in sizes:
    config = SIZES[size]
    packed = ours(config, examples, lengths, args.tokens, args.max_segments, count)
    # As many examples a batch as make our steps' real tokens, on average.
    real_per_step = np.mean([side.timed(args.warmup)[0] / args.steps for side in packed])
    batch_size = max(1, round(real_per_step / examples.lengths.mean()))
    padded = theirs(config, examples, batch_size, args.warmup, args.steps)
    measure(packed + padded, args.warmup, args.steps)
    print(f"\n{size}: {config.num_layers} layers, hidden {config.hidden_size}, "
          f"{config.num_heads} heads, MLP {config.intermediate_size}, vocab {config.vocab_size}")
    print(f"{'side':<44} {'real tok/step':>13} {'real/computed':>13} {'real tok/s':>11} "
          f"{'ours/theirs':>11}")
    best = max(packed, key=lambda side: side.rate(args.warmup))
    for side in packed + padded:
      real, computed = side.timed(args.warmup)
      ratio = best.rate(args.warmup) / side.rate(args.warmup)
      line = (f"{side.name:<44} {real / args.steps:>13,.0f} {real / computed:>13.2f} "
              f"{side.rate(args.warmup):>11,.1f} " + ("" if side in packed else f"{ratio:>11.2f}"))
      print(line.rstrip())
    ratios[size] = best.rate(args.warmup) / padded[0].rate(args.warmup)
    print(f"ours/theirs: the fastest of ours ({best.name.removeprefix('ours: ')}) over each of "
          "theirs", flush=True)
  print(f"SUMMARY real_tokens_ratio={ratios.get('base', ratios[sizes[-1]]):.2f}")


if __name__ == "__main__":
  main(sys.argv[1:])
