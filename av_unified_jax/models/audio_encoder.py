"""Audio encoder: patches of each second's log-mel spectrogram through transformer blocks."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from av_unified_jax.models import layers
from av_unified_jax.models.config import ModelConfig


def normalize_log_mel(log_mel):
  """Per-segment standardization over [F, M], so the scale of the log-mel does not matter.

  float[B, T, F, M] -> float32[B, T, F, M]; an all-constant (padded) segment maps to zeros.
  """
  x = log_mel.astype(jnp.float32)
  mean = x.mean(axis=(-2, -1), keepdims=True)
  std = x.std(axis=(-2, -1), keepdims=True)
  return (x - mean) / (std + 1e-5)


def patchify_log_mel(x, pf: int, pm: int):
  """float[N, F, M] -> float[N, (F/pf)*(M/pm), pf*pm], patches in row-major (frame, bin) order."""
  n, f, m = x.shape
  x = x.reshape(n, f // pf, pf, m // pm, pm)  # [N, F/pf, pf, M/pm, pm]
  x = x.transpose(0, 1, 3, 2, 4)  # [N, F/pf, M/pm, pf, pm]
  return x.reshape(n, (f // pf) * (m // pm), pf * pm)


class AudioEncoder(nn.Module):
  """log_mel float[B, T, F, M] -> (tokens [B, T, Na, D], pooled a_t [B, T, D])."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, log_mel, train: bool = False):
    cfg = self.cfg
    b, t, f, m = log_mel.shape
    if (f, m) != (cfg.mel_frames, cfg.mel_bins):
      raise ValueError(
          f"log_mel has [F, M] = [{f}, {m}] per segment but the model expects "
          f"[{cfg.mel_frames}, {cfg.mel_bins}] (model.mel_frames, model.mel_bins); "
          "crop or pad the spectrogram in the input pipeline, or change the model config")
    x = normalize_log_mel(log_mel).reshape(b * t, f, m)  # [B*T, F, M]
    x = patchify_log_mel(x, cfg.audio_patch_frames, cfg.audio_patch_bins)  # [B*T, Na, pf*pm]
    return layers.encode_patches(self, cfg, x, b, t, cfg.audio_layers, pos_rows=x.shape[1],
                                 train=train)
