"""Decoding: the KV cache gives the logits of a full forward pass, greedy and beam search obey
the task grammars (every decoded sequence of the tiny model is valid for its task), and beam
scores are the sequences' constrained log-probabilities."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model_helpers as H
from av_unified_jax import models, tokens
from av_unified_jax.evaluation import decoding
from av_unified_jax.models.decoder import shift_right


@functools.lru_cache(maxsize=None)
def grammars():
  """The stacked grammars of all task formats and each batch row's grammar (8 rows)."""
  stack = tokens.stack_grammars(H.tokenizer().grammars())
  index = np.arange(H.B, dtype=np.int32) % len(stack.names)
  return stack, index


def memory_of(model, params, batch):
  out = model.apply({"params": params}, batch, method=models.AVUnified.encode)
  return decoding.decoder_memory(out)


@functools.partial(jax.jit, static_argnums=0)
def full_logits(model, params, batch, targets):
  """Teacher-forced logits of `targets` in one pass: float32[B, L, V]."""
  inputs = shift_right(targets, model.cfg.bos_id)
  return model.apply({"params": params}, inputs, memory_of(model, params, batch),
                     method=models.AVUnified.decode)


@functools.partial(jax.jit, static_argnums=0)
def cached_logits(model, params, batch, targets):
  """The same logits fed one token per call through the KV cache."""
  memory = memory_of(model, params, batch)
  inputs = shift_right(targets, model.cfg.bos_id)

  def step(cache, tok):
    logits, mutated = model.apply({"params": params, "cache": cache}, tok[:, None], memory,
                                  decode=True, method=models.AVUnified.decode,
                                  mutable=["cache"])
    return mutated["cache"], logits[:, 0]

  first, mutated = model.apply({"params": params}, inputs[:, :1], memory, decode=True,
                               method=models.AVUnified.decode, mutable=["cache"])
  _, rest = jax.lax.scan(step, mutated["cache"], inputs[:, 1:].T)  # [L-1, B, V]
  return jnp.concatenate([first, rest.transpose(1, 0, 2)], axis=1)  # [B, L, V]


def _targets():
  stack, _ = grammars()
  rng = np.random.default_rng(3)
  return rng.integers(1, H.V, (H.B, stack.max_len)).astype(np.int32)


@pytest.mark.parametrize("scan", [False, True])
def test_cached_decoding_logits_equal_full_forward(scan):
  model, params, batch = H.MODEL, H.params(), H.batch()
  if scan:
    model = models.AVUnified(dataclasses.replace(H.CFG, scan_layers=True, remat=True))
    params = models.scan_params(params)
  full = full_logits(model, params, batch, _targets())
  cached = cached_logits(model, params, batch, _targets())
  assert cached.shape == full.shape == (H.B, grammars()[0].max_len, H.V)
  np.testing.assert_allclose(np.asarray(cached), np.asarray(full), atol=1e-5)


def _constrained_logp(logits, seqs, stack, index):
  """Per-token log-probabilities renormalized over the allowed tokens, float64[B, L]."""
  out = np.zeros(seqs.shape)
  for b, seq in enumerate(seqs):
    state = stack.start_states[index[b]]
    for t, v in enumerate(seq):
      masked = np.where(stack.allowed[state], logits[b, t], -np.inf).astype(np.float64)
      top = masked.max()
      out[b, t] = masked[v] - top - np.log(np.exp(masked - top).sum())
      state = stack.next_state[state, v]
  return out


def _check_valid(seqs, stack, index):
  tok = H.tokenizer()
  assert seqs.shape == (H.B, stack.max_len) and seqs.dtype == np.int32
  for b, seq in enumerate(seqs):
    name = stack.names[index[b]]
    tokens.check_sequence(stack, seq, start_state=int(stack.start_states[index[b]]),
                          describe=tok.describe)  # Raises, naming the token, if invalid.
    task = "avvp" if name == "avvp_weak" else name
    if task == "ssl":  # The grammar allows any 4 bins; corners out of order are the
      # detokenizer's error, and the evaluation sorts them (`SslTask._box`).
      x0, y0, x1, y1 = (tok.layout.token_coord(int(t)) for t in seq[:4])
      seq = np.concatenate([[tok.layout.coord_token(v) for v in
                             (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))], seq[4:]])
    tok.decode_target(task, seq, weak=name == "avvp_weak")  # Detokenizes.


