"""Repeats, medians and spreads: every figure of the benchmarks is a `stats` dict.

    seconds = interleaved({"jax": run_jax, "torch": run_torch}, repeats=5)
    jax_rate = rate_stats(seconds["jax"], work=steps * batch, unit="examples/s")
    paired_ratio(jax_rate, torch_rate)   # median over rounds of jax / torch
    ratio(a, b)                          # median over median (measurements not interleaved)

Interleaving (a, b, a, b, ...) rather than (a, a, ..., b, b, ...) makes both sides of a round
see the same load of a shared machine, so the per-round ratio is steadier than either figure.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence


def stats(samples: Sequence[float], unit: str) -> dict:
  """Median and spread of repeated measurements.

  Returns {"median", "min", "max", "spread_pct" (100 * (max - min) / median), "repeats",
  "samples" (in measurement order), "unit"}.
  """
  xs = [float(x) for x in samples]
  if not xs:
    raise ValueError("stats() needs at least one sample")
  med = statistics.median(xs)
  lo, hi = min(xs), max(xs)
  spread = 100.0 * (hi - lo) / med if med else 0.0
  return {"median": med, "min": lo, "max": hi, "spread_pct": spread,
          "repeats": len(xs), "samples": xs, "unit": unit}


def rate_stats(seconds: Sequence[float], work: float, unit: str) -> dict:
  """`stats` of work / seconds per repeat (e.g. examples/s from the seconds of k steps)."""
  return stats([work / max(s, 1e-12) for s in seconds], unit)


def ratio(a: Mapping | None, b: Mapping | None) -> float | None:
  """median(a) / median(b), or None when either side is missing."""
  if not a or not b or not b.get("median"):
    return None
  return float(a["median"]) / float(b["median"])


def paired_ratio(a: Mapping | None, b: Mapping | None) -> float | None:
  """Median over rounds of a_i / b_i for two interleaved measurements (same round count)."""
  if not a or not b:
    return None
  if a["repeats"] != b["repeats"]:
    raise ValueError(f"paired_ratio needs as many samples on both sides ({a['repeats']} vs "
                     f"{b['repeats']})")
  return statistics.median(x / y for x, y in zip(a["samples"], b["samples"], strict=True))


def timed(fn: Callable[[], object]) -> float:
  """Seconds of one call of `fn` (which must block until its work is done)."""
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def interleaved(fns: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
  """Calls every function once per round, in order, for `repeats` rounds.

  Returns {name: [seconds of each round]}.
  """
  if repeats < 1:
    raise ValueError(f"repeats={repeats} must be >= 1")
  out: dict[str, list[float]] = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      out[name].append(timed(fn))
  return out
