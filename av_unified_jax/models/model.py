"""AVUnified: perception network, fusion encoder and decoder (docs/MODEL.md, Network).

    outputs = AVUnified(cfg).apply({"params": p}, batch, train=True, rngs={"dropout": k})
    memory = model.apply(v, batch, method=AVUnified.encode)
    logits, vars = model.apply({"params": p, "cache": c}, tokens, memory, decode=True,
                               method=AVUnified.decode, mutable=["cache"])
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from av_unified_jax.models import decoder as decoder_lib
from av_unified_jax.models import fusion, heads, layers, spatial, temporal
from av_unified_jax.models.audio_encoder import AudioEncoder
from av_unified_jax.models.config import ModelConfig
from av_unified_jax.models.visual_encoder import VisualEncoder

# Batch fields the model reads (others are ignored); `focus_segment` defaults to segment 0.
# What `AVUnified.decode` reads of `AVUnified.encode`'s outputs (the rest are auxiliary).
DECODER_INPUTS = ("memory", "memory_mask", "cell_queries", "cell_rows")
INPUT_FIELDS = ("frames", "log_mel", "segment_mask", "prompt_tokens", "target_tokens")


class AVUnified(nn.Module):
  """The unified audio-visual model.

  Batch (static shapes): frames uint8[B, T, H, W, 3], log_mel float[B, T, F, M],
  segment_mask bool[B, T], prompt_tokens int32[B, Lp] (0 = pad), target_tokens int32[B, Lt],
  optional focus_segment int32[B].
  """

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.embed = decoder_lib.TokenEmbed(cfg)
    self.audio_encoder = AudioEncoder(cfg)
    self.visual_encoder = VisualEncoder(cfg)
    self.prompt_encoder = fusion.PROMPTS[cfg.use_task_prompts](cfg)
    self.temporal = temporal.TEMPORAL[cfg.use_temporal_multiscale](cfg)
    self.spatial = spatial.SPATIAL[cfg.use_spatial_guidance](cfg)
    self.mil_head = heads.MILHead(cfg)
    self.fusion = fusion.FusionEncoder(cfg)
    self.decoder = decoder_lib.Decoder(cfg)
    if cfg.focus_map_embed:
      self.focus_map_proj = layers.dense(cfg, cfg.embed_dim, ("channels", "mlp"))
    if cfg.mask_task_token >= 0:
      self.cell_norm = layers.layer_norm(cfg)
      self.cell_proj = layers.dense(cfg, cfg.embed_dim, ("embed", "mlp"))
      self.cell_map_proj = layers.dense(cfg, cfg.embed_dim, ("channels", "mlp"))

  def __call__(self, batch: Mapping[str, jax.Array], train: bool = False):
    """Returns a dict:
      logits float32[B, Lt, V]; loc_maps float32[B, T, h, w]; mil_frame_probs
      float32[B, T, 2, C]; mil_video_probs float32[B, C]; audio_embed / visual_embed
      float32[B, T, D]; scale_weights float32[B, S].
    """
    memory = self.encode(batch, train=train)
    inputs = decoder_lib.shift_right(batch["target_tokens"], self.cfg.bos_id)
    logits = self.decode(inputs, memory, train=train)
    outputs = {k: v for k, v in memory.items() if k not in DECODER_INPUTS}
    return {"logits": logits, **outputs}

  def encode(self, batch: Mapping[str, jax.Array], train: bool = False):
    """Perception + fusion. Returns `memory` [B, S, D], `memory_mask` bool[B, S] and the
    auxiliary outputs listed in `__call__` (all but `logits`)."""
    _check_batch(batch)
    segment_mask = batch["segment_mask"].astype(bool)
    _, a = self.audio_encoder(batch["log_mel"], train)  # a_t [B, T, D]
    patches, v = self.visual_encoder(batch["frames"], train)  # [B, T, N, D], [B, T, D]
    prompt_tokens = batch["prompt_tokens"]
    prompt, prompt_mask, prompt_vec = self.prompt_encoder(
        self.embed(prompt_tokens), prompt_tokens != 0)
    # a, v: the task-aware mix for the fusion; a_shared, v_shared: prompt-independent, for the
    # sound-source map and the MIL head (see temporal.MultiScaleTemporal).
    a, v, a_shared, v_shared, scale_weights = self.temporal(a, v, segment_mask, prompt_vec,
                                                            train)
    spatial_out = self.spatial(a_shared, patches, train)
    frame_probs, video_probs = self.mil_head(a_shared, v_shared, segment_mask)
    focus_segment = batch.get("focus_segment")
    if focus_segment is None:
      focus_segment = jnp.zeros(segment_mask.shape[:1], jnp.int32)
    if self.cfg.focus_map_embed:
      p, m = fusion.focus_rows(patches, spatial_out["maps"], focus_segment)
      focus = p + self.focus_map_proj(log_map(m, p.dtype))  # [B, N, D]
    else:
      focus = fusion.select_focus(patches, spatial_out["maps"], focus_segment)  # [B, N, D]
    memory, memory_mask = self.fusion(prompt, prompt_mask, a, v, spatial_out["guided"],
                                      segment_mask, focus, train)
    b, t, h, w = batch["frames"].shape[:4]
    p = self.cfg.patch_size
    loc_maps = spatial_out["maps"].reshape(b, t, h // p, w // p)  # [B, T, h, w]
    extra = {}
    if self.cfg.mask_task_token >= 0:
      extra["cell_queries"] = self.cell_queries(patches, spatial_out["maps"], focus_segment,
                                                (h // p, w // p))
      extra["cell_rows"] = prompt_tokens[:, 0] == self.cfg.mask_task_token  # bool[B]
    return {"memory": memory, "memory_mask": memory_mask, **extra, "loc_maps": loc_maps,
            "mil_frame_probs": frame_probs, "mil_video_probs": video_probs,
            "audio_embed": spatial_out["audio_embed"],
            "visual_embed": spatial_out["visual_embed"], "scale_weights": scale_weights}

  def cell_queries(self, patches, maps, focus_segment, patch_grid):
    """The mask cells' queries [B, G*G, D]: the focus frame's patch features and map value,
    bilinearly resampled from the patch grid to the mask grid G x G, projected to D. In the
    rows whose prompt starts with the mask task's token (`cell_rows`), decoder position k
    reads query k instead of the previous token: the cells are predicted from what the frame
    shows there, not from the codes before them (fed its own codes, a decoder that learned
    to continue the true ones never left the background)."""
    cfg = self.cfg
    p, m = fusion.focus_rows(patches, maps, focus_segment)  # [B, N, D], [B, N]
    resample = jnp.asarray(cell_resampling(patch_grid, cfg.mask_grid), p.dtype)  # [G*G, N]
    x = self.cell_proj(self.cell_norm(p)) + self.cell_map_proj(log_map(m, p.dtype))  # [B,N,D]
    x = jnp.einsum("gn,bnd->bgd", resample, x)  # [B, G*G, D]
    return nn.with_logical_constraint(x, layers.ACT)

  def decode(self, decoder_tokens, memory: Mapping[str, jax.Array], train: bool = False,
             decode: bool = False):
    """Decoder tokens int32[B, L] (<bos> first) + `encode`'s dict -> logits float32[B, L, V].

    With `decode=True` pass `mutable=["cache"]`: the tokens are appended after those of
    earlier calls (see `decoder.Decoder`)."""
    x = self.embed(decoder_tokens)
    h = self.decoder(x, memory["memory"], memory["memory_mask"], train=train, decode=decode,
                     queries=memory.get("cell_queries"), query_rows=memory.get("cell_rows"))
    return self.embed.attend(h)


def log_map(m, dtype):
  """log(N * m) [B, N, 1] of sound-source maps m [B, N] (0 where the map is uniform)."""
  n = m.shape[-1]
  return jnp.log(m.astype(jnp.float32) * n + 1e-6)[..., None].astype(dtype)


def cell_resampling(patch_grid: tuple[int, int], grid: int) -> np.ndarray:
  """float32[grid*grid, h*w]: bilinear weights (half-pixel centres, edges clamped) that
  resample an h x w patch grid to the grid x grid mask cells, both row-major."""
  def axis(size):  # [grid, size]
    src = np.clip((np.arange(grid) + 0.5) * size / grid - 0.5, 0, size - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, size - 1)
    w = np.zeros((grid, size), np.float64)
    np.add.at(w, (np.arange(grid), lo), 1 - (src - lo))
    np.add.at(w, (np.arange(grid), hi), src - lo)
    return w
  rows, cols = axis(patch_grid[0]), axis(patch_grid[1])
  return np.einsum("ih,jw->ijhw", rows, cols).reshape(grid * grid, -1).astype(np.float32)


def example_batch(cfg: ModelConfig, batch_size: int, num_segments: int,
                  image_size: int, prompt_len: int, target_len: int, seed: int = 0):
  """A random batch with the model's input fields (numpy arrays, the contract's dtypes).

  Example 0 has padding (its last segment masked, its last two prompt tokens <pad>), the
  others none, so tests see both."""
  rng = np.random.default_rng(seed)
  b, t, v = batch_size, num_segments, cfg.vocab_size
  segment_mask = np.ones((b, t), bool)
  segment_mask[0, t - 1:] = t < 2
  prompt = rng.integers(3, v, (b, prompt_len)).astype(np.int32)
  prompt[0, max(prompt_len - 2, 1):] = 0
  return {
      "frames": rng.integers(0, 256, (b, t, image_size, image_size, 3), dtype=np.uint8),
      "log_mel": rng.normal(size=(b, t, cfg.mel_frames, cfg.mel_bins)).astype(np.float32),
      "segment_mask": segment_mask,
      "prompt_tokens": prompt,
      "target_tokens": rng.integers(3, v, (b, target_len)).astype(np.int32),
      "target_weights": np.ones((b, target_len), np.float32),
      "task_id": rng.integers(0, 5, (b,)).astype(np.int32),
      "weak_labels": (rng.random((b, cfg.num_mil_classes)) < 0.2).astype(np.float32),
      "has_weak": np.ones((b,), bool),
      "focus_segment": np.zeros((b,), np.int32),
  }


def _check_batch(batch):
  missing = [k for k in INPUT_FIELDS[:4] if k not in batch]
  if missing:
    raise KeyError(f"the batch lacks {missing}; it has {sorted(batch)} (see models.AVUnified)")
  b, t = batch["segment_mask"].shape
  for key, rank in (("frames", 5), ("log_mel", 4)):
    shape = batch[key].shape
    if len(shape) != rank or tuple(shape[:2]) != (b, t):
      raise ValueError(f"batch[{key!r}] has shape {tuple(shape)}; expected rank {rank} "
                       f"starting with [B, T] = [{b}, {t}] like segment_mask")


_SCANNED = re.compile(r"^layers$")


def unscan_params(params):
  """Converts scanned parameters (a `layers` subtree whose leaves have a leading layer axis)
  to per-layer parameters (`layers_0`, `layers_1`, ...), the layout of `scan_layers=False`.

  Accepts boxed (LogicallyPartitioned) or plain trees; returns a plain nested dict.
  """
  params = nn.meta.unbox(params)
  return _unscan(params)


def _unscan(tree):
  if not isinstance(tree, Mapping):
    return tree
  out = {}
  for key, value in tree.items():
    if _SCANNED.match(key) and isinstance(value, Mapping):
      num = jax.tree.leaves(value)[0].shape[0]
      for i in range(num):
        out[f"layers_{i}"] = _unscan(jax.tree.map(lambda x, i=i: x[i], value))
    else:
      out[key] = _unscan(value)
  return out


_LAYER = re.compile(r"^layers_(\d+)$")


def scan_params(params):
  """Inverse of `unscan_params`: stacks `layers_0 .. layers_{n-1}` into one `layers` subtree
  with a leading layer axis (e.g. to load per-layer weights into a scanned model)."""
  params = nn.meta.unbox(params)
  return _scan(params)


def _scan(tree):
  if not isinstance(tree, Mapping):
    return tree
  layer_keys = sorted((int(m.group(1)), k) for k in tree if (m := _LAYER.match(k)))
  out = {k: _scan(v) for k, v in tree.items() if not _LAYER.match(k)}
  if layer_keys:
    if [i for i, _ in layer_keys] != list(range(len(layer_keys))):
      raise ValueError(f"layer keys {[k for _, k in layer_keys]} are not layers_0..layers_n-1")
    out["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs),
                                 *[_scan(tree[k]) for _, k in layer_keys])
  return out
