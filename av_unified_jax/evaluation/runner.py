"""Runs the model on evaluation batches under `jit`: constrained greedy decoding or beam search,
or only the encoder's auxiliary outputs when a task needs no tokens.

    runner = ModelRunner(model, tokenizer, beam_size=1, token_groups=None)
    tokens, aux = runner(eval_task, params, to_global(local_batch, mesh, rules))

`check_stop`, when given, is called before every batch and may raise to end the evaluation
there (the training loop's SIGTERM watcher raises `checkpointing.Preempted`), so a signal
stops an evaluation within a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from av_unified_jax import sharding, tokens
from av_unified_jax.data import pipeline
from av_unified_jax.data import tasks as data_tasks
from av_unified_jax.evaluation import decoding
from av_unified_jax.evaluation.tasks import EvalTask
from av_unified_jax.models.model import AVUnified

AUX_KEYS = ("loc_maps", "mil_frame_probs", "mil_video_probs")  # What evaluation tasks may read.


class ModelRunner:
  """Runs the model on evaluation batches under `jit`: `(task, params, batch)` ->
  (tokens int32[B, L] or None, {aux name: array[B, ...]}), all numpy on the host.

  `batch` holds global `jax.Array`s (or numpy arrays on one host) with the model's fields.
  """

  def __init__(self, model: AVUnified, tokenizer, beam_size: int = 1, token_groups=None,
               group_threshold: float = 0.5, check_stop: Callable[[], None] | None = None):
    """`token_groups` bool[V] or None: greedy decoding picks a group first
    (`decoding.group_argmax`; AVS: `MaskDecoder.foreground_tokens`), the True group where it
    holds more than `group_threshold` of the mass. `check_stop`: see the module docstring."""
    self.model, self.tokenizer, self.beam_size = model, tokenizer, int(beam_size)
    self.check_stop = check_stop
    self.group_threshold = float(group_threshold)
    self.token_groups = None if token_groups is None else jnp.asarray(token_groups, bool)
    grammars = tokenizer.grammars()
    self.stack = tokens.stack_grammars(grammars)
    self.allowed = jnp.asarray(self.stack.allowed)
    self.next_state = jnp.asarray(self.stack.next_state)
    self.start_states = jnp.asarray(self.stack.start_states)
    self._encode_fn = None

  @property
  def max_len(self) -> int:
    """Decoding steps: the longest sequence of any grammar, capped by the KV cache. One value
    for every task, so all tasks share one compiled decoder; the loop stops as soon as every
    row of a batch has emitted <eos>."""
    return min(self.stack.max_len, self.model.cfg.max_decode_len)

  def _encode(self, params, batch) -> dict:
    """The encoder's auxiliary outputs `AUX_KEYS` (one compiled function for every task)."""
    if self._encode_fn is None:
      model = self.model

      @jax.jit
      def encode(params, batch):
        out = model.apply({"params": params}, batch, method=AVUnified.encode)
        return {k: out[k] for k in AUX_KEYS}

      self._encode_fn = encode
    return self._encode_fn(params, batch)

  def __call__(self, task: EvalTask, params, batch) -> tuple[Any, dict]:
    if self.check_stop is not None:
      self.check_stop()
    keys = tuple(task.aux_keys)
    if not task.decodes:
      aux = self._encode(params, batch)
      return None, _to_host({k: aux[k] for k in keys})
    b = batch["task_id"].shape[0]
    index = jnp.full((b,), self.stack.index(task.name), jnp.int32)
    args = (self.model, params, batch, self.allowed, self.next_state, self.start_states,
            self.max_len)
    if self.beam_size > 1:
      out = decoding.beam_search(*args, beam_size=self.beam_size, grammar_index=index)
      aux = self._encode(params, batch) if keys else {}
    else:
      out, aux = decoding.greedy_decode(*args, grammar_index=index, return_aux=True,
                                        token_groups=self.token_groups,
                                        group_threshold=self.group_threshold)
      aux = {k: aux[k] for k in keys}
    return _to_host(out), _to_host(aux)


def _to_host(tree):
  """Device arrays -> numpy (all rows gathered from every process in multi-host runs)."""
  if jax.process_count() > 1:
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(np.asarray, jax.device_get(tree))


def gather_rows(values: np.ndarray) -> np.ndarray:
  """This process's rows of a bookkeeping field -> the global batch's rows (all processes)."""
  if jax.process_count() > 1:
    return np.asarray(multihost_utils.process_allgather(values, tiled=True))
  return np.asarray(values)


def to_global(local: Mapping[str, np.ndarray], mesh, rules) -> dict:
  """This process's rows of a batch (the model fields) -> global jax.Arrays sharded along
  the batch axis."""
  fields = {k: np.asarray(local[k]) for k in data_tasks.MODEL_FIELDS}
  n = jax.process_count()
  spec = {k: (v.shape[0] * n,) + v.shape[1:] for k, v in fields.items()}
  shardings = {k: sharding.batch_sharding(mesh, rules, len(s)) for k, s in spec.items()}
  return pipeline.global_batch(fields, shardings, spec)
