"""The main job (`python main.py` with no arguments): the demo, end to end, on one machine.

  1. demo data: `data_prep.demo.build` builds the demo dataset in ./demo_data unless it is there;
  2. mask tokenizer: trained on the demo's training masks (configs/mask_tokenizer.py:demo),
     kept in the run as W/mask_tokenizer, and the AVS training targets encoded with it;
  3. training: configs/demo.py in W = ./runs/demo (resumed if a checkpoint is there), with
     the evaluation of all five tasks at the end (W/eval/<step>/results.json, intervals.json);
  4. more splits, same parameters: `test_novel` (skipped with a note when not converted) and
     the first TRAIN_CLIPS training videos of each task (AVVP and SSL against the demo's
     composed ground truth, DIR/metadata/<dataset>.json, where the split has no dense
     labels), into W/main_job/<test_novel|train>/;
  5. baselines: the trivial predictors of `baselines` on the same examples of each split;
  6. report: per split a table of the official metrics, the model's 95 % bootstrap interval
     over videos (`intervals`) and the strongest baseline, printed and written to
     W/main_job/summary.json (rows, rows_novel, rows_train), and plots in W/plots/.

Every stage reuses what an earlier run left (data, tokenizer, checkpoints), so a second run
is quick and an interrupted one continues.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from av_unified_jax import atomic, checkpointing, evaluate, plots, runs, train
from av_unified_jax.data import pipeline, shards
from av_unified_jax.evaluation import baselines
from av_unified_jax.evaluation import intervals as intervals_lib
from av_unified_jax.evaluation import tasks as eval_tasks
from av_unified_jax.evaluation.evaluator import Evaluation, Evaluator, clip_sample
from av_unified_jax.mask_tokenizer.train import shard_masks
from av_unified_jax.mask_tokenizer.train import train_mask_tokenizer as fit_mask_tokenizer
from configs import demo as demo_configs
from configs import mask_tokenizer as mt_configs
from data_prep import demo

DEMO_DIR = Path("demo_data")
NOVEL_SPLIT = "test_novel"  # The demo's split of held-out sources (new object instances).
TRAIN_CLIPS = 50  # Training videos per task in the train table (the first, in stored order).
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
  needed = [Path(pipeline.dataset_dir(config, t)) / "dataset_info.json"
            for t in pipeline.active_tasks(config)]
  if all(p.exists() for p in needed):
    stale = [str(p.parent) for p in needed
             if NOVEL_SPLIT not in json.loads(p.read_text()).get("splits", {})]
    if not stale:
      log(f"[main job] demo data: cached in {demo_dir}")
      return
    log(f"[main job] demo data in {demo_dir} predates the {NOVEL_SPLIT} split ({stale}); "
        "building it again")
  log(f"[main job] demo data: building in {demo_dir} (once)")
  try:
    demo.build(demo_dir, workers=demo.default_workers(), log=log)
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    raise RuntimeError(f"building the demo data in {demo_dir} failed: {e}") from None
  missing = [str(p) for p in needed if not p.exists()]
  if missing:
    raise RuntimeError(f"the demo build did not write {missing}; config.data.shards_dir="
                       f"{config.data.shards_dir!r} must point into {demo_dir}")


def train_mask_tokenizer(config, workdir: Path, tokenizer_config=None, log=print) -> Path:
  """Trains the mask tokenizer on the training masks of the AVS datasets into
  W/mask_tokenizer (skipped when it is there). Returns the directory."""
  out = workdir / runs.MASK_TOKENIZER_DIR
  if (out / "mask_tokenizer.msgpack").exists():
    log(f"[main job] mask tokenizer: cached in {out}")
    return out
  try:  # The same masks as `mask_tokenizer_train --shards_dir`.
    masks = shard_masks(config.data.shards_dir, config.data.train_split, log=lambda _: None)
  except ValueError as e:
    raise RuntimeError(f"{e}; the AVS datasets are needed to train the mask tokenizer") from None
  if tokenizer_config is None:
    tokenizer_config = mt_configs.get_config("demo")
  log(f"[main job] mask tokenizer: training on {len(masks)} demo masks")
  fit_mask_tokenizer(tokenizer_config, masks=masks, workdir=out)
  return out


def train_and_evaluate(config, workdir: Path, log=print) -> tuple[Evaluator | None,
                                                                  train.TrainResult]:
  """Training (resumed when W holds checkpoints) with the evaluation of every task at the end;
  returns the evaluator of that evaluation (None when the config evaluates nothing) and the
  training's result (its `evaluation` is the last one, its `state.params` the parameters),
  so that more splits are scored with the same evaluator and parameters."""
  hooks = []

  def make_evaluate_fn(ctx):
    hooks.append(evaluate.make_evaluate_fn(ctx, log))
    return hooks[-1]

  result = train.train(config, workdir, make_evaluate_fn=make_evaluate_fn)
  return (getattr(hooks[0], "evaluator", None) if hooks else None), result


# ----------------------------------------------------------------------------- splits
@dataclasses.dataclass
class SplitPlan:
  """One table of the report: `label` (test, test_novel, train), the converted `split`, the
  tasks that have it, examples per task (None: config.eval.max_examples), the ground truth
  replacing the stored one per task, and notes printed under the table."""

  label: str
  split: str
  tasks: list[str]
  max_examples: dict[str, int] | None = None
  ground_truth: dict[str, Callable] = dataclasses.field(default_factory=dict)
  videos: dict[str, int] = dataclasses.field(default_factory=dict)
  notes: list[str] = dataclasses.field(default_factory=list)


def has_split(config, task: str, split: str) -> bool:
  """Whether `task`'s converted dataset has `split`."""
  info = shards.load_info(pipeline.dataset_dir(config, task))
  return split in info.get("splits", {})


