"""AV-Unified in PyTorch: the model exported by `python main.py --mode=export`.

This file is self-contained: it imports only torch, numpy, safetensors and the standard
library, so it runs where JAX is not installed. It mirrors the Flax model module by module
(same parameter names, LayerNorm epsilon from the config, tanh-approximate gelu, attention
masks filled with -1e9) so the two give the same numbers.

    model = AVUnified.from_pretrained("export_dir")          # float32, eval mode
    out = model(batch)                  # logits float32[B, Lt, V], loc_maps float32[B, T, h, w]
    tokens = model.generate(batch, "ave")                     # int64[B, L], constrained greedy
    mask_logits = model.mask_logits_from_tokens(avs_tokens)   # float32[B, S, S]

A batch is a dict of numpy arrays or tensors: frames uint8[B, T, H, W, 3], log_mel
float[B, T, F, M], segment_mask bool[B, T], prompt_tokens int[B, Lp] (0 = <pad>), and for
`forward` target_tokens int[B, Lt]; optional focus_segment int[B] (default 0).
"""

from __future__ import annotations

import json
import math
import os
import re
import types

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

NEG_INF = -1e9
PAD = 0
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
NUM_TYPES = 5  # Memory parts: prompt, audio, visual, guided, focus patches.
FORMAT = "av_unified_jax.torch_export/1"


def model_config(values: dict) -> types.SimpleNamespace:
  """The model section of config.json as attributes (plus head_dim and scales)."""
  cfg = types.SimpleNamespace(**{"mask_task_token": -1, "mask_grid": 8,
                                 "focus_map_embed": False, **values})
  cfg.head_dim = cfg.embed_dim // cfg.num_heads
  cfg.scales = tuple(cfg.temporal_scales) if cfg.use_temporal_multiscale else (1,)
  return cfg


# ----------------------------------------------------------------------------- layers
def attend(q, k, v, mask):
  """q [B, Lq, H, Dh], k and v [B, Lk, H, Dh]; mask bool broadcastable to [B, H, Lq, Lk]
  (True = may attend) or None. Returns ([B, Lq, H, Dh], float32 probs [B, H, Lq, Lk])."""
  q = q * q.shape[-1] ** -0.5
  logits = torch.einsum("bqhd,bkhd->bhqk", q, k).float()  # [B, H, Lq, Lk]
  if mask is not None:
    logits = logits.masked_fill(~mask, NEG_INF)
  probs = torch.softmax(logits, dim=-1)
  return torch.einsum("bhqk,bkhd->bqhd", probs.to(v.dtype), v), probs  # [B, Lq, H, Dh]


def layer_norm(cfg):
  return nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)


class Attention(nn.Module):
  """Multi-head attention with query/key/value/out projections (heads flattened)."""

  def __init__(self, cfg):
    super().__init__()
    d, inner = cfg.embed_dim, cfg.num_heads * cfg.head_dim
    self.num_heads = cfg.num_heads
    self.query, self.key, self.value = nn.Linear(d, inner), nn.Linear(d, inner), nn.Linear(d, inner)
    self.out = nn.Linear(inner, d)

  def heads(self, proj, x):
    return proj(x).unflatten(-1, (self.num_heads, -1))  # [..., L, H, Dh]

  def project_kv(self, context):
    """context [B, Lk, D] -> (k, v) each [B, Lk, H, Dh]."""
    return self.heads(self.key, context), self.heads(self.value, context)

  def forward(self, x, k, v, mask=None):
    """x [B, Lq, D] attends to projected k, v -> [B, Lq, D]."""
    out, _ = attend(self.heads(self.query, x), k, v, mask)
    return self.out(out.flatten(-2))


class Mlp(nn.Module):
  def __init__(self, cfg):
    super().__init__()
    self.wi, self.wo = nn.Linear(cfg.embed_dim, cfg.mlp_dim), nn.Linear(cfg.mlp_dim, cfg.embed_dim)

  def forward(self, x):
    return self.wo(F.gelu(self.wi(x), approximate="tanh"))  # Flax's gelu default is tanh.


class EncoderBlock(nn.Module):
  """Pre-LayerNorm self-attention + MLP. x [B, L, D], key_mask bool[B, L] or None."""

  def __init__(self, cfg):
    super().__init__()
    self.ln_attn, self.attn = layer_norm(cfg), Attention(cfg)
    self.ln_mlp, self.mlp = layer_norm(cfg), Mlp(cfg)

  def forward(self, x, key_mask=None):
    mask = None if key_mask is None else key_mask[:, None, None, :]  # [B, 1, 1, L]
    h = self.ln_attn(x)
    x = x + self.attn(h, *self.attn.project_kv(h), mask)
    return x + self.mlp(self.ln_mlp(x))


