"""Where a model starts, on the mesh: a Hugging Face checkpoint, a muppet_jax checkpoint, or a
run config's `init_from` (either of those, or a random init of `config.model`)."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import tempfile
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh, PartitionSpec

from muppet_jax import checkpointing, hf, partitioning, progress, state
from muppet_jax.errors import UserError
from muppet_jax.families import HeadLayout, TaskHead
from muppet_jax.hf import checkpoint_files, encoder_weights, weights
from muppet_jax.models import bart, encoder, layers, multitask, scan_layout
from muppet_jax.models.config import (BartConfig, EncoderConfig, ModelConfig, config_from_dict,
                                      config_from_hf, runtime_for)

# The run config's `model` keys that apply to any start (pretrained or random).
RUNTIME_KEYS = ("dtype", "param_dtype", "attention_impl", "remat", "scan_layers",
                "hidden_dropout", "attention_dropout", "activation_dropout")


@dataclasses.dataclass
class Pretrained:
  """A model's config and (sharded) parameters, with what export needs to write it back."""

  config: ModelConfig
  # EncoderForMaskedLM's or Bart's params; a trained checkpoint's also have `heads`. A RoBERTa/BERT
  # checkpoint's pooler, when it has one, rides along under `pooler` (`encoder_weights.POOLER`):
  # no network of ours has it, but `state.init_state` starts the task heads that use it from it.
  params: Any
  hf_config: dict[str, Any]  # The source config.json, kept so export preserves its other fields.
  tokenizer_files: dict[str, bytes]
  layout: HeadLayout | None = None  # The task heads of a pre-finetuned checkpoint.
  tasks: tuple[TaskHead, ...] = ()

  @property
  def seq2seq(self) -> bool:
    return isinstance(self.config, BartConfig)

  def metadata(self, layout: HeadLayout | None = None,
               tasks: Sequence[TaskHead] = ()) -> dict[str, Any]:
    """The checkpoint metadata of this model; with `layout`, of it pre-finetuned on `tasks`."""
    meta = {"model_config": self.config.to_dict(), "hf_config": self.hf_config,
            "tokenizer_files": checkpointing.encode_files(self.tokenizer_files)}
    if layout is None and encoder_weights.POOLER in (self.params or {}):
      meta["pooler"] = True  # Not when pre-finetuned: the heads have taken the pooler over.
    if layout is not None:
      meta["heads"] = dataclasses.asdict(layout)
      meta["tasks"] = [dataclasses.asdict(t) for t in tasks]
    return meta


def network(config: ModelConfig, layout: HeadLayout | None = None) -> nn.Module:
  """The Flax module whose parameters a checkpoint of `config` (with heads: `layout`) holds."""
  if layout is not None:
    return multitask.build(config, layout)
  if isinstance(config, BartConfig):
    return bart.Bart(config)
  return encoder.EncoderForMaskedLM(config)


def abstract_params(config: ModelConfig, mesh: Mesh, layout: HeadLayout | None = None,
                    pooler: bool = False) -> Any:
  """The parameter tree (with the task heads of `layout`, if given, and an encoder's pooler if
  `pooler`) as ShapeDtypeStructs carrying their NamedShardings."""
  params = state.abstract_state(network(config, layout), mesh).params
  if pooler:
    # Sharded like one head of the stacked task heads that start from it.
    logical = {"kernel": ((config.hidden_size, config.hidden_size), ("embed", "mlp")),
               "bias": ((config.hidden_size,), ("mlp",))}
    params[encoder_weights.POOLER] = {
        name: _abstract(shape, axes, config.weights_dtype, mesh)
        for name, (shape, axes) in logical.items()}
  return params


def _abstract(shape: tuple[int, ...], axes: tuple[str, ...], dtype: Any,
              mesh: Mesh) -> jax.ShapeDtypeStruct:
  """An array of `shape` with the NamedSharding of its logical `axes`."""
  leaf = jax.ShapeDtypeStruct(shape, dtype)
  sharding = partitioning.logical_to_mesh_sharding(PartitionSpec(*axes), leaf, mesh)
  return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def default_mesh() -> Mesh:
  """All devices on the fsdp axis: parameters sharded, nothing materialized whole."""
  return partitioning.make_mesh({"fsdp": -1})


