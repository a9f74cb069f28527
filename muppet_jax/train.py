"""Multi-task pre-finetuning.

    python -m muppet_jax.train --config=configs/prefinetune.py:demo --workdir=/tmp/muppet_demo
    python -m muppet_jax.train --config=configs/prefinetune.py --workdir=gs://bucket/run \\
        --config.total_steps=20000 --config.mesh.fsdp=-1
    python -m muppet_jax.train --config=configs/prefinetune_bart.py --workdir=gs://bucket/bart

A run reads top to bottom: config and input pipeline, starting model, shardings and state
(fresh, or resumed from the workdir's latest complete checkpoint), the compiled step, then the
loop with logging, evaluation and checkpoints. SIGTERM (a TPU preemption) saves and exits.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import signal
import sys
import tempfile
import time
import types
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import seqio  # noqa: E402
import tensorflow as tf  # noqa: E402
import tqdm  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from etils import epath  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from muppet_jax import checkpointing, evaluation, generation, losses, partitioning  # noqa: E402
from muppet_jax import pretrained, r3f, trainer  # noqa: E402
from muppet_jax.data import batching, mixing  # noqa: E402
from muppet_jax.data.task_info import check_prepared  # noqa: E402
from muppet_jax.errors import UserError  # noqa: E402
from muppet_jax.hf import checkpoint_files  # noqa: E402
from muppet_jax.metric_writer import MetricWriter  # noqa: E402
from muppet_jax.models import multitask  # noqa: E402
from muppet_jax.models.bart import Bart  # noqa: E402
from muppet_jax.models.config import BartConfig, EncoderConfig, runtime_for  # noqa: E402
from muppet_jax.models.heads import FAMILY_HEAD_KIND, HeadLayout  # noqa: E402

# Peak dense bf16 FLOP/s per chip, for MFU.
PEAK_FLOPS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
              "TPU v6 lite": 918e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
              "NVIDIA A100": 312e12}
RUNTIME_KEYS = ("dtype", "param_dtype", "attention_impl", "hidden_dropout", "attention_dropout",
                "activation_dropout")


def log(message: str) -> None:
  if jax.process_index() == 0:
    tqdm.tqdm.write(message)


def _stream_config(config: ml_collections.ConfigDict, **changes: Any) -> batching.StreamConfig:
  d = config.data
  if d.batch_size % jax.process_count():
    raise UserError(f"data.batch_size={d.batch_size} must divide over {jax.process_count()} hosts")
  if d.batching not in ("heterogeneous", "homogeneous"):
    raise UserError(f"data.batching={d.batching!r}; choose heterogeneous or homogeneous")
  fields = dict(mixture=d.mixture, batch_size=d.batch_size // jax.process_count(),
                max_length=d.max_length, target_length=d.target_length, packing=d.packing,
                max_segments=d.max_segments, seed=d.seed, temperature=d.temperature,
                rate_cap=d.rate_cap or None, shared_heads=d.shared_heads,
                homogeneous=d.batching == "homogeneous", row_groups=config.microbatches)
  return batching.StreamConfig(**{**fields, **changes})


def _tokenizer_files(vocabulary) -> dict[str, bytes]:
  with tempfile.TemporaryDirectory() as tmp:
    vocabulary.tokenizer.save_pretrained(tmp)
    return {n: (pathlib.Path(tmp) / n).read_bytes() for n in checkpoint_files.TOKENIZER_FILES
            if (pathlib.Path(tmp) / n).exists()}


def _random_config(config: ml_collections.ConfigDict, vocabulary, runtime: dict[str, Any]):
  m = config.model
  vocab_size = m.vocab_size or vocabulary.vocab_size
  if m.architecture == "bart":
    tokenizer = vocabulary.tokenizer
    return BartConfig(
        vocab_size=vocab_size, hidden_size=m.hidden_size, encoder_layers=m.num_layers,
        decoder_layers=m.num_layers, encoder_heads=m.num_heads, decoder_heads=m.num_heads,
        encoder_ffn_size=m.intermediate_size, decoder_ffn_size=m.intermediate_size,
        max_position_embeddings=m.max_position_embeddings, pad_token_id=vocabulary.pad_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id, **runtime)
  if m.architecture != "roberta":
    raise UserError(f"model.architecture={m.architecture!r}; choose roberta or bart")
  return EncoderConfig(
      vocab_size=vocab_size, hidden_size=m.hidden_size, num_layers=m.num_layers,
      num_heads=m.num_heads, intermediate_size=m.intermediate_size,
      max_position_embeddings=m.max_position_embeddings, pad_token_id=vocabulary.pad_id,
      **runtime_for(EncoderConfig, runtime))


def load_start(config: ml_collections.ConfigDict, vocabulary, mesh) -> pretrained.Pretrained:
  """The starting model: Hugging Face, a muppet_jax checkpoint, or random (params None)."""
  runtime = {k: config.model[k] for k in RUNTIME_KEYS}
  source = config.init_from
  if not source:
    model_config = _random_config(config, vocabulary, runtime)
    model = pretrained.Pretrained(model_config, None, model_config.to_hf_config(),
                                  _tokenizer_files(vocabulary))
  elif pathlib.Path(source).is_dir() and not (pathlib.Path(source) / "config.json").exists():
    _, model = pretrained.from_checkpoint(source, mesh, **runtime)
    model.params = {k: v for k, v in model.params.items() if k != "heads"}  # Heads start fresh.
  else:
    model = pretrained.from_hf(source, mesh, **runtime)
  c = model.config
  if c.vocab_size < vocabulary.vocab_size or c.pad_token_id != vocabulary.pad_id:
    raise UserError(f"the tasks' tokenizer ({vocabulary.vocab_size} tokens, pad id "
                    f"{vocabulary.pad_id}) doesn't fit the model (vocab_size {c.vocab_size}, pad "
                    f"id {c.pad_token_id}); register the tasks with the model's tokenizer")
  if config.data.max_length > c.max_length:
    raise UserError(f"data.max_length={config.data.max_length} exceeds the model's "
                    f"{c.max_length} positions")
  if isinstance(c, BartConfig) and config.data.target_length > c.max_length:
    raise UserError(f"data.target_length={config.data.target_length} exceeds the model's "
                    f"{c.max_length} positions")
  return model


def head_layout(stream: batching.MixtureStream) -> HeadLayout:
  kinds = []
  for head in stream.heads:
    families = {t.info.family for t in stream.tasks
                if batching.head_name(t, stream.config.shared_heads) == head}
    kinds.append(FAMILY_HEAD_KIND[families.pop()])
  classes = [t.info.num_classes for t in stream.tasks
             if t.info.family in ("classification", "regression")]
  return HeadLayout(tuple(stream.heads), tuple(kinds), max(classes, default=1))


def model_metadata(start: pretrained.Pretrained, stream: batching.MixtureStream,
                   layout: HeadLayout) -> dict[str, Any]:
  return {**start.metadata(),
          "heads": {"names": list(layout.names), "kinds": list(layout.kinds),
                    "num_classes": layout.num_classes},
          "tasks": [{"name": t.name, "family": t.info.family, "num_classes": t.info.num_classes,
                     "head": batching.head_name(t, stream.config.shared_heads)}
                    for t in stream.tasks]}


def _global_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", 0.0))


def generation_config(config: ml_collections.ConfigDict,
                      model_config: BartConfig) -> generation.GenerationConfig:
  g = config.eval.generation
  return generation.GenerationConfig(
      max_length=g.max_length or config.data.target_length, num_beams=g.num_beams,
      length_penalty=g.length_penalty, no_repeat_ngram_size=g.no_repeat_ngram_size,
      min_length=g.min_length,
      # Summaries are trained as `<s> ... </s>` after the start token.
      forced_bos_token_id=model_config.bos_token_id,
      forced_eos_token_id=model_config.eos_token_id)


def evaluate(config, stream, layout, eval_step, generate, params, batch_sharding
             ) -> tuple[dict[str, float], dict[str, tuple[str, str]]]:
  """Every task's validation metrics and the mean of each family's primary metric; and for each
  summarization task its first (generated, reference) summary.

  Summaries are generated (one document per row) and scored with ROUGE against the references.
  """
  shard = seqio.ShardInfo(jax.process_index(), jax.process_count())
  per_task, families, primary, samples = {}, {}, {}, {}
  eval_bs = config.eval.batch_size // jax.process_count()
  for task in stream.tasks:
    summarize = task.info.family == "summarization"
    eval_stream = batching.MixtureStream(
        _stream_config(config, mixture=task.name, split="validation", num_epochs=1,
                       shuffle=False, batch_size=eval_bs, homogeneous=False, row_groups=1,
                       packing=config.data.packing and not summarize),
        shard, head_names=layout.names)
    tokenizer = task.output_features["inputs"].vocabulary.tokenizer
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    acc = evaluation.TaskAccumulator(task, decode)
    for _ in range(config.eval.max_batches):
      local = next(eval_stream, None)
      # Hosts run out at different times; all keep stepping until every one is done.
      done = multihost_utils.process_allgather(np.asarray(local is None)).all()
      if done:
        break
      local = eval_stream.empty_batch() if local is None else local
      batch = _global_batch(local, batch_sharding)
      if summarize:
        tokens = generate(params, batch["input_ids"], batch["segment_ids"])
        gathered = multihost_utils.process_allgather((tokens, local), tiled=True)
        acc.add_summaries(*gathered)
      else:
        outputs = eval_step(params, batch)
        acc.add(*multihost_utils.process_allgather((outputs, local), tiled=True))
    per_task[task.name] = acc.metrics()
    families[task.name], primary[task.name] = task.info.family, task.info.metrics[0]
    if summarize and acc.pred:
      samples[task.name] = (acc.pred[0], acc.gold[0])
  out = {f"eval/{t}/{k}": v for t, m in per_task.items() for k, v in m.items()}
  out.update({f"eval/family/{f}": v for f, v in
              evaluation.family_averages(per_task, families, primary).items()})
  return out, samples


@dataclasses.dataclass
class StateShapes:
  params: Any  # ShapeDtypeStructs.
  opt_state: Any
  shardings: trainer.TrainState  # NamedShardings of every part of the train state.


def state_shapes(model: nn.Module, tx, mesh, rng: jax.Array) -> StateShapes:
  """Shapes and shardings of the train state, from `jax.eval_shape` and the rules table."""
  boxed = jax.eval_shape(lambda r: multitask.init_variables(model, r), rng)["params"]
  params = nn.meta.unbox(boxed)
  param_sh = partitioning.logical_to_mesh_sharding(nn.get_partition_spec(boxed), params, mesh)
  replicated = NamedSharding(mesh, P())
  opt_state = jax.eval_shape(tx.init, params)
  opt_sh = partitioning.like_params(opt_state, params, param_sh, replicated)
  return StateShapes(params, opt_state, trainer.TrainState(replicated, param_sh, opt_sh))


def init_state(model: nn.Module, tx, rng: jax.Array, kept: Any,
               shardings: trainer.TrainState) -> trainer.TrainState:
  """A fresh train state, created in its shards: new heads, `kept` (pretrained) params as given."""

  def init(r, kept):
    params = {**nn.meta.unbox(multitask.init_variables(model, r))["params"], **kept}
    return trainer.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))

  return jax.jit(init, out_shardings=shardings)(rng, kept)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Runs (or resumes) pre-finetuning in `workdir`; returns the last evaluation's metrics."""
  # ----------------------------------------------------------------------- Input pipeline ---
  tf.config.set_visible_devices([], "GPU")  # TensorFlow only feeds data.
  import tasks  # noqa: F401  (registers the seqio tasks and mixtures)

  mesh = partitioning.make_mesh(dict(config.mesh))
  batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
  if config.data.batch_size % (batch_ways * config.microbatches):
    raise UserError(f"data.batch_size={config.data.batch_size} must be a multiple of data*fsdp "
                    f"({batch_ways}) x microbatches ({config.microbatches})")
  mixture_tasks = mixing.mixture_tasks(config.data.mixture)
  for task in mixture_tasks:  # Before any tokenizer or data is read.
    check_prepared(task)
  vocabulary = mixture_tasks[0].output_features["inputs"].vocabulary
  start = load_start(config, vocabulary, mesh)
  seq2seq = isinstance(start.config, BartConfig)
  # Encoders have no decoder to summarize with; their runs leave summarization tasks out.
  stream = batching.MixtureStream(
      _stream_config(config, exclude_families=() if seq2seq else ("summarization",)),
      seqio.ShardInfo(jax.process_index(), jax.process_count()))

  # ------------------------------------------------------------------------------- Model ---
  layout = head_layout(stream)
  table = losses.TaskTable.build(stream.tasks, config.data.max_length, start.config.vocab_size,
                                 config.loss_scaling, config.label_smoothing)
  model = multitask.build(start.config, layout)
  o = config.optimizer
  tx = trainer.make_optimizer(o.learning_rate, o.warmup_steps, config.total_steps,
                              o.weight_decay, o.b1, o.b2, o.eps, o.clip_norm)
  metadata = model_metadata(start, stream, layout)

  # ------------------------------------------------------------------ Shardings & state ---
  rng = jax.random.key(config.seed)
  shapes = state_shapes(model, tx, mesh, rng)
  batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))

  checkpoints = checkpointing.TrainCheckpoints(workdir, keep=config.checkpoint.keep)
  first_step = checkpoints.latest_step()
  if first_step is not None:
    params, opt_state = checkpoints.restore(
        first_step, checkpointing.abstract_with_shardings(shapes.params, shapes.shardings.params),
        checkpointing.abstract_with_shardings(shapes.opt_state, shapes.shardings.opt_state),
        stream)
    state = trainer.TrainState(jax.device_put(jnp.asarray(first_step, jnp.int32),
                                              shapes.shardings.step), params, opt_state)
    log(f"resumed from {workdir} at step {first_step}")
  else:
    first_step = 0
    state = init_state(model, tx, rng, start.params or {}, shapes.shardings)
  state_sh = shapes.shardings

  # ---------------------------------------------------------------------- Compiled steps ---
  regularizer = r3f.R3FConfig(config.r3f.weight, config.r3f.noise_type, config.r3f.eps)
  train_step = jax.jit(
      trainer.make_train_step(model, tx, table, config.microbatches, config.seed, regularizer),
      in_shardings=(state_sh, batch_sharding), out_shardings=(state_sh, state_sh.step),
      donate_argnums=0)
  eval_step = jax.jit(trainer.make_eval_step(model),
                      in_shardings=(state_sh.params, batch_sharding))
  generate = None
  if seq2seq:
    generate = jax.jit(functools.partial(generation.generate, Bart(start.config),
                                         config=generation_config(config, start.config)),
                       in_shardings=(state_sh.params, batch_sharding, batch_sharding))
  example = stream.empty_batch()
  abstract_batch = {k: jax.ShapeDtypeStruct((config.data.batch_size, *v.shape[1:]), v.dtype,
                                            sharding=batch_sharding) for k, v in example.items()}
  with partitioning.use_mesh(mesh):
    compiled = train_step.lower(state, abstract_batch).compile()
  memory = compiled.memory_analysis()
  if memory is not None:
    log(f"compiled train step: {memory.temp_size_in_bytes / 2**20:,.0f} MiB temporaries, "
        f"{memory.argument_size_in_bytes / 2**20:,.0f} MiB arguments, "
        f"{memory.output_size_in_bytes / 2**20:,.0f} MiB outputs per device")
  flops_per_step = _flops(compiled)
  peak = PEAK_FLOPS.get(jax.devices()[0].device_kind)
  log(f"{len(stream.tasks)} tasks, {len(layout.names)} heads, "
      f"{sum(x.size for x in jax.tree.leaves(shapes.params)) / 1e6:.1f}M parameters, "
      f"mesh {dict(mesh.shape)}, {flops_per_step / 1e12:.3f} TFLOP per step")

  # ------------------------------------------------------------------------------- Loop ---
  preempted = []
  signal.signal(signal.SIGTERM, lambda *_: preempted.append(True))
  writer = MetricWriter(workdir)

  def run_evaluation(step: int) -> dict[str, float]:
    with partitioning.use_mesh(mesh):
      metrics, samples = evaluate(config, stream, layout, eval_step, generate, state.params,
                                  batch_sharding)
    writer.write(step, metrics)
    log(f"eval at step {step}: " + ", ".join(
        f"{k[len('eval/family/'):]} {v:.3f}" for k, v in metrics.items()
        if k.startswith("eval/family/")))
    for task, (generated, reference) in samples.items():
      log(f"  {task}: {generated!r} (reference: {reference!r})")
    return metrics

  sums, real_tokens, last_eval = None, 0, {}
  if config.eval.at_start and first_step == 0:  # The starting point, to compare against.
    last_eval = run_evaluation(0)
  tick, tick_step = time.perf_counter(), first_step
  # The bar is for terminals; logs redirected to a file get the ETA in each console line.
  bar = tqdm.tqdm(total=config.total_steps, initial=first_step, desc="train", unit="step",
                  disable=jax.process_index() != 0 or not sys.stderr.isatty())
  step = first_step
  while step < config.total_steps:
    local = next(stream)
    real_tokens += int((local["segment_ids"] > 0).sum())
    with partitioning.use_mesh(mesh):
      state, metrics = compiled(state, _global_batch(local, batch_sharding))
    step += 1
    bar.update(1)
    sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)

    if step % config.log_every_steps == 0 or step == config.total_steps:
      sums = jax.device_get(sums)
      seconds = time.perf_counter() - tick
      steps_done = step - tick_step
      out = {**losses.family_means(sums),
             "grad_norm": float(sums["grad_norm"]) / steps_done,
             "learning_rate": float(trainer.learning_rate_schedule(
                 o.learning_rate, o.warmup_steps, config.total_steps)(step)),
             "steps_per_second": steps_done / seconds,
             "tokens_per_second": steps_done * config.data.batch_size * config.data.max_length
                                  / seconds,
             "real_tokens_per_second": real_tokens * jax.process_count() / seconds,
             "tflops_per_device": flops_per_step * steps_done / seconds / 1e12 / jax.device_count()}
      if peak:
        out["mfu"] = out["tflops_per_device"] * 1e12 / peak
      writer.write(step, out)
      log(f"step {step}: loss {out['loss']:.4f} " + " ".join(
          f"{k.split('/')[1]} {v:.3f}" for k, v in out.items() if k.startswith("loss/")) +
          (f" r3f {out['r3f']:.2e}" if "r3f" in out else "") +
          f" | lr {out['learning_rate']:.2e} | {out['steps_per_second']:.2f} steps/s, "
          f"{out['tokens_per_second']:,.0f} tok/s ({out['real_tokens_per_second']:,.0f} real), "
          f"{out['tflops_per_device']:.2f} TFLOP/s/device" +
          (f", MFU {100 * out['mfu']:.1f}%" if peak else "") +
          f" | ETA {(config.total_steps - step) / out['steps_per_second'] / 60:.1f} min")
      sums, real_tokens, tick, tick_step = None, 0, time.perf_counter(), step

    if step % config.eval.every_steps == 0 or step == config.total_steps:
      last_eval = run_evaluation(step)

    stop = bool(preempted) if jax.process_count() == 1 else bool(
        multihost_utils.process_allgather(np.asarray(bool(preempted))).any())
    if step % config.checkpoint.every_steps == 0 or step == config.total_steps or stop:
      checkpoints.save(step, state.params, state.opt_state, metadata, stream)
    if stop:
      log(f"SIGTERM: saved step {step}; rerun the same command to resume")
      break
  bar.close()
  checkpoints.wait()
  checkpoints.close()
  writer.close()
  root = epath.Path(workdir)
  log(f"done at step {step}.\n  checkpoints: {root / 'checkpoints'}\n  TensorBoard: tensorboard "
      f"--logdir {writer.tensorboard_dir}\n  metrics: {writer.jsonl}\n  export: python -m "
      f"muppet_jax.export --checkpoint {root / 'checkpoints'} --out HF_DIR [--task TASK]")
  return last_eval


