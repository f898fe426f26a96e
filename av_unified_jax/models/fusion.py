"""Prompt encoding and the fusion encoder (docs/MODEL.md, Network 5-6).

The fusion memory is one sequence `[prompt ; a'_t ; v'_t ; s_t ; focus patches]` (the focus
frame's patches scaled by its map, or with the map embedded: `model.focus_map_embed`)
with time embeddings on the segment tokens, position embeddings on the focus patches and a
type embedding per part.
`NoPrompt` is the ablation without task prompts: the prompt enters neither the memory nor the
task-aware scale mixing.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from av_unified_jax.models import layers
from av_unified_jax.models.config import ModelConfig

# Type ids of the memory's parts.
PROMPT, AUDIO, VISUAL, GUIDED, PATCHES = range(5)


class PromptEncoder(nn.Module):
  """(prompt embeddings [B, Lp, D], prompt mask bool[B, Lp]) ->
  (memory part [B, Lp, D], its mask bool[B, Lp], pooled prompt vector [B, D])."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, emb, mask):
    cfg = self.cfg
    lp = emb.shape[1]
    if lp > cfg.max_prompt_len:
      raise ValueError(f"prompt of {lp} tokens exceeds model.max_prompt_len="
                       f"{cfg.max_prompt_len}; raise it or shorten tokens.max_prompt_len")
    pos = layers.embed_param(self, "pos_embed", (cfg.max_prompt_len, cfg.embed_dim),
                             ("length", "embed"))
    x = emb + pos[:lp].astype(emb.dtype)[None]  # [B, Lp, D]
    w = mask[..., None].astype(emb.dtype)  # [B, Lp, 1]
    pooled = (emb * w).sum(axis=1) / jnp.maximum(w.sum(axis=1), 1.0)  # [B, D]
    pooled = layers.layer_norm(cfg, "ln_pooled")(pooled)
    return x, mask, pooled


class NoPrompt(nn.Module):
  """Ablation: an empty memory part and no prompt vector."""

  cfg: ModelConfig

  def __call__(self, emb, mask):
    b, _, d = emb.shape
    return jnp.zeros((b, 0, d), emb.dtype), jnp.zeros((b, 0), bool), None


# cfg.use_task_prompts -> module class.
PROMPTS = {True: PromptEncoder, False: NoPrompt}


def focus_rows(patches, maps, focus_segment):
  """The focus segment's patch tokens and map: patches [B, T, N, D], maps float32[B, T, N],
  focus_segment int32[B] -> ([B, N, D], [B, N])."""
  idx = focus_segment.astype(jnp.int32)
  p = jnp.take_along_axis(patches, idx[:, None, None, None], axis=1)[:, 0]  # [B, N, D]
  m = jnp.take_along_axis(maps, idx[:, None, None], axis=1)[:, 0]  # [B, N]
  return p, m


def select_focus(patches, maps, focus_segment):
  """The focus segment's patch tokens weighted by its map.

  patches [B, T, N, D], maps float32[B, T, N], focus_segment int32[B] -> [B, N, D]; the
  weights are N * m (a uniform map leaves the patches unchanged).
  """
  p, m = focus_rows(patches, maps, focus_segment)
  return p * (m * m.shape[-1]).astype(p.dtype)[..., None]


class FusionEncoder(nn.Module):
  """Builds the memory and runs the fusion transformer.

  Args: prompt [B, Lp, D] + prompt_mask bool[B, Lp]; a, v, s [B, T, D]; segment_mask
    bool[B, T]; focus [B, N, D].
  Returns: memory [B, Lp + 3T + N, D] and memory_mask bool[B, Lp + 3T + N].
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, prompt, prompt_mask, a, v, s, segment_mask, focus, train: bool = False):
    cfg = self.cfg
    b, t, d = a.shape
    if t > cfg.max_segments:
      raise ValueError(f"{t} segments exceed model.max_segments={cfg.max_segments}")
    time = layers.embed_param(self, "time_embed", (cfg.max_segments, d), ("segments", "embed"))
    types = layers.embed_param(self, "type_embed", (5, d), ("types", "embed"))
    n = focus.shape[1]
    if n > cfg.max_patches:
      raise ValueError(f"{n} focus patches exceed model.max_patches={cfg.max_patches}")
    # Where each focus patch is: the decoder's AVS cells find their patch through it.
    patch_pos = layers.embed_param(self, "patch_pos_embed", (cfg.max_patches, d),
                                   ("patches", "embed"))
    time, types = time[:t].astype(a.dtype)[None], types.astype(a.dtype)
    patch_pos = patch_pos[:n].astype(a.dtype)[None]  # [1, N, D]
    parts = [prompt + types[PROMPT], a + time + types[AUDIO], v + time + types[VISUAL],
             s + time + types[GUIDED], focus + patch_pos + types[PATCHES]]
    x = jnp.concatenate(parts, axis=1)  # [B, Lp + 3T + N, D]
    mask = jnp.concatenate(
        [prompt_mask, segment_mask, segment_mask, segment_mask,
         jnp.ones(focus.shape[:2], bool)], axis=1)  # [B, Lp + 3T + N]
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not train)
    x = nn.with_logical_constraint(x, layers.ACT)
    x = layers.Stack(cfg, layers.EncoderBlock, cfg.fusion_layers,
                     (("deterministic", not train),), name="blocks")(x, mask)
    x = layers.layer_norm(cfg, "ln_out")(x)
    return nn.with_logical_constraint(x, layers.ACT), mask
