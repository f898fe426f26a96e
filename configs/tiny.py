"""Tiny config used by the tests: seconds on CPU.

Usage: --config=configs/tiny.py  (or configs/tiny.py:steps=20)
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, steps=8)
  c = common.base_config()  # Locked: a misspelt key below raises.
  c.model.variant = "tiny"
  c.total_steps = args.steps
  c.log_every_steps = 2
  c.eval_every_steps = args.steps
  c.checkpoint_every_steps = 4
  c.data.image_size = 32
  c.data.batch_size = 8
  c.eval.batch_size = 8
  c.eval.max_examples = 8
  c.optim.warmup_steps = 2
  c.optim.learning_rate = 1e-3
  return c
