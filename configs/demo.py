"""The default main job: the demo dataset, the `demo` model variant, minutes on a laptop CPU.

Usage: python main.py  (or --config=configs/demo.py --workdir=W)
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, steps=1500)
  c = common.base_config()
  c.model.variant = "demo"
  c.total_steps = args.steps
  c.log_every_steps = 25
  c.eval_every_steps = args.steps
  c.checkpoint_every_steps = 250
  c.data.shards_dir = "demo_data/shards"
  c.data.image_size = 96
  c.data.batch_size = 32
  c.optim.warmup_steps = 100
  c.optim.learning_rate = 1e-3
  c.lock()
  return c
