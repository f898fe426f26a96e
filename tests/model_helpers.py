"""Shared tiny model, batch and parameters for the model, sharding and decoding tests.

Compiling is what costs time on a CPU, so the parameters and the jitted forward pass are
built once per test process and reused by every test file.
"""

import functools

import flax.linen as nn
import jax

from av_unified_jax import models, tokens


@functools.lru_cache(maxsize=None)
def tokenizer():
  """A real tokenizer with small ranges (its grammars have max_len 53)."""
  return tokens.Tokenizer.build(label_sets=tokens.OFFICIAL_LABEL_SETS, num_mask_codes=16,
                                mask_grid=(2, 2), max_avvp_groups=2, num_loc_bins=10)


B, T, IMG, LP, LT, C = 8, 4, 32, 6, 7, 5
V = tokenizer().layout.vocab_size
AVS_TOKEN = tokenizer().layout.task_token("avs")
CFG = models.ModelConfig(vocab_size=V, num_mil_classes=C, mask_task_token=AVS_TOKEN,
                         mask_grid=tokenizer().mask_grid[0])
MODEL = models.AVUnified(CFG)


def batch(cfg=CFG, b=B, t=T, lt=LT):
  """A fresh random batch (numpy); example 0 has a padded segment and prompt padding, odd
  examples an <avs> prompt."""
  out = models.example_batch(cfg, b, t, IMG, LP, lt)
  out["prompt_tokens"][1::2, 0] = AVS_TOKEN  # Odd rows are AVS prompts: cell queries on.
  return out


def init_key(seed: int = 0):
  # The rbg generator compiles several times faster than threefry on CPU.
  return jax.random.key(seed, impl="unsafe_rbg")


@functools.lru_cache(maxsize=None)
def params():
  """The tiny model's float32 parameters (plain tree), initialized once."""
  return nn.meta.unbox(jax.jit(MODEL.init)(init_key(), batch()))["params"]


@functools.lru_cache(maxsize=None)
def _apply():
  return jax.jit(lambda p, b: MODEL.apply({"params": p}, b))


def forward(p, b):
  """The jitted forward pass of `MODEL` (compiled once per batch shape)."""
  return _apply()(p, b)