def has_dense_labels(task: str, source, probe: int = 20) -> bool:
  """Whether `source` carries the labels `task` is scored on (LLP's train split has only weak
  labels, VGG-SS's train split no boxes): checks the first `probe` examples."""
  if task not in ("avvp", "ssl"):
    return True
  for i in range(min(probe, len(source))):
    example = source[i]
    if task == "avvp" and (len(example["audio_labels"]) or len(example["visual_labels"])):
      return True
    if task == "ssl" and np.asarray(example["boxes"]).size:
      return True
  return False


def composed_ground_truth(config, task: str, demo_dir: Path) -> Callable | None:
  """fn(eval_task, example) -> gt dict from the demo's composed annotation
  `<demo_dir>/metadata/<dataset>.json` (AVVP: the clip's audio_rows / visual_rows by its
  filename; SSL: its bbox by its id), or None when there is none for `task`."""
  path = Path(demo_dir) / "metadata" / f"{config.tasks[task].dataset}.json"
  if task not in ("avvp", "ssl") or not path.exists():
    return None
  clips = json.loads(path.read_text())["clips"]
  if task == "avvp":
    rows = {str(c["filename"]): (c["audio_rows"], c["visual_rows"]) for c in clips
            if "audio_rows" in c}

    def avvp_truth(eval_task, example):
      key = str(example["id"])
      if key not in rows:
        raise KeyError(f"{path} has no clip with filename {key!r}")
      return eval_task.ground_truth_from_rows(example, *rows[key])

    return avvp_truth
  boxes = {str(c["id"]): c["bbox"] for c in clips if "bbox" in c}

  def ssl_truth(eval_task, example):
    key = str(example["id"])
    if key not in boxes:
      raise KeyError(f"{path} has no clip with id {key!r}")
    return eval_task.ground_truth_from_boxes(example, boxes[key])

  return ssl_truth


def plan_splits(config, demo_dir: Path, train_clips: int = TRAIN_CLIPS,
                novel_split: str = NOVEL_SPLIT) -> list[SplitPlan]:
  """The three tables: the evaluation split, the novel split (when converted) and a fixed
  sample of the first `train_clips` training videos of each task (stored order), scored
  against the demo's composed ground truth where the split stores no dense labels."""
  tasks = pipeline.active_tasks(config)
  plans = [SplitPlan("test", config.data.eval_split, list(tasks))]
  novel = SplitPlan("test_novel", novel_split,
                    [t for t in tasks if has_split(config, t, novel_split)])
  missing = [t for t in tasks if t not in novel.tasks]
  if missing:
    novel.notes.append(f"split {novel_split!r} is not in the converted data of "
                       f"{', '.join(missing)} under {config.data.shards_dir} (rebuild the demo "
                       "data to get it)")
  plans.append(novel)
  train = SplitPlan("train", config.data.train_split, [], max_examples={})
  for task in tasks:
    source = pipeline.open_source(config, task, train.split)
    if not has_dense_labels(task, source):
      truth = composed_ground_truth(config, task, demo_dir)
      if truth is None:
        train.notes.append(f"{task}: the {train.split} split has no dense labels and "
                           f"{demo_dir}/metadata has no composed ground truth; left out")
        continue
      train.ground_truth[task] = truth
      train.notes.append(f"{task}: scored against the composed ground truth in "
                         f"{demo_dir}/metadata/{config.tasks[task].dataset}.json")
    train.max_examples[task], train.videos[task] = clip_sample(
        config, task, train.split, train_clips)
    train.tasks.append(task)
  plans.append(train)
  return plans


