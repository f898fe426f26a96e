"""Token embedding (shared by prompts, decoder inputs and the tied output projection) and the
autoregressive decoder with a KV cache (docs/MODEL.md, Network 7)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from av_unified_jax.models import layers
from av_unified_jax.models.config import ModelConfig


class TokenEmbed(nn.Module):
  """The one token embedding table float32[V, D] (logical axes ("vocab", "embed"))."""

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    init = nn.initializers.normal(cfg.embed_dim ** -0.5)
    self.embedding = self.param(
        "embedding", nn.with_logical_partitioning(init, ("vocab", "embed")),
        (cfg.vocab_size, cfg.embed_dim), cfg.params_dtype)

  def __call__(self, tokens):
    """int32[B, L] -> [B, L, D] in the compute dtype (scaled by sqrt(D))."""
    x = jnp.take(self.embedding, tokens, axis=0) * (self.cfg.embed_dim ** 0.5)
    return nn.with_logical_constraint(x.astype(self.cfg.compute_dtype), layers.ACT)

  def attend(self, x):
    """The tied output projection: [B, L, D] -> float32 logits [B, L, V]."""
    logits = jnp.einsum("bld,vd->blv", x.astype(jnp.float32),
                        self.embedding.astype(jnp.float32))  # [B, L, V]
    return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))


def shift_right(targets, bos_id: int):
  """Decoder inputs: int32[B, L] targets -> [<bos>, targets[:, :-1]]."""
  bos = jnp.full((targets.shape[0], 1), bos_id, targets.dtype)
  return jnp.concatenate([bos, targets[:, :-1]], axis=1)


class Decoder(nn.Module):
  """Embedded decoder inputs [B, L, D] + memory [B, S, D] (mask bool[B, S]) -> [B, L, D].

  With `decode=True` the call appends L tokens at the position held in the "cache"
  collection (`index`), so a loop can feed one token per call; the first such call creates
  the cache (zeros of `cfg.max_decode_len` rows and the memory's projected keys/values).
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, memory, memory_mask, train: bool = False, decode: bool = False,
               queries=None, query_rows=None):
    """`queries` [B, Q, D] (optional) replace the token embeddings at positions 0 .. Q-1 of
    the rows where `query_rows` bool[B] is True: those positions read their query, not the
    previous token."""
    cfg = self.cfg
    length = x.shape[1]
    if decode:
      index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
      start = index.value
      index.value = start + length
    else:
      if length > cfg.max_decode_len:
        raise ValueError(f"{length} decoder tokens exceed model.max_decode_len="
                         f"{cfg.max_decode_len}; raise it or shorten tokens.max_target_len")
      start = jnp.zeros((), jnp.int32)
    pos = layers.embed_param(self, "pos_embed", (cfg.max_decode_len, cfg.embed_dim),
                             ("length", "embed"))
    positions = start + jnp.arange(length)  # [L]
    if queries is not None:
      q = queries.shape[1]
      rows = jnp.take(queries, jnp.minimum(positions, q - 1), axis=1).astype(x.dtype)  # [B,L,D]
      inside = (positions < q)[None, :, None] & query_rows.astype(bool)[:, None, None]
      x = jnp.where(inside, rows, x)
    x = x + jnp.take(pos, positions, axis=0).astype(x.dtype)[None]  # [B, L, D]
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not train)
    kwargs = (("deterministic", not train), ("decode", decode))
    x = layers.Stack(cfg, layers.DecoderBlock, cfg.decoder_layers, kwargs, name="blocks")(
        x, memory, memory_mask, start)
    return layers.layer_norm(cfg, "ln_out")(x)
