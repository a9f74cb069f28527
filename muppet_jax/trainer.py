"""The optimizer, the pure train and eval steps, and the train step's compilation."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from muppet_jax import losses, partitioning, r3f, state
from muppet_jax.errors import UserError
from muppet_jax.models.heads import HeadOutputs
from muppet_jax.state import TrainState

if TYPE_CHECKING:  # Benchmarks run the step where ml_collections isn't installed.
  import ml_collections

Batch = Mapping[str, jax.Array]


def learning_rate_schedule(peak: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `peak`, then linear decay to 0 at `total_steps`."""
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, max(warmup_steps, 1)),
       optax.linear_schedule(peak, 0.0, max(total_steps - warmup_steps, 1))], [warmup_steps])


def _names(path) -> tuple[str, ...]:
  """A parameter's path as names; boxed (logically annotated) parameters add a non-dict step."""
  return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))


def _trainable_label(path, _) -> str:
  # Pre-finetuning has no masked-LM loss: RoBERTa's MLM head is carried unchanged for export.
  # BART's final_logits_bias is a buffer (not a parameter) in Hugging Face.
  frozen = _names(path)[0] in ("mlm_head", "final_logits_bias")
  return "frozen" if frozen else "train"


def _decays(path, _) -> bool:
  """Weight decay on matrices, not on biases or LayerNorm parameters."""
  name = _names(path)[-1]
  return not (name in ("bias", "scale") or name.endswith("_bias"))


def make_optimizer(learning_rate: float, warmup_steps: int, total_steps: int,
                   weight_decay: float = 0.01, b1: float = 0.9, b2: float = 0.98,
                   eps: float = 1e-6, clip_norm: float = 1.0) -> optax.GradientTransformation:
  """AdamW with warmup and linear decay, global-norm clipping; the MLM head is frozen."""
  adamw = optax.chain(
      optax.clip_by_global_norm(clip_norm),
      optax.adamw(learning_rate_schedule(learning_rate, warmup_steps, total_steps), b1=b1, b2=b2,
                  eps=eps, weight_decay=weight_decay,
                  mask=lambda p: jax.tree_util.tree_map_with_path(_decays, p)))
  return optax.multi_transform(
      {"train": adamw, "frozen": optax.set_to_zero()},
      lambda p: jax.tree_util.tree_map_with_path(_trainable_label, p))


def optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """`make_optimizer` with a run config's `optimizer` settings over its `total_steps`."""
  o = config.optimizer
  return make_optimizer(o.learning_rate, o.warmup_steps, config.total_steps, o.weight_decay,
                        o.b1, o.b2, o.eps, o.clip_norm)


def forward(model: nn.Module, params: Any, batch: Batch, deterministic: bool,
            rng: jax.Array | None = None, embedding_noise: jax.Array | None = None
            ) -> HeadOutputs:
  return model.apply({"params": params}, batch, deterministic, embedding_noise,
                     rngs=None if deterministic else {"dropout": rng})


