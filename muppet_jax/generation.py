"""Greedy and beam-search generation for BART, jit-compiled with static shapes and a decoder cache.

The semantics are those of transformers' `generate` (so the same settings give the same tokens):
decoding starts from `decoder_start_token_id`; `max_length` counts that start token; the logits
processors are no-repeat n-grams, minimum length, forced BOS at the first step and forced EOS at
the last; beam search keeps the 2 x num_beams best continuations, finishes hypotheses that hit EOS
(or max_length) with score sum(log p) / generated_length ** length_penalty, and stops as
transformers does (`early_stopping` True: once num_beams hypotheses are done; False: when no
running beam can beat the worst kept hypothesis at its current length).

Both return [batch, max_length] token ids: the start token, the generated tokens, then padding.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from muppet_jax.models import scan_layout
from muppet_jax.models.bart import Bart

NEG = -1e9  # transformers' "impossible" beam score.


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
  max_length: int = 128  # Decoder tokens including the start token.
  num_beams: int = 1  # 1: greedy.
  length_penalty: float = 1.0
  no_repeat_ngram_size: int = 0
  min_length: int = 0
  early_stopping: bool = True
  forced_bos_token_id: int | None = None  # BART summarizers: 0 (`<s>`) after the start token.
  forced_eos_token_id: int | None = None


def _banned_ngram_tokens(sequences: jax.Array, cur_len: jax.Array, n: int,
                         vocab_size: int) -> jax.Array:
  """[N, V] True for tokens that would repeat an n-gram already in sequences[:, :cur_len]."""
  rows, length = sequences.shape
  tail = jax.lax.dynamic_slice_in_dim(sequences, jnp.maximum(cur_len - (n - 1), 0), n - 1, axis=1)
  starts = length - n + 1
  match = jnp.ones((rows, starts), bool)
  for j in range(n - 1):
    match &= sequences[:, j:j + starts] == tail[:, j:j + 1]
  match &= (jnp.arange(starts) + n <= cur_len)[None, :]  # Whole n-grams seen so far.
  following = sequences[:, n - 1:n - 1 + starts]
  banned = jnp.zeros((rows, vocab_size), bool)
  return banned.at[jnp.arange(rows)[:, None], following].max(match)


def _process(scores: jax.Array, sequences: jax.Array, cur_len: jax.Array,
             config: GenerationConfig, eos_id: int) -> jax.Array:
  """transformers' logits processors, in its order, on [N, V] scores for position `cur_len`."""
  vocab = scores.shape[-1]
  if config.no_repeat_ngram_size > 0:
    banned = _banned_ngram_tokens(sequences, cur_len, config.no_repeat_ngram_size, vocab)
    scores = jnp.where(banned, -jnp.inf, scores)
  if config.min_length > 0:
    scores = jnp.where((jnp.arange(vocab) == eos_id) & (cur_len < config.min_length), -jnp.inf,
                       scores)

  def force(scores, token, when):
    forced = jnp.where(jnp.arange(vocab) == token, 0.0, -jnp.inf)
    return jnp.where(when, forced[None, :], scores)

  if config.forced_bos_token_id is not None:
    scores = force(scores, config.forced_bos_token_id, cur_len == 1)
  if config.forced_eos_token_id is not None:
    scores = force(scores, config.forced_eos_token_id, cur_len == config.max_length - 1)
  return scores


def _encode_and_cache(model: Bart, params: Any, input_ids: jax.Array, segment_ids: jax.Array,
                      copies: int, max_length: int):
  """The decoding cache and encoder segment ids, each example's repeated `copies` (beams) times;
  the encoder and the cross-attention projections run once per example."""
  encoded = model.apply({"params": params}, input_ids, segment_ids, method=Bart.encode)
  cache = model.apply({"params": params}, encoded, max_length, method=Bart.init_cache)
  repeat = lambda x: jnp.repeat(x, copies, axis=0)  # noqa: E731
  return jax.tree.map(repeat, cache), repeat(segment_ids)


class GreedyState(NamedTuple):
  cur_len: jax.Array  # Tokens so far (the start token included); the next goes at this index.
  sequences: jax.Array  # [B, T]
  unfinished: jax.Array  # [B] no EOS yet.
  cache: list  # The decoder's, one entry per layer.


class BeamState(NamedTuple):
  cur_len: jax.Array
  running: jax.Array  # [B, k, T] the k live beams ...
  running_scores: jax.Array  # [B, k] ... and their summed log-probabilities.
  done: jax.Array  # [B, k, T] the best finished hypotheses ...
  scores: jax.Array  # [B, k] ... their length-penalized scores (NEG: empty slot) ...
  finished: jax.Array  # [B, k] ... and which slots hold one.
  open_: jax.Array  # [B, 1] whether a running beam can still beat the finished ones.
  hits: jax.Array  # [B, 2k] which of the last step's candidates ended.
  cache: list  # The decoder's, per layer, over B * k rows.


