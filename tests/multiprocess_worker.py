"""One process of a local CPU cluster for tests/test_multiprocess.py: the demo trained by
`muppet_jax.train.train` on a short config, as process I of N (jax.distributed with a localhost
coordinator and gloo collectives), or as the one-process reference fed the same global batches.

    python -m tests.multiprocess_worker --workdir=DIR --devices=2 --process=I --processes=2 \\
        --port=PORT --mesh=data=2,fsdp=2 [--steps=8] [--reference=2] [--same-shard] \\
        [--skip-allreduce]

`--reference` (one process): each global batch is the rows of the N processes' local batches
in process order, as `jax.make_array_from_process_local_data` assembles them. Two mistakes the
test must catch: `--same-shard` makes every process read process 0's shard; `--skip-allreduce`
(given to every process: they must run one program) sums no gradient over the mesh's `data`
axis, so on a data=2 x fsdp=2 mesh each process updates its replica from its own rows alone.

Besides `worker_I.json` (the last evaluation and the segments fed), each process writes
`params_I.npz`: its own shards of the final parameters, as `PATH@START:STOP,...` keys.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np  # (jax is imported once XLA_FLAGS says how many devices.)


def _args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--devices", type=int, required=True)
  parser.add_argument("--process", type=int, default=0)
  parser.add_argument("--processes", type=int, default=1)
  parser.add_argument("--port", type=int, default=0)
  parser.add_argument("--mesh", default="data=1,fsdp=-1")
  parser.add_argument("--steps", type=int, default=8)
  parser.add_argument("--every", type=int, default=4)
  parser.add_argument("--reference", type=int, default=0, help="shards to emulate")
  parser.add_argument("--same-shard", action="store_true")
  parser.add_argument("--skip-allreduce", action="store_true")
  parser.add_argument("--step-delay", type=float, default=0.0,
                      help="seconds added before each batch: time to signal a running cluster")
  return parser.parse_args(argv)


class _ConcatenatedShards:
  """A stream whose batches are the rows of `n` per-process streams, in process order."""

  def __init__(self, streams: list):
    self.streams = streams
    self.tasks, self.layout = streams[0].tasks, streams[0].layout
    self.task_heads = streams[0].task_heads
    self.config, self.rates = streams[0].config, streams[0].rates

  def _cat(self, batches: list) -> dict:
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

  def empty_batch(self) -> dict:
    return self._cat([s.empty_batch() for s in self.streams])

  def __next__(self) -> dict:
    return self._cat([next(s) for s in self.streams])

  def save(self, directory) -> None:
    for i, s in enumerate(self.streams):
      (directory / str(i)).mkdir()
      s.save(directory / str(i))

  def restore(self, directory) -> bool:
    return all(s.restore(directory / str(i)) for i, s in enumerate(self.streams))

  def __enter__(self):
    return self

  def __exit__(self, *exc_info) -> None:
    for s in self.streams:
      s.close()


def _skipping_allreduce(make_train_step):
  """`make_train_step` whose step runs once per index of the mesh's `data` axis (the processes,
  on a data=2 x fsdp=2 mesh), each on its own rows, and sums no gradient over that axis: every
  process updates its replica of the parameters from its own gradients, which silently diverge."""
  import flax.linen as nn
  import jax
  from jax.sharding import PartitionSpec as P

  from muppet_jax import partitioning
  rules = [(name, "fsdp" if name == "activation_batch" else axes)
           for name, axes in partitioning.LOGICAL_AXIS_RULES]

  def make(*args, **kwargs):
    step = make_train_step(*args, **kwargs)

    def local_step(state, batch):
      with nn.logical_axis_rules(rules):  # `data` is manual here: constrain over fsdp alone.
        return step(state, batch)
    return jax.shard_map(local_step, in_specs=(P(), P("data")), out_specs=P(),
                         axis_names={"data"}, check_vma=False)
  return make


def _local_shards(params) -> dict[str, np.ndarray]:
  """This process's shards of every parameter, keyed by path and index."""
  import jax
  shards = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    for shard in leaf.addressable_shards:
      index = ",".join("%d:%d" % s.indices(n)[:2] for s, n in zip(shard.index, leaf.shape))
      shards[f"{jax.tree_util.keystr(path)}@{index}"] = np.asarray(shard.data)
  return shards


def main(argv: list[str]) -> None:
  args = _args(argv)
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
  import jax
  import seqio
  if args.processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{args.port}",
                               num_processes=args.processes, process_id=args.process)

  from configs import prefinetune
  from muppet_jax import evaluation, inputs, trainer
  from muppet_jax.data import batching
  from muppet_jax.train import train

  config = prefinetune.get_config("demo")
  config.unlock()
  mesh = dict(kv.split("=") for kv in args.mesh.split(","))
  config.update_from_flattened_dict({
      "total_steps": args.steps, "log_every_steps": args.every,
      "checkpoint.every_steps": args.every, "eval.every_steps": args.steps,
      "eval.max_batches": 1000, "eval.batch_size": 16, "data.batch_size": 8,
      "model.hidden_dropout": 0.1, **{f"mesh.{k}": int(v) for k, v in mesh.items()}})

  seen = []  # (task, first tokens) of every segment this process fed: its share of the data.
  original = inputs.train_stream

  def recording(stream):
    fetch = type(stream).__next__

    class Recording(type(stream)):
      def __next__(self):
        time.sleep(args.step_delay)
        batch = fetch(self)
        for row, slots in zip(batch["input_ids"], batch["seg_start"]):
          seen.extend(row[s:s + 4].tolist() for s in slots if s >= 0)
        return batch
    stream.__class__ = Recording
    return stream

  def train_stream(config, seq2seq):
    if args.reference:
      n = args.reference
      return _ConcatenatedShards([batching.MixtureStream(
          inputs.stream_config(config, batch_size=config.data.batch_size // n,
                               exclude_families=("summarization",)),
          seqio.ShardInfo(i, n)) for i in range(n)])
    if args.same_shard:
      inputs._shard = lambda: seqio.ShardInfo(0, jax.process_count())
    return recording(original(config, seq2seq))

  inputs.train_stream = train_stream
  if args.skip_allreduce:
    trainer.make_train_step = _skipping_allreduce(trainer.make_train_step)
  evaluated = []  # The parameters of each evaluation: the last is this process's final view.

  class RecordingEvaluator(evaluation.Evaluator):
    def __call__(self, params):
      evaluated.append(params)
      return super().__call__(params)

  evaluation.Evaluator = RecordingEvaluator
  metrics = train(config, args.workdir)
  out = os.path.join(args.workdir, f"worker_{args.process}.json")
  with open(out, "w") as f:
    json.dump({"metrics": metrics, "seen": seen}, f)
  if evaluated:  # (A run stopped by SIGTERM ends without a last evaluation.)
    np.savez(os.path.join(args.workdir, f"params_{args.process}.npz"),
             **_local_shards(evaluated[-1]))


if __name__ == "__main__":
  main(sys.argv[1:])
