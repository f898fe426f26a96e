"""The default main job: the demo dataset, the `demo` model variant, minutes on a laptop CPU.

Usage: python main.py  (or --config=configs/demo.py --workdir=W)

400 steps at batch 32 on 96-pixel frames: about 7 minutes of training on a 2-core CPU, so
that the whole main job (demo data, mask tokenizer, training, evaluation, report) stays under
15 minutes. AVS targets are 64 mask codes against a handful of tokens for the other tasks, so
their token loss is down-weighted (0.1) to keep AVS from dominating the token cross-entropy;
the map loss (config.loss.map_weight) supervises the sound-source maps with the AVS masks.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, steps=400)
  c = common.base_config()
  c.model.variant = "demo"
  c.total_steps = args.steps
  c.log_every_steps = 25
  c.eval_every_steps = args.steps
  c.checkpoint_every_steps = 200
  c.data.shards_dir = "demo_data/shards"
  c.data.image_size = 96
  c.data.batch_size = 32
  c.data.mel_shift = 4
  c.tasks.avs.loss_weight = 0.1
  c.optim.warmup_steps = 100
  c.optim.learning_rate = 2e-3
  c.lock()
  return c
