"""`python -m av_unified_jax.mask_tokenizer_train ...`: the mask tokenizer's training command
(the code is `av_unified_jax/mask_tokenizer/train.py`)."""

import sys

from av_unified_jax.mask_tokenizer.train import main

if __name__ == "__main__":
  sys.exit(main())
