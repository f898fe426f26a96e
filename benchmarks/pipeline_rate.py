"""Input pipeline examples/s on the demo shards with 0, 1 and 2 grain workers.

A small demo dataset (`data_prep.demo`, every layout converted by `data_prep.convert`) is
built once into a cache folder and reused. For each worker count the training iterator of
`configs/demo.py` is started, its first batch (worker start-up) is timed apart, the batches
the workers buffered meanwhile are read untimed, and then `repeats` x `batches` batches are
timed. AVS targets carry no mask codes here (their weights
are 0), which skips one table lookup per AVS example and nothing else.

The rate at which the demo train step consumes examples is measured in the same section,
with a few JAX train steps just before and just after the pipeline rows, so that both sides
of the ratio see about the same load on a shared machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from av_unified_jax.data import pipeline
from benchmarks import timing
from configs import demo as demo_configs
from data_prep import demo

COMPLETE = ".complete"  # Marker written once a cached demo dataset is fully built.


def default_cache_dir() -> Path:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return Path(base) / "av_unified_jax" / "benchmarks"


def demo_dataset(root: Path, clips: int, image_size: int = 112) -> tuple[Path, dict, float]:
  """(shards dir, {dataset: problem}, build seconds; 0 when reused) of a cached demo dataset.

  Raises RuntimeError when no dataset converts at all.
  """
  out = root / f"demo_c{clips}_s{image_size}"
  marker = out / COMPLETE
  if marker.exists():
    return out / "shards", _read_problems(marker), 0.0
  start = time.perf_counter()
  demo.build_raw(out, clips, image_size, seed=0, workers=1)
  _, problems = demo.convert_all(out, image_size, workers=1)
  if len(problems) == len(demo.LAYOUTS):
    raise RuntimeError(f"no demo dataset converted: {problems}")
  marker.write_text("".join(f"{k}\t{v}\n" for k, v in sorted(problems.items())))
  return out / "shards", problems, time.perf_counter() - start


def _read_problems(marker: Path) -> dict:
  lines = [ln.split("\t", 1) for ln in marker.read_text().splitlines() if ln]
  return {k: v for k, v in lines}


def demo_config(shards_dir: Path, batch_size: int | None = None):
  """configs/demo.py reading `shards_dir`; tasks whose dataset is absent get weight 0.

  Returns (config, {task: reason} of the disabled tasks).
  """
  config = demo_configs.get_config()
  config.unlock()
  config.data.shards_dir = str(shards_dir)
  if batch_size:
    config.data.batch_size = batch_size
  disabled = {}
  for task in config.tasks:
    dataset = config.tasks[task].dataset
    if not (shards_dir / dataset / "dataset_info.json").exists():
      config.tasks[task].weight = 0.0
      disabled[task] = f"demo dataset {dataset} has no converted shards"
  config.lock()
  return config, disabled


def measure_workers(config, tok, workers: int, batches: int, repeats: int) -> dict:
  """Start-up seconds and examples/s stats of the training stream with `workers` workers."""
  config = config.copy_and_resolve_references()
  config.data.worker_count = int(workers)
  it = pipeline.make_train_iterator(config, tok, process_index=0, process_count=1)
  def read(n):
    for _ in range(n):
      next(it)

  try:
    first_s = timing.timed(lambda: read(1))
    read(workers * int(config.data.prefetch))  # Empties what workers buffered meanwhile.
    seconds = [timing.timed(lambda: read(batches)) for _ in range(repeats)]
  finally:
    it.close()
  work = batches * config.data.batch_size
  return {"workers": workers, "first_batch_s": first_s,
          "examples_per_s": timing.rate_stats(seconds, work, "examples/s")}


def measure(shards_dir: Path, batches: int, repeats: int, workers=(0, 1, 2),
            train_rate: Callable[[], float] | None = None, train_repeats: int = 2) -> dict:
  """{"batch_size", "tasks_disabled", "workers": {w: measure_workers(...)}, and with
  `train_rate` (examples/s of one demo train step) "train_consumption": its stats from
  `train_repeats` steps just before and as many just after the pipeline rows}."""
  config, disabled = demo_config(shards_dir)
  tok = pipeline.build_tokenizer(config)
  before = [train_rate() for _ in range(train_repeats)] if train_rate else []
  rows = {str(w): measure_workers(config, tok, w, batches, repeats) for w in workers}
  after = [train_rate() for _ in range(train_repeats)] if train_rate else []
  out = {"config": "configs/demo.py", "batch_size": config.data.batch_size,
         "image_size": config.data.image_size, "batches_per_repeat": batches,
         "tasks_disabled": disabled, "workers": rows}
  if train_rate:
    out["train_consumption"] = timing.stats(before + after, "examples/s")
  return out