class DecoderBlock(nn.Module):
  """Causal self-attention, cross-attention to the memory, MLP (pre-LayerNorm).

  `cache` (a dict, or None without caching) holds this block's keys/values of earlier tokens
  and the memory's projected keys/values."""

  def __init__(self, cfg):
    super().__init__()
    self.ln_self, self.self_attn = layer_norm(cfg), Attention(cfg)
    self.ln_cross, self.cross_attn = layer_norm(cfg), Attention(cfg)
    self.ln_mlp, self.mlp = layer_norm(cfg), Mlp(cfg)

  def forward(self, x, memory, memory_mask, start: int = 0, cache=None):
    """x [B, L, D] at positions start.. ; memory [B, S, D]; memory_mask bool[B, S]."""
    h = self.ln_self(x)
    k, v = self.self_attn.project_kv(h)
    if cache is not None:
      if "k" in cache:
        k, v = torch.cat([cache["k"], k], dim=1), torch.cat([cache["v"], v], dim=1)
      cache["k"], cache["v"] = k, v
    q_pos = start + torch.arange(x.shape[1])  # [Lq]
    causal = torch.arange(k.shape[1])[None, :] <= q_pos[:, None]  # [Lq, Lk]
    x = x + self.self_attn(h, k, v, causal[None, None])
    h = self.ln_cross(x)
    if cache is not None and "cross" in cache:
      ck, cv = cache["cross"]
    else:
      ck, cv = self.cross_attn.project_kv(memory)
      if cache is not None:
        cache["cross"] = (ck, cv)
    x = x + self.cross_attn(h, ck, cv, memory_mask[:, None, None, :])
    return x + self.mlp(self.ln_mlp(x))


# ----------------------------------------------------------------------------- encoders
class AudioEncoder(nn.Module):
  """log_mel float[B, T, F, M] -> (tokens [B, T, Na, D], pooled [B, T, D])."""

  def __init__(self, cfg):
    super().__init__()
    self.pf, self.pm = cfg.audio_patch_frames, cfg.audio_patch_bins
    num = (cfg.mel_frames // self.pf) * (cfg.mel_bins // self.pm)
    self.patch_embed = nn.Linear(self.pf * self.pm, cfg.embed_dim)
    self.pos_embed = nn.Parameter(torch.zeros(num, cfg.embed_dim))
    self.blocks = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.audio_layers))
    self.ln_out = layer_norm(cfg)

  def forward(self, log_mel):
    b, t, f, m = log_mel.shape
    x = log_mel.float()
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True, correction=0)
    x = ((x - mean) / (std + 1e-5)).reshape(b * t, f, m)  # [B*T, F, M]
    x = x.reshape(b * t, f // self.pf, self.pf, m // self.pm, self.pm)  # [N, f, pf, m, pm]
    x = x.permute(0, 1, 3, 2, 4).reshape(b * t, -1, self.pf * self.pm)  # [N, Na, pf*pm]
    x = self.patch_embed(x.to(self.pos_embed.dtype)) + self.pos_embed[None]
    for block in self.blocks:
      x = block(x)
    tokens = self.ln_out(x).reshape(b, t, x.shape[1], -1)  # [B, T, Na, D]
    return tokens, tokens.mean(dim=2)


class VisualEncoder(nn.Module):
  """frames uint8[B, T, H, W, 3] -> (patch tokens [B, T, N, D], pooled [B, T, D])."""

  def __init__(self, cfg):
    super().__init__()
    self.p = cfg.patch_size
    self.patch_embed = nn.Linear(self.p * self.p * 3, cfg.embed_dim)
    self.pos_embed = nn.Parameter(torch.zeros(cfg.max_patches, cfg.embed_dim))
    self.blocks = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.visual_layers))
    self.ln_out = layer_norm(cfg)

  def forward(self, frames):
    b, t, h, w, c = frames.shape
    p = self.p
    x = frames.float() / 255.0
    x = (x - x.new_tensor(IMAGE_MEAN)) / x.new_tensor(IMAGE_STD)
    x = x.reshape(b * t, h // p, p, w // p, p, c)  # [N, h, p, w, p, C]
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b * t, -1, p * p * c)  # [N, n, p*p*C]
    num = x.shape[1]
    x = self.patch_embed(x.to(self.pos_embed.dtype)) + self.pos_embed[:num][None]
    for block in self.blocks:
      x = block(x)
    tokens = self.ln_out(x).reshape(b, t, num, -1)  # [B, T, N, D]
    return tokens, tokens.mean(dim=2)


class PromptEncoder(nn.Module):
  """(embeddings [B, Lp, D], mask bool[B, Lp]) -> (memory part, its mask, pooled [B, D])."""

  def __init__(self, cfg):
    super().__init__()
    self.pos_embed = nn.Parameter(torch.zeros(cfg.max_prompt_len, cfg.embed_dim))
    self.ln_pooled = layer_norm(cfg)

  def forward(self, emb, mask):
    x = emb + self.pos_embed[:emb.shape[1]][None]
    w = mask[..., None].to(emb.dtype)  # [B, Lp, 1]
    pooled = (emb * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)  # [B, D]
    return x, mask, self.ln_pooled(pooled)


