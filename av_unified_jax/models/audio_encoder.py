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
    x = layers.dense(cfg, cfg.embed_dim, ("channels", "embed"), name="patch_embed")(x)
    num = x.shape[1]
    pos = layers.embed_param(self, "pos_embed", (num, cfg.embed_dim), ("patches", "embed"))
    x = x + pos.astype(x.dtype)[None]  # [B*T, Na, D]
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not train)
    x = nn.with_logical_constraint(x, layers.ACT)
    x = layers.Stack(cfg, layers.EncoderBlock, cfg.audio_layers,
                     (("deterministic", not train),), name="blocks")(x)
    x = layers.layer_norm(cfg, "ln_out")(x)
    tokens = x.reshape(b, t, num, cfg.embed_dim)  # [B, T, Na, D]
    tokens = nn.with_logical_constraint(tokens, ("batch", "segments", "patches", "embed"))
    pooled = tokens.mean(axis=2)  # [B, T, D]
    return tokens, nn.with_logical_constraint(pooled, ("batch", "segments", "embed"))
