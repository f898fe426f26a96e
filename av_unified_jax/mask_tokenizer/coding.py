"""Masks and codes with a trained mask tokenizer: resizing, IoU, the code search that encodes a
mask (`encode_masks`), reconstruction quality, and saving / loading a tokenizer.

    cfg, variables = load_tokenizer(W / "mask_tokenizer")
    codes = encode_masks(variables, cfg, resize_masks(masks, cfg.mask_size))  # int32[N, g, g]
"""

from __future__ import annotations

import functools
import json
import time

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from av_unified_jax import atomic
from av_unified_jax.mask_tokenizer.model import (MaskTokenizer, MaskTokenizerConfig, init_variables,
                                                 pixel_bce)


# ------------------------------------------------------------------------------- mask helpers


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
  """`float32[n_out, n_in]`: overlap of output cell i with input cell j, rows sum to 1."""
  edges_out = np.arange(n_out + 1) * (n_in / n_out)
  lo = np.maximum(edges_out[:-1, None], np.arange(n_in)[None, :])
  hi = np.minimum(edges_out[1:, None], np.arange(n_in)[None, :] + 1)
  w = np.clip(hi - lo, 0.0, None)
  return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def resize_masks(masks, size: int = 64, method: str = "area", binarize: bool = True):
  """Resizes `[B, H, W]` masks (bool/int/float in [0, 1]) to `float32[B, size, size]`.

  `area`: exact box-filter averaging (any H, W, up or down); `nearest`: nearest pixel centre.
  With `binarize`, the result is thresholded at 0.5 (values in {0, 1}). Numpy in, numpy out.
  """
  m = np.asarray(masks, dtype=np.float32)
  if m.ndim != 3:
    raise ValueError(f"resize_masks: masks must be [B, H, W], got shape {m.shape}")
  b, h, w = m.shape
  if method == "area" and h % size == 0 and w % size == 0:  # integer factor: block means
    out = m.reshape(b, size, h // size, size, w // size).mean(axis=(2, 4))
  elif method == "area":
    ah, aw = _area_matrix(h, size), _area_matrix(w, size)
    out = ah @ m @ aw.T  # [size, H] @ [B, H, W] @ [W, size] -> [B, size, size]
  elif method == "nearest":
    rows = np.minimum(((np.arange(size) + 0.5) * m.shape[1] / size).astype(int), m.shape[1] - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * m.shape[2] / size).astype(int), m.shape[2] - 1)
    out = m[:, rows][:, :, cols]
  else:
    raise ValueError(f"resize_masks: method must be 'area' or 'nearest', got {method!r}")
  return (out >= 0.5).astype(np.float32) if binarize else out.astype(np.float32)


def upsample_logits(logits, size=(224, 224)):
  """Bilinear resize of `float32[B, S, S]` mask logits to `float32[B, H, W]` (jnp)."""
  size = (size, size) if isinstance(size, int) else tuple(size)
  return jax.image.resize(logits, (logits.shape[0], *size), method="bilinear")


def mask_iou(pred, target) -> np.ndarray:
  """Per-mask IoU of boolean `[B, H, W]` masks; two empty masks have IoU 1. `float64[B]`."""
  pred, target = np.asarray(pred, bool), np.asarray(target, bool)
  inter = np.sum(pred & target, axis=(1, 2))
  union = np.sum(pred | target, axis=(1, 2))
  return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def _box3(x):
  """Sum over each cell's 3x3 neighbourhood of `[B, g, g]` (zeros outside the grid)."""
  g = x.shape[-1]
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1)))
  return sum(p[:, di:di + g, dj:dj + g] for di in range(3) for dj in range(3))


