"""Losses: weighted token cross-entropy, audio-visual contrastive loss, MIL BCE.

Each returns `(sum, normalizer)` pairs or a mean as documented, all float32 scalars, so a
trainer can combine micro-batches exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax


def token_cross_entropy(logits, targets, weights, label_smoothing: float = 0.0):
  """Weighted token cross-entropy with optional label smoothing.

  Args: logits float[B, L, V]; targets int32[B, L]; weights float32[B, L] (0 = ignore);
    label_smoothing in [0, 1): mass spread uniformly over the vocabulary.
  Returns: (sum of weighted per-token losses, sum of weights), float32 scalars.
  """
  loss = token_cross_entropies(logits, targets, label_smoothing)  # [B, L]
  weights = weights.astype(jnp.float32)
  return (loss * weights).sum(), weights.sum()


def token_cross_entropies(logits, targets, label_smoothing: float = 0.0):
  """Per-token cross-entropy float32[B, L] of logits float[B, L, V] against targets int32[B, L],
  with `label_smoothing` of the mass spread uniformly over the vocabulary. No [B, L, V] one-hot
  is built: ce = lse - (1 - s) * logit[target] - s * mean(logits)."""
  logits = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)  # [B, L]
  picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  loss = lse - picked
  if label_smoothing:
    loss = (1.0 - label_smoothing) * loss + label_smoothing * (lse - logits.mean(axis=-1))
  return loss


def task_token_weights(target_weights, task_id, task_loss_weights: Sequence[float]):
  """Scales each example's token weights by its task's loss weight.

  target_weights float32[B, L], task_id int32[B], task_loss_weights: one float per task.
  Returns float32[B, L].
  """
  per_task = jnp.asarray(task_loss_weights, jnp.float32)[task_id]  # [B]
  return target_weights.astype(jnp.float32) * per_task[:, None]


def contrastive_loss(audio_embed, visual_embed, segment_mask, temperature: float = 0.07):
  """Symmetric InfoNCE between a'_t and s_t of the same clip and segment.

  Negatives are the valid segments of the *other* clips of the batch (segments of the same
  clip are excluded, since they often show the same source).
  Args: audio_embed, visual_embed float[B, T, D]; segment_mask bool[B, T].
  Returns: mean loss over valid segments (float32 scalar; 0 without valid segments).
  """
  b, t, d = audio_embed.shape
  a = _l2_normalize(audio_embed.reshape(b * t, d).astype(jnp.float32))  # [BT, D]
  v = _l2_normalize(visual_embed.reshape(b * t, d).astype(jnp.float32))
  valid = segment_mask.reshape(b * t)  # [BT]
  clip = jnp.repeat(jnp.arange(b), t)  # [BT]
  eye = jnp.eye(b * t, dtype=bool)
  # Both sides valid: an invalid segment is neither a positive nor anyone's negative.
  keep = (eye | (clip[:, None] != clip[None, :])) & valid[None, :] & valid[:, None]  # [BT, BT]
  logits = jnp.where(keep, a @ v.T / temperature, -1e9)  # [BT, BT]
  labels = jnp.arange(b * t)
  loss_av = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  loss_va = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels)
  w = valid.astype(jnp.float32)
  return ((loss_av + loss_va) * 0.5 * w).sum() / jnp.maximum(w.sum(), 1.0)


def _area_matrix(src: int, dst: int) -> np.ndarray:
  """float32[dst, src]: output cell i averages the source cells it overlaps (by overlap)."""
  edges_src = np.linspace(0.0, 1.0, src + 1)
  edges_dst = np.linspace(0.0, 1.0, dst + 1)
  lo = np.maximum(edges_dst[:-1, None], edges_src[None, :-1])  # [dst, src]
  hi = np.minimum(edges_dst[1:, None], edges_src[None, 1:])
  overlap = np.maximum(hi - lo, 0.0)
  return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def map_loss(loc_maps, focus_segment, focus_map, has_focus_map):
  """Cross-entropy between the focus segment's sound-source map and the annotated mask.

  The mask's cell fractions are area-averaged onto the map grid and normalised into a
  distribution over patches; the map (a softmax over patches) is trained to put its mass there.
  Args: loc_maps float32[B, T, h, w] (each map sums to 1); focus_segment int32[B];
    focus_map float32[B, G, G] (covered fraction per cell); has_focus_map bool[B].
  Returns: mean over examples with a map (float32 scalar; 0 without any).
  """
  b, _, h, w = loc_maps.shape
  idx = focus_segment.astype(jnp.int32)[:, None, None, None]
  m = jnp.take_along_axis(loc_maps.astype(jnp.float32), idx, axis=1)[:, 0]  # [B, h, w]
  g_h, g_w = focus_map.shape[1:]
  rows, cols = jnp.asarray(_area_matrix(g_h, h)), jnp.asarray(_area_matrix(g_w, w))
  target = jnp.einsum("hg,bgk,wk->bhw", rows, focus_map.astype(jnp.float32), cols)  # [B, h, w]
  target = target / jnp.maximum(target.sum(axis=(1, 2), keepdims=True), 1e-6)
  ce = -(target * jnp.log(m + 1e-6)).sum(axis=(1, 2))  # [B]
  weight = has_focus_map.astype(jnp.float32)
  return (ce * weight).sum() / jnp.maximum(weight.sum(), 1.0)


def mil_bce(video_probs, weak_labels, has_weak, positive_weight: float = 1.0):
  """Binary cross-entropy of the MIL video probabilities against weak labels.

  Args: video_probs float32[B, C] in [0, 1]; weak_labels float32[B, C]; has_weak bool[B];
    positive_weight: weight of the present classes' terms (> 1 trades precision for recall:
    the minimiser is w q / (w q + 1 - q) for a class present with probability q, so the
    0.5 threshold of the AVVP protocol falls at q = 1 / (1 + w)).
  Returns: mean over examples with weak labels (float32 scalar; 0 if there are none).
  """
  p = jnp.clip(video_probs.astype(jnp.float32), 1e-6, 1.0 - 1e-6)
  y = weak_labels.astype(jnp.float32)
  bce = -(positive_weight * y * jnp.log(p) + (1.0 - y) * jnp.log1p(-p)).mean(axis=-1)  # [B]
  w = has_weak.astype(jnp.float32)
  return (bce * w).sum() / jnp.maximum(w.sum(), 1.0)


def event_segment_bce(frame_probs, weak_labels, event_segments, has_events, segment_mask):
  """Segment-level cross-entropy of the MIL frame probabilities where an event's seconds are
  known (AVE: an audible and visible event of the clip's one class).

  For the labelled class c (one-hot `weak_labels`), with p_a, p_v its audio and visual frame
  probabilities: inside the event both should be 1 (-log p_a - log p_v); outside it the class
  is not audible and visible at once (-log(1 - p_a p_v)): either may still hold alone.

  Args: frame_probs float32[B, T, 2, C]; weak_labels float32[B, C]; event_segments
    float32[B, T] (1 inside the event); has_events bool[B]; segment_mask bool[B, T].
  Returns: mean over the valid segments of the examples with events (0 if there are none).
  """
  y = weak_labels.astype(jnp.float32)[:, None, None, :]  # [B, 1, 1, C]
  p = jnp.clip((frame_probs.astype(jnp.float32) * y).sum(-1), 1e-6, 1.0 - 1e-6)  # [B, T, 2]
  inside = event_segments.astype(jnp.float32)
  inside_loss = -(jnp.log(p[..., 0]) + jnp.log(p[..., 1]))  # [B, T]
  outside_loss = -jnp.log1p(-p[..., 0] * p[..., 1])  # [B, T]
  per_segment = inside * inside_loss + (1.0 - inside) * outside_loss
  valid = segment_mask.astype(jnp.float32) * has_events.astype(jnp.float32)[:, None]
  return (per_segment * valid).sum() / jnp.maximum(valid.sum(), 1.0)


def _l2_normalize(x):
  return x * jax.lax.rsqrt(jnp.maximum((x * x).sum(-1, keepdims=True), 1e-12))


def model_loss(outputs: Mapping[str, jax.Array], batch: Mapping[str, jax.Array], *,
               task_loss_weights: Sequence[float] | None = None, label_smoothing: float = 0.0,
               contrastive_weight: float = 0.0, contrastive_temperature: float = 0.07,
               mil_weight: float = 0.0):
  """The total training loss of one batch and its parts.

  Token loss: weighted mean cross-entropy (weights = target_weights x task loss weight).
  Returns: (loss float32 scalar, dict of float32 scalars `token_loss`, `contrastive_loss`,
    `mil_loss`, `token_weight`).
  """
  weights = batch["target_weights"]
  if task_loss_weights is not None:
    weights = task_token_weights(weights, batch["task_id"], task_loss_weights)
  ce_sum, ce_w = token_cross_entropy(outputs["logits"], batch["target_tokens"], weights,
                                     label_smoothing)
  token_loss = ce_sum / jnp.maximum(ce_w, 1e-6)
  parts = {"token_loss": token_loss, "token_weight": ce_w}
  total = token_loss
  if contrastive_weight:
    parts["contrastive_loss"] = contrastive_loss(
        outputs["audio_embed"], outputs["visual_embed"], batch["segment_mask"],
        contrastive_temperature)
    total = total + contrastive_weight * parts["contrastive_loss"]
  if mil_weight and "weak_labels" in batch:
    parts["mil_loss"] = mil_bce(outputs["mil_video_probs"], batch["weak_labels"],
                                batch["has_weak"])
    total = total + mil_weight * parts["mil_loss"]
  return total, parts