def greedy_search(model: Bart, params: Any, input_ids: jax.Array, segment_ids: jax.Array,
                  config: GenerationConfig) -> jax.Array:
  """Greedy decoding of [B, L] encoder inputs (`segment_ids` 1 for tokens, 0 for padding)."""
  cfg = model.config
  b, t = input_ids.shape[0], config.max_length
  cache, enc_segments = _encode_and_cache(model, params, input_ids, segment_ids, 1, t)
  sequences = jnp.full((b, t), cfg.pad_token_id, jnp.int32).at[:, 0].set(
      cfg.decoder_start_token_id)

  def cond(s: GreedyState):
    return (s.cur_len < t) & s.unfinished.any()

  def body(s: GreedyState):
    token = jax.lax.dynamic_index_in_dim(s.sequences, s.cur_len - 1, axis=1, keepdims=False)
    logits, cache = model.apply({"params": params}, token, s.cur_len - 1, s.cache, enc_segments,
                                method=Bart.decode_step)
    scores = _process(logits.astype(jnp.float32), s.sequences, s.cur_len, config,
                      cfg.eos_token_id)
    next_token = jnp.where(s.unfinished, jnp.argmax(scores, axis=-1), cfg.pad_token_id)
    sequences = jax.lax.dynamic_update_index_in_dim(s.sequences, next_token.astype(jnp.int32),
                                                    s.cur_len, axis=1)
    return GreedyState(s.cur_len + 1, sequences, s.unfinished & (next_token != cfg.eos_token_id),
                       cache)

  start = GreedyState(jnp.asarray(1, jnp.int32), sequences, jnp.ones((b,), bool), cache)
  return jax.lax.while_loop(cond, body, start).sequences


def beam_search(model: Bart, params: Any, input_ids: jax.Array, segment_ids: jax.Array,
                config: GenerationConfig) -> jax.Array:
  """Beam search over [B, L] encoder inputs; returns each example's best hypothesis."""
  cfg = model.config
  b, k, t = input_ids.shape[0], config.num_beams, config.max_length
  keep = 2 * k  # Candidates kept per step, so that k can go on when k of them end in EOS.
  lp = config.length_penalty
  cache, enc_segments = _encode_and_cache(model, params, input_ids, segment_ids, k, t)
  start = jnp.full((b, k, t), cfg.pad_token_id, jnp.int32).at[:, :, 0].set(
      cfg.decoder_start_token_id)

  def gather(x, index):  # x [b, n, ...], index [b, m] -> [b, m, ...]
    return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)

  def cond(s: BeamState):
    return ((s.cur_len < t) & s.open_.any() & ~(s.finished.all() & config.early_stopping)
            & ~s.hits.all())

  def body(s: BeamState):
    cur_len = s.cur_len
    token = jax.lax.dynamic_index_in_dim(s.running, cur_len - 1, axis=2, keepdims=False)
    logits, cache = model.apply({"params": params}, token.reshape(b * k), cur_len - 1, s.cache,
                                enc_segments, method=Bart.decode_step)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    log_probs = _process(log_probs, s.running.reshape(b * k, t), cur_len, config,
                         cfg.eos_token_id)
    vocab = log_probs.shape[-1]
    log_probs = log_probs.reshape(b, k, vocab) + s.running_scores[:, :, None]

    # The best continuations over all beams.
    top_scores, top_index = jax.lax.top_k(log_probs.reshape(b, k * vocab), keep)
    top_beam, top_token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
    top_seqs = jax.lax.dynamic_update_index_in_dim(gather(s.running, top_beam), top_token,
                                                   cur_len, axis=2)
    hits = (top_token == cfg.eos_token_id) | (cur_len + 1 >= t)

    # The k best that go on running.
    _, next_index = jax.lax.top_k(top_scores + hits * NEG, k)
    running = gather(top_seqs, next_index)
    running_scores = gather(top_scores + hits * NEG, next_index)
    parent = gather(top_beam, next_index)
    rows = (parent + jnp.arange(b)[:, None] * k).reshape(-1)
    cache = [{"self": jax.tree.map(lambda x: x[rows], layer["self"]), "cross": layer["cross"]}
             for layer in cache]

    # Hypotheses that just ended (among the top k) join the finished ones if they score better.
    just_done = hits & (jnp.arange(keep) < k)[None, :]
    candidate = top_scores / cur_len.astype(jnp.float32) ** lp  # cur_len + 1 - start token.
    candidate += (s.finished.all(axis=-1, keepdims=True) & config.early_stopping) * NEG
    candidate += (~s.open_) * NEG
    candidate += (~just_done) * NEG
    merged_scores = jnp.concatenate([s.scores, candidate], axis=1)
    _, best = jax.lax.top_k(merged_scores, k)
    done = gather(jnp.concatenate([s.done, top_seqs], axis=1), best)
    scores = gather(merged_scores, best)
    finished = gather(jnp.concatenate([s.finished, just_done], axis=1), best)

    # Could a running beam still beat the worst finished hypothesis?
    best_running = running_scores[:, :1] / cur_len.astype(jnp.float32) ** lp
    worst = jnp.where(finished, scores.min(axis=1, keepdims=True), NEG)
    open_ = s.open_ & (best_running > worst).any(axis=-1, keepdims=True)
    return BeamState(cur_len + 1, running, running_scores, done, scores, finished, open_, hits,
                     cache)

  running_scores = jnp.zeros((b, k)).at[:, 1:].set(NEG)  # Only beam 0 is live at first.
  initial = BeamState(jnp.asarray(1, jnp.int32), start, running_scores, start,
                      jnp.full((b, k), NEG), jnp.zeros((b, k), bool), jnp.ones((b, 1), bool),
                      jnp.zeros((b, keep), bool), cache)
  return jax.lax.while_loop(cond, body, initial).done[:, 0]


def generate(model: Bart, params: Any, input_ids: jax.Array, segment_ids: jax.Array,
             config: GenerationConfig) -> jax.Array:
  """Greedy (num_beams 1) or beam search; jit it with `config` static (e.g. functools.partial)."""
  if model.config.scan_layers:  # Decoding steps run the layers in a loop, with a cache each.
    model = Bart(model.config.replace(scan_layers=False))
    params = scan_layout.match(params, model.config)
  if config.num_beams > 1:
    return beam_search(model, params, input_ids, segment_ids, config)
  return greedy_search(model, params, input_ids, segment_ids, config)
