"""Training step (forward + backward + AdamW update), examples/s: JAX against the PyTorch export.

Both sides get the same weights (the JAX initialization converted by the export's parameter
table), the same batch and the same number of CPU threads, and compute the same loss: the
token cross-entropy weighted by `target_weights`, plus `loss.contrastive_weight` times the
audio-visual contrastive loss and `loss.mil_weight` times the MIL binary cross-entropy
(`steps.compute_loss` with every task's loss weight 1), then global-norm clipping and AdamW
with decay on matrices only. Dropout is set to 0 because the PyTorch export has none.
The first step's loss of each side is kept as evidence that both run the same model.
"""

from __future__ import annotations

import dataclasses
import importlib
import time

import jax
import numpy as np

from av_unified_jax import checkpointing, runs, steps, synthetic
from benchmarks import timing, torch_side

NUM_CLASSES = 25  # Weak-label classes (LLP).


@dataclasses.dataclass(frozen=True)
class Setting:
  """One measured configuration: configs/<config>.py with its batch shape."""
  config: str  # "tiny" or "demo"
  batch_size: int
  steps_per_repeat: int
  repeats: int


def load_config(name: str, batch_size: int):
  """configs/<name>.py with dropout 0 and the given batch size."""
  config = importlib.import_module(f"configs.{name}").get_config()
  config.unlock()
  config.model.dropout_rate = 0.0
  config.data.batch_size = batch_size
  config.lock()
  return config


def model_config(config, vocab_size: int):
  """The ModelConfig of `config` with the vocabulary and LLP's class count, as training
  builds it (`runs.model_config`)."""
  return runs.model_config(config, vocab_size, NUM_CLASSES)


def make_batch(config, cfg, vocab_size: int) -> dict[str, np.ndarray]:
  """A synthetic batch with the config's shapes (`av_unified_jax.synthetic`)."""
  spec = synthetic.SyntheticSpec(
      batch_size=config.data.batch_size, num_segments=config.data.num_segments,
      image_size=config.data.image_size, mel_frames=cfg.mel_frames, mel_bins=cfg.mel_bins,
      prompt_len=config.tokens.max_prompt_len, target_len=config.tokens.max_target_len,
      vocab_size=vocab_size, num_classes=NUM_CLASSES)
  return synthetic.make_batch(spec, config.seed, 0)


class JaxTrainer:
  """The project's jitted train step (`steps.make_train_step`), state donated."""

  def __init__(self, config, vocab_size: int, batch: dict[str, np.ndarray]):
    self.model = runs.build_model(config, vocab_size, NUM_CLASSES)
    spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
    shapes = runs.abstract_state(config, self.model, spec)
    tx, schedule, init_fn = shapes.tx, shapes.schedule, shapes.init_fn
    self.state = jax.jit(lambda r: checkpointing.unbox(init_fn(r)))(jax.random.key(config.seed))
    self.initial_params = jax.device_get(self.state.params)
    self.batch = jax.device_put(batch)
    self.rng = jax.random.key(1)
    step = jax.jit(steps.make_train_step(self.model, tx, schedule, config), donate_argnums=(0,))
    start = time.perf_counter()
    self._step = step.lower(self.state, self.batch, self.rng).compile()
    self.compile_s = time.perf_counter() - start
    self.first_loss = float(self.run(1)["loss"])  # Also the warm-up step.

  def run(self, num_steps: int):
    """Runs `num_steps` steps and waits for them; returns the last metrics."""
    metrics = None
    for _ in range(num_steps):
      self.state, metrics = self._step(self.state, self.batch, self.rng)
    return jax.block_until_ready(metrics)


def step_rate(trainer: JaxTrainer, batch_size: int) -> float:
  """examples/s of one timed train step of `trainer`."""
  return batch_size / timing.timed(lambda: trainer.run(1))


def measure_setting(setting: Setting, vocab_size: int, threads: int,
                    keep: dict | None = None) -> dict:
  """Interleaved repeats of JAX and PyTorch train steps on one configuration; the compiled
  `JaxTrainer` is stored in `keep[setting.config]` when a dict is given (for reuse)."""
  config = load_config(setting.config, setting.batch_size)
  cfg = model_config(config, vocab_size)
  batch = make_batch(config, cfg, vocab_size)
  jax_trainer = JaxTrainer(config, vocab_size, batch)
  if keep is not None:
    keep[setting.config] = jax_trainer
  torch_trainer = torch_side.TorchTrainer(cfg, jax_trainer.initial_params, batch, config,
                                          threads)
  k = setting.steps_per_repeat
  seconds = timing.interleaved({"jax": lambda: jax_trainer.run(k),
                                "torch": lambda: torch_trainer.run(k)}, setting.repeats)
  work = k * setting.batch_size
  jax_rate = timing.rate_stats(seconds["jax"], work, "examples/s")
  torch_rate = timing.rate_stats(seconds["torch"], work, "examples/s")
  same = same_loss(jax_trainer.first_loss, torch_trainer.first_loss)
  return {
      "variant": config.model.variant, "config": f"configs/{setting.config}.py",
      "batch_size": setting.batch_size, "image_size": config.data.image_size,
      "num_segments": config.data.num_segments, "steps_per_repeat": k,
      "jax": jax_rate, "torch": torch_rate,
      # No ratio when the two sides do not compute the same loss: it would compare other work.
      "jax_over_torch": timing.paired_ratio(jax_rate, torch_rate) if same else None,
      "same_first_loss": same,
      "jax_compile_s": jax_trainer.compile_s,
      "first_loss": {"jax": jax_trainer.first_loss, "torch": torch_trainer.first_loss},
  }


# The first losses of the two sides must agree to this relative tolerance for a ratio.
LOSS_RTOL = 1e-5


def same_loss(jax_loss: float, torch_loss: float, rtol: float = LOSS_RTOL) -> bool:
  """Whether the two first losses agree (|a - b| <= rtol * max(1, |a|))."""
  return abs(jax_loss - torch_loss) <= rtol * max(1.0, abs(jax_loss))


def measure(settings: list[Setting], vocab_size: int, threads: int,
            keep: dict | None = None) -> dict:
  """{"threads", "variants": {variant: measure_setting(...)}}."""
  variants = {}
  for setting in settings:
    row = measure_setting(setting, vocab_size, threads, keep)
    variants[row["variant"]] = row
  return {"threads": threads, "dropout": 0.0, "variants": variants}
