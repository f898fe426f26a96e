"""AVS training targets: the mask tokenizer's codes of every stored ground-truth mask.

The input pipeline asks `mask_codes(example_id, frame) -> int32[Kh, Kw] | None` for the
target of an AVS example (`data.tasks.TaskTokens`); this table answers from codes computed
once with the run's mask tokenizer and cached next to it:

    table = MaskCodeTable.for_run(config, W / "mask_tokenizer")   # builds or loads the cache
    data = pipeline.make_train_data(config, tokenizer, mask_codes=table)

The table is a plain object holding numpy arrays, so grain worker processes can pickle it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable

import jax
import numpy as np
from etils import epath
from PIL import Image

from av_unified_jax import atomic
from av_unified_jax.data import decode_masks, pipeline, shards
from av_unified_jax.data.transforms import decode_png_mask
from av_unified_jax.mask_tokenizer import coding

CACHE_FILE = "codes_{dataset}_{split}.npz"


def canonical_codes(codes: np.ndarray, masks: np.ndarray, variables, cfg) -> np.ndarray:
  """Codes with one code for every empty and one for every full neighbourhood.

  Many codes decode to an empty (or a full) cell, and the code search picks among them by
  tiny differences, so the cells of plain background would carry a dozen interchangeable
  targets that no model can predict. A cell whose 3x3-cell neighbourhood holds no
  foreground pixel takes the code of an all-empty mask, one whose neighbourhood is all
  foreground the code of an all-full mask (the decoder sees a cell's neighbours, hence the
  neighbourhood; with a cell-local decoder, `decoder_kernel` = 1, the cell alone).
  codes int32[N, g, g], masks float32[N, S, S] in {0, 1} -> int32[N, g, g].
  """
  n, g = codes.shape[0], codes.shape[1]
  size = masks.shape[-1]
  cells = masks.reshape(n, g, size // g, g, size // g).mean(axis=(2, 4))  # [N, g, g]
  p = 1 if cfg.decoder_kernel > 1 else 0  # A cell-local decoder: the cell alone.
  padded_max = np.pad(cells, ((0, 0), (p, p), (p, p)), constant_values=0.0)
  padded_min = np.pad(cells, ((0, 0), (p, p), (p, p)), mode="edge")
  w = 2 * p + 1
  windows = lambda x: np.stack([x[:, i:i + g, j:j + g] for i in range(w) for j in range(w)])
  empty = windows(padded_max).max(axis=0) == 0.0  # [N, g, g]
  full = windows(padded_min).min(axis=0) == 1.0
  plain = np.stack([np.zeros((size, size), np.float32), np.ones((size, size), np.float32)])
  empty_code, full_code = coding.encode_masks(variables, cfg, plain)[:, g // 2, g // 2]
  out = np.where(empty, empty_code, codes)
  return np.where(full, full_code, out).astype(np.int32)


class MaskCodeTable:
  """(example id, stored frame index) -> int32[Kh, Kw] codes; None for a frame without a mask.

  Attributes: codes {"<id>/<frame>": int32[Kh, Kw]}.
  """

  def __init__(self, codes: dict[str, np.ndarray]):
    self.codes = codes
    # The code of most cells: in masks of objects on empty ground, the empty cell's code.
    self.background_code = None
    if codes:
      counts = np.bincount(np.concatenate([np.ravel(c) for c in codes.values()]))
      self.background_code = int(np.argmax(counts))

  def __call__(self, example_id: str, frame: int) -> np.ndarray | None:
    return self.codes.get(f"{example_id}/{int(frame)}")

  def __len__(self) -> int:
    return len(self.codes)

  # -------------------------------------------------------------------- build, save, load
  @classmethod
  def build(cls, source: shards.ShardSource, cfg, variables, batch_size: int = 256,
            log=print) -> MaskCodeTable:
    """Encodes every annotated mask of `source` (area-resized to the tokenizer's mask size)
    with `mask_tokenizer.encode_masks` (the tokenizer config's code search)."""
    keys, masks = [], []
    for i in range(len(source)):
      example = source[i]
      decoded = decode_masks(example)  # bool[5, H, W]
      for k in np.flatnonzero(np.asarray(example["mask_annotated"], bool)):
        keys.append(f"{example['id']}/{int(k)}")
        masks.append(decoded[k])
    if not masks:
      return cls({})
    small = coding.resize_masks(np.stack(masks), cfg.mask_size)  # float32[N, S, S]
    codes = coding.encode_masks(variables, cfg, small, batch_size, log=log)  # int32[N, g, g]
    codes = canonical_codes(codes, small, variables, cfg)
    return cls(dict(zip(keys, codes, strict=True)))

  @classmethod
  def from_encoder(cls, source, encode: Callable[[np.ndarray], np.ndarray], mask_size: int,
                   batch_size: int = 64) -> MaskCodeTable:
    """Codes of every annotated mask of an AVS split with any encoder.

    Args:
      source: a ShardSource of an AVSBench dataset.
      encode: bool[B, mask_size, mask_size] -> int[B, Kh, Kw] (e.g. a jitted encoder).
      mask_size: side the encoder reads; stored masks are resized (bilinear, > 0.5).
    """
    keys, masks, table = [], [], {}

    def flush():
      if keys:
        codes = np.asarray(encode(np.stack(masks)))  # [B, Kh, Kw]
        table.update(zip(list(keys), codes))
        keys.clear()
        masks.clear()

    for i in range(len(source)):
      ex = source[i]
      for k in np.flatnonzero(np.asarray(ex["mask_annotated"], bool)):
        mask = Image.fromarray(decode_png_mask(ex["masks"][k]).astype(np.uint8) * 255)
        masks.append(np.asarray(mask.resize((mask_size, mask_size), Image.BILINEAR)) > 127)
        keys.append(f"{ex['id']}/{int(k)}")
        if len(keys) == batch_size:
          flush()
    flush()
    return cls(table)

  def save(self, path: str | os.PathLike) -> None:
    """Writes the table to the .npz file `path` atomically (a crash leaves no partial cache)."""
    keys = sorted(self.codes)
    buf = io.BytesIO()
    np.savez(buf, keys=np.array(keys), codes=np.stack([self.codes[k] for k in keys]))
    atomic.write_bytes(path, buf.getvalue())

  @classmethod
  def load(cls, path: str | os.PathLike) -> MaskCodeTable:
    with epath.Path(path).open("rb") as f, np.load(f) as data:
      return cls(dict(zip(data["keys"].tolist(), data["codes"], strict=True)))

  @classmethod
  def for_run(cls, config, tokenizer_dir: str | os.PathLike, split: str | None = None,
              log=print) -> MaskCodeTable:
    """The table of the training split of every dataset AVS trains on
    (`config.tasks.avs.dataset` and `extra_train_datasets`), each cached in `tokenizer_dir`."""
    split = split or config.data.train_split
    codes = {}
    for name, source in pipeline.open_train_sources(config, "avs", split).items():
      codes.update(cls._for_dataset(config, tokenizer_dir, name, source, split, log).codes)
    return cls(codes)

  @classmethod
  def _for_dataset(cls, config, tokenizer_dir, dataset: str, source, split: str,
                   log=print) -> MaskCodeTable:
    cache = epath.Path(tokenizer_dir) / CACHE_FILE.format(dataset=dataset, split=split)
    if cache.exists():
      return cls.load(cache)
    cfg, variables = coding.load_tokenizer(tokenizer_dir)
    if cfg.codebook_size != int(config.tokens.num_mask_codes):
      raise ValueError(f"the mask tokenizer in {tokenizer_dir} has {cfg.codebook_size} codes "
                       f"but config.tokens.num_mask_codes={config.tokens.num_mask_codes}")
    table = cls.build(source, cfg, variables, log=log)
    if jax.process_index() == 0:
      table.save(cache)
    log(f"mask codes: {len(table)} {dataset}/{split} masks encoded -> {cache}")
    return table
