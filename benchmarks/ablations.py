"""The paper's claims on the demo: the three components switched off one at a time, and each
task trained alone, against the full model trained jointly (the main job's config).

  python -m benchmarks.ablations --quick          # 1 seed, 400 steps per run: under an hour
  python -m benchmarks.ablations [--seeds 3]      # the full study: 800 steps, hours on 2 cores
  python -m benchmarks.ablations --render_only    # ABLATIONS.md and the chart from the json

Runs (`RUNS`), each trained from scratch with configs/demo.py (the main job's budget: its
steps, batch and schedule) and evaluated on test and test_novel:
  full                     the main job's model and task mixture
  no_temporal_multiscale   model.use_temporal_multiscale=False (one 1-s scale, no task mix)
  no_spatial_guidance      model.use_spatial_guidance=False (uniform maps, mean-pooled vision)
  no_task_prompts          model.use_task_prompts=False (no prompt in the memory or the mix)
  only_<task>              every other task's sampling weight 0: the same steps and batch
                           size, all of them on this task's examples

Every finished (run, seed) is written to the json at once (atomically), with its config
difference, metrics, wall time and seed, and the same command again runs only what is missing:
the study can be stopped at any point (a run stopped halfway resumes from its checkpoint in
runs/ablations/<study>/). The full study writes `benchmarks/ablations.json`, `ABLATIONS.md` and
`benchmarks/ablations.png`; `--quick` writes `benchmarks/ablations_quick.*` beside them, so a
quick run never mixes with the full study's results. The tables and verdicts are rendered by
`benchmarks.ablations_report`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from av_unified_jax import atomic, checkpointing, main_job, runs
from av_unified_jax.data import tasks as data_tasks
from benchmarks import ablations_report
from configs import demo as demo_configs

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("test", "test_novel")
SWITCHES = ("use_temporal_multiscale", "use_spatial_guidance", "use_task_prompts")


@dataclasses.dataclass(frozen=True)
class Study:
  """Steps per run, default seed count and where the study's files go."""
  name: str
  steps: int
  seeds: int
  json: Path
  markdown: Path
  chart: Path


FULL = Study("full", demo_configs.STEPS, 3, ROOT / "benchmarks" / "ablations.json",
             ROOT / "ABLATIONS.md", ROOT / "benchmarks" / "ablations.png")
QUICK = Study("quick", 400, 1, ROOT / "benchmarks" / "ablations_quick.json",
              ROOT / "benchmarks" / "ablations_quick.md", ROOT / "benchmarks" / "ablations_quick.png")


def _runs() -> dict[str, dict[str, object]]:
  """{run name: {config key: value}}: each run's difference from configs/demo.py."""
  out: dict[str, dict[str, object]] = {"full": {}}
  for switch in SWITCHES:
    out["no_" + switch.removeprefix("use_")] = {f"model.{switch}": False}
  for task in data_tasks.TASK_ORDER:
    out[f"only_{task}"] = {f"tasks.{other}.weight": 0.0
                           for other in data_tasks.TASK_ORDER if other != task}
  return out


RUNS = _runs()


