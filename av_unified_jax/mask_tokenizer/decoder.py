"""Mask codes -> mask logits with a trained mask tokenizer's decoder, as evaluation and
prediction need them (AVS answers are grids of codes).

    decoder = MaskDecoder.load(W / "mask_tokenizer", grid=(8, 8), num_codes=512)
    logits = decoder(codes)                        # int32[B, Kh, Kw] -> float32[B, S, S]
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from av_unified_jax.mask_tokenizer.coding import load_tokenizer
from av_unified_jax.mask_tokenizer.model import MaskTokenizer


class MaskDecoder:
  """Mask codes int32[B, Kh, Kw] -> mask logits float32[B, S, S] with the mask tokenizer's
  decoder (jitted; batches padded to `batch_size` so it compiles once)."""

  def __init__(self, cfg, variables, batch_size: int = 16):
    self.cfg, self.variables, self.batch_size = cfg, variables, int(batch_size)
    model = MaskTokenizer(cfg)
    self._decode = jax.jit(lambda v, c: model.apply(v, c, method=MaskTokenizer.decode))

  @classmethod
  def load(cls, directory: str | Path, grid: tuple[int, int], num_codes: int,
           batch_size: int = 16) -> MaskDecoder:
    """Loads the mask tokenizer saved in `directory`; checks it matches the token layout."""
    cfg, variables = load_tokenizer(directory)
    if (cfg.grid, cfg.grid) != tuple(grid) or cfg.codebook_size != num_codes:
      raise ValueError(f"the mask tokenizer in {directory} has a {cfg.grid}x{cfg.grid} grid of "
                       f"{cfg.codebook_size} codes, but the tokens expect {tuple(grid)} and "
                       f"{num_codes} codes; train it with matching model.grid/codebook_size")
    return cls(cfg, variables, batch_size)

  def foreground_codes(self) -> np.ndarray:
    """bool[K]: codes whose grid, every cell that code, decodes to mostly foreground."""
    k, g = self.cfg.codebook_size, self.cfg.grid
    logits = self(np.broadcast_to(np.arange(k, dtype=np.int32)[:, None, None], (k, g, g)))
    return (logits > 0).mean(axis=(1, 2)) > 0.5

  def foreground_tokens(self, layout) -> np.ndarray:
    """bool[V] over the vocabulary of `layout`: the tokens of `foreground_codes`."""
    out = np.zeros(layout.vocab_size, bool)
    codes = np.flatnonzero(self.foreground_codes())
    out[[layout.code_token(int(c)) for c in codes]] = True
    return out

  def __call__(self, codes) -> np.ndarray:
    codes = np.asarray(codes, np.int32)
    out = []
    for start in range(0, len(codes), self.batch_size):
      chunk = codes[start:start + self.batch_size]
      pad = np.zeros((self.batch_size - len(chunk),) + chunk.shape[1:], np.int32)
      logits = self._decode(self.variables, np.concatenate([chunk, pad]))
      out.append(np.asarray(logits)[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, self.cfg.mask_size, self.cfg.mask_size))
