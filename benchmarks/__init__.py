"""Performance benchmarks of av_unified_jax: `python -m benchmarks.run [--quick]`.

Each measurement has its own module (train_step, decode, pipeline_rate, conversion,
fsdp_memory, mfu); `run` times them side by side, writes `benchmarks/results.json` and
regenerates `PERFORMANCE.md` with `report`.
"""


class Skipped(Exception):
  """A measurement cannot run here (no accelerator, a missing part); the message says why."""