# ----------------------------------------------------------------------------- perception
def pool_segments(x, mask, s: int):
  """Masked mean over windows of s segments: [B, T, D], bool[B, T] -> [B, n, D], bool[B, n]."""
  b, t, d = x.shape
  n = -(-t // s)
  x = F.pad(x * mask[..., None].to(x.dtype), (0, 0, 0, n * s - t)).reshape(b, n, s, d)
  m = F.pad(mask, (0, n * s - t)).reshape(b, n, s)
  count = m.sum(dim=-1, keepdim=True).clamp(min=1).to(x.dtype)  # [B, n, 1]
  return x.sum(dim=2) / count, m.any(dim=-1)


class CrossModalBlock(nn.Module):
  """Per modality: self-attention over time, attention to the other modality, MLP."""

  def __init__(self, cfg):
    super().__init__()
    for name in ("audio", "visual"):
      for part in ("ln_self", "ln_cross", "ln_ctx", "ln_mlp"):
        setattr(self, f"{name}_{part}", layer_norm(cfg))
      setattr(self, f"{name}_self", Attention(cfg))
      setattr(self, f"{name}_cross", Attention(cfg))
      setattr(self, f"{name}_mlp", Mlp(cfg))

  def forward(self, a, v, mask):
    pad = mask[:, None, None, :]  # [B, 1, 1, n]
    outs = []
    for name, x, other in (("audio", a, v), ("visual", v, a)):
      part = lambda p, name=name: getattr(self, f"{name}_{p}")
      h = part("ln_self")(x)
      x = x + part("self")(h, *part("self").project_kv(h), pad)
      h, ctx = part("ln_cross")(x), part("ln_ctx")(other)
      x = x + part("cross")(h, *part("cross").project_kv(ctx), pad)
      outs.append(x + part("mlp")(part("ln_mlp")(x)))
    return outs


class ScaleStack(nn.Module):
  def __init__(self, cfg):
    super().__init__()
    self.blocks = nn.ModuleList(CrossModalBlock(cfg) for _ in range(cfg.temporal_layers))

  def forward(self, a, v, mask):
    for block in self.blocks:
      a, v = block(a, v, mask)
    return a, v


class Temporal(nn.Module):
  """Multi-scale temporal perception (or its single-scale ablation)."""

  def __init__(self, cfg):
    super().__init__()
    self.scales, self.multiscale = cfg.scales, cfg.use_temporal_multiscale
    for s in self.scales:
      setattr(self, f"scale_{s}", ScaleStack(cfg))
    if self.multiscale and cfg.use_task_prompts:
      self.scale_logits = nn.Linear(cfg.embed_dim, len(self.scales))
    self.ln_audio, self.ln_visual = layer_norm(cfg), layer_norm(cfg)

  def forward(self, a, v, segment_mask, prompt_vec):
    """a, v [B, T, D] -> (a', v', shared a', shared v' [B, T, D], scale weights [B, S]);
    the shared pair (equal scale weights) feeds the spatial module and the MIL head."""
    b, t, _ = a.shape
    outs_a, outs_v = [], []
    for s in self.scales:
      pa, pm = pool_segments(a, segment_mask, s)
      pv, _ = pool_segments(v, segment_mask, s)
      pa, pv = getattr(self, f"scale_{s}")(pa, pv, pm)
      outs_a.append(pa.repeat_interleave(s, dim=1)[:, :t])  # [B, T, D]
      outs_v.append(pv.repeat_interleave(s, dim=1)[:, :t])
    num = len(self.scales)
    if not self.multiscale:
      weights = torch.ones(b, 1)
    elif prompt_vec is None:
      weights = torch.full((b, num), 1.0 / num)
    else:
      weights = torch.softmax(self.scale_logits(prompt_vec).float(), dim=-1)  # [B, S]
    w = weights.to(a.dtype)[:, :, None, None]  # [B, S, 1, 1]
    keep = segment_mask[..., None].to(a.dtype)  # [B, T, 1]
    stack_a, stack_v = torch.stack(outs_a, dim=1), torch.stack(outs_v, dim=1)  # [B, S, T, D]
    a_out = self.ln_audio((stack_a * w).sum(dim=1) * keep)
    v_out = self.ln_visual((stack_v * w).sum(dim=1) * keep)
    a_shared = self.ln_audio(stack_a.mean(dim=1) * keep)
    v_shared = self.ln_visual(stack_v.mean(dim=1) * keep)
    return a_out, v_out, a_shared, v_shared, weights


class Spatial(nn.Module):
  """Cross-modal guidance spatial perception (or, without guidance, uniform maps)."""

  def __init__(self, cfg):
    super().__init__()
    d, self.guided = cfg.embed_dim, cfg.use_spatial_guidance
    if self.guided:
      self.ln_query, self.ln_patches = layer_norm(cfg), layer_norm(cfg)
      self.attn_heads = cfg.num_heads
      inner = cfg.num_heads * cfg.head_dim
      self.query, self.key = nn.Linear(d, inner), nn.Linear(d, inner)
      self.value = nn.Linear(d, inner)
      self.out = nn.Linear(inner, d)
      self.ln_mlp, self.mlp, self.ln_out = layer_norm(cfg), Mlp(cfg), layer_norm(cfg)
    self.audio_proj, self.visual_proj = nn.Linear(d, d), nn.Linear(d, d)

  def forward(self, a, patches):
    """a' [B, T, D], patches [B, T, N, D] -> dict maps [B, T, N], guided, embeddings."""
    b, t, n, d = patches.shape
    if self.guided:
      h = self.attn_heads
      q = self.query(self.ln_query(a)).reshape(b * t, 1, h, -1)  # [B*T, 1, H, Dh]
      p = self.ln_patches(patches)
      k = self.key(p).reshape(b * t, n, h, -1)  # [B*T, N, H, Dh]
      v = self.value(p).reshape(b * t, n, h, -1)
      out, probs = attend(q, k, v, None)  # probs [B*T, H, 1, N]
      maps = probs.mean(dim=(1, 2)).reshape(b, t, n)
      s = self.out(out.reshape(b, t, -1))  # [B, T, D]
      s = self.ln_out(s + self.mlp(self.ln_mlp(s)))
    else:
      maps = torch.full((b, t, n), 1.0 / n)
      s = patches.mean(dim=2)
    return {"maps": maps, "guided": s, "audio_embed": self.audio_proj(a).float(),
            "visual_embed": self.visual_proj(s).float()}


class MILHead(nn.Module):
  """(a', v' [B, T, D], segment_mask) -> (frame probs [B, T, 2, C], video probs [B, C])."""

  def __init__(self, cfg):
    super().__init__()
    d, c = cfg.embed_dim, cfg.num_mil_classes
    self.frame_logits, self.time_attn = nn.Linear(d, c), nn.Linear(d, c)
    self.modality_attn = nn.Linear(d, c)

  def forward(self, a, v, segment_mask):
    x = torch.stack([a, v], dim=2)  # [B, T, 2, D]
    valid = segment_mask[:, :, None, None]  # [B, T, 1, 1]
    frame_probs = torch.sigmoid(self.frame_logits(x).float()) * valid
    time_w = torch.softmax(self.time_attn(x).float().masked_fill(~valid, NEG_INF), dim=1)
    mod_w = torch.softmax(self.modality_attn(x).float(), dim=2)
    video = (frame_probs * time_w * mod_w).sum(dim=(1, 2)).clamp(0.0, 1.0)  # [B, C]
    return frame_probs, video


class Fusion(nn.Module):
  """[prompt ; a' ; v' ; s ; focus patches] + time/type/patch position embeddings -> memory."""

  def __init__(self, cfg):
    super().__init__()
    self.time_embed = nn.Parameter(torch.zeros(cfg.max_segments, cfg.embed_dim))
    self.type_embed = nn.Parameter(torch.zeros(NUM_TYPES, cfg.embed_dim))
    self.patch_pos_embed = nn.Parameter(torch.zeros(cfg.max_patches, cfg.embed_dim))
    self.blocks = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.fusion_layers))
    self.ln_out = layer_norm(cfg)

  def forward(self, prompt, prompt_mask, a, v, s, segment_mask, focus):
    t = a.shape[1]
    time, types = self.time_embed[:t][None], self.type_embed
    x = torch.cat([prompt + types[0], a + time + types[1], v + time + types[2],
                   s + time + types[3],
                   focus + self.patch_pos_embed[:focus.shape[1]][None] + types[4]],
                  dim=1)  # [B, Lp + 3T + N, D]
    ones = torch.ones(focus.shape[:2], dtype=torch.bool)
    mask = torch.cat([prompt_mask, segment_mask, segment_mask, segment_mask, ones], dim=1)
    for block in self.blocks:
      x = block(x, mask)
    return self.ln_out(x), mask


