"""Model FLOPs utilization of the `base` train step in bfloat16, on an accelerator only.

MFU = (FLOPs of one forward + backward pass of the loss, from XLA's cost analysis of the
unscanned model, `summary.train_flops`) x steps/s / the chip's peak dense bf16 FLOP/s.
On a CPU-only machine the measurement is skipped with the reason.
"""

from __future__ import annotations

import jax

from av_unified_jax import summary, tokens
from benchmarks import Skipped, timing, train_step

# Peak dense bfloat16 FLOP/s per chip, by the start of `device.device_kind` (vendor figures).
PEAK_BF16_FLOPS = {
    "NVIDIA H200": 989e12,
    "NVIDIA H100": 989e12,
    "NVIDIA A100": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
}


def peak_flops(device_kind: str) -> float | None:
  for prefix, peak in PEAK_BF16_FLOPS.items():
    if device_kind.startswith(prefix):
      return peak
  return None


def measure(batch_size: int, steps_per_repeat: int, repeats: int) -> dict:
  """steps/s, FLOPs per step and MFU of the base variant (configs/base.py shapes)."""
  backend = jax.default_backend()
  if backend == "cpu":
    raise Skipped("no accelerator: jax's default backend is cpu "
                  f"({jax.device_count()} CPU device(s)); MFU is measured on GPU/TPU only")
  device = jax.devices()[0]
  vocab = tokens.Tokenizer.build(tokens.OFFICIAL_LABEL_SETS).layout.vocab_size
  config = train_step.load_config("base", batch_size)
  cfg = train_step.model_config(config, vocab)
  batch = train_step.make_batch(config, cfg, vocab)
  abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
  flops = summary.train_flops(cfg, abstract)
  trainer = train_step.JaxTrainer(config, vocab, batch)
  seconds = [timing.timed(lambda: trainer.run(steps_per_repeat)) for _ in range(repeats)]
  steps_per_s = timing.rate_stats(seconds, steps_per_repeat, "steps/s")
  peak = peak_flops(device.device_kind)
  achieved = flops * steps_per_s["median"]
  return {
      "backend": backend, "device_kind": device.device_kind, "variant": "base",
      "dtype": cfg.dtype, "batch_size": batch_size, "image_size": config.data.image_size,
      "flops_per_step": flops, "steps_per_s": steps_per_s, "achieved_flops": achieved,
      "peak_flops": peak, "mfu": achieved / peak if peak else None,
      "mfu_note": None if peak else f"no peak FLOP/s known for {device.device_kind!r}",
  }
