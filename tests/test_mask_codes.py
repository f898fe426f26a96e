"""AVS training targets: canonical codes for empty and full neighbourhoods."""

import jax
import numpy as np

from av_unified_jax import mask_tokenizer as mt
from av_unified_jax.mask_tokenizer import mask_codes


def test_empty_and_full_neighbourhoods_get_one_code_each():
  cfg = mt.MaskTokenizerConfig(mask_size=32, grid=8, codebook_size=64, code_dim=4,
                               channels=(4, 4), num_res_blocks=1, search_candidates=1)
  variables = mt.init_variables(cfg, jax.random.key(0))
  masks = np.zeros((2, 32, 32), np.float32)
  masks[0, 8:28, 4:24] = 1.0  # cells rows 2-6, columns 1-5
  masks[1, :, 16:] = 1.0  # right half
  codes = np.random.default_rng(0).integers(0, 64, (2, 8, 8)).astype(np.int32)
  out = mask_codes.canonical_codes(codes, masks, variables, cfg)
  plain = np.stack([np.zeros((32, 32), np.float32), np.ones((32, 32), np.float32)])
  empty, full = mt.encode_masks(variables, cfg, plain)[:, 4, 4]
  # Mask 0: cells at least two away from the object are empty; the interior cell (4, 3)
  # has a full neighbourhood; the object's border cells keep their codes.
  assert out[0, 0, 7] == empty and out[0, 7, 7] == empty and out[0, 0, 0] == empty
  assert out[0, 4, 3] == full
  assert out[0, 2, 1] == codes[0, 2, 1] and out[0, 6, 5] == codes[0, 6, 5]
  # Mask 1: columns 0-2 empty, 5-7 full (the frame's edge counts as more of the same), 3-4 kept.
  np.testing.assert_array_equal(out[1, :, :3], empty)
  np.testing.assert_array_equal(out[1, :, 5:], full)
  np.testing.assert_array_equal(out[1, :, 3:5], codes[1, :, 3:5])


def test_with_a_cell_local_decoder_every_empty_and_full_cell_gets_one_code():
  cfg = mt.MaskTokenizerConfig(mask_size=32, grid=8, codebook_size=64, code_dim=4,
                               channels=(4, 4), num_res_blocks=0, decoder_kernel=1)
  variables = mt.init_variables(cfg, jax.random.key(0))
  masks = np.zeros((1, 32, 32), np.float32)
  masks[0, 8:28, 4:24] = 1.0  # cells rows 2-6, columns 1-5, all full
  masks[0, 9, 4:6] = 0.0  # a notch: cell (2, 1) is neither empty nor full
  codes = np.random.default_rng(0).integers(0, 64, (1, 8, 8)).astype(np.int32)
  out = mask_codes.canonical_codes(codes, masks, variables, cfg)
  plain = np.stack([np.zeros((32, 32), np.float32), np.ones((32, 32), np.float32)])
  empty, full = mt.encode_masks(variables, cfg, plain)[:, 4, 4]
  # The cells right beside the object are empty themselves: with a cell-local decoder they
  # take the empty code too (the 3x3 rule would keep their codes).
  assert out[0, 1, 1] == empty and out[0, 7, 6] == empty and out[0, 4, 0] == empty
  assert out[0, 2, 2] == full and out[0, 6, 5] == full
  assert out[0, 2, 1] == codes[0, 2, 1]


def test_the_table_knows_its_background_code():
  table = mask_codes.MaskCodeTable({"a/0": np.array([[1, 1], [1, 2]]), "b/0": np.array([[1, 3],
                                                                                        [1, 1]])})
  assert table.background_code == 1
  assert mask_codes.MaskCodeTable({}).background_code is None