@functools.lru_cache(maxsize=8)
def _coding_fns(cfg: MaskTokenizerConfig):
  """Jitted (candidate codes, decode, one search step) of a tokenizer config."""
  model = MaskTokenizer(cfg)
  g, r = cfg.grid, cfg.mask_size // cfg.grid

  @jax.jit
  def candidates(variables, masks):  # float32[B, S, S] -> int32[B, g, g, C]
    return model.apply(variables, masks, cfg.search_candidates,
                       method=MaskTokenizer.candidate_codes)

  @jax.jit
  def decode(variables, codes):  # int32[B, g, g] -> float32[B, S, S] logits
    return model.apply(variables, codes, method=MaskTokenizer.decode)

  def cell_costs(logits, masks):  # -> float32[..., g, g]: wrong pixels, and BCE, per cell
    lead = logits.shape[:-2]
    wrong = ((logits > 0) != (masks > 0.5)).astype(jnp.float32)
    bce = pixel_bce(logits, masks)
    return (wrong.reshape(*lead, g, r, g, r).sum(axis=(-3, -1)),
            bce.reshape(*lead, g, r, g, r).sum(axis=(-3, -1)))

  def total(wrong, bce):  # per-cell costs -> float32[B]: wrong pixels + a tie-break in [0, 1)
    b = jnp.sum(bce, axis=(-2, -1)) / (g * g * r * r)
    return jnp.sum(wrong, axis=(-2, -1)) + b / (1.0 + b)

  @jax.jit
  def step(variables, codes, cands, masks, group):
    """Re-chooses the codes of the cells in `group` (bool[g, g], cells at least 3 apart).

    Candidate k sets every group cell to its k-th code at once; each cell keeps the
    candidate with the least error in its 3x3 neighbourhood (neighbourhoods do not overlap).
    A mask whose total error would rise keeps its old codes.
    """
    c = cands.shape[-1]
    trials = jnp.where(group[None, None], jnp.moveaxis(cands, -1, 1), codes[:, None])  # [B,C,g,g]
    logits = decode(variables, trials.reshape(-1, g, g)).reshape(-1, c, *masks.shape[1:])
    wrong, bce = cell_costs(logits, masks[:, None])  # [B, C, g, g]
    box = jax.vmap(_box3, in_axes=1, out_axes=1)
    mean_bce = box(bce) / (9 * r * r)
    local = box(wrong) + mean_bce / (1.0 + mean_bce)
    best = jnp.argmin(local, axis=1)  # [B, g, g]
    new = jnp.where(group[None], jnp.take_along_axis(cands, best[..., None], -1)[..., 0], codes)
    old_cost = total(*cell_costs(decode(variables, codes), masks))
    new_cost = total(*cell_costs(decode(variables, new), masks))
    return jnp.where((new_cost <= old_cost)[:, None, None], new, codes)

  return candidates, decode, step


def _batched(fn, batch_size: int, *arrays):
  """Applies `fn` to fixed-size chunks (zero-padded, one compile) of numpy `arrays`."""
  n, out = len(arrays[0]), []
  for start in range(0, n, batch_size):
    chunk = [a[start:start + batch_size] for a in arrays]
    k = len(chunk[0])
    chunk = [np.concatenate([c, np.zeros((batch_size - k,) + c.shape[1:], c.dtype)]) for c in chunk]
    out.append(np.asarray(fn(*chunk))[:k])
  return np.concatenate(out)


def code_patterns(variables, cfg: MaskTokenizerConfig) -> np.ndarray:
  """float32[K, r, r]: the logits a cell-local decoder gives each code's cell (r = S / g)."""
  if cfg.decoder_kernel != 1:
    raise ValueError("code_patterns needs a cell-local decoder (decoder_kernel=1)")
  _, decode, _ = _coding_fns(cfg)
  g, r = cfg.grid, cfg.mask_size // cfg.grid
  codes = np.broadcast_to(np.arange(cfg.codebook_size, dtype=np.int32)[:, None, None],
                          (cfg.codebook_size, g, g))
  logits = _batched(lambda c: decode(variables, c), 256, np.ascontiguousarray(codes))
  return logits[:, :r, :r]


