"""Cross-modal guidance spatial perception (docs/MODEL.md, Network 4).

Per segment, the temporally refined audio vector a'_t queries the frame's patch tokens P_t:
the attention over patches (averaged over heads) is the sound-source map m_t, and the
attended values give the audio-guided visual vector s_t. Projections of a'_t and s_t feed the
audio-visual contrastive loss (`losses.contrastive_loss`). `UniformSpatial` is the ablation
without guidance: a uniform map and the mean patch token.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from av_unified_jax.models import layers
from av_unified_jax.models.config import ModelConfig

SEG = ("batch", "segments", "embed")


class _SpatialBase(nn.Module):
  cfg: ModelConfig

  def _embeddings(self, a, s):
    """Projection heads for the contrastive loss: ([B, T, D], [B, T, D]) in float32."""
    cfg = self.cfg
    audio = layers.dense(cfg, cfg.embed_dim, ("embed", "mlp"), name="audio_proj")(a)
    visual = layers.dense(cfg, cfg.embed_dim, ("embed", "mlp"), name="visual_proj")(s)
    return audio.astype(jnp.float32), visual.astype(jnp.float32)


class SpatialGuidance(_SpatialBase):
  """(a' [B, T, D], patches P [B, T, N, D]) -> dict:
  `maps` float32[B, T, N] (sums to 1 over N), `guided` s_t [B, T, D],
  `audio_embed` / `visual_embed` float32[B, T, D]."""

  @nn.compact
  def __call__(self, a, patches, train: bool = False):
    cfg = self.cfg
    b, t, n, d = patches.shape
    heads = (cfg.num_heads, cfg.head_dim)
    names = ("embed", "heads", "kv")
    q = layers.dense(cfg, heads, names, name="query")(layers.layer_norm(cfg, "ln_query")(a))
    p = layers.layer_norm(cfg, "ln_patches")(patches)
    k = layers.dense(cfg, heads, names, name="key")(p)  # [B, T, N, H, Dh]
    v = layers.dense(cfg, heads, names, name="value")(p)  # [B, T, N, H, Dh]
    q = q.reshape(b * t, 1, *heads)  # [B*T, 1, H, Dh]
    k = k.reshape(b * t, n, *heads)  # [B*T, N, H, Dh]
    v = v.reshape(b * t, n, *heads)
    out, probs = layers.attend(q, k, v, None, cfg.compute_dtype)  # probs [B*T, H, 1, N]
    maps = probs.mean(axis=(1, 2)).reshape(b, t, n)  # [B, T, N]
    out = out.reshape(b, t, *heads)  # [B, T, H, Dh]
    s = layers.dense(cfg, d, ("heads", "kv", "embed"), in_dims=2, name="out")(out)
    s = s + layers.Mlp(cfg, not train, name="mlp")(layers.layer_norm(cfg, "ln_mlp")(s))
    s = nn.with_logical_constraint(layers.layer_norm(cfg, "ln_out")(s), SEG)  # [B, T, D]
    audio_embed, visual_embed = self._embeddings(a, s)
    return {"maps": maps, "guided": s, "audio_embed": audio_embed, "visual_embed": visual_embed}


class UniformSpatial(_SpatialBase):
  """Ablation without audio guidance: uniform maps and s_t = mean patch token."""

  @nn.compact
  def __call__(self, a, patches, train: bool = False):
    b, t, n, _ = patches.shape
    maps = jnp.full((b, t, n), 1.0 / n, jnp.float32)
    s = nn.with_logical_constraint(patches.mean(axis=2), SEG)  # [B, T, D]
    audio_embed, visual_embed = self._embeddings(a, s)
    return {"maps": maps, "guided": s, "audio_embed": audio_embed, "visual_embed": visual_embed}


# cfg.use_spatial_guidance -> module class.
SPATIAL = {True: SpatialGuidance, False: UniformSpatial}