class Decoder(nn.Module):
  def __init__(self, cfg):
    super().__init__()
    self.pos_embed = nn.Parameter(torch.zeros(cfg.max_decode_len, cfg.embed_dim))
    self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.decoder_layers))
    self.ln_out = layer_norm(cfg)

  def forward(self, x, memory, memory_mask, start: int = 0, caches=None, queries=None,
              query_rows=None):
    """x [B, L, D] (embedded tokens at positions start..start+L) -> [B, L, D]; `queries`
    [B, Q, D] (optional) replace the embeddings at positions 0 .. Q-1 of `query_rows`."""
    if queries is not None and start < queries.shape[1]:
      q = queries[:, start:start + x.shape[1]]
      head = torch.where(query_rows[:, None, None], q.to(x.dtype), x[:, :q.shape[1]])
      x = torch.cat([head, x[:, q.shape[1]:]], dim=1)
    x = x + self.pos_embed[start:start + x.shape[1]][None]
    for i, block in enumerate(self.blocks):
      x = block(x, memory, memory_mask, start, None if caches is None else caches[i])
    return self.ln_out(x)


class TokenEmbed(nn.Module):
  """The token table [V, D]: embedding (scaled by sqrt(D)) and the tied output projection."""

  def __init__(self, cfg):
    super().__init__()
    self.weight = nn.Parameter(torch.zeros(cfg.vocab_size, cfg.embed_dim))
    self.scale = cfg.embed_dim ** 0.5

  def forward(self, tokens):
    return self.weight[tokens] * self.scale

  def attend(self, x):
    return x.float() @ self.weight.float().T  # [B, L, V]


