"""Building blocks: dense layers, attention with a KV cache, MLPs and transformer blocks.

Every parameter carries logical axis names (mapped to mesh axes by the config's rules table),
and every block output is constrained to `("batch", "length", "embed")`. Blocks return
`(x, None)` so that `Stack` can run them in a Python loop or under `nn.scan` alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from av_unified_jax.models.config import ModelConfig

NEG_INF = -1e9
ACT = ("batch", "length", "embed")


def zeros_init(names: Sequence[str | None]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), tuple(names))


class DenseGeneral(nn.Module):
  """y = x . kernel + bias, contracting the last `in_dims` axes of x into `features`.

  The kernel has shape `x.shape[-in_dims:] + features` from the start (flax's DenseGeneral
  creates a flat kernel and reshapes it, which breaks logical constraints under a mesh).
  """

  cfg: ModelConfig
  features: tuple[int, ...]
  kernel_names: tuple[str | None, ...]
  in_dims: int = 1

  @nn.compact
  def __call__(self, x):
    cfg, n = self.cfg, self.in_dims
    shape = tuple(x.shape[-n:]) + self.features
    init = nn.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal", in_axis=tuple(range(n)),
        out_axis=tuple(range(n, len(shape))))
    kernel = self.param("kernel", nn.with_logical_partitioning(init, self.kernel_names), shape,
                        cfg.params_dtype)
    bias = self.param("bias", zeros_init(self.kernel_names[n:]), self.features, cfg.params_dtype)
    dtype = cfg.compute_dtype
    # One 2-D matrix product [rows, in] x [in, out]: the reshapes are free (contiguous axes),
    # and XLA:CPU hands a plain matrix to its GEMM instead of relaying out a multi-axis kernel.
    fan_in, fan_out = math.prod(shape[:n]), math.prod(self.features)
    y = jnp.dot(x.astype(dtype).reshape(-1, fan_in), kernel.astype(dtype).reshape(fan_in, fan_out))
    y = y + bias.astype(dtype).reshape(fan_out)  # Its gradient: one column sum of [rows, out].
    return y.reshape(x.shape[:-n] + self.features)


def dense(cfg: ModelConfig, features, kernel_names, in_dims: int = 1, name=None):
  """A DenseGeneral with logically named kernel [*in, *features] and bias [*features]."""
  features = tuple(features) if isinstance(features, (tuple, list)) else (features,)
  return DenseGeneral(cfg, features, tuple(kernel_names), in_dims, name=name)


def layer_norm(cfg: ModelConfig, name=None):
  return nn.LayerNorm(
      epsilon=cfg.layer_norm_eps, dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
      bias_init=zeros_init(("embed",)), name=name)


# Initial scale of position, time and type tables. Token embeddings enter at unit scale
# (`decoder.TokenEmbed`) and patch embeddings near it, so a table started at the usual 0.02
# would hide where and when a token is for hundreds of steps; 0.5 lets it speak from the start.
EMBED_STD = 0.5


def embed_param(module: nn.Module, name: str, shape, names, std: float = EMBED_STD):
  """A learned embedding table (positions, times, types), float32 parameters."""
  return module.param(name, nn.with_logical_partitioning(nn.initializers.normal(std), names),
                      shape, module.cfg.params_dtype)


def attend(q, k, v, mask, dtype):
  """Scaled dot-product attention.

  Args: q [B, Lq, H, Dh], k and v [B, Lk, H, Dh]; mask bool broadcastable to [B, H, Lq, Lk]
    (True = may attend) or None.
  Returns: ([B, Lq, H, Dh] in dtype, float32 probabilities [B, H, Lq, Lk]).
  """
  scale = q.shape[-1] ** -0.5
  qh, kh, vh = (jnp.swapaxes(a, 1, 2) for a in (q * scale, k, v))  # [B, H, L, Dh]
  logits = jnp.matmul(qh, jnp.swapaxes(kh, -1, -2)).astype(jnp.float32)  # [B, H, Lq, Lk]
  if mask is not None:
    logits = jnp.where(mask, logits, NEG_INF)
  probs = jax.nn.softmax(logits, axis=-1)
  out = jnp.matmul(probs.astype(dtype), vh)  # [B, H, Lq, Dh]
  return jnp.swapaxes(out, 1, 2), probs


def padding_mask(q_len: int, key_mask):
  """bool[B, Lk] key validity -> bool[B, 1, Lq, Lk]."""
  return jnp.broadcast_to(key_mask[:, None, None, :],
                          (key_mask.shape[0], 1, q_len, key_mask.shape[1]))


class Attention(nn.Module):
  """Multi-head attention; `kind` is "self", "causal" (with KV cache) or "cross" (cached K/V).

  In decode mode (`decode=True`, only for "causal" and "cross"): a causal layer writes its new
  keys/values at `index` into a `cache` of `cfg.max_decode_len` rows; a cross layer projects the
  memory once, on the call that creates the cache, and reuses it afterwards.
  """

  cfg: ModelConfig
  kind: str = "self"
  decode: bool = False
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, context=None, mask=None, index=None):
    """x [B, Lq, D]; context [B, Lk, D] (cross) or None; mask bool[B, 1|H, Lq, Lk] or None;
    index int32[] (causal decode: position of x's first token). Returns [B, Lq, D]."""
    cfg = self.cfg
    heads = (cfg.num_heads, cfg.head_dim)
    proj = lambda name: dense(cfg, heads, ("embed", "heads", "kv"), name=name)
    q = proj("query")(x)  # [B, Lq, H, Dh]
    if self.kind == "cross":
      k, v = self._cross_kv(proj, context)
    else:
      k, v = proj("key")(x), proj("value")(x)  # [B, Lq, H, Dh]
      if self.kind == "causal":
        k, v, mask = self._causal(k, v, mask, index)
    out, _ = attend(q, k, v, mask, cfg.compute_dtype)
    out = dense(cfg, cfg.embed_dim, ("heads", "kv", "embed"), in_dims=2, name="out")(out)
    return nn.Dropout(cfg.dropout_rate)(out, deterministic=self.deterministic)

  def _cross_kv(self, proj, context):
    if not self.decode:
      return proj("key")(context), proj("value")(context)
    key_proj, value_proj = proj("key"), proj("value")
    ck = self.variable("cache", "cross_key", lambda: key_proj(context))  # [B, Lk, H, Dh]
    cv = self.variable("cache", "cross_value", lambda: value_proj(context))
    return ck.value, cv.value

  def _causal(self, k, v, mask, index):
    """Causal mask; in decode mode also appends k, v to the cache at `index`."""
    b, length = k.shape[:2]
    if not self.decode:
      causal = jnp.tril(jnp.ones((length, length), bool))[None, None]  # [1, 1, L, L]
      return k, v, causal if mask is None else mask & causal
    cache_shape = (b, self.cfg.max_decode_len) + k.shape[2:]  # [B, Lmax, H, Dh]
    ck = self.variable("cache", "cached_key", jnp.zeros, cache_shape, k.dtype)
    cv = self.variable("cache", "cached_value", jnp.zeros, cache_shape, v.dtype)
    ck.value = jax.lax.dynamic_update_slice(ck.value, k, (0, index, 0, 0))
    cv.value = jax.lax.dynamic_update_slice(cv.value, v, (0, index, 0, 0))
    q_pos = index + jnp.arange(length)  # [Lq]
    causal = jnp.arange(self.cfg.max_decode_len)[None, :] <= q_pos[:, None]  # [Lq, Lmax]
    return ck.value, cv.value, causal[None, None]


class Mlp(nn.Module):
  cfg: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x):
    """[B, L, D] -> [B, L, D]."""
    cfg = self.cfg
    h = dense(cfg, cfg.mlp_dim, ("embed", "mlp"), name="wi")(x)  # [B, L, mlp]
    h = nn.gelu(h)
    h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
    h = nn.Dropout(cfg.dropout_rate)(h, deterministic=self.deterministic)
    out = dense(cfg, cfg.embed_dim, ("mlp", "embed"), name="wo")(h)
    return nn.Dropout(cfg.dropout_rate)(out, deterministic=self.deterministic)


