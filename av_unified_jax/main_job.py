"""The main job (`python main.py` with no arguments): the demo, end to end, on one machine.

  1. demo data: `data_prep.demo` builds the demo dataset in ./demo_data unless it is there;
  2. mask tokenizer: trained on the demo's training masks (configs/mask_tokenizer.py:demo),
     kept in the run as W/mask_tokenizer, and the AVS training targets encoded with it;
  3. training: configs/demo.py in W = ./runs/demo (resumed if a checkpoint is there), with
     the evaluation of all five tasks at the end (W/eval/<step>/results.json);
  4. baselines: the trivial predictors of `baselines` on the same test examples;
  5. report: a table of the official metrics next to the strongest baseline, printed and
     written to W/main_job/summary.json, and plots in W/plots/ (losses, results).

Every stage reuses what an earlier run left (data, tokenizer, checkpoints), so a second run
is quick and an interrupted one continues.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

DEMO_DIR = Path("demo_data")
WORKDIR = Path("runs/demo")
# (task, metric) pairs shown in the table; the first metric of each task decides "beats".
HEADLINE = {
    "ave": ("accuracy",),
    "avvp": ("seg_type_avg", "event_type_avg", "seg_audio", "seg_visual"),
    "avqa": ("overall", "audio_avg", "visual_avg", "av_avg"),
    "ssl": ("ciou_at_0_5", "auc"),
    "avs": ("miou", "fscore"),
}


class Stopwatch:
  """Wall time per stage, printed as each stage ends."""

  def __init__(self, log: Callable[[str], None]):
    self.log, self.start, self.stages = log, time.perf_counter(), {}

  def lap(self, name: str, t0: float) -> None:
    self.stages[name] = time.perf_counter() - t0
    self.log(f"[main job] {name}: {self.stages[name]:.0f} s")

  def total(self) -> float:
    return time.perf_counter() - self.start


# ----------------------------------------------------------------------------- stages
def ensure_demo_data(config, demo_dir: Path, log=print) -> None:
  """Builds the demo dataset into `demo_dir` unless every dataset the config reads exists."""
  from av_unified_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  needed = [Path(pipeline.dataset_dir(config, t)) / "dataset_info.json"
            for t in pipeline.active_tasks(config)]
  if all(p.exists() for p in needed):
    log(f"[main job] demo data: cached in {demo_dir}")
    return
  from data_prep import demo  # pylint: disable=g-import-not-at-top

  log(f"[main job] demo data: building in {demo_dir} (once)")
  if demo.main(["--out_dir", str(demo_dir)]) != 0:
    raise RuntimeError(f"building the demo data in {demo_dir} failed (see the error above)")
  missing = [str(p) for p in needed if not p.exists()]
  if missing:
    raise RuntimeError(f"the demo build did not write {missing}; config.data.shards_dir="
                       f"{config.data.shards_dir!r} must point into {demo_dir}")


def train_mask_tokenizer(config, workdir: Path, tokenizer_config=None, log=print) -> Path:
  """Trains the mask tokenizer on the training masks of the AVS datasets into
  W/mask_tokenizer (skipped when it is there). Returns the directory."""
  from av_unified_jax import evaluate  # pylint: disable=g-import-not-at-top
  from av_unified_jax import mask_tokenizer_train  # pylint: disable=g-import-not-at-top
  from av_unified_jax.data import decode_masks, shards  # pylint: disable=g-import-not-at-top

  out = workdir / evaluate.MASK_TOKENIZER_DIR
  if (out / "mask_tokenizer.msgpack").exists():
    log(f"[main job] mask tokenizer: cached in {out}")
    return out
  masks = []
  for name in ("avsbench_s4", "avsbench_ms3"):
    path = Path(config.data.shards_dir) / name
    if not (path / shards.INFO_FILE).exists():
      continue
    source = shards.open_split(path, config.data.train_split)
    for i in range(len(source)):
      example = source[i]
      annotated = np.asarray(example["mask_annotated"], bool)
      masks += list(decode_masks(example)[annotated])
  if not masks:
    raise RuntimeError(f"no training masks under {config.data.shards_dir}; the AVS datasets "
                       "are needed to train the mask tokenizer")
  if tokenizer_config is None:
    from configs import mask_tokenizer as mt_configs  # pylint: disable=g-import-not-at-top

    tokenizer_config = mt_configs.get_config("demo")
  log(f"[main job] mask tokenizer: training on {len(masks)} demo masks")
  mask_tokenizer_train.train_mask_tokenizer(tokenizer_config, masks=masks, workdir=out)
  return out


def train_and_evaluate(config, workdir: Path, log=print) -> int:
  """Training with the pipeline over the demo shards (AVS targets from the mask codes) and
  the evaluation of every task at the end."""
  from av_unified_jax import evaluate, mask_codes, models, train
  from av_unified_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  tokenizer = pipeline.load_or_build_tokenizer(config, workdir)
  codes = None
  if "avs" in pipeline.active_tasks(config):
    codes = mask_codes.MaskCodeTable.for_run(
        config, workdir / evaluate.MASK_TOKENIZER_DIR, log=log)
  data = pipeline.make_train_data(config, tokenizer, mask_codes=codes,
                                  model_cfg=models.model_config_from(config.model))
  return train.train_and_evaluate(config, workdir, data=data,
                                  make_evaluate_fn=evaluate.make_evaluate_fn)


def baseline_scores(config, workdir: Path, log=print) -> dict[str, dict[str, dict[str, float]]]:
  """{task: {baseline: {metric: value}}} on the evaluation examples the model was scored on
  (the run's tokenizer gives the class order, as in the evaluation)."""
  from av_unified_jax import baselines, eval_tasks  # pylint: disable=g-import-not-at-top
  from av_unified_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  tokenizer = pipeline.load_or_build_tokenizer(config, workdir)
  out = {}
  for name in pipeline.active_tasks(config):
    task = eval_tasks.TASKS[name](tokenizer, config.eval, None)
    test = pipeline.open_source(config, name, config.data.eval_split)
    items = pipeline.eval_items(name, test)
    limit = int(config.eval.max_examples)
    items = items[:limit] if limit > 0 else items
    gts = [task.ground_truth(test[int(i)]) for i in dict.fromkeys(items[:, 0].tolist())]
    train = pipeline.open_source(config, name, config.data.train_split)
    stats = baselines.train_statistics(task, (train[i] for i in range(len(train))))
    out[name] = baselines.score_baselines(task, gts, stats)
    log(f"[main job] baselines {name}: {len(gts)} test examples")
  return out


# ----------------------------------------------------------------------------- report
def result_rows(results: dict, base: dict) -> list[dict]:
  """One row per headline metric: the model's value and the strongest baseline's."""
  rows = []
  for task, metrics in HEADLINE.items():
    if task not in results:
      continue
    for metric in metrics:
      if metric not in results[task]:
        continue
      scored = {b: s[metric] for b, s in base.get(task, {}).items() if metric in s}
      best = max(scored, key=scored.get) if scored else None
      rows.append({"task": task, "metric": metric, "model": float(results[task][metric]),
                   "baseline": float(scored[best]) if best else float("nan"),
                   "baseline_name": best or "-", "primary": metric == metrics[0]})
  return rows


def format_table(rows: list[dict]) -> str:
  """The printed table: values in percent, the margin, and whether the model beats it."""
  head = f"{'task':<6}{'metric':<16}{'model':>8}{'baseline':>10}  {'margin':>7}  strongest baseline"
  lines = [head, "-" * len(head)]
  for r in rows:
    margin = 100 * (r["model"] - r["baseline"])
    mark = "  (beats)" if r["primary"] and margin > 0 else ""
    lines.append(f"{r['task']:<6}{r['metric']:<16}{100 * r['model']:>8.1f}"
                 f"{100 * r['baseline']:>10.1f}  {margin:>+7.1f}  {r['baseline_name']}{mark}")
  return "\n".join(lines)


def report(config, workdir: Path, results: dict, base: dict, watch: Stopwatch, log=print):
  """Prints the table, writes W/main_job/summary.json and the plots; returns the rows."""
  from av_unified_jax import plots  # pylint: disable=g-import-not-at-top

  rows = result_rows(results, base)
  table = format_table(rows)
  log("\nOfficial metrics on the demo test split (%), model vs the strongest trivial baseline:")
  log(table)
  out = workdir / "main_job"
  out.mkdir(parents=True, exist_ok=True)
  loss_png = plots.plot_losses(workdir / "metrics.jsonl", workdir / "plots" / "losses.png")
  result_png = plots.plot_results(rows, workdir / "plots" / "results.png")
  summary = {"results": results, "baselines": base, "rows": rows, "table": table,
             "stage_seconds": watch.stages, "wall_seconds": watch.total(),
             "steps": int(config.total_steps), "plots": [str(loss_png), str(result_png)]}
  (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
  log(f"\nplots: {loss_png}, {result_png}; summary: {out / 'summary.json'}")
  return rows


# ----------------------------------------------------------------------------- entry point
def run(config=None, workdir: str | Path = WORKDIR, demo_dir: str | Path = DEMO_DIR,
        mask_tokenizer_config=None, log: Callable[[str], None] = print) -> int:
  """Runs the main job (see the module docstring); returns the exit code."""
  from av_unified_jax import evaluate  # pylint: disable=g-import-not-at-top

  if config is None:
    from configs import demo  # pylint: disable=g-import-not-at-top

    config = demo.get_config()
  workdir, demo_dir = Path(workdir).absolute(), Path(demo_dir)  # orbax needs absolute paths
  watch = Stopwatch(log)
  t0 = time.perf_counter()
  ensure_demo_data(config, demo_dir, log)
  watch.lap("demo data", t0)
  t0 = time.perf_counter()
  train_mask_tokenizer(config, workdir, mask_tokenizer_config, log)
  watch.lap("mask tokenizer", t0)
  t0 = time.perf_counter()
  code = train_and_evaluate(config, workdir, log)
  if code:
    return code
  watch.lap("training and evaluation", t0)
  results_path = evaluate.eval_dir(workdir, config.total_steps) / evaluate.RESULTS_FILE
  results = json.loads(results_path.read_text())
  t0 = time.perf_counter()
  base = baseline_scores(config, workdir, log)
  watch.lap("baselines", t0)
  report(config, workdir, results, base, watch, log)
  log(f"[main job] done in {watch.total() / 60:.1f} min (work directory {workdir})")
  return 0