# ----------------------------------------------------------------------------- mask tokenizer
class SameConv2d(nn.Conv2d):
  """Conv2d with XLA's "SAME" padding (extra row/column at the end when the total is odd)."""

  def forward(self, x):
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(self.kernel_size),
                          reversed(self.stride), strict=True):
      total = max((-(-size // s) - 1) * s + k - size, 0)
      pads += [total // 2, total - total // 2]
    return super().forward(F.pad(x, pads))


class ResBlock(nn.Module):
  def __init__(self, width: int, kernel: int = 3):
    super().__init__()
    self.conv1, self.conv2 = SameConv2d(width, width, kernel), SameConv2d(width, width, 1)

  def forward(self, x):
    return x + self.conv2(F.relu(self.conv1(F.relu(x))))


def depth_to_space(x, r: int = 2):
  """[B, r*r*C, h, w] with channels ordered (r_row, r_col, C) -> [B, C, r*h, r*w]."""
  b, c, h, w = x.shape
  x = x.reshape(b, r, r, c // (r * r), h, w)  # [B, r, r, C, h, w]
  return x.permute(0, 3, 4, 1, 5, 2).reshape(b, c // (r * r), h * r, w * r)


class Upsample(nn.Module):
  def __init__(self, width_in: int, width_out: int, kernel: int = 3):
    super().__init__()
    self.conv = SameConv2d(width_in, 4 * width_out, kernel)

  def forward(self, x):
    return depth_to_space(self.conv(x), 2)


class MaskEncoder(nn.Module):
  def __init__(self, mcfg):
    super().__init__()
    widths = list(mcfg["channels"])
    for i, width in enumerate(widths):
      setattr(self, f"down{i}", SameConv2d(1 if i == 0 else widths[i - 1], width, 4, stride=2))
    self.num_down, self.num_res = len(widths), mcfg["num_res_blocks"]
    for i in range(self.num_res):
      setattr(self, f"res{i}", ResBlock(widths[-1]))
    self.to_code = SameConv2d(widths[-1], mcfg["code_dim"], 1)

  def forward(self, masks):
    """float[B, S, S] in {0, 1} -> float32[B, code_dim, g, g]."""
    x = (masks.float()[:, None] * 2.0 - 1.0).to(self.to_code.weight.dtype)  # [B, 1, S, S]
    for i in range(self.num_down):
      x = F.relu(getattr(self, f"down{i}")(x))
    for i in range(self.num_res):
      x = getattr(self, f"res{i}")(x)
    return self.to_code(F.relu(x))


class MaskDecoder(nn.Module):
  def __init__(self, mcfg):
    super().__init__()
    widths, k = list(mcfg["channels"]), mcfg.get("decoder_kernel", 3)
    self.from_code = SameConv2d(mcfg["code_dim"], widths[-1], k)
    self.num_res = mcfg["num_res_blocks"]
    for i in range(self.num_res):
      setattr(self, f"res{i}", ResBlock(widths[-1], k))
    ups = list(reversed(widths[:-1]))
    self.num_up = len(ups)
    for i, width in enumerate(ups):
      setattr(self, f"up{i}", Upsample(widths[-1] if i == 0 else ups[i - 1], width, k))
    self.to_logits = Upsample(ups[-1] if ups else widths[-1], 1, k)

  def forward(self, z):
    """float[B, code_dim, g, g] -> mask logits float32[B, S, S]."""
    x = self.from_code(z)
    for i in range(self.num_res):
      x = getattr(self, f"res{i}")(x)
    for i in range(self.num_up):
      x = getattr(self, f"up{i}")(F.relu(x))
    return self.to_logits(F.relu(x))[:, 0]


class MaskTokenizer(nn.Module):
  """VQ-VAE for binary masks: masks <-> grids of codebook indices."""

  def __init__(self, mcfg):
    super().__init__()
    self.mcfg = dict(mcfg)
    self.encoder, self.decoder = MaskEncoder(mcfg), MaskDecoder(mcfg)
    self.codebook = nn.Parameter(torch.zeros(mcfg["codebook_size"], mcfg["code_dim"]))

  def encode(self, masks):
    """float[B, S, S] in {0, 1} -> int64[B, g, g] nearest codes (the JAX side's code search,
    `encode_masks`, is not exported: prediction only decodes)."""
    z = self.encoder(masks).permute(0, 2, 3, 1).float()  # [B, g, g, D]
    z = z * torch.rsqrt((z * z).sum(-1, keepdim=True) + 1e-6)  # unit length, like the codebook
    flat = z.reshape(-1, z.shape[-1])  # [N, D]
    e = self.codebook.float()
    dist = ((flat * flat).sum(-1, keepdim=True) - 2.0 * flat @ e.T
            + (e * e).sum(-1)[None, :])  # [N, K]
    return dist.argmin(dim=-1).reshape(z.shape[:-1])

  def decode(self, codes):
    """int[B, g, g] codes in [0, K) -> mask logits float32[B, S, S]."""
    g = self.mcfg["grid"]
    codes = _tensor(codes).long()
    if codes.ndim != 3 or tuple(codes.shape[1:]) != (g, g):
      raise ValueError(f"mask codes must be [B, {g}, {g}], got {tuple(codes.shape)}")
    z = self.codebook[codes].permute(0, 3, 1, 2)  # [B, D, g, g]
    return self.decoder(z)


# ----------------------------------------------------------------------------- vocabulary
class Vocabulary:
  """Token ids of the export's layout.json / text_tokenizer.json / tokenizer.json: prompts
  for every task and readable token names (the same ids as the JAX tokenizer)."""

  PIECE = r" ?\w+| ?[^\w\s]|\s"

  def __init__(self, layout: dict, pieces, config: dict):
    self.ranges = {k: tuple(v) for k, v in layout["ranges"].items()}
    self.tasks, self.pieces = tuple(layout["tasks"]), list(pieces)
    self.ids = {p: 256 + i for i, p in enumerate(self.pieces)}
    self.prompts, self.mask_grid = config["prompts"], tuple(config["mask_grid"])
    self.label_sets = config["label_sets"]
    self._split = re.compile(self.PIECE).findall

  @classmethod
  def load(cls, directory):
    def read(name):
      with open(os.path.join(directory, name), encoding="utf-8") as f:
        return json.load(f)
    return cls(read("layout.json"), read("text_tokenizer.json")["pieces"], read("tokenizer.json"))

  def encode_text(self, text: str) -> list:
    """str -> global token ids (word pieces, else characters, else UTF-8 bytes)."""
    out = []
    for piece in self._split(text):
      if piece in self.ids:
        out.append(self.ids[piece])
      elif piece[0] == " " and len(piece) > 1 and piece[1:] in self.ids:
        out += [self.ids[" "], self.ids[piece[1:]]]
      else:
        for ch in piece:
          out += [self.ids[ch]] if ch in self.ids else list(ch.encode("utf-8"))
    return [self.ranges["text"][0] + i for i in out]

  def prompt(self, task: str, question: str | None = None, second: int | None = None,
             weak: bool = False) -> list:
    """Prompt ids: <task> + prompt text (AVQA: the question; AVS: + <t_second>)."""
    if task not in self.tasks:
      raise ValueError(f"unknown task {task!r}; this export has tasks {self.tasks}")
    if (question is None) == (task == "avqa") or (second is None) == (task == "avs"):
      raise ValueError("prompt: give question= for 'avqa' only and second= for 'avs' only")
    text = question if task == "avqa" else self.prompts["avvp_weak" if weak else task]
    ids = [self.ranges["task"][0] + self.tasks.index(task)] + self.encode_text(text)
    return ids + ([self.ranges["time"][0] + int(second)] if task == "avs" else [])

  def describe(self, token_id: int) -> str:
    """Readable token: '<eos>', '<t_3>', '<code_9>' or a text piece."""
    token_id = int(token_id)
    specials = ("<pad>", "<bos>", "<eos>", "<unk>", "<sep>", "<none>", "<audio>", "<visual>")
    for kind, (start, stop) in self.ranges.items():
      if start <= token_id < stop:
        i = token_id - start
        if kind == "special":
          return specials[i]
        if kind == "task":
          return f"<{self.tasks[i]}>"
        if kind == "text":
          return self.pieces[i - 256] if i >= 256 else f"<0x{i:02X}>"
        return f"<{dict(time='t').get(kind, kind)}_{i}>"
    raise ValueError(f"token id {token_id} is outside the vocabulary")


class Grammars:
  """Constrained-decoding tables of every target format (grammars.safetensors):
  allowed bool[S, V], next_state int64[S, V], start_states int64[G], max_lens int64[G]."""

  def __init__(self, names, allowed, next_state, start_states, max_lens):
    self.names = tuple(names)
    self.allowed, self.next_state = allowed.bool(), next_state.long()
    self.start_states, self.max_lens = start_states.long(), max_lens.long()
    self.finished = self.allowed[:, PAD] & (self.allowed.sum(dim=1) == 1)  # [S]

  @classmethod
  def load(cls, directory, names):
    t = load_file(os.path.join(directory, "grammars.safetensors"))
    return cls(names, t["allowed"], t["next_state"], t["start_states"], t["max_lens"])

  def index(self, name: str) -> int:
    if name not in self.names:
      raise ValueError(f"no grammar {name!r}; this export has {self.names}")
    return self.names.index(name)


# ----------------------------------------------------------------------------- the model
def log_map(m, dtype):
  """log(N * m) [B, N, 1] of sound-source maps m [B, N]."""
  return torch.log(m.float() * m.shape[-1] + 1e-6)[..., None].to(dtype)


def cell_resampling(patch_grid, grid: int) -> np.ndarray:
  """float32[grid*grid, h*w]: bilinear weights (half-pixel centres, edges clamped) from the
  h x w patch grid to the grid x grid mask cells, both row-major."""
  def axis(size):
    src = np.clip((np.arange(grid) + 0.5) * size / grid - 0.5, 0, size - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, size - 1)
    w = np.zeros((grid, size), np.float64)
    np.add.at(w, (np.arange(grid), lo), 1 - (src - lo))
    np.add.at(w, (np.arange(grid), hi), src - lo)
    return w
  rows, cols = axis(patch_grid[0]), axis(patch_grid[1])
  return np.einsum("ih,jw->ijhw", rows, cols).reshape(grid * grid, -1).astype(np.float32)


def _tensor(x):
  return x if torch.is_tensor(x) else torch.from_numpy(np.array(x))


def _as_tensors(batch):
  return {k: _tensor(v) for k, v in batch.items()}


class AVUnified(nn.Module):
  """The unified audio-visual model (parameter names as in the Flax model)."""

  def __init__(self, config: dict, mask_config: dict | None = None):
    super().__init__()
    cfg = self.cfg = model_config(config)
    self.embed = TokenEmbed(cfg)
    self.audio_encoder, self.visual_encoder = AudioEncoder(cfg), VisualEncoder(cfg)
    self.prompt_encoder = PromptEncoder(cfg) if cfg.use_task_prompts else None
    self.temporal, self.spatial = Temporal(cfg), Spatial(cfg)
    self.mil_head, self.fusion, self.decoder = MILHead(cfg), Fusion(cfg), Decoder(cfg)
    if cfg.mask_task_token >= 0:
      self.cell_norm = layer_norm(cfg)
      self.cell_proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)
      self.cell_map_proj = nn.Linear(1, cfg.embed_dim)
    if cfg.focus_map_embed:
      self.focus_map_proj = nn.Linear(1, cfg.embed_dim)
    self.mask_tokenizer = MaskTokenizer(mask_config) if mask_config else None
    self.grammars: Grammars | None = None
    self.vocab: Vocabulary | None = None

  @classmethod
  def from_pretrained(cls, directory, dtype=torch.float32) -> AVUnified:
    """Loads an export directory strictly (every tensor used, none missing, shapes checked)."""
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
      config = json.load(f)
    if config.get("format") != FORMAT:
      raise ValueError(f"{directory}/config.json is not an AV-Unified export "
                       f"(format {config.get('format')!r}, expected {FORMAT!r})")
    model = cls(config["model"], config.get("mask_tokenizer"))
    state = load_file(os.path.join(directory, "model.safetensors"))
    model.load_state_dict(state, strict=True)  # Values are cast to the float32 parameters.
    model.to(dtype)
    model.grammars = Grammars.load(directory, config["grammars"])
    model.vocab = Vocabulary.load(directory)
    return model.eval()

  def encode(self, batch):
    """Perception + fusion: memory [B, S, D], memory_mask bool[B, S], loc_maps
    float32[B, T, h, w], mil_frame_probs [B, T, 2, C], mil_video_probs [B, C],
    audio_embed / visual_embed [B, T, D], scale_weights [B, S]."""
    batch = _as_tensors(batch)
    segment_mask = batch["segment_mask"].bool()
    _, a = self.audio_encoder(batch["log_mel"])
    patches, v = self.visual_encoder(batch["frames"])
    tokens = batch["prompt_tokens"].long()
    b = tokens.shape[0]
    if self.prompt_encoder is not None:
      prompt, prompt_mask, prompt_vec = self.prompt_encoder(self.embed(tokens), tokens != PAD)
    else:
      prompt, prompt_mask, prompt_vec = a.new_zeros(b, 0, a.shape[-1]), \
          torch.zeros(b, 0, dtype=torch.bool), None
    a, v, a_shared, v_shared, scale_weights = self.temporal(a, v, segment_mask, prompt_vec)
    sp = self.spatial(a_shared, patches)
    frame_probs, video_probs = self.mil_head(a_shared, v_shared, segment_mask)
    focus_idx = batch.get("focus_segment", torch.zeros(b, dtype=torch.long)).long()
    rows = torch.arange(b)
    focus_patches, focus_map = patches[rows, focus_idx], sp["maps"][rows, focus_idx]
    if self.cfg.focus_map_embed:
      focus = focus_patches + self.focus_map_proj(log_map(focus_map, focus_patches.dtype))
    else:
      focus = focus_patches * (focus_map * focus_map.shape[-1]).to(a.dtype)[..., None]
    memory, memory_mask = self.fusion(prompt, prompt_mask, a, v, sp["guided"], segment_mask,
                                      focus)
    _, t, h, w = batch["frames"].shape[:4]
    p = self.cfg.patch_size
    extra = {}
    if self.cfg.mask_task_token >= 0:
      extra["cell_queries"] = self.cell_queries(focus_patches, focus_map, (h // p, w // p))
      extra["cell_rows"] = tokens[:, 0] == self.cfg.mask_task_token
    return {"memory": memory, "memory_mask": memory_mask, **extra,
            "loc_maps": sp["maps"].reshape(b, t, h // p, w // p),
            "mil_frame_probs": frame_probs, "mil_video_probs": video_probs,
            "audio_embed": sp["audio_embed"], "visual_embed": sp["visual_embed"],
            "scale_weights": scale_weights}

  def cell_queries(self, focus_patches, focus_map, patch_grid):
    """The mask cells' queries [B, G*G, D]: the focus frame's patches [B, N, D] and map
    [B, N] resampled to G x G (read in place of the previous token by the <avs> rows)."""
    cfg = self.cfg
    x = self.cell_proj(self.cell_norm(focus_patches)) + \
        self.cell_map_proj(log_map(focus_map, focus_patches.dtype))
    resample = torch.from_numpy(cell_resampling(patch_grid, cfg.mask_grid)).to(x.dtype)
    return torch.einsum("gn,bnd->bgd", resample, x)

  def decode(self, tokens, encoded, start: int = 0, caches=None):
    """Decoder tokens int[B, L] (<bos> first) + `encode`'s dict -> logits float32[B, L, V]."""
    x = self.embed(_tensor(tokens).long())
    h = self.decoder(x, encoded["memory"], encoded["memory_mask"], start, caches,
                     encoded.get("cell_queries"), encoded.get("cell_rows"))
    return self.embed.attend(h)

  def forward(self, batch):
    """Teacher-forced logits float32[B, Lt, V] of batch["target_tokens"] and every
    auxiliary output of `encode` (loc_maps: the sound-source maps)."""
    enc = self.encode(batch)
    targets = _tensor(batch["target_tokens"]).long()
    bos = torch.full_like(targets[:, :1], self.cfg.bos_id)
    logits = self.decode(torch.cat([bos, targets[:, :-1]], dim=1), enc)
    return {"logits": logits, **{k: v for k, v in enc.items()
                                 if not k.startswith("memory") and not k.startswith("cell_")}}

  @torch.no_grad()
  def generate(self, batch, task, max_len: int | None = None):
    """Constrained greedy decoding with a KV cache.

    Args: batch: the inputs (no targets needed); task: a target format name ("ave", "avvp",
      "avvp_weak", "avqa", "ssl", "avs") for every row, or a list of names, one per row;
      max_len: decoding steps (default: the longest target the grammars allow).
    Returns: int64[B, max_len] emitted tokens (no <bos>; <pad> after <eos>).
    """
    if self.grammars is None:
      raise ValueError("generate needs the grammar tables: load with AVUnified.from_pretrained")
    g = self.grammars
    enc = self.encode(batch)
    b = enc["memory"].shape[0]
    names = [task] * b if isinstance(task, str) else list(task)
    rows = torch.tensor([g.index(n) for n in names])
    if max_len is None:
      max_len = min(int(g.max_lens[rows].max()), self.cfg.max_decode_len)
    if max_len > self.cfg.max_decode_len:
      raise ValueError(f"max_len={max_len} exceeds max_decode_len={self.cfg.max_decode_len}")
    state = g.start_states[rows]
    out = torch.zeros(b, max_len, dtype=torch.long)
    caches = [{} for _ in self.decoder.blocks]
    token = torch.full((b, 1), self.cfg.bos_id, dtype=torch.long)
    for t in range(max_len):
      if bool(g.finished[state].all()):
        break
      logits = self.decode(token, enc, start=t, caches=caches)[:, -1]  # [B, V]
      token = logits.masked_fill(~g.allowed[state], NEG_INF).argmax(dim=-1)  # [B]
      state = g.next_state[state, token]
      out[:, t] = token
      token = token[:, None]
    return out

  def decode_masks(self, codes):
    """Mask codes int[B, Kh, Kw] -> mask logits float32[B, S, S] (sigmoid > 0.5 = object)."""
    if self.mask_tokenizer is None:
      raise ValueError("this export has no mask tokenizer (the run had none)")
    return self.mask_tokenizer.decode(codes)

  @torch.no_grad()
  def mask_logits_from_tokens(self, tokens):
    """AVS tokens int[B, L] (Kh*Kw code tokens, then <eos>) -> mask logits float32[B, S, S]."""
    tokens = _tensor(tokens).long()
    start, stop = self.vocab.ranges["code"]
    kh, kw = self.vocab.mask_grid
    codes = tokens[:, :kh * kw]
    if bool(((codes < start) | (codes >= stop)).any()):
      raise ValueError("mask_logits_from_tokens: the first Kh*Kw tokens must be mask codes")
    return self.decode_masks((codes - start).reshape(-1, kh, kw))


def count_parameters(model: nn.Module) -> int:
  return sum(math.prod(p.shape) for p in model.parameters())
