"""Mask tokenizer: a small VQ-VAE that turns a binary mask into a grid of codebook indices.

AVS targets are `K_h x K_w` mask codes; the decoder of this module turns predicted
codes back into mask logits, which are upsampled to the evaluation size.

Default geometry: `float32[B, 64, 64]` masks in {0, 1} -> `int32[B, 8, 8]` codes from a
512-entry codebook -> `float32[B, 64, 64]` mask logits.

Variables live in two collections:
  * `params`: the convolutional encoder and decoder (trained by gradients);
  * `vq`: the codebook and its exponential-moving-average statistics (updated inside the
    module when `train=True` and `mutable=["vq"]`; no gradients). Codes whose usage falls
    below a threshold are restarted from encoder outputs that are badly represented by the
    current codebook, so the codebook does not collect dead entries.

Encoder outputs and codebook vectors are l2-normalised (nearest code = highest cosine
similarity), which keeps the codebook on the same scale as the encoder while it trains.

Training calls need an rng stream named `vq` (used for the restarts).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
VQ_COLLECTION = "vq"


@dataclasses.dataclass(frozen=True)
class MaskTokenizerConfig:
  """Geometry and training rule of the mask tokenizer (modules never see a ConfigDict)."""
  mask_size: int = 64  # Side of the (square) masks the tokenizer reads and writes.
  grid: int = 8  # Side of the code grid; mask_size / grid must be a power of two.
  codebook_size: int = 512  # K: number of codes (= mask code tokens in the vocabulary).
  code_dim: int = 32  # Dimension of codebook vectors.
  channels: tuple[int, ...] = (32, 64, 128)  # Conv width per stride-2 stage (high res first).
  encoder: str = "conv"  # Key of ENCODERS: "conv" (sees neighbours) or "patch" (cell-local).
  patch_hidden: int = 256  # Hidden width of the "patch" encoder's per-cell MLP.
  num_res_blocks: int = 1  # Residual blocks at grid resolution, in encoder and decoder.
  # Decoder conv kernel side: 3 sees neighbouring cells; 1 makes the decoder cell-local (a
  # cell's pixels depend on its own code only), so `encode_masks` picks each cell's best code
  # exactly and equal cells get equal codes.
  decoder_kernel: int = 3
  commitment_weight: float = 0.25  # beta of the commitment loss.
  dice_weight: float = 1.0  # Weight of the soft-dice term beside the pixel BCE.
  ema_decay: float = 0.95  # Decay of the codebook EMA statistics.
  dead_code_threshold: float = 0.05  # EMA usage (vectors per step) under which a code restarts.
  restart_usage: float = 1.0  # EMA usage given to a restarted code.
  epsilon: float = 1e-5  # Laplace smoothing of the EMA cluster sizes.
  search_candidates: int = 1  # Codes tried per cell by `encode_masks` (1: nearest code only).
  search_sweeps: int = 1  # Passes of that search over the code grid.

  def __post_init__(self):
    object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
    if self.mask_size % self.grid:
      raise ValueError(f"MaskTokenizerConfig: mask_size={self.mask_size} is not a multiple of "
                       f"grid={self.grid}; choose sizes with mask_size = grid * 2**len(channels)")
    if self.search_candidates < 1 or self.search_candidates > self.codebook_size:
      raise ValueError(f"MaskTokenizerConfig: search_candidates={self.search_candidates} must be "
                       f"in [1, codebook_size={self.codebook_size}]")
    if self.decoder_kernel not in (1, 3):
      raise ValueError(f"MaskTokenizerConfig: decoder_kernel={self.decoder_kernel} must be 1 "
                       "(cell-local) or 3")
    if self.encoder not in ENCODERS:
      raise ValueError(f"MaskTokenizerConfig: encoder={self.encoder!r} is not one of "
                       f"{sorted(ENCODERS)}")
    if self.mask_size // self.grid != 2 ** len(self.channels):
      raise ValueError(
          f"MaskTokenizerConfig: mask_size / grid = {self.mask_size // self.grid} needs "
          f"log2 of it stride-2 stages, but channels has {len(self.channels)} entries; set "
          f"channels to {int(np.log2(self.mask_size // self.grid))} widths")

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["channels"] = list(self.channels)
    return d

  @classmethod
  def from_dict(cls, d) -> "MaskTokenizerConfig":
    """From a dict or a ConfigDict with (a subset of) the field names; unknown keys fail."""
    d = dict(d)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"MaskTokenizerConfig: unknown keys {unknown}; known keys: {sorted(names)}")
    return cls(**d)


def _conv_kernel(names):
  return nn.with_logical_partitioning(nn.initializers.he_normal(), names)


def _bias(name):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), (name,))


def _conv(features, kernel, strides=1, in_name="channels", out_name="channels", name=None):
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides), padding="SAME",
                 kernel_init=_conv_kernel((None, None, in_name, out_name)),
                 bias_init=_bias(out_name), name=name)


class ResBlock(nn.Module):
  """Pre-activation residual block: `float32[B, h, w, C] -> float32[B, h, w, C]`."""
  features: int
  kernel: int = 3

  @nn.compact
  def __call__(self, x):
    y = _conv(self.features, self.kernel, name="conv1")(nn.relu(x))
    y = _conv(self.features, 1, name="conv2")(nn.relu(y))
    return x + y


class Encoder(nn.Module):
  """`float32[B, S, S] in {0,1} -> float32[B, g, g, code_dim]` (S = mask_size, g = grid)."""
  cfg: MaskTokenizerConfig

  @nn.compact
  def __call__(self, masks):
    x = (masks[..., None] * 2.0 - 1.0).astype(jnp.float32)  # [B, S, S, 1]
    for i, width in enumerate(self.cfg.channels):
      in_name = None if i == 0 else "channels"
      x = nn.relu(_conv(width, 4, strides=2, in_name=in_name, name=f"down{i}")(x))
    for i in range(self.cfg.num_res_blocks):
      x = ResBlock(self.cfg.channels[-1], name=f"res{i}")(x)
    return _conv(self.cfg.code_dim, 1, out_name="embed", name="to_code")(nn.relu(x))


def space_to_depth(x, block: int):
  """`[B, r*h, r*w, C] -> [B, h, w, r*r*C]` (inverse of depth_to_space; r = block)."""
  b, hh, ww, c = x.shape
  x = x.reshape(b, hh // block, block, ww // block, block, c)  # [B, h, r, w, r, C]
  x = x.transpose(0, 1, 3, 2, 4, 5)  # [B, h, w, r, r, C]
  return x.reshape(b, hh // block, ww // block, block * block * c)


class PatchEncoder(nn.Module):
  """Cell-local encoder: an MLP on each cell's pixels. `float32[B, S, S] -> float32[B, g, g, D]`.

  A cell's code depends on its own pixels only, so all empty cells share one code and the
  codebook is spent on cells that hold boundaries; the decoder supplies the context.
  """
  cfg: MaskTokenizerConfig

  @nn.compact
  def __call__(self, masks):
    r = self.cfg.mask_size // self.cfg.grid
    x = (masks[..., None] * 2.0 - 1.0).astype(jnp.float32)  # [B, S, S, 1]
    x = space_to_depth(x, r)  # [B, g, g, r*r]
    x = nn.relu(_conv(self.cfg.patch_hidden, 1, in_name=None, name="mlp0")(x))
    x = nn.relu(_conv(self.cfg.patch_hidden, 1, name="mlp1")(x))
    return _conv(self.cfg.code_dim, 1, out_name="embed", name="to_code")(x)


def depth_to_space(x, block: int = 2):
  """`[B, h, w, r*r*C] -> [B, r*h, r*w, C]` (pixel shuffle; r = block)."""
  b, h, w, c = x.shape
  c_out = c // (block * block)
  x = x.reshape(b, h, w, block, block, c_out)  # [B, h, w, r, r, C]
  x = x.transpose(0, 1, 3, 2, 4, 5)  # [B, h, r, w, r, C]
  return x.reshape(b, h * block, w * block, c_out)


class Upsample(nn.Module):
  """Sub-pixel upsampling (cheaper than a transposed conv on CPU): `[B,h,w,C] -> [B,2h,2w,F]`."""
  features: int
  out_name: str | None = "channels"
  kernel: int = 3

  @nn.compact
  def __call__(self, x):
    x = _conv(4 * self.features, self.kernel, out_name=self.out_name, name="conv")(x)
    return depth_to_space(x, 2)


class Decoder(nn.Module):
  """`float32[B, g, g, code_dim] -> float32[B, S, S]` mask logits."""
  cfg: MaskTokenizerConfig

  @nn.compact
  def __call__(self, z):
    widths, k = self.cfg.channels, self.cfg.decoder_kernel
    x = _conv(widths[-1], k, in_name="embed", name="from_code")(z)
    for i in range(self.cfg.num_res_blocks):
      x = ResBlock(widths[-1], k, name=f"res{i}")(x)
    for i, width in enumerate(reversed(widths[:-1])):
      x = Upsample(width, kernel=k, name=f"up{i}")(nn.relu(x))
    x = Upsample(1, out_name=None, kernel=k, name="to_logits")(nn.relu(x))  # [B, S, S, 1]
    return x[..., 0]


def _random_unit_codebook(rng, shape):
  return _l2_normalize(jax.random.normal(rng, shape, jnp.float32))


def _l2_normalize(x, eps=1e-6):
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


class VectorQuantizer(nn.Module):
  """Nearest-code quantization with EMA codebook updates and dead-code restarts."""
  cfg: MaskTokenizerConfig

  def setup(self):
    k, d = self.cfg.codebook_size, self.cfg.code_dim
    box = nn.with_logical_partitioning
    self.codebook = self.variable(
        VQ_COLLECTION, "codebook",
        box(lambda: _random_unit_codebook(self.make_rng("params"), (k, d)), ("codebook", "embed")))
    self.ema_count = self.variable(VQ_COLLECTION, "ema_count",
                                   box(lambda: jnp.zeros((k,), jnp.float32), ("codebook",)))
    self.ema_sum = self.variable(VQ_COLLECTION, "ema_sum",
                                 box(lambda: jnp.zeros((k, d), jnp.float32), ("codebook", "embed")))

  def lookup(self, codes):
    """`int32[...] -> float32[..., code_dim]` codebook vectors."""
    return jnp.take(self.codebook.value, codes, axis=0)

  def distances(self, z):
    """`float32[..., D] -> float32[..., K]` squared distances to every code."""
    e = self.codebook.value  # [K, D]
    return jnp.sum(z * z, -1, keepdims=True) - 2.0 * z @ e.T + jnp.sum(e * e, -1)

  def nearest(self, z):
    """`float32[N, D] -> (int32[N] codes, float32[N] squared distances)`."""
    dist = self.distances(z)  # [N, K]
    codes = jnp.argmin(dist, axis=-1).astype(jnp.int32)
    return codes, jnp.take_along_axis(dist, codes[:, None], axis=-1)[:, 0]

  def __call__(self, z, train: bool):
    """`float32[B, g, g, D]` -> (straight-through `float32[B,g,g,D]`, `int32[B,g,g]`, stats)."""
    z = _l2_normalize(z)
    flat = z.reshape(-1, z.shape[-1])  # [N, D], N = B * g * g
    codes, dist = self.nearest(flat)
    q = self.lookup(codes).reshape(z.shape)  # [B, g, g, D]
    commitment = jnp.mean(jnp.square(z - jax.lax.stop_gradient(q)))
    one_hot = jax.nn.one_hot(codes, self.cfg.codebook_size, dtype=jnp.float32)  # [N, K]
    probs = jnp.mean(one_hot, axis=0)
    stats = {
        "commitment": commitment,
        "perplexity": jnp.exp(-jnp.sum(probs * jnp.log(probs + 1e-10))),
        "codes_used": jnp.sum(probs > 0).astype(jnp.float32),
    }
    if train and not self.is_initializing():
      stats["codes_restarted"] = self._ema_update(jax.lax.stop_gradient(flat), one_hot, dist)
    z_st = z + jax.lax.stop_gradient(q - z)  # straight-through estimator
    return z_st, codes.reshape(z.shape[:-1]), stats

  def _ema_update(self, flat, one_hot, dist):
    """Moves codes to the EMA mean of their vectors; restarts rarely used codes. Returns count."""
    cfg = self.cfg
    decay = cfg.ema_decay
    count = decay * self.ema_count.value + (1 - decay) * jnp.sum(one_hot, axis=0)  # [K]
    total = decay * self.ema_sum.value + (1 - decay) * one_hot.T @ flat  # [K, D]
    n = jnp.sum(count)
    smoothed = (count + cfg.epsilon) / (n + cfg.codebook_size * cfg.epsilon) * n
    codebook = _l2_normalize(total / smoothed[:, None])
    # Restart: dead codes take encoder outputs drawn with probability proportional to their
    # squared distance to the nearest code (k-means++ style), so they cover what is missed.
    dead = count < cfg.dead_code_threshold  # [K]
    logits = jnp.log(jnp.maximum(jax.lax.stop_gradient(dist), 1e-12))
    picks = jax.random.categorical(self.make_rng(VQ_COLLECTION), logits,
                                   shape=(cfg.codebook_size,))
    fresh = flat[picks]  # [K, D]
    codebook = jnp.where(dead[:, None], fresh, codebook)
    count = jnp.where(dead, cfg.restart_usage, count)
    self.codebook.value = codebook
    self.ema_count.value = count
    self.ema_sum.value = codebook * jnp.where(dead, cfg.restart_usage, smoothed)[:, None]
    return jnp.sum(dead).astype(jnp.float32)


def pixel_bce(logits, masks):
  """Per-pixel binary cross-entropy of logits against `{0,1}` masks (same shape)."""
  return jnp.maximum(logits, 0) - logits * masks + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def reconstruction_losses(logits, masks, dice_weight: float):
  """Pixel BCE and soft dice of `float32[B, S, S]` logits against `{0,1}` masks; scalars."""
  masks = masks.astype(jnp.float32)
  bce = jnp.mean(pixel_bce(logits, masks))
  p = jax.nn.sigmoid(logits)
  inter = jnp.sum(p * masks, axis=(1, 2))
  denom = jnp.sum(p, axis=(1, 2)) + jnp.sum(masks, axis=(1, 2))
  dice = jnp.mean(1.0 - (2.0 * inter + 1.0) / (denom + 1.0))
  return {"bce": bce, "dice": dice, "recon": bce + dice_weight * dice}


class MaskTokenizer(nn.Module):
  """VQ-VAE for binary masks. See the module docstring for collections and rng streams."""
  cfg: MaskTokenizerConfig

  def setup(self):
    self.encoder = ENCODERS[self.cfg.encoder](self.cfg)
    self.quantizer = VectorQuantizer(self.cfg)
    self.decoder = Decoder(self.cfg)

  def _check(self, masks):
    s = self.cfg.mask_size
    if masks.ndim != 3 or masks.shape[1:] != (s, s):
      raise ValueError(f"MaskTokenizer: masks must be [B, {s}, {s}], got {masks.shape}; "
                       f"use resize_masks(masks, {s}) first")

  def encode(self, masks):
    """`float32[B, S, S]` in {0, 1} -> `int32[B, g, g]` codes."""
    self._check(masks)
    z = self.encoder(masks.astype(jnp.float32))
    _, codes, _ = self.quantizer(z, train=False)
    return codes

  def candidate_codes(self, masks, k: int):
    """`float32[B, S, S]` -> `int32[B, g, g, k]`: each cell's k nearest codes, nearest first."""
    self._check(masks)
    dist = self.quantizer.distances(_l2_normalize(self.encoder(masks.astype(jnp.float32))))
    return jax.lax.top_k(-dist, k)[1].astype(jnp.int32)  # dist: [B, g, g, K]

  def decode(self, codes):
    """`int32[B, g, g]` codes in [0, K) -> `float32[B, S, S]` mask logits."""
    g = self.cfg.grid
    if codes.ndim != 3 or codes.shape[1:] != (g, g):
      raise ValueError(f"MaskTokenizer.decode: codes must be [B, {g}, {g}], got {codes.shape}")
    return self.decoder(self.quantizer.lookup(codes))

  def __call__(self, masks, train: bool = False):
    """`float32[B, S, S]` -> dict: logits `float32[B,S,S]`, codes `int32[B,g,g]`, losses, stats.

    `loss` is the total to minimise: reconstruction (BCE + dice) + beta * commitment.
    """
    self._check(masks)
    masks = masks.astype(jnp.float32)
    z = self.encoder(masks)
    z_st, codes, stats = self.quantizer(z, train=train)
    logits = self.decoder(z_st)
    losses = reconstruction_losses(logits, masks, self.cfg.dice_weight)
    loss = losses["recon"] + self.cfg.commitment_weight * stats["commitment"]
    return {"logits": logits, "codes": codes, "loss": loss, **losses, **stats}


# Encoder variants by MaskTokenizerConfig.encoder.
ENCODERS = {"conv": Encoder, "patch": PatchEncoder}


def init_variables(cfg: MaskTokenizerConfig, rng) -> dict:
  """Unboxed variables `{"params": ..., "vq": ...}` of a fresh tokenizer."""
  masks = jnp.zeros((1, cfg.mask_size, cfg.mask_size), jnp.float32)
  init = jax.jit(lambda r: nn.unbox(MaskTokenizer(cfg).init(r, masks, train=False)))
  return init(rng)