def test_greedy_decoding_is_valid_for_each_task_and_matches_the_full_pass():
  stack, index = grammars()
  params, batch = H.params(), H.batch()
  args = (stack.allowed, stack.next_state, stack.start_states, stack.max_len)
  seqs = np.asarray(decoding.greedy_decode(H.MODEL, params, batch, *args, grammar_index=index))
  _check_valid(seqs, stack, index)
  logits = np.asarray(full_logits(H.MODEL, params, batch, seqs))
  for b, seq in enumerate(seqs):  # Every token is the constrained argmax of the full pass.
    state = stack.start_states[index[b]]
    for t, v in enumerate(seq):
      assert v == np.argmax(np.where(stack.allowed[state], logits[b, t], -np.inf)), (b, t)
      state = stack.next_state[state, v]
  uncached = decoding.greedy_decode(H.MODEL, params, batch, *args, grammar_index=index,
                                    cached=False)
  np.testing.assert_array_equal(np.asarray(uncached), seqs)


def test_beam_search_is_valid_and_scores_are_sequence_log_probabilities():
  stack, index = grammars()
  params, batch = H.params(), H.batch()
  args = (stack.allowed, stack.next_state, stack.start_states, stack.max_len)
  seqs, scores = decoding.beam_search(H.MODEL, params, batch, *args, beam_size=3,
                                      grammar_index=index, return_scores=True)
  seqs = np.asarray(seqs)
  _check_valid(seqs, stack, index)
  logp = _constrained_logp(np.asarray(full_logits(H.MODEL, params, batch, seqs)), seqs, stack,
                           index)
  np.testing.assert_allclose(np.asarray(scores), logp.sum(1), atol=1e-3)
  greedy = np.asarray(decoding.greedy_decode(H.MODEL, params, batch, *args,
                                             grammar_index=index))
  greedy_logp = _constrained_logp(np.asarray(full_logits(H.MODEL, params, batch, greedy)),
                                  greedy, stack, index)
  assert np.all(np.asarray(scores) >= greedy_logp.sum(1) - 1e-3)


def test_decoding_longer_than_the_cache_is_an_error():
  stack, index = grammars()
  with pytest.raises(ValueError, match="max_decode_len"):
    decoding.greedy_decode(H.MODEL, H.params(), H.batch(), stack.allowed, stack.next_state,
                           stack.start_states, H.CFG.max_decode_len + 1, grammar_index=index)


def test_group_argmax_picks_the_group_with_more_mass_then_its_best_token():
  # Token 0 (background) alone holds 0.4; tokens 1-3 (foreground) share 0.6.
  probs = np.array([[0.4, 0.2, 0.2, 0.2, 0.0], [0.7, 0.1, 0.1, 0.1, 0.0]], np.float32)
  logits = np.where(probs > 0, np.log(np.maximum(probs, 1e-9)), decoding.NEG)
  groups = np.array([False, True, True, True, False])
  np.testing.assert_array_equal(np.argmax(logits, -1), [0, 0])  # Plain argmax: background.
  np.testing.assert_array_equal(decoding.group_argmax(logits, groups), [1, 0])
  # A threshold of 0.25: the second row's foreground share (0.3) is enough too.
  np.testing.assert_array_equal(decoding.group_argmax(logits, groups, 0.25), [1, 1])
  np.testing.assert_array_equal(decoding.group_argmax(logits, groups, 0.65), [0, 0])
  # Without foreground tokens among the allowed ones, it is the plain argmax.
  only = np.where(groups, decoding.NEG, logits)
  np.testing.assert_array_equal(decoding.group_argmax(only, groups), np.argmax(only, -1))


def test_greedy_decoding_with_token_groups_stays_valid():
  stack, index = grammars()
  params, batch = H.params(), H.batch()
  args = (stack.allowed, stack.next_state, stack.start_states, stack.max_len)
  groups = np.zeros(stack.allowed.shape[1], bool)
  groups[H.tokenizer().layout.code_token(0):H.tokenizer().layout.code_token(0) + 256] = True
  seqs = np.asarray(decoding.greedy_decode(H.MODEL, params, batch, *args, grammar_index=index,
                                           token_groups=groups))
  _check_valid(seqs, stack, index)