def _best_local_codes(variables, cfg: MaskTokenizerConfig, masks) -> np.ndarray:
  """int32[N, g, g]: per cell, the code with the fewest wrong pixels (then the least BCE)."""
  g, r = cfg.grid, cfg.mask_size // cfg.grid
  patterns = code_patterns(variables, cfg).reshape(cfg.codebook_size, r * r)  # logits
  on = (patterns > 0).astype(np.float32)  # [K, r*r]
  # BCE of pattern k against a cell x: sum softplus(l) - x . l.
  softplus = np.logaddexp(0.0, patterns).sum(-1)  # [K]
  cells = masks.reshape(-1, g, r, g, r).transpose(0, 1, 3, 2, 4).reshape(-1, r * r)
  cells = (cells > 0.5).astype(np.float32)  # [M, r*r], M = N*g*g
  best = np.zeros((len(cells),), np.int64)
  for start in range(0, len(cells), 16384):
    x = cells[start:start + 16384]
    wrong = x.sum(-1, keepdims=True) + on.sum(-1)[None] - 2.0 * x @ on.T  # [m, K], integers
    bce = np.maximum(softplus[None] - x @ patterns.T, 0.0)  # [m, K]
    best[start:start + 16384] = np.argmin(np.round(wrong) + bce / (1.0 + bce), axis=1)
  return best.reshape(-1, g, g).astype(np.int32)


