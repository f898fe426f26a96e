"""Multiple-instance head for weak (video-level) LLP labels (docs/MODEL.md, Tokens: AVVP).

HAN-style attentive pooling: per segment and modality, class probabilities p[t, m, c]; a
softmax over segments and one over modalities weight them into the video probability
P[c] = sum_t sum_m p[t, m, c] * w_time[t, m, c] * w_mod[t, m, c].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from av_unified_jax.models import layers
from av_unified_jax.models.config import ModelConfig


class MILHead(nn.Module):
  """(a' [B, T, D], v' [B, T, D], segment_mask bool[B, T]) ->
  (frame probs float32[B, T, 2, C] (audio, visual), video probs float32[B, C])."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, a, v, segment_mask):
    cfg = self.cfg
    c = cfg.num_mil_classes
    x = jnp.stack([a, v], axis=2)  # [B, T, 2, D]
    head = lambda name: layers.dense(cfg, c, ("embed", "classes"), name=name)(x).astype(
        jnp.float32)  # [B, T, 2, C]
    valid = segment_mask[:, :, None, None]  # [B, T, 1, 1]
    frame_probs = jax.nn.sigmoid(head("frame_logits")) * valid
    time_logits = jnp.where(valid, head("time_attn"), layers.NEG_INF)
    time_w = jax.nn.softmax(time_logits, axis=1)  # [B, T, 2, C]
    mod_w = jax.nn.softmax(head("modality_attn"), axis=2)  # [B, T, 2, C]
    video_probs = (frame_probs * time_w * mod_w).sum(axis=(1, 2))  # [B, C]
    return frame_probs, jnp.clip(video_probs, 0.0, 1.0)
