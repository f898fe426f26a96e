"""AVS training targets: the mask tokenizer's codes of every stored ground-truth mask.

The input pipeline asks `mask_codes(example_id, frame) -> int32[Kh, Kw] | None` for the
target of an AVS example (`data.tasks.TaskTokens`); this table answers from codes computed
once with the run's mask tokenizer and cached next to it:

    table = MaskCodeTable.for_run(config, W / "mask_tokenizer")   # builds or loads the cache
    data = pipeline.make_train_data(config, tokenizer, mask_codes=table)

The table is a plain object holding numpy arrays, so grain worker processes can pickle it.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np

from av_unified_jax.data import decode_masks, shards

CACHE_FILE = "codes_{dataset}_{split}.npz"


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
    from av_unified_jax.models import mask_tokenizer as mt  # pylint: disable=g-import-not-at-top

    keys, masks = [], []
    for i in range(len(source)):
      example = source[i]
      decoded = decode_masks(example)  # bool[5, H, W]
      for k in np.flatnonzero(np.asarray(example["mask_annotated"], bool)):
        keys.append(f"{example['id']}/{int(k)}")
        masks.append(decoded[k])
    if not masks:
      return cls({})
    small = mt.resize_masks(np.stack(masks), cfg.mask_size)  # float32[N, S, S]
    codes = mt.encode_masks(variables, cfg, small, batch_size, log=log)  # int32[N, g, g]
    return cls(dict(zip(keys, codes, strict=True)))

  def save(self, path: str | os.PathLike) -> None:
    keys = sorted(self.codes)
    np.savez(path, keys=np.array(keys), codes=np.stack([self.codes[k] for k in keys]))

  @classmethod
  def load(cls, path: str | os.PathLike) -> MaskCodeTable:
    with np.load(path) as data:
      return cls(dict(zip(data["keys"].tolist(), data["codes"], strict=True)))

  @classmethod
  def for_run(cls, config, tokenizer_dir: str | os.PathLike, split: str | None = None,
              log=print) -> MaskCodeTable:
    """The table of the training split of every dataset AVS trains on
    (`config.tasks.avs.dataset` and `extra_train_datasets`), each cached in `tokenizer_dir`."""
    from av_unified_jax.data import pipeline  # pylint: disable=g-import-not-at-top

    split = split or config.data.train_split
    codes = {}
    sources = pipeline.open_train_sources(config, "avs", split)
    for name, source in zip(pipeline.train_dataset_names(config, "avs"), sources, strict=True):
      codes.update(cls._for_dataset(config, tokenizer_dir, name, source, split, log).codes)
    return cls(codes)

  @classmethod
  def _for_dataset(cls, config, tokenizer_dir, dataset: str, source, split: str,
                   log=print) -> MaskCodeTable:
    from av_unified_jax.models import mask_tokenizer as mt  # pylint: disable=g-import-not-at-top

    cache = Path(tokenizer_dir) / CACHE_FILE.format(dataset=dataset, split=split)
    if cache.exists():
      return cls.load(cache)
    cfg, variables = mt.load_tokenizer(tokenizer_dir)
    if cfg.codebook_size != int(config.tokens.num_mask_codes):
      raise ValueError(f"the mask tokenizer in {tokenizer_dir} has {cfg.codebook_size} codes "
                       f"but config.tokens.num_mask_codes={config.tokens.num_mask_codes}")
    table = cls.build(source, cfg, variables, log=log)
    if jax.process_index() == 0:
      table.save(cache)
    log(f"mask codes: {len(table)} {dataset}/{split} masks encoded -> {cache}")
    return table