def encode_masks(variables, cfg: MaskTokenizerConfig, masks, batch_size: int = 256,
                 log=None) -> np.ndarray:
  """Codes of `float32[N, S, S]` masks (already at mask_size). Returns `int32[N, g, g]`.

  With a cell-local decoder (`cfg.decoder_kernel` = 1) each cell takes, of all codes, the one
  whose decoded pixels differ least from the cell's (BCE breaks ties, then the lower index):
  exact, and the same for equal cells. Otherwise:
  with `cfg.search_candidates` = 1 these are the nearest codes (`MaskTokenizer.encode`).
  Otherwise encoding is a search through the decoder: starting from the nearest codes, every
  cell tries its `search_candidates` nearest codes and keeps the one whose decoded mask has the
  fewest wrong pixels in the cell's 3x3 neighbourhood (BCE breaks ties). Cells 3 apart are
  searched together (9 groups per sweep, `search_sweeps` sweeps), and a mask whose total error
  would rise keeps its codes, so the result never decodes worse than the nearest codes. The
  decoder's view of neighbouring cells is what the nearest code ignores.
  """
  masks = np.asarray(masks, np.float32)
  if masks.ndim != 3 or masks.shape[1:] != (cfg.mask_size, cfg.mask_size):
    raise ValueError(f"encode_masks: masks must be [N, {cfg.mask_size}, {cfg.mask_size}], got "
                     f"{masks.shape}; use resize_masks(masks, {cfg.mask_size}) first")
  if cfg.decoder_kernel == 1:
    return _best_local_codes(variables, cfg, masks)
  candidates_fn, _, step_fn = _coding_fns(cfg)
  cands = _batched(lambda m: candidates_fn(variables, m), batch_size, masks)  # [N, g, g, C]
  codes = cands[..., 0].copy()
  c, g = cfg.search_candidates, cfg.grid
  if c == 1 or not len(masks):
    return codes
  t0 = time.time()
  groups = [np.zeros((g, g), bool) for _ in range(9)]
  for k, grp in enumerate(groups):
    grp[k // 3::3, k % 3::3] = True
  for _ in range(cfg.search_sweeps):
    for grp in groups:
      codes = _batched(lambda cd, cs, m, grp=grp: step_fn(variables, cd, cs, m, grp),
                       max(1, batch_size // c), codes, cands, masks)
  if log:
    log(f"encode_masks: searched {len(masks)} masks ({c} candidates, {cfg.search_sweeps} "
        f"sweep(s)) in {time.time() - t0:.0f} s")
  return codes


def decoded_ious(variables, cfg: MaskTokenizerConfig, codes, masks, batch_size: int = 256,
                 eval_size: int | None = None) -> np.ndarray:
  """Per-mask IoU of `sigmoid(decode(codes)) > 0.5` against `masks` (`[N, H, W]`, any size:
  area-resized to mask_size, or with `eval_size` to eval_size with the logits bilinearly
  upsampled to it). `float64[N]`."""
  _, decode_fn, _ = _coding_fns(cfg)
  logits = _batched(lambda cd: decode_fn(variables, cd), batch_size, np.asarray(codes, np.int32))
  masks = np.asarray(masks, np.float32)
  out = []
  for start in range(0, len(masks), batch_size):  # chunks bound the upsampled logits' memory
    chunk = logits[start:start + batch_size]
    if eval_size:
      chunk = np.asarray(upsample_logits(chunk, eval_size))
    ref = resize_masks(masks[start:start + batch_size], eval_size or cfg.mask_size)
    out.append(mask_iou(chunk > 0.0, ref > 0.5))  # sigmoid(x) > 0.5 <=> x > 0
  return np.concatenate(out) if out else np.zeros((0,))


def reconstruction_ious(variables, cfg: MaskTokenizerConfig, masks, batch_size: int = 256,
                        eval_size: int | None = None) -> np.ndarray:
  """Per-mask IoU of decode(encode_masks(m)) against m. `float64[N]`.

  `masks`: `[N, H, W]` in {0, 1}, any H, W (area-resized to mask_size for encoding). The
  reference is the input at mask_size, or, with `eval_size`, the input area-resized to
  eval_size with the logits bilinearly upsampled to it.
  """
  masks = np.asarray(masks, np.float32)
  if not len(masks):
    return np.zeros((0,))
  codes = encode_masks(variables, cfg, resize_masks(masks, cfg.mask_size), batch_size)
  return decoded_ious(variables, cfg, codes, masks, batch_size, eval_size)


def reconstruction_miou(variables, cfg: MaskTokenizerConfig, masks, **kwargs) -> float:
  """Mean over masks of reconstruction IoU (see `reconstruction_ious`)."""
  ious = reconstruction_ious(variables, cfg, masks, **kwargs)
  if ious.size == 0:
    raise ValueError("reconstruction_miou: no masks given")
  return float(np.mean(ious))


# ----------------------------------------------------------------------------- save and load

VARIABLES_FILE = "mask_tokenizer.msgpack"
CONFIG_FILE = "mask_tokenizer.json"


def save_tokenizer(directory, cfg: MaskTokenizerConfig, variables, extra: dict | None = None):
  """Writes `<directory>/mask_tokenizer.json`, then `mask_tokenizer.msgpack` (variables), each
  atomically: the msgpack is the last file, so its presence means the tokenizer is complete
  (a caller writing more files into `directory` writes them before this)."""
  directory = epath.Path(directory)  # Local or a URL (gs://...).
  directory.mkdir(parents=True, exist_ok=True)
  host = jax.tree.map(np.asarray, nn.unbox(variables))
  meta = {"config": cfg.to_dict(), **(extra or {})}
  atomic.write_text(directory / CONFIG_FILE, json.dumps(meta, indent=2, sort_keys=True))
  atomic.write_bytes(directory / VARIABLES_FILE, flax.serialization.msgpack_serialize(host))


def load_tokenizer(directory) -> tuple[MaskTokenizerConfig, dict]:
  """Reads what `save_tokenizer` wrote; checks shapes against a fresh init of the config."""
  directory = epath.Path(directory)  # Local or a URL (gs://...).
  for name in (VARIABLES_FILE, CONFIG_FILE):
    if not (directory / name).exists():
      raise FileNotFoundError(f"load_tokenizer: {directory / name} is missing; train the mask "
                              "tokenizer first (python -m av_unified_jax.mask_tokenizer_train)")
  cfg = MaskTokenizerConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text())["config"])
  template = jax.eval_shape(lambda: init_variables(cfg, jax.random.key(0)))
  raw = flax.serialization.msgpack_restore((directory / VARIABLES_FILE).read_bytes())
  variables = flax.serialization.from_state_dict(template, raw)
  want = jax.tree.map(lambda x: x.shape, template)
  got = jax.tree.map(lambda x: np.shape(x), variables)
  if want != got:
    raise ValueError(f"load_tokenizer: variable shapes in {directory} do not match the config")
  return cfg, jax.tree.map(jnp.asarray, variables)