def _microbatches(batch: Batch, n: int) -> Batch:
  """[B, ...] -> [n, B/n, ...], microbatch i holding rows i, i+n, ... so that each keeps the
  batch's sharding over its rows."""
  def split(x):
    x = x.reshape(x.shape[0] // n, n, *x.shape[1:])
    return jnp.swapaxes(x, 0, 1)
  return jax.tree.map(split, dict(batch))


# The train step's metrics that flag (1.0) what was non-finite in a step that was dropped
# (`skipped`: 1.0).
NONFINITE = ("nonfinite/loss", "nonfinite/grad_norm", "nonfinite/params")


def all_finite(tree: Any) -> jax.Array:
  """Whether every element of every array of `tree` is finite (a scalar bool array)."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _finite_norm(tree: Any) -> jax.Array:
  """Whether `tree`'s L2 norm is finite: every element finite, and none so large that the norm
  overflows float32 (a diverged step all the same). The step's check rather than `all_finite`:
  XLA computes the norm's square root once, while it copies a chain of per-leaf flags into every
  leaf's update (roberta-large's step with its layers in a loop compiled 6x slower)."""
  return jnp.isfinite(optax.tree.norm(tree))


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, table: losses.TaskTable,
                    microbatches: int, seed: int, r3f_config: r3f.R3FConfig = r3f.R3FConfig()
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """The pure train step: gradients of the mean scaled loss (plus the R3F penalty, if on) over
  the whole batch, accumulated over `microbatches`, then one optimizer update, dropped when the
  loss, the gradient norm or the new parameters' norm is not finite. Dropout and noise RNGs are
  derived from (seed, step)."""
  use_r3f = r3f_config.weight > 0

  def train_step(state: TrainState, batch: Batch):
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    # Multiple-choice example ids range over the whole (global) batch's segment slots.
    slots = batch["seg_task"].size

    def loss_fn(params, micro, rng):
      dropout_rng, noise_rng = jax.random.split(rng)
      outputs = forward(model, params, micro, False, dropout_rng)
      sums = losses.loss_sums(outputs, micro, table, slots)
      objective = sums["loss_sum"]
      if use_r3f:
        noise = r3f.sample_noise(noise_rng, (*micro["input_ids"].shape, model.config.hidden_size),
                                 r3f_config.noise_type, r3f_config.eps)
        noised = forward(model, params, micro, False, dropout_rng, noise)
        penalty, _ = r3f.per_example_penalty(outputs, noised, micro, table, slots)
        sums["r3f_sum"] = penalty.sum()
        objective = objective + r3f_config.weight * sums["r3f_sum"]
      return objective, sums

    def accumulate(carry, xs):
      index, micro = xs
      grads, sums = carry
      (_, micro_sums), micro_grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state.params, micro, jax.random.fold_in(rng, index))
      return (jax.tree.map(jnp.add, grads, micro_grads),
              jax.tree.map(jnp.add, sums, micro_sums)), None

    if microbatches == 1:  # No loop, and no zeroed gradients to add into.
      (_, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state.params, batch, jax.random.fold_in(rng, 0))
    else:
      zeros = jax.tree.map(jnp.zeros_like, state.params)
      zero_sums = losses.zero_sums()
      if use_r3f:
        zero_sums["r3f_sum"] = jnp.zeros((), jnp.float32)
      (grads, sums), _ = jax.lax.scan(
          accumulate, (zeros, zero_sums),
          (jnp.arange(microbatches), _microbatches(batch, microbatches)))
    count = jnp.maximum(sums["count"], 1.0)
    grads = jax.tree.map(lambda g: g / count, grads)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # Like optax.apply_if_finite, but over the new parameters too (a huge learning rate
    # overflows them from finite gradients): a non-finite step leaves the state bit-identical,
    # its sums out of the metrics, and says what was non-finite (`NONFINITE`).
    flags = dict(zip(NONFINITE, (~_finite_norm(sums), ~jnp.isfinite(grad_norm),
                                 ~_finite_norm(params))))
    finite = ~functools.reduce(jnp.logical_or, flags.values())

    def if_finite(new, old):
      return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    params, opt_state = if_finite(params, state.params), if_finite(opt_state, state.opt_state)
    sums = jax.tree.map(lambda x: jnp.where(finite, x, 0.0), sums)
    metrics = {**sums, "grad_norm": jnp.where(finite, grad_norm, 0.0),
               "skipped": (~finite).astype(jnp.float32),
               **{k: v.astype(jnp.float32) for k, v in flags.items()}}
    return TrainState(state.step + 1, params, opt_state), metrics

  return train_step


def compile_train_step(train_step: Callable, abstract: TrainState,
                       example: Mapping[str, np.ndarray], rows: int,
                       mesh: Mesh) -> jax.stages.Compiled:
  """`train_step` compiled ahead of time for the shardings of `abstract` and global batches of
  `rows` rows shaped like `example` (a host's batch), the state donated."""
  shardings = state.shardings(abstract)
  batch_sharding = partitioning.batch_sharding(mesh)
  batch = {k: jax.ShapeDtypeStruct((rows, *v.shape[1:]), v.dtype, sharding=batch_sharding)
           for k, v in example.items()}
  jitted = jax.jit(train_step, in_shardings=(shardings, batch_sharding),
                   out_shardings=(shardings, shardings.step), donate_argnums=0)
  with partitioning.use_mesh(mesh):
    return jitted.lower(abstract, batch).compile()


def step_flops(make_step: Callable[[nn.Module], Callable], model: nn.Module,
               tx: optax.GradientTransformation, example: Mapping[str, np.ndarray], rows: int,
               mesh: Mesh) -> float:
  """Model FLOPs of one train step (`make_step(model)`), from XLA's cost analysis of the step
  with its layers in a loop: the analysis counts a scanned loop's body once, not once per
  layer. Lowered, not compiled."""
  loop = model.clone(config=model.config.replace(scan_layers=False))
  abstract = state.abstract_state(loop, mesh, tx)
  batch_sharding = partitioning.batch_sharding(mesh)
  batch = {k: jax.ShapeDtypeStruct((rows, *v.shape[1:]), v.dtype, sharding=batch_sharding)
           for k, v in example.items()}
  jitted = jax.jit(make_step(loop), in_shardings=(state.shardings(abstract), batch_sharding))
  with partitioning.use_mesh(mesh):
    cost = jitted.lower(abstract, batch).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", 0.0))


def make_eval_step(model: nn.Module) -> Callable[[Any, Batch], HeadOutputs]:
  """Head outputs for evaluation; the LM head's inputs are dropped (summaries are evaluated by
  generation), so no decoder states go back to the host."""
  def eval_step(params: Any, batch: Batch) -> HeadOutputs:
    return forward(model, params, batch, deterministic=True).replace(lm=None)
  return eval_step


class NonfiniteGuard:
  """The host's side of the step's non-finite check (`config.nonfinite`): "stop" ends the run at
  the first dropped step, "skip" after `max_skips` dropped in a row. Each step's flags are read
  one step late, so the host never waits for the step it has just dispatched; the state a late
  read leaves is finite all the same (a dropped step changes nothing)."""

  MODES = ("stop", "skip")

  def __init__(self, mode: str, max_skips: int):
    if mode not in self.MODES:
      raise UserError(f"nonfinite={mode!r} is not one of {', '.join(self.MODES)}; set "
                      "--config.nonfinite=stop (end the run) or skip (drop such steps)")
    if max_skips < 1:
      raise UserError(f"nonfinite_max_skips={max_skips} must be at least 1")
    self.mode, self.max_skips = mode, max_skips
    self.pending: tuple[int, dict[str, jax.Array], np.ndarray] | None = None
    self.in_a_row = 0

  def check(self, step: int, metrics: Mapping[str, jax.Array], seg_task: np.ndarray,
            now: bool = False) -> tuple[int, list[str], np.ndarray] | None:
    """Hands over `step`'s metrics and its (host's) batch's `seg_task`; checks the step before
    (with `now`: this one too). (step, what was non-finite, its seg_task) when the run has to
    stop."""
    previous, self.pending = self.pending, (step, {k: metrics[k] for k in NONFINITE}, seg_task)
    stop = self._check(previous)
    if stop is None and now:
      stop, self.pending = self._check(self.pending), None
    return stop

  def _check(self, entry) -> tuple[int, list[str], np.ndarray] | None:
    if entry is None:
      return None
    step, flags, seg_task = entry
    flags = jax.device_get(flags)
    bad = [k.split("/", 1)[1] for k in NONFINITE if flags[k]]
    self.in_a_row = self.in_a_row + 1 if bad else 0
    if bad and (self.mode == "stop" or self.in_a_row >= self.max_skips):
      return step, bad, seg_task
    return None

  def message(self, step: int, bad: list[str], tasks: list[str], last_good: str) -> str:
    """The one line that ends a run (`check`'s answer)."""
    names = [{"loss": "the loss", "grad_norm": "the gradient norm",
              "params": "the updated parameters' norm"}[b] for b in bad]
    what = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    row = (f" ({self.in_a_row} steps in a row, nonfinite_max_skips={self.max_skips})"
           if self.mode == "skip" else "")
    verb = "are" if len(bad) > 1 else "is"
    return (f"step {step}: {what} {verb} not finite{row}, on a batch of {', '.join(tasks)}; "
            f"nothing non-finite was saved; {last_good}: rerun with a lower "
            "--config.optimizer.learning_rate (or --config.nonfinite=skip)")