def evaluate_plan(evaluator, params, plan: SplitPlan, out_dir: Path):
  """The model's results and intervals on `plan` (an `Evaluation`), written to
  `out_dir`."""
  return evaluator.evaluate_split(params, out_dir, split=plan.split,
                                  max_examples=plan.max_examples,
                                  ground_truth=plan.ground_truth, tasks=plan.tasks)


def baseline_scores(config, workdir: Path, log=print, plan: SplitPlan | None = None
                    ) -> dict[str, dict[str, dict[str, float]]]:
  """{task: {baseline: {metric: value}}} on the examples the model was scored on (`plan`'s
  split, examples and ground truth; default: the evaluation split) with the run's tokenizer
  giving the class order, as in the evaluation. The baselines learn from the training split."""
  plan = plan or SplitPlan("test", config.data.eval_split, pipeline.active_tasks(config))
  tokenizer = pipeline.load_or_build_tokenizer(config, workdir)
  out = {}
  for name in plan.tasks:
    task = eval_tasks.TASKS[name](tokenizer, config.eval, None)
    test = pipeline.open_source(config, name, plan.split)
    items = pipeline.eval_items(name, test)
    limit = int(config.eval.max_examples if plan.max_examples is None
                else plan.max_examples.get(name, config.eval.max_examples))
    items = items[:limit] if limit > 0 else items
    truth = plan.ground_truth.get(name)
    gts = [truth(task, test[int(i)]) if truth else task.ground_truth(test[int(i)])
           for i in dict.fromkeys(items[:, 0].tolist())]
    train = pipeline.open_source(config, name, config.data.train_split)
    stats = baselines.train_statistics(task, (train[i] for i in range(len(train))))
    out[name] = baselines.score_baselines(task, gts, stats)
    log(f"[main job] baselines {name} ({plan.label}): {len(gts)} examples")
  return out


# ----------------------------------------------------------------------------- report
def result_rows(results: dict, base: dict, intervals: dict | None = None) -> list[dict]:
  """One row per headline metric: the model's value, its 95 % interval (`ci_low`, `ci_high`;
  None when unknown) and the strongest baseline's value."""
  rows = []
  for task, metrics in HEADLINE.items():
    if task not in results:
      continue
    for metric in metrics:
      if metric not in results[task]:
        continue
      scored = {b: s[metric] for b, s in base.get(task, {}).items() if metric in s}
      best = max(scored, key=scored.get) if scored else None
      low, high = (intervals or {}).get(task, {}).get(metric, (None, None))
      rows.append({"task": task, "metric": metric, "model": float(results[task][metric]),
                   "ci_low": None if low is None else float(low),
                   "ci_high": None if high is None else float(high),
                   "baseline": float(scored[best]) if best else float("nan"),
                   "baseline_name": best or "-", "primary": metric == metrics[0]})
  return rows


def format_table(rows: list[dict]) -> str:
  """The printed table: values in percent with the model's 95 % interval, the margin, and
  whether the model beats the strongest baseline."""
  head = (f"{'task':<6}{'metric':<16}{'model':>7}  {'95% interval':<14}{'baseline':>9}  "
          f"{'margin':>7}  strongest baseline")
  lines = [head, "-" * len(head)]
  for r in rows:
    margin = 100 * (r["model"] - r["baseline"])
    mark = "  (beats)" if r["primary"] and margin > 0 else ""
    low, high = r.get("ci_low"), r.get("ci_high")
    interval = "-" if low is None else f"[{100 * low:.1f}, {100 * high:.1f}]"
    lines.append(f"{r['task']:<6}{r['metric']:<16}{100 * r['model']:>7.1f}  {interval:<14}"
                 f"{100 * r['baseline']:>9.1f}  {margin:>+7.1f}  {r['baseline_name']}{mark}")
  return "\n".join(lines)


TABLE_TITLES = {
    "test": "the demo test split",
    "test_novel": "the demo test_novel split (held-out sources: new recordings and photos)",
    "train": "a fixed sample of the demo training clips",
}


