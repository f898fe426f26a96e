"""The mask tokenizer: a small VQ-VAE between binary masks and grids of codes (AVS targets).

  model.py       the network (MaskTokenizer, MaskTokenizerConfig, init_variables)
  coding.py      resizing, IoU, the code search that encodes masks (encode_masks), save / load
  decoder.py     MaskDecoder: codes -> mask logits, for evaluation and prediction
  mask_codes.py  MaskCodeTable: the AVS training targets, encoded once and cached in the run
  train.py       its training (python -m av_unified_jax.mask_tokenizer_train)

    from av_unified_jax import mask_tokenizer as mt
    cfg, variables = mt.load_tokenizer(W / "mask_tokenizer")
    codes = mt.encode_masks(variables, cfg, mt.resize_masks(masks, cfg.mask_size))
"""

from av_unified_jax.mask_tokenizer.coding import (CONFIG_FILE, VARIABLES_FILE, code_patterns,
                                                  decoded_ious, encode_masks, load_tokenizer,
                                                  mask_iou, reconstruction_ious,
                                                  reconstruction_miou, resize_masks,
                                                  save_tokenizer, upsample_logits)
from av_unified_jax.mask_tokenizer.model import (ENCODERS, VQ_COLLECTION, MaskTokenizer,
                                                 MaskTokenizerConfig, init_variables, pixel_bce,
                                                 reconstruction_losses)

__all__ = ["CONFIG_FILE", "ENCODERS", "VARIABLES_FILE", "VQ_COLLECTION", "MaskTokenizer",
           "MaskTokenizerConfig", "code_patterns", "decoded_ious", "encode_masks",
           "init_variables", "load_tokenizer", "mask_iou", "pixel_bce", "reconstruction_ious",
           "reconstruction_losses", "reconstruction_miou", "resize_masks", "save_tokenizer",
           "upsample_logits"]
