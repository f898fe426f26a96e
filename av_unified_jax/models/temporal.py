"""Multi-scale temporal perception (docs/MODEL.md, Network 3).

For each scale s (in seconds) the audio and visual segment sequences are average-pooled with
window s, refined by cross-modal blocks at that scale, repeated back to T segments, and the
scales are mixed with weights computed from the prompt (task-aware). `SingleScaleTemporal` is
the ablation without the module: one scale of 1 s and no mixing.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from av_unified_jax.models import layers
from av_unified_jax.models.config import ModelConfig

SEG = ("batch", "segments", "embed")


def pool_segments(x, mask, s: int):
  """Masked average over windows of s segments.

  x [B, T, D], mask bool[B, T] -> ([B, ceil(T/s), D], bool[B, ceil(T/s)]).
  """
  b, t, d = x.shape
  n = -(-t // s)
  pad = n * s - t
  x = jnp.pad(x * mask[..., None].astype(x.dtype), ((0, 0), (0, pad), (0, 0)))
  m = jnp.pad(mask, ((0, 0), (0, pad)))
  x = x.reshape(b, n, s, d)  # [B, n, s, D]
  m = m.reshape(b, n, s)  # [B, n, s]
  count = jnp.maximum(m.sum(-1, keepdims=True), 1).astype(x.dtype)  # [B, n, 1]
  return x.sum(axis=2) / count, m.any(axis=-1)


def unpool_segments(x, s: int, t: int):
  """[B, n, D] -> [B, t, D]: each pooled value repeated for the s segments of its window."""
  return jnp.repeat(x, s, axis=1)[:, :t]


class CrossModalBlock(nn.Module):
  """One temporal block per modality: self-attention over time, attention to the other
  modality, MLP. carry (a, v) each [B, n, D]; mask bool[B, n]. Returns ((a, v), None)."""

  cfg: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, carry, mask):
    cfg, det = self.cfg, self.deterministic
    a, v = carry
    pad = layers.padding_mask(a.shape[1], mask)  # [B, 1, n, n]
    outs = []
    for name, x, other in (("audio", a, v), ("visual", v, a)):
      h = layers.layer_norm(cfg, f"{name}_ln_self")(x)
      x = x + layers.Attention(cfg, "self", deterministic=det, name=f"{name}_self")(h, mask=pad)
      h = layers.layer_norm(cfg, f"{name}_ln_cross")(x)
      ctx = layers.layer_norm(cfg, f"{name}_ln_ctx")(other)
      x = x + layers.Attention(cfg, "cross", deterministic=det, name=f"{name}_cross")(
          h, ctx, mask=pad)
      x = x + layers.Mlp(cfg, det, name=f"{name}_mlp")(layers.layer_norm(cfg, f"{name}_ln_mlp")(x))
      outs.append(nn.with_logical_constraint(x, SEG))
    return tuple(outs), None


class ScaleStack(nn.Module):
  """`cfg.temporal_layers` cross-modal blocks at one scale (looped or scanned)."""

  cfg: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, a, v, mask):
    """a, v [B, n, D]; mask bool[B, n] -> (a, v)."""
    return layers.Stack(self.cfg, CrossModalBlock, self.cfg.temporal_layers,
                        (("deterministic", self.deterministic),), name="blocks")((a, v), mask)


class MultiScaleTemporal(nn.Module):
  """(a, v [B, T, D], segment_mask bool[B, T], prompt_vec [B, D] or None)
  -> (a' [B, T, D], v' [B, T, D], shared a' [B, T, D], shared v' [B, T, D],
  scale weights float32[B, S]); the shared pair mixes the scales with equal weights."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, a, v, segment_mask, prompt_vec, train: bool = False):
    cfg = self.cfg
    t = a.shape[1]
    outs_a, outs_v = [], []
    for s in cfg.scales:
      pa, pm = pool_segments(a, segment_mask, s)  # [B, n, D], [B, n]
      pv, _ = pool_segments(v, segment_mask, s)
      pa, pv = ScaleStack(cfg, not train, name=f"scale_{s}")(pa, pv, pm)
      outs_a.append(unpool_segments(pa, s, t))  # [B, T, D]
      outs_v.append(unpool_segments(pv, s, t))
    weights = self._scale_weights(prompt_vec, a.shape[0])  # [B, S]
    w = weights.astype(a.dtype)[:, :, None, None]  # [B, S, 1, 1]
    keep = segment_mask[..., None].astype(a.dtype)  # [B, T, 1]
    stack_a, stack_v = jnp.stack(outs_a, axis=1), jnp.stack(outs_v, axis=1)  # [B, S, T, D]
    ln_a, ln_v = layers.layer_norm(cfg, "ln_audio"), layers.layer_norm(cfg, "ln_visual")
    a_out = ln_a((stack_a * w).sum(axis=1) * keep)  # [B, T, D]
    v_out = ln_v((stack_v * w).sum(axis=1) * keep)
    a_shared = ln_a(stack_a.mean(axis=1) * keep)  # [B, T, D]
    v_shared = ln_v(stack_v.mean(axis=1) * keep)
    c = lambda x: nn.with_logical_constraint(x, SEG)
    return c(a_out), c(v_out), c(a_shared), c(v_shared), weights

  def _scale_weights(self, prompt_vec, batch):
    """Task-aware mixing weights float32[B, S] from the prompt (uniform without a prompt)."""
    num = len(self.cfg.scales)
    if prompt_vec is None:
      return jnp.full((batch, num), 1.0 / num, jnp.float32)
    logits = layers.dense(self.cfg, num, ("embed", "scales"), name="scale_logits")(prompt_vec)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


class SingleScaleTemporal(MultiScaleTemporal):
  """Ablation without multi-scale perception: one scale of 1 s (`cfg.scales == (1,)`), no
  task-aware mixing. Same inputs and outputs as `MultiScaleTemporal`."""

  def _scale_weights(self, prompt_vec, batch):
    return jnp.ones((batch, 1), jnp.float32)


# cfg.use_temporal_multiscale -> module class.
TEMPORAL = {True: MultiScaleTemporal, False: SingleScaleTemporal}
