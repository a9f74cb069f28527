"""R3F (Aghajanyan et al. 2020, "Better Fine-Tuning by Reducing Representational Collapse").

The model runs twice, on the clean input and with noise added to its input token embeddings; the
penalty is the symmetric KL divergence KL(p||q) + KL(q||p) between the two runs' output
distributions, per example:

- classification: over the task's classes; regression: the squared difference of the predictions;
- multiple choice: over the example's choices; span: over start and over end positions (mean);
- summarization: over the vocabulary at each summary token (mean over tokens).

Each example's penalty is divided by the same log n as its loss, so the penalty, like the loss,
doesn't favour tasks with large output spaces. Both runs use the same dropout masks, so the
penalty measures sensitivity to the embedding noise alone (and is exactly 0 without noise).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp

from muppet_jax import losses
from muppet_jax.errors import UserError
from muppet_jax.models.heads import HeadOutputs

NOISE_TYPES = ("uniform", "normal")


@dataclasses.dataclass(frozen=True)
class R3FConfig:
  """loss + weight * penalty, with `noise_type` noise of scale `eps`; off when weight is 0."""

  weight: float = 0.0
  noise_type: str = "uniform"
  eps: float = 1e-5


def sample_noise(rng: jax.Array, shape: tuple[int, ...], noise_type: str, eps: float) -> jax.Array:
  """U(-eps, eps) or N(0, eps^2) noise for the input token embeddings (fairseq's R3F choices)."""
  if noise_type == "uniform":
    return jax.random.uniform(rng, shape, jnp.float32, -eps, eps)
  if noise_type == "normal":
    return eps * jax.random.normal(rng, shape, jnp.float32)
  raise UserError(f"r3f.noise_type={noise_type!r}; choose one of {NOISE_TYPES}")


def _symmetric_kl_of_log_probs(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
  """KL(p||q) + KL(q||p) = sum (p - q)(log p - log q) over the last axis."""
  return jnp.sum((jnp.exp(log_p) - jnp.exp(log_q)) * (log_p - log_q), axis=-1)


def _symmetric_kl(logits_p: jax.Array, logits_q: jax.Array) -> jax.Array:
  return _symmetric_kl_of_log_probs(jax.nn.log_softmax(logits_p.astype(jnp.float32), axis=-1),
                                    jax.nn.log_softmax(logits_q.astype(jnp.float32), axis=-1))


def per_example_penalty(clean: HeadOutputs, noised: HeadOutputs, batch: Mapping[str, jax.Array],
                        table: losses.TaskTable, example_slots: int | None = None
                        ) -> tuple[jax.Array, jax.Array]:
  """(scaled penalty, is-example mask), each [B, S]; examples as in `losses.per_example_losses`."""
  segs = losses.segments(batch, table)
  classification = _symmetric_kl(losses.task_class_logits(clean, segs.classes),
                                 losses.task_class_logits(noised, segs.classes))
  regression = (clean.class_logits[..., 0].astype(jnp.float32) -
                noised.class_logits[..., 0].astype(jnp.float32)) ** 2
  log_p, example, n = losses.choice_log_probs(clean.choice_scores.astype(jnp.float32), batch,
                                              segs.is_choice, example_slots)
  log_q, _, _ = losses.choice_log_probs(noised.choice_scores.astype(jnp.float32), batch,
                                        segs.is_choice, example_slots)
  per_choice = (jnp.exp(log_p) - jnp.exp(log_q)) * (log_p - log_q)
  choice = losses.per_example_sum(jnp.where(segs.is_choice, per_choice, 0.0), example, n)
  span = 0.5 * (_symmetric_kl(clean.span_logits[..., 0], noised.span_logits[..., 0]) +
                _symmetric_kl(clean.span_logits[..., 1], noised.span_logits[..., 1]))
  summary = jnp.zeros_like(classification)
  if clean.lm is not None:
    def per_token(clean_hidden, noised_hidden):  # The LM head's logits a chunk at a time.
      return _symmetric_kl_of_log_probs(losses.lm_log_probs(clean.lm, clean_hidden),
                                        losses.lm_log_probs(noised.lm, noised_hidden))

    per_token = losses.over_target_chunks(per_token, [clean.lm.hidden, noised.lm.hidden],
                                          table.lm_chunk)
    summary = losses.target_segment_mean(per_token, batch["target_segment_ids"],
                                         segs.task.shape[1])
  penalty = losses.scaled_per_example([classification, regression, choice, span, summary], segs,
                                      table)
  return penalty, segs.is_example
