"""Runs every benchmark side by side and writes `benchmarks/results.json` and `PERFORMANCE.md`.

  python -m benchmarks.run [--quick] [--only train_step,decode] [--out F] [--markdown F]
  python -m benchmarks.run --render_only      # PERFORMANCE.md from the existing results.json

Measurements (one module each): train_step, decode, pipeline, conversion, fsdp_memory, mfu.
One that cannot run is recorded with status "skipped" and the reason; one that raises is
recorded as "failed" with the error (and the exit code is 1); nothing is filled in.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import io
import json
import os
import platform
import resource
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import jax

from av_unified_jax import tokens
from benchmarks import Skipped, pipeline_rate, report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.json"
MARKDOWN = ROOT / "PERFORMANCE.md"
NOTES = ROOT / "benchmarks" / "notes.md"
MEASUREMENTS = ("train_step", "decode", "pipeline", "conversion", "fsdp_memory", "mfu")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "array-record",
            "torch", "av", "numpy")


@dataclasses.dataclass(frozen=True)
class Plan:
  """Sizes and repeat counts of one run."""
  train: tuple  # train_step.Setting per variant (the demo one is the pipeline's reference)
  decode_batch: int
  decode_repeats: int
  demo_clips: int
  pipeline_batches: int
  pipeline_repeats: int
  conversion_clips: int
  conversion_repeats: int
  conversion_processes: tuple[int, ...]
  compile_config: str
  compile_devices: tuple[int, ...]
  fsdp_timeout_s: float
  mfu_batch: int
  mfu_repeats: int


def make_plan(quick: bool) -> Plan:
  from benchmarks.train_step import Setting  # Late: torch after OMP_WAIT_POLICY.

  if quick:
    return Plan(train=(Setting("tiny", 8, 3, 5), Setting("demo", 32, 1, 5)),
                decode_batch=4, decode_repeats=5, demo_clips=48, pipeline_batches=4,
                pipeline_repeats=3, conversion_clips=3, conversion_repeats=2,
                conversion_processes=(1,), compile_config="tiny", compile_devices=(8,),
                fsdp_timeout_s=600, mfu_batch=8, mfu_repeats=3)
  return Plan(train=(Setting("tiny", 8, 10, 5), Setting("demo", 32, 3, 5)),
              decode_batch=8, decode_repeats=5, demo_clips=48, pipeline_batches=10,
              pipeline_repeats=5, conversion_clips=8, conversion_repeats=3,
              conversion_processes=(1, 2), compile_config="base", compile_devices=(1, 8),
              fsdp_timeout_s=3600, mfu_batch=32, mfu_repeats=5)


# ----------------------------------------------------------------------------- machine
def cpu_threads() -> int:
  """CPU cores this process may use: the size of XLA's CPU thread pool (and torch's here)."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _cpu_model() -> str:
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def _memory_gib() -> float:
  try:
    for line in Path("/proc/meminfo").read_text().splitlines():
      if line.startswith("MemTotal:"):
        return int(line.split()[1]) / 2**20
  except OSError:
    pass
  return 0.0


def machine(torch_preloaded: bool) -> dict:
  """The machine and settings; `torch_preloaded`: torch was imported before OMP_WAIT_POLICY
  was set, so the setting has no effect."""
  return {"platform": platform.platform(), "python": platform.python_version(),
          "cpu_model": _cpu_model(), "cpus": os.cpu_count(), "cpus_usable": cpu_threads(),
          "memory_gib": _memory_gib(), "jax_backend": jax.default_backend(),
          "jax_devices": jax.device_count(),
          "device_kinds": sorted({d.device_kind for d in jax.devices()}),
          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
          "torch_imported_before_omp_setting": torch_preloaded,
          "load_average": {"start": os.getloadavg()[0]}}


def versions() -> dict:
  out = {}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def cpu_seconds() -> float:
  """User + system CPU seconds of this process and its finished children so far."""
  own, kids = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                   resource.RUSAGE_CHILDREN))
  return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# ----------------------------------------------------------------------------- measurements
def run_section(name: str, fn: Callable[[], dict]) -> dict:
  """Runs one measurement; returns its dict with status, wall_s and load averages."""
  print(f"[{name}] running (load {os.getloadavg()[0]:.1f})", flush=True)
  start, load = time.perf_counter(), os.getloadavg()[0]
  try:
    out = {"status": "ok", **fn()}
  except Skipped as e:
    out = {"status": "skipped", "reason": str(e)}
  except ImportError as e:
    out = {"status": "skipped", "reason": f"a part is missing: {type(e).__name__}: {e}"}
  except Exception as e:  # noqa: BLE001 -- recorded with its reason, the run goes on.
    traceback.print_exc()
    out = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
  out.update(wall_s=time.perf_counter() - start,
             load_average={"start": load, "end": os.getloadavg()[0]})
  detail = out.get("reason", "")
  print(f"[{name}] {out['status']} in {out['wall_s']:.1f} s {detail}", flush=True)
  return out


def _quiet(fn: Callable[[], dict]) -> Callable[[], dict]:
  """`fn` with this process's prints (converter progress lines) kept off the console."""
  def run():
    with contextlib.redirect_stdout(io.StringIO()):
      return fn()
  return run


