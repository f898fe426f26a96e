"""Constrained greedy and beam-search decoding under `jax.jit`, with the decoder's KV cache.

Grammars are arrays (see `av_unified_jax.tokens.grammar`): at state s only tokens v with
`allowed[s, v]` may be emitted, the state then becomes `next_state[s, v]`, and a finished
(accepting) state allows only <pad>. Row b of a batch starts at
`start_states[grammar_index[b]]` (`grammar_index` defaults to `batch["task_id"]`).

    tokens = greedy_decode(model, params, batch, g.allowed, g.next_state, g.start_states, L)
    tokens = beam_search(model, params, batch, g.allowed, ..., L, beam_size=4)

Both encode the batch once, then feed one token per step through the cache; outputs are the
emitted targets int32[B, L] (no <bos>; <pad> after <eos>).

Greedy decoding can take `token_groups` bool[V], which splits the tokens in two groups (AVS:
mask codes whose cell is mostly foreground, and the rest). Each step then first picks the
group holding more of the allowed probability mass, then the likeliest token inside it
(`group_argmax`). Plain argmax over 512 mask codes settles on the one background code
whenever the foreground mass is spread over many object-edge codes, even where the model is
sure the cell belongs to the object; the group rule asks "object or not?" first.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from av_unified_jax.models.model import DECODER_INPUTS, AVUnified

NEG = -1e9
PAD = 0


def decoder_memory(encoded):
  """The entries of `AVUnified.encode`'s dict that the decoder reads."""
  return {k: encoded[k] for k in DECODER_INPUTS if k in encoded}


def _memory(model: AVUnified, params, batch):
  out = model.apply({"params": params}, batch, method=AVUnified.encode)
  memory = decoder_memory(out)
  aux = {k: v for k, v in out.items() if k not in memory}
  return memory, aux


def _step(model: AVUnified, params, cache, tokens, memory):
  """One cached decoder step: tokens int32[B, 1] -> (float32 logits [B, V], new cache)."""
  variables = {"params": params} if cache is None else {"params": params, "cache": cache}
  logits, mutated = model.apply(variables, tokens, memory, decode=True,
                                method=AVUnified.decode, mutable=["cache"])
  return logits[:, -1], mutated["cache"]


def _start(batch, start_states, grammar_index):
  index = batch["task_id"] if grammar_index is None else grammar_index
  return jnp.asarray(start_states, jnp.int32)[index]


def _finished_states(allowed):
  """bool[S]: states where only <pad> may follow (the grammar has accepted)."""
  return allowed[:, PAD] & (allowed.sum(axis=1) == 1)


def _check_len(model: AVUnified, max_len: int):
  if max_len > model.cfg.max_decode_len:
    raise ValueError(f"max_len={max_len} exceeds the KV cache (model.max_decode_len="
                     f"{model.cfg.max_decode_len})")


def group_argmax(masked_logits, token_groups, threshold=0.5):
  """float32[B, V] logits (disallowed tokens at NEG), bool[V] groups -> int32[B]: the
  likeliest token of the True group where it holds more than `threshold` of the probability
  mass, else of the False group (0.5: the group with more mass)."""
  probs = jax.nn.softmax(masked_logits, axis=-1)  # [B, V]
  in_true = token_groups[None, :]  # [1, V]
  true_mass = jnp.sum(jnp.where(in_true, probs, 0.0), axis=-1)  # [B]
  pick_true = true_mass > threshold  # [B]
  keep = in_true == pick_true[:, None]  # [B, V]
  return jnp.argmax(jnp.where(keep, masked_logits, NEG), axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "max_len", "cached", "return_aux"))
def greedy_decode(model: AVUnified, params, batch, allowed, next_state, start_states,
                  max_len: int, grammar_index=None, cached: bool = True,
                  return_aux: bool = False, token_groups=None, group_threshold=0.5):
  """Constrained greedy decoding.

  Args:
    model, params: the model and its parameters.
    batch: inputs as for `AVUnified.encode` (+ `task_id` int32[B]).
    allowed bool[S, V], next_state int32[S, V], start_states int32[G]: the grammar tables.
    max_len: decoding steps (static).
    grammar_index: int32[B] row of `start_states` per example (default: `batch["task_id"]`).
    cached: False recomputes the whole prefix every step (for tests and timing only).
    return_aux: also return the encoder's auxiliary outputs (`loc_maps`, MIL probabilities).
    token_groups: None (plain argmax) or bool[V]: pick the group first (`group_argmax`).
    group_threshold: the True group's share of the mass above which it is picked.
  Returns: int32[B, max_len] (and the aux dict when `return_aux`).
  """
  _check_len(model, max_len)
  allowed, next_state = jnp.asarray(allowed), jnp.asarray(next_state)
  finished = _finished_states(allowed)
  memory, aux = _memory(model, params, batch)
  state = _start(batch, start_states, grammar_index)
  b = state.shape[0]
  buf = jnp.zeros((b, max_len + 1), jnp.int32).at[:, 0].set(model.cfg.bos_id)  # [B, L+1]

  if cached:
    logits, cache = _step(model, params, None, buf[:, :1], memory)
  else:
    logits, cache = _full_logits(model, params, buf, memory, 0), None

  def cond(carry):
    t, _, state, _, _ = carry
    return (t < max_len) & ~jnp.all(finished[state])

  def body(carry):
    t, buf, state, logits, cache = carry
    masked = jnp.where(allowed[state], logits, NEG)  # [B, V]
    if token_groups is None:
      tok = jnp.argmax(masked, axis=-1).astype(jnp.int32)  # [B]
    else:
      tok = group_argmax(masked, jnp.asarray(token_groups, bool), group_threshold)
    state = next_state[state, tok]
    buf = jax.lax.dynamic_update_slice(buf, tok[:, None], (0, t + 1))
    if cached:
      logits, cache = _step(model, params, cache, tok[:, None], memory)
    else:
      logits = _full_logits(model, params, buf, memory, t + 1)
    return t + 1, buf, state, logits, cache

  _, buf, _, _, _ = jax.lax.while_loop(
      cond, body, (jnp.zeros((), jnp.int32), buf, state, logits, cache))
  tokens = buf[:, 1:]
  return (tokens, aux) if return_aux else tokens