def from_hf(path_or_name: str, mesh: Mesh | None = None, **runtime: Any) -> Pretrained:
  """Reads a Hugging Face RoBERTa/BERT (masked-LM or bare encoder) or BART checkpoint, and logs
  what it loaded; `runtime` sets dtypes, dropout, ...

  Parts of the model that the checkpoint lacks as a whole (a bare encoder's masked-LM head) get
  our init, which is transformers' `_init_weights`: normal(0, initializer_range) kernels, zero
  biases, LayerNorms ones and zeros.
  """
  mesh = mesh or default_mesh()
  ckpt = checkpoint_files.read_checkpoint(path_or_name)
  config = config_from_hf(ckpt.config, **runtime)
  in_loop = config.replace(scan_layers=False)  # Hugging Face's layout.
  target = abstract_params(in_loop, mesh, pooler=isinstance(config, EncoderConfig))
  imported = hf.weights_for(in_loop).import_params(ckpt.tensors, in_loop, target)
  params = _placed(imported.params, target)
  for path, value in zip(imported.fresh, _initialized(in_loop, target, imported.fresh)):
    weights.set_path(params, path, value)
  progress.log(f"{path_or_name}: {imported.summary}")
  return Pretrained(config, scan_layout.match(params, config), ckpt.config, ckpt.tokenizer_files)