class EncoderBlock(nn.Module):
  """Pre-LayerNorm self-attention + MLP. x [B, L, D], key_mask bool[B, L] or None."""

  cfg: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, key_mask=None):
    cfg = self.cfg
    mask = None if key_mask is None else padding_mask(x.shape[1], key_mask)
    h = layer_norm(cfg, "ln_attn")(x)
    x = x + Attention(cfg, "self", deterministic=self.deterministic, name="attn")(h, mask=mask)
    x = x + Mlp(cfg, self.deterministic, name="mlp")(layer_norm(cfg, "ln_mlp")(x))
    return nn.with_logical_constraint(x, ACT), None


class DecoderBlock(nn.Module):
  """Causal self-attention, cross-attention to the memory, MLP (pre-LayerNorm).

  x [B, L, D]; memory [B, S, D]; memory_mask bool[B, S]; index int32[] (decode mode).
  """

  cfg: ModelConfig
  deterministic: bool = True
  decode: bool = False

  @nn.compact
  def __call__(self, x, memory, memory_mask, index):
    cfg, det, dec = self.cfg, self.deterministic, self.decode
    h = layer_norm(cfg, "ln_self")(x)
    x = x + Attention(cfg, "causal", dec, det, name="self_attn")(h, index=index)
    h = layer_norm(cfg, "ln_cross")(x)
    mask = padding_mask(x.shape[1], memory_mask)
    x = x + Attention(cfg, "cross", dec, det, name="cross_attn")(h, memory, mask=mask)
    x = x + Mlp(cfg, det, name="mlp")(layer_norm(cfg, "ln_mlp")(x))
    return nn.with_logical_constraint(x, ACT), None