def _full_logits(model: AVUnified, params, buf, memory, t):
  """Uncached: decode the whole buffer [B, L+1] and return the logits at position t."""
  logits = model.apply({"params": params}, buf[:, :-1], memory, method=AVUnified.decode)
  return jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)  # [B, V]


@functools.partial(jax.jit, static_argnames=("model", "max_len", "beam_size", "return_scores"))
def beam_search(model: AVUnified, params, batch, allowed, next_state, start_states,
                max_len: int, beam_size: int = 4, length_penalty: float = 0.0,
                grammar_index=None, return_scores: bool = False):
  """Constrained beam search; finished beams stay in the beam, extended by free <pad>.

  Scores are sums of log-probabilities renormalized over the allowed tokens; the returned
  beam maximizes score / num_tokens ** length_penalty (0 = plain sum).
  Args: as `greedy_decode`, plus beam_size (static) and length_penalty.
  Returns: int32[B, max_len] (and float32[B] scores when `return_scores`).
  """
  _check_len(model, max_len)
  allowed, next_state = jnp.asarray(allowed), jnp.asarray(next_state)
  finished = _finished_states(allowed)
  k = beam_size
  memory, _ = _memory(model, params, batch)
  memory = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), memory)  # [B*K, ...]
  state = jnp.repeat(_start(batch, start_states, grammar_index)[:, None], k, axis=1)  # [B, K]
  b = state.shape[0]
  bos = jnp.full((b * k, 1), model.cfg.bos_id, jnp.int32)
  logits, cache = _step(model, params, None, bos, memory)  # [B*K, V]
  scores = jnp.tile(jnp.array([0.0] + [NEG] * (k - 1), jnp.float32), (b, 1))  # [B, K]
  seqs = jnp.zeros((b, k, max_len), jnp.int32)
  cache_axis = 1 if model.cfg.scan_layers else 0

  def cond(carry):
    t, _, state, _, _, _ = carry
    return (t < max_len) & ~jnp.all(finished[state])

  def body(carry):
    t, seqs, state, scores, logits, cache = carry
    vocab = logits.shape[-1]
    logits = logits.reshape(b, k, vocab)
    logp = jax.nn.log_softmax(jnp.where(allowed[state], logits, NEG), axis=-1)  # [B, K, V]
    cand = (scores[:, :, None] + logp).reshape(b, k * vocab)  # [B, K*V]
    scores, flat = jax.lax.top_k(cand, k)  # [B, K]
    beam, tok = flat // vocab, (flat % vocab).astype(jnp.int32)
    seqs = jnp.take_along_axis(seqs, beam[:, :, None], axis=1)
    seqs = jax.lax.dynamic_update_slice(seqs, tok[:, :, None], (0, 0, t))
    state = next_state[jnp.take_along_axis(state, beam, axis=1), tok]
    rows = (jnp.arange(b)[:, None] * k + beam).reshape(b * k)  # [B*K]
    cache = jax.tree.map(lambda x: _gather_rows(x, rows, cache_axis), cache)
    logits, cache = _step(model, params, cache, tok.reshape(b * k, 1), memory)
    return t + 1, seqs, state, scores, logits, cache

  _, seqs, _, scores, _, _ = jax.lax.while_loop(
      cond, body, (jnp.zeros((), jnp.int32), seqs, state, scores, logits, cache))
  lengths = jnp.maximum((seqs != PAD).sum(-1), 1).astype(jnp.float32)  # [B, K]
  ranked = scores / lengths ** length_penalty
  best = jnp.argmax(ranked, axis=1)  # [B]
  tokens = jnp.take_along_axis(seqs, best[:, None, None], axis=1)[:, 0]
  if return_scores:
    return tokens, jnp.take_along_axis(ranked, best[:, None], axis=1)[:, 0]
  return tokens


def _gather_rows(x, rows, axis):
  """Reorders the beam rows of one cache leaf (scalars such as the index are shared)."""
  if x.ndim <= axis:
    return x
  return jnp.take(x, rows, axis=axis)