def section_fns(plan: Plan, cache_dir: Path) -> dict[str, Callable[[], dict]]:
  """One zero-argument function per measurement (run in MEASUREMENTS order)."""
  # Imported here, after `main` has set OMP_WAIT_POLICY: torch_side imports torch.
  from benchmarks import (  # Late: torch after OMP_WAIT_POLICY.
      conversion, decode, fsdp_memory, mfu, pipeline_rate, train_step)

  threads = cpu_threads()
  trainers = {}  # Compiled JAX trainers by config name from train_step, reused below.

  def tokenizer():
    return tokens.Tokenizer.build(tokens.OFFICIAL_LABEL_SETS)

  def demo_trainer():
    if "demo" not in trainers:
      setting = next(s for s in plan.train if s.config == "demo")
      config = train_step.load_config("demo", setting.batch_size)
      vocab = tokenizer().layout.vocab_size
      cfg = train_step.model_config(config, vocab)
      trainers["demo"] = train_step.JaxTrainer(config, vocab,
                                               train_step.make_batch(config, cfg, vocab))
    return trainers["demo"]

  def pipeline():
    shards, problems, build_s = _quiet(
        lambda: pipeline_rate.demo_dataset(cache_dir, plan.demo_clips))()
    trainer = demo_trainer()
    batch_size = trainer.batch["task_id"].shape[0]
    out = pipeline_rate.measure(shards, plan.pipeline_batches, plan.pipeline_repeats,
                                train_rate=lambda: train_step.step_rate(trainer, batch_size))
    return {**out, "demo_clips": plan.demo_clips, "demo_build_s": build_s,
            "demo_problems": problems}

  return {
      "train_step": lambda: train_step.measure(
          list(plan.train), tokenizer().layout.vocab_size, threads, keep=trainers),
      "decode": lambda: decode.measure(
          "demo", plan.decode_batch, 64, plan.decode_repeats, threads, tokenizer(),
          params=trainers["demo"].initial_params if "demo" in trainers else None),
      "pipeline": pipeline,
      "conversion": _quiet(lambda: conversion.measure(
          plan.conversion_clips, plan.conversion_repeats, plan.conversion_processes)),
      "fsdp_memory": lambda: fsdp_memory.run_in_subprocess(
          compile_devices=plan.compile_devices, compile_config=plan.compile_config,
          timeout_s=plan.fsdp_timeout_s),
      "mfu": lambda: mfu.measure(plan.mfu_batch, 3, plan.mfu_repeats),
  }


# ----------------------------------------------------------------------------- main
def write_markdown(results: dict, path: Path) -> None:
  notes = NOTES.read_text() if NOTES.exists() else ""
  path.write_text(report.render(results, notes))


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="few repeats, small sizes (<5 min)")
  parser.add_argument("--only", default="", help=f"comma-separated subset of {MEASUREMENTS}")
  parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON file")
  parser.add_argument("--markdown", type=Path, default=MARKDOWN, help="report file")
  parser.add_argument("--cache_dir", type=Path, default=None,
                      help="where the demo dataset is built once and reused")
  parser.add_argument("--render_only", action="store_true",
                      help="only rebuild --markdown from the existing --out")
  args = parser.parse_args(argv)
  only = [x for x in args.only.split(",") if x]
  unknown = sorted(set(only) - set(MEASUREMENTS))
  if unknown:
    parser.error(f"--only {unknown}: choose from {', '.join(MEASUREMENTS)}")
  args.only = only or list(MEASUREMENTS)
  return args


def main(argv=None) -> int:
  # Idle OpenMP threads sleep instead of spinning: on a loaded machine spinning makes torch
  # with 2 threads over 10x slower than with 1 (torch reads this when first imported).
  torch_preloaded = "torch" in sys.modules
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  args = parse_args(argv)
  if args.render_only:
    write_markdown(json.loads(args.out.read_text()), args.markdown)
    print(f"wrote {args.markdown} from {args.out}")
    return 0

  start = time.perf_counter()
  plan = make_plan(args.quick)
  cache_dir = args.cache_dir or pipeline_rate.default_cache_dir()
  results = {"command": "python -m benchmarks.run" + (" --quick" if args.quick else "")
             + (f" --only {','.join(args.only)}" if len(args.only) < len(MEASUREMENTS) else ""),
             "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "quick": args.quick, "machine": machine(torch_preloaded), "versions": versions(),
             "plan": dataclasses.asdict(plan), "measurements": {}}
  fns = section_fns(plan, cache_dir)
  for name in args.only:
    results["measurements"][name] = run_section(name, fns[name])
  results["machine"]["load_average"]["end"] = os.getloadavg()[0]
  results["wall_time_s"] = time.perf_counter() - start
  results["cpu_time_s"] = cpu_seconds()
  results["summary"] = report.summarize(results["measurements"])
  args.out.write_text(json.dumps(results, indent=1) + "\n")
  write_markdown(results, args.markdown)
  print(json.dumps(results["summary"], indent=1))
  print(f"wrote {args.out} and {args.markdown} in {results['wall_time_s']:.0f} s")
  failed = [n for n, m in results["measurements"].items() if m["status"] == "failed"]
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
