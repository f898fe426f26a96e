"""A deterministic synthetic batch source with the input pipeline's fields and iterator API.

Used by tests and throughput checks (`--config.data.synthetic=True`): no files needed. Batch k
of the global stream is drawn from `numpy.random.default_rng((seed, k))`; process p of n
yields rows `[p * B / n, (p + 1) * B / n)` of it, so any process count sees the same global
batches. `get_state()` / `set_state()` make resumption exact.

Targets are a fixed function of the prompt and task, so a model can learn them (the loss falls).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from av_unified_jax.tokens.layout import TASKS

NUM_TASKS = len(TASKS)
MAP_GRID = 16  # Side of `focus_map` (the same as data.tasks.MAP_GRID, kept free of data imports).


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
  """Shapes of a synthetic batch (global batch size; per-process size is B / process_count)."""
  batch_size: int
  num_segments: int  # T
  image_size: int  # H = W
  mel_frames: int  # F
  mel_bins: int  # M
  prompt_len: int  # Lp
  target_len: int  # Lt
  vocab_size: int  # V
  num_classes: int  # C (weak labels)


class SyntheticIterator:
  """Iterator of per-process numpy batches (dict of arrays, see `make_batch`)."""

  def __init__(self, spec: SyntheticSpec, seed: int, process_index: int = 0,
               process_count: int = 1):
    if spec.batch_size % process_count:
      raise ValueError(f"data.batch_size={spec.batch_size} must be divisible by the number of "
                       f"processes ({process_count})")
    self.spec = spec
    self.seed = int(seed)
    self._rows = slice(process_index * spec.batch_size // process_count,
                       (process_index + 1) * spec.batch_size // process_count)
    self._next = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = make_batch(self.spec, self.seed, self._next)
    self._next += 1
    return {k: v[self._rows] for k, v in batch.items()}

  def get_state(self) -> dict:
    return {"next_batch": self._next, "seed": self.seed}

  def set_state(self, state: dict) -> None:
    if state.get("seed") != self.seed:
      raise ValueError(f"synthetic iterator state has seed {state.get('seed')}, this run uses "
                       f"seed {self.seed}")
    self._next = int(state["next_batch"])


def make_batch(spec: SyntheticSpec, seed: int, index: int) -> dict[str, np.ndarray]:
  """Global batch number `index`.

  Returns:
    frames uint8[B, T, H, W, 3], log_mel float32[B, T, F, M], segment_mask bool[B, T],
    prompt_tokens int32[B, Lp], target_tokens int32[B, Lt], target_weights float32[B, Lt],
    task_id int32[B], weak_labels float32[B, C], has_weak bool[B], focus_segment int32[B],
    focus_map float32[B, G, G], has_focus_map bool[B] (the AVS rows), event_segments
    float32[B, T] (the first half of the valid segments), has_event_segments bool[B] (AVE).
  """
  s = spec
  rng = np.random.default_rng((seed, index))
  b, t = s.batch_size, s.num_segments
  task_id = rng.integers(0, NUM_TASKS, size=b).astype(np.int32)
  num_valid = rng.integers(max(1, t // 2), t + 1, size=b)
  segment_mask = np.arange(t)[None, :] < num_valid[:, None]  # [B, T]
  content = max(s.vocab_size - 8, 2)  # Ids 0..7 are left to padding and specials.
  prompt = rng.integers(8, 8 + content, size=(b, s.prompt_len)).astype(np.int32)
  prompt_len = rng.integers(2, s.prompt_len + 1, size=b)
  prompt[np.arange(s.prompt_len)[None, :] >= prompt_len[:, None]] = 0
  target_len = rng.integers(2, s.target_len + 1, size=b)
  positions = np.arange(s.target_len)[None, :]  # [1, Lt]
  target = 8 + (prompt[:, :1] * 7 + positions * 3 + task_id[:, None] * 11) % content  # [B, Lt]
  target_valid = positions < target_len[:, None]
  return {
      "frames": rng.integers(0, 256, size=(b, t, s.image_size, s.image_size, 3), dtype=np.uint8),
      "log_mel": rng.standard_normal((b, t, s.mel_frames, s.mel_bins), dtype=np.float32),
      "segment_mask": segment_mask,
      "prompt_tokens": prompt,
      "target_tokens": np.where(target_valid, target, 0).astype(np.int32),
      "target_weights": target_valid.astype(np.float32),
      "task_id": task_id,
      "weak_labels": (rng.random((b, s.num_classes)) < 0.2).astype(np.float32),
      "has_weak": task_id == 1,
      "focus_segment": rng.integers(0, num_valid, size=b).astype(np.int32),
      "focus_map": rng.random((b, MAP_GRID, MAP_GRID), dtype=np.float32) ** 4,
      "has_focus_map": task_id == 4,
      "event_segments": (np.arange(t)[None, :] < num_valid[:, None] // 2).astype(np.float32),
      "has_event_segments": task_id == 0,
  }