_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/prefinetune.py[:PRESET]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, logs and metrics go")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "call jax.distributed.initialize() first (TPU "
                               "pods, or GPU clusters with the coordinator set in the environment)")


def main(argv: list[str]) -> None:
  del argv
  # Keep orbax's per-save lines and seqio's advice on caching out of the training log.
  logging.set_verbosity(logging.ERROR)
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError("give --config=configs/prefinetune.py[:PRESET] and --workdir=DIR")
  if _MULTIHOST.value:
    jax.distributed.initialize()
  try:
    train(_CONFIG.value, _WORKDIR.value)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def check_overrides(argv: list[str]) -> None:
  """Fails with one line on a `--config.KEY=...` for a key the config doesn't have (ml_collections
  would raise from inside flag parsing, with a stack trace)."""
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None:
    return
  path, _, preset = spec.partition(":")
  if not os.path.exists(path):
    raise UserError(f"config file {path} does not exist")
  module = types.ModuleType("muppet_config")
  exec(compile(pathlib.Path(path).read_text(), path, "exec"), module.__dict__)  # noqa: S102
  config = module.get_config(preset) if preset else module.get_config()
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    key = arg[len("--config."):].split("=", 1)[0]
    node = config
    for part in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise UserError(f"unknown config key {key!r}; {path} has "
                        f"{', '.join(sorted(config.keys()))} (see the file for nested keys)")
      node = node[part]


if __name__ == "__main__":
  try:
    check_overrides(sys.argv[1:])
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  app.run(main)