def _placed(params: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
  """Host arrays put on the shardings of `target`, which may hold more entries."""
  return {k: _placed(v, target[k]) if isinstance(v, dict) else jax.device_put(v, target[k].sharding)
          for k, v in params.items()}


def _initialized(config: ModelConfig, target: dict[str, Any],
                 paths: Sequence[tuple[str, ...]]) -> list[jax.Array]:
  """Our init of the parameters at `paths`, created in their shards (the rest of the model's
  init is dead code to XLA)."""
  if not paths:
    return []
  model = network(config)

  def init(rng: jax.Array) -> list[jax.Array]:
    params = nn.meta.unbox(layers.init_variables(model, rng))["params"]
    return [weights.get_path(params, path) for path in paths]

  # A fixed key: nothing trains these parts in pre-finetuning (the masked-LM head is frozen).
  shardings = [weights.get_path(target, path).sharding for path in paths]
  return jax.jit(init, out_shardings=shardings)(jax.random.key(0))


def from_checkpoint(directory: str | os.PathLike, mesh: Mesh | None = None,
                    step: int | None = None, **runtime: Any) -> tuple[int, Pretrained]:
  """Restores (step, model) from a muppet_jax checkpoint; each device reads only its shards."""
  mesh = mesh or default_mesh()
  step, meta = checkpointing.read_model_metadata(directory, step)
  # Checkpoints written before BART support name the config "encoder_config".
  saved = config_from_dict(meta.get("model_config") or meta["encoder_config"])
  # Layers come back in a loop (Hugging Face's layout) unless `runtime` asks for scan_layers.
  config = saved.replace(**{"scan_layers": False, **runtime_for(type(saved), runtime)})
  tasks = tuple(TaskHead(**t) for t in meta.get("tasks", ()))
  layout = HeadLayout.for_tasks(tasks) if "heads" in meta else None
  as_saved = config.replace(scan_layers=saved.scan_layers)
  params = checkpointing.restore_params(
      directory, step, abstract_params(as_saved, mesh, layout, meta.get("pooler", False)))
  params = scan_layout.match(params, config)
  return step, Pretrained(config, params, meta["hf_config"],
                          checkpointing.decode_files(meta["tokenizer_files"]), layout, tasks)


def from_config(config: ml_collections.ConfigDict, vocabulary: Any, mesh: Mesh,
                keep_heads: bool = False) -> Pretrained:
  """The starting model of a run: `config.init_from` (a Hugging Face directory or hub name, a
  muppet_jax checkpoint directory, or empty for a random `config.model`), checked against the
  tasks' `vocabulary` and the data lengths. A checkpoint's task heads are dropped (heads start
  fresh, or from the pooler: see `Pretrained.params`) unless `keep_heads` (see `reuse_heads`);
  a random model has params None."""
  runtime = {k: config.model[k] for k in RUNTIME_KEYS}
  source = config.init_from
  if not source:
    model_config = _random_config(config.model, vocabulary, runtime)
    model = Pretrained(model_config, None, model_config.to_hf_config(),
                       _tokenizer_files(vocabulary))
  elif pathlib.Path(source).is_dir() and not (pathlib.Path(source) / "config.json").exists():
    _, model = from_checkpoint(source, mesh, **runtime)
    if not keep_heads:
      model = dataclasses.replace(model, layout=None, tasks=(),
                                  params={k: v for k, v in model.params.items() if k != "heads"})
  else:
    model = from_hf(source, mesh, **runtime)
  _check_fits(model.config, vocabulary, config.data)
  return model


def check_start(source: str) -> None:
  """What `from_config` would refuse in `init_from`, found without reading weights: a path that
  doesn't exist, a directory that is no checkpoint, a truncated safetensors file. Hub names
  are left to the download."""
  if not source:
    return
  path = pathlib.Path(source).expanduser()
  if path.is_dir() and not (path / "config.json").exists():
    checkpointing.read_model_metadata(path)
  else:
    checkpoint_files.check_checkpoint(source)


def reuse_heads(model: Pretrained, layout: HeadLayout, tasks: Sequence[TaskHead]) -> Pretrained:
  """`model` with task heads for `layout`, each the trained head of its `tasks` in the
  pre-finetuned `model` (its classification stack cut to `layout`'s width): a run that continues
  its tasks' heads instead of starting them afresh."""
  trained = {t.name: t for t in model.tasks}
  for task in tasks:
    entry = trained.get(task.name)
    if entry is None:
      known = ", ".join(trained) or "none: it is not a pre-finetuned muppet_jax checkpoint"
      raise UserError(f"the start has no trained head for task {task.name!r} (its tasks: "
                      f"{known}); start the head afresh (head=new)")
    if (entry.family, entry.num_classes) != (task.family, task.num_classes):
      raise UserError(f"task {task.name!r} is a {task.family} task with {task.num_classes} "
                      f"outputs here but {entry.family} with {entry.num_classes} in the start; "
                      "start the head afresh (head=new)")
  # Each new head, by kind, from the trained head of the (first) task that uses it.
  source = {kind: [] for kind in layout.kinds}
  for name, kind in zip(layout.names, layout.kinds):
    task = next(t for t in tasks if t.head == name)
    old = model.layout.index(trained[task.name].head)
    source[kind].append(model.layout.index_in_kind()[old])
  heads = {}
  for key, stacked in model.params["heads"].items():
    kind = next((k for k in source if key.startswith(f"{k}_")), None)
    if kind is None:  # A kind of head this run doesn't train.
      continue
    picked = stacked[jnp.asarray(source[kind])]
    if key.startswith("classification_out_proj"):
      picked = picked[..., :layout.num_classes]
    heads[key] = picked
  params = {**{k: v for k, v in model.params.items() if k != "heads"}, "heads": heads}
  return dataclasses.replace(model, params=params, layout=layout, tasks=tuple(tasks))


def _check_fits(c: ModelConfig, vocabulary: Any, data: ml_collections.ConfigDict) -> None:
  if c.vocab_size < vocabulary.vocab_size or c.pad_token_id != vocabulary.pad_id:
    raise UserError(f"the tasks' tokenizer ({vocabulary.vocab_size} tokens, pad id "
                    f"{vocabulary.pad_id}) doesn't fit the model (vocab_size {c.vocab_size}, pad "
                    f"id {c.pad_token_id}); register the tasks with the model's tokenizer")
  if data.max_length > c.max_length:
    raise UserError(f"data.max_length={data.max_length} exceeds the model's "
                    f"{c.max_length} positions")
  if isinstance(c, BartConfig) and data.target_length > c.max_length:
    raise UserError(f"data.target_length={data.target_length} exceeds the model's "
                    f"{c.max_length} positions")


def _random_config(m: ml_collections.ConfigDict, vocabulary: Any,
                   runtime: dict[str, Any]) -> ModelConfig:
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


def _tokenizer_files(vocabulary: Any) -> dict[str, bytes]:
  """The files `save_pretrained` writes for the tasks' tokenizer (exported with the model)."""
  with tempfile.TemporaryDirectory() as tmp:
    vocabulary.tokenizer.save_pretrained(tmp)
    return {n: (pathlib.Path(tmp) / n).read_bytes() for n in checkpoint_files.TOKENIZER_FILES
            if (pathlib.Path(tmp) / n).exists()}
