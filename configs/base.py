"""Pretraining config: model variant `base` (about OFA-Base), all five tasks, sharded.

Usage: python main.py --config=configs/base.py --workdir=gs://.../run1
       python main.py --config=configs/base.py:fsdp=8 --config.data.shards_dir=/data/shards
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, fsdp=1, tensor=1)
  c = common.base_config()  # Locked: a misspelt key below raises.
  c.model.variant = "base"
  c.total_steps = 200_000
  c.log_every_steps = 50
  c.eval_every_steps = 10_000
  c.checkpoint_every_steps = 2_000
  c.keep_checkpoints = 5
  c.data.shards_dir = "shards"
  c.data.image_size = 224
  c.data.batch_size = 512
  c.data.worker_count = 8
  # Sampling weights roughly follow dataset sizes, with the small benchmarks up-weighted.
  c.tasks.ave.weight = 1.0
  c.tasks.avvp.weight = 2.0
  c.tasks.avqa.weight = 2.0
  c.tasks.ssl.weight = 2.0
  c.tasks.avs.weight = 1.0
  c.loss.label_smoothing = 0.1
  c.optim.learning_rate = 2e-4
  c.optim.warmup_steps = 5_000
  c.optim.weight_decay = 0.05
  c.mesh.fsdp = args.fsdp  # data stays -1: the devices left after fsdp and tensor.
  c.mesh.tensor = args.tensor
  return c