def run_config(name: str, seed: int, steps: int):
  """configs/demo.py with `steps` steps, `seed` and run `name`'s difference applied."""
  if name not in RUNS:
    raise ValueError(f"ablation run {name!r} is not one of {sorted(RUNS)}")
  c = demo_configs.get_config(f"steps={steps}")
  c.seed = int(seed)
  # A run stopped halfway resumes from its last checkpoint.
  c.checkpoint_every_steps = max(1, steps // 4)
  for key, value in RUNS[name].items():
    node = c
    *parents, leaf = key.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = value
  return c


def key_of(name: str, seed: int) -> str:
  return f"{name}/seed{seed}"


def load_record(study: Study) -> dict:
  """The study's json ({"study", "runs", "baselines"}), empty when it does not exist yet."""
  if not study.json.exists():
    return {"study": {"name": study.name, "steps": study.steps, "json": study.json.name},
            "runs": {}, "baselines": {}}
  record = json.loads(study.json.read_text())
  if int(record.get("study", {}).get("steps", -1)) != study.steps:
    raise ValueError(f"{study.json} holds a study of {record.get('study', {}).get('steps')} "
                     f"steps per run, not {study.steps}: move it away to start another study")
  return record


def save_record(study: Study, record: dict) -> None:
  atomic.write_text(study.json, json.dumps(record, indent=1, sort_keys=True) + "\n")


def headline(results: dict) -> dict[str, float]:
  """{task: headline metric (the main job's first metric of the task)} from results."""
  return {t: float(r[main_job.HEADLINE[t][0]]) for t, r in results.items()
          if t in main_job.HEADLINE}


def _commit() -> str:
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                          capture_output=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def train_one(config, workdir: Path, demo_dir: Path, log: Callable[[str], None]) -> dict:
  """Trains one run (resuming from W) and scores test and test_novel; returns
  {"results": {split: results}, "metrics": {split: headline}} or {"preempted": True}."""
  evaluator, result = main_job.train_and_evaluate(config, workdir, log)
  if result.preempted:
    return {"preempted": True}
  results = {"test": result.evaluation.results}
  if evaluator is None:
    evaluator, params = main_job.final_evaluator(workdir, config, log)
  else:
    params = result.state.params
  for plan in main_job.plan_splits(config, demo_dir):
    if plan.label == "test_novel" and plan.tasks:
      done = main_job.evaluate_plan(evaluator, params, plan, workdir / "test_novel")
      results["test_novel"] = done.results
  return {"results": results,
          "metrics": {split: headline(r) for split, r in results.items()}}


def baselines(config, workdir: Path, demo_dir: Path, log) -> dict:
  """{split: {task: [baseline name, headline value]}}: the strongest trivial baseline."""
  out = {}
  for plan in main_job.plan_splits(config, demo_dir):
    if plan.label not in SPLITS or not plan.tasks:
      continue
    scores = main_job.baseline_scores(config, workdir, log, plan)
    out[plan.label] = {}
    for task, by_name in scores.items():
      metric = main_job.HEADLINE[task][0]
      name = max(by_name, key=lambda n: by_name[n][metric])
      out[plan.label][task] = [name, float(by_name[name][metric])]
  return out


def run_study(study: Study, seeds: int, only: list[str] | None = None,
              demo_dir: Path = main_job.DEMO_DIR, work_root: Path = ROOT / "runs" / "ablations",
              log: Callable[[str], None] = print) -> int:
  """Runs what the study's json lacks, recording each (run, seed) as it finishes; renders."""
  names = only or list(RUNS)
  unknown = [n for n in names if n not in RUNS]
  if unknown:
    raise ValueError(f"--only: {unknown} not among the runs {list(RUNS)}")
  record = load_record(study)
  record["study"].update(seeds=max(seeds, int(record["study"].get("seeds", 0))))
  study_dir = Path(work_root) / study.name
  todo = [(n, s) for s in range(seeds) for n in names if key_of(n, s) not in record["runs"]]
  log(f"[ablations] {study.name} study, {study.steps} steps per run: {len(todo)} of "
      f"{len(names) * seeds} runs to do")
  first = run_config("full", 0, study.steps)
  main_job.ensure_demo_data(first, demo_dir, log)
  tokenizer_dir = main_job.train_mask_tokenizer(first, study_dir, None, log)
  for i, (name, seed) in enumerate(todo):
    config = run_config(name, seed, study.steps)
    workdir = (study_dir / name / f"seed{seed}").absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / runs.MASK_TOKENIZER_DIR).exists():
      shutil.copytree(tokenizer_dir, workdir / runs.MASK_TOKENIZER_DIR)
    log(f"[ablations] ({i + 1}/{len(todo)}) {key_of(name, seed)}: {RUNS[name] or 'as configured'}")
    t0 = time.perf_counter()
    out = train_one(config, workdir, demo_dir, log)
    if out.get("preempted"):
      log("[ablations] stopped; the same command continues")
      return checkpointing.PREEMPTED_EXIT_CODE
    out.update(run=name, seed=seed, steps=study.steps, overrides=RUNS[name],
               wall_seconds=round(time.perf_counter() - t0, 1), commit=_commit(),
               finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    record["runs"][key_of(name, seed)] = out
    if not record["baselines"] and name == "full":
      record["baselines"] = baselines(config, workdir, demo_dir, log)
    record["machine"] = {"platform": platform.platform(), "python": sys.version.split()[0]}
    save_record(study, record)
    log(f"[ablations] {key_of(name, seed)} done in {out['wall_seconds'] / 60:.1f} min: "
        f"{out['metrics']['test']}")
  ablations_report.render(record, study.markdown, study.chart, log=log)
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true",
                      help=f"{QUICK.steps} steps per run, {QUICK.seeds} seed, into "
                           "benchmarks/ablations_quick.*")
  parser.add_argument("--seeds", type=int, default=None,
                      help="seeds per run (default: 3, or 1 with --quick)")
  parser.add_argument("--only", default="", help="comma-separated runs (default: all)")
  parser.add_argument("--render_only", action="store_true",
                      help="only write the markdown and the chart from the json")
  args = parser.parse_args(argv)
  study = QUICK if args.quick else FULL
  if args.render_only:
    ablations_report.render(load_record(study), study.markdown, study.chart)
    return 0
  seeds = study.seeds if args.seeds is None else args.seeds
  if seeds < 1:
    parser.error(f"--seeds={seeds}: give at least 1")
  only = [s.strip() for s in args.only.split(",") if s.strip()] or None
  return run_study(study, seeds, only)


if __name__ == "__main__":
  sys.exit(main())