def report(config, workdir: Path, tables: dict[str, dict], watch: Stopwatch, log=print):
  """Prints the tables, writes W/main_job/summary.json and the plots; returns the test rows.

  `tables` maps test / test_novel / train to {"results", "baselines", "intervals", "notes",
  "videos"} (a table without results is skipped, its notes printed)."""
  rows, texts = {}, {}
  for label, table in tables.items():
    title = TABLE_TITLES.get(label, label)
    if not table.get("results"):
      rows[label] = []
      log(f"\n{title}: skipped")
    else:
      rows[label] = result_rows(table["results"], table["baselines"], table.get("intervals"))
      texts[label] = format_table(rows[label])
      log(f"\nOfficial metrics on {title} (%), model with its 95% bootstrap interval over "
          "videos vs the strongest trivial baseline:")
      log(texts[label])
    for note in table.get("notes", []):
      log(f"  note: {note}")
  test = tables.get("test", {})
  out = workdir / "main_job"
  out.mkdir(parents=True, exist_ok=True)
  loss_png = plots.plot_losses(workdir / "metrics.jsonl", workdir / "plots" / "losses.png")
  result_png = plots.plot_results(rows["test"], workdir / "plots" / "results.png")
  summary = {"results": test.get("results", {}), "baselines": test.get("baselines", {}),
             "rows": rows.get("test", []), "rows_novel": rows.get("test_novel", []),
             "rows_train": rows.get("train", []), "table": texts.get("test", ""),
             "tables": texts,
             "splits": {label: {k: t.get(k) for k in ("split", "results", "baselines",
                                                      "videos", "examples", "notes")}
                        for label, t in tables.items()},
             "intervals": {"level": intervals_lib.LEVEL, "resamples": intervals_lib.RESAMPLES,
                           "seed": intervals_lib.SEED, "unit": "video"},
             "stage_seconds": watch.stages, "wall_seconds": watch.total(),
             "steps": int(config.total_steps), "plots": [str(loss_png), str(result_png)]}
  atomic.write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
  log(f"\nplots: {loss_png}, {result_png}; summary: {out / 'summary.json'}")
  return rows["test"]


def score_tables(config, workdir: Path, demo_dir: Path, evaluator: Evaluator | None, params,
                 log=print, watch: Stopwatch | None = None,
                 test_evaluation: Evaluation | None = None) -> dict[str, dict]:
  """The model's results and intervals and the baselines of every table (see `plan_splits`):
  the test split's from the training's last evaluation (`test_evaluation`, when given), the
  others scored now with the same evaluator and parameters into W/main_job/<label>/ (without
  an evaluator, the run's final checkpoint is loaded)."""
  step_dir = runs.eval_dir(workdir, config.total_steps)
  tables = {}
  for plan in plan_splits(config, demo_dir):
    table = {"split": plan.split, "notes": list(plan.notes), "videos": dict(plan.videos)}
    tables[plan.label] = table
    if not plan.tasks:
      if not table["notes"]:
        table["notes"].append(f"no task has split {plan.split!r}; table skipped")
      continue
    t0 = time.perf_counter()
    done = test_evaluation if plan.label == "test" else None
    if done is None:
      if evaluator is None:
        evaluator, params = final_evaluator(workdir, config, log)
      done = evaluate_plan(evaluator, params, plan,
                           step_dir if plan.label == "test" else workdir / "main_job" / plan.label)
    table.update(results=done.results, intervals=done.intervals, videos=done.videos,
                 examples=done.examples)
    table["baselines"] = baseline_scores(config, workdir, log, plan)
    if watch is not None:
      watch.lap(f"{plan.label}: evaluation and baselines", t0)
  return tables


def final_evaluator(workdir: Path, config, log=print) -> tuple[Evaluator, object]:
  """An evaluator and the parameters of the run's final checkpoint, loaded from W."""
  run = runs.load_run(workdir, config.total_steps)
  return Evaluator(run.config, run.tokenizer, run.model, run.mesh, run.rules,
                   run.mask_decoder, log), run.params


# ----------------------------------------------------------------------------- entry point
def run(config=None, workdir: str | Path = WORKDIR, demo_dir: str | Path = DEMO_DIR,
        mask_tokenizer_config=None, log: Callable[[str], None] = print) -> int:
  """Runs the main job (see the module docstring); returns the exit code."""
  if config is None:
    config = demo_configs.get_config()
  workdir, demo_dir = Path(workdir).absolute(), Path(demo_dir)  # orbax needs absolute paths
  watch = Stopwatch(log)
  t0 = time.perf_counter()
  ensure_demo_data(config, demo_dir, log)
  watch.lap("demo data", t0)
  t0 = time.perf_counter()
  train_mask_tokenizer(config, workdir, mask_tokenizer_config, log)
  watch.lap("mask tokenizer", t0)
  t0 = time.perf_counter()
  evaluator, result = train_and_evaluate(config, workdir, log)
  if result.preempted:  # Saved; the same command resumes.
    return checkpointing.PREEMPTED_EXIT_CODE
  watch.lap("training and evaluation", t0)
  tables = score_tables(config, workdir, demo_dir, evaluator, result.state.params, log, watch,
                        test_evaluation=result.evaluation)
  report(config, workdir, tables, watch, log)
  log(f"[main job] done in {watch.total() / 60:.1f} min (work directory {workdir})")
  return 0
