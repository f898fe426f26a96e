"""Visual encoder: a ViT over each segment's frame."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from av_unified_jax.models import layers
from av_unified_jax.models.config import ModelConfig

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def normalize_frames(frames):
  """uint8[..., 3] in [0, 255] -> float32 standardized with the ImageNet mean and std."""
  x = frames.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(IMAGE_MEAN)) / jnp.asarray(IMAGE_STD)


def patchify_frames(x, p: int):
  """float[N, H, W, C] -> float[N, (H/p)*(W/p), p*p*C], patches in row-major order."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // p, p, w // p, p, c)  # [N, h, p, w, p, C]
  x = x.transpose(0, 1, 3, 2, 4, 5)  # [N, h, w, p, p, C]
  return x.reshape(n, (h // p) * (w // p), p * p * c)


class VisualEncoder(nn.Module):
  """frames uint8[B, T, H, W, 3] -> (patch tokens P_t [B, T, N, D], pooled v_t [B, T, D]).

  N = (H / patch_size) * (W / patch_size); the patch position table has `cfg.max_patches` rows.
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, frames, train: bool = False):
    cfg = self.cfg
    b, t, h, w, c = frames.shape
    p = cfg.patch_size
    if h % p or w % p or c != 3:
      raise ValueError(f"frames of shape {frames.shape}: H and W must be multiples of "
                       f"model.patch_size={p} and there must be 3 channels")
    num = (h // p) * (w // p)
    if num > cfg.max_patches:
      raise ValueError(f"{num} patches per frame exceed model.max_patches={cfg.max_patches}; "
                       "raise it or use smaller frames")
    x = normalize_frames(frames).reshape(b * t, h, w, c)  # [B*T, H, W, 3]
    x = patchify_frames(x, p)  # [B*T, N, p*p*3]
    return layers.encode_patches(self, cfg, x, b, t, cfg.visual_layers,
                                 pos_rows=cfg.max_patches, train=train)