class Stack(nn.Module):
  """`num_layers` blocks of one class, in a loop (params `layers_i`) or scanned (`layers`).

  The block is built as `block(cfg, **block_kwargs)` and called as `block(x, *args)`, returning
  `(x, None)`; `args` are the same for every layer. With `cfg.scan_layers` the parameters (and
  cache) get a leading "layers" axis; `models.model.unscan_params` converts them back.
  """

  cfg: ModelConfig
  block: Any
  num_layers: int
  block_kwargs: tuple = ()

  @nn.compact
  def __call__(self, x, *args):
    cfg, kwargs = self.cfg, dict(self.block_kwargs)
    block = self.block
    if cfg.remat:
      block = nn.remat(block, prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers and self.num_layers > 0:
      scanned = nn.scan(
          block, variable_axes={"params": 0, "cache": 0},
          split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast,) * len(args), length=self.num_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = scanned(cfg, **kwargs, name="layers")(x, *args)
      return x
    for i in range(self.num_layers):
      x, _ = block(cfg, **kwargs, name=f"layers_{i}")(x, *args)
    return x


def encode_patches(module: nn.Module, cfg: ModelConfig, patches, batch: int, segments: int,
                   num_layers: int, pos_rows: int, train: bool):
  """The body shared by the audio and visual encoders, in `module`'s scope (its parameters
  `patch_embed`, `pos_embed`, `blocks`, `ln_out`): patches float[B*T, N, P] -> patch
  embedding + the first N rows of a `pos_rows`-row position table -> dropout -> `num_layers`
  encoder blocks -> LayerNorm -> (tokens [B, T, N, D], their mean over patches [B, T, D])."""
  x = dense(cfg, cfg.embed_dim, ("channels", "embed"), name="patch_embed")(patches)
  num = x.shape[1]
  pos = embed_param(module, "pos_embed", (pos_rows, cfg.embed_dim), ("patches", "embed"))
  x = x + pos[:num].astype(x.dtype)[None]  # [B*T, N, D]
  x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not train)
  x = nn.with_logical_constraint(x, ACT)
  x = Stack(cfg, EncoderBlock, num_layers, (("deterministic", not train),), name="blocks")(x)
  x = layer_norm(cfg, "ln_out")(x)
  tokens = x.reshape(batch, segments, num, cfg.embed_dim)  # [B, T, N, D]
  tokens = nn.with_logical_constraint(tokens, ("batch", "segments", "patches", "embed"))
  pooled = tokens.mean(axis=2)  # [B, T, D]
  return tokens, nn.with_logical_constraint(pooled, ("batch", "segments", "embed"))
