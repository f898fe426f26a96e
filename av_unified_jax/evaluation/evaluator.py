"""The evaluator: reads a split without augmentation, runs the model (`runner`), turns the
outputs into each benchmark's inputs (`tasks`) and scores them with the official metrics
(`av_unified_jax.metrics`), with bootstrap intervals over videos (`intervals`).

    evaluator = Evaluator(config, tokenizer, model, mesh, rules, mask_decoder)
    results = evaluator.evaluate(params, out_dir)           # {task: {metric: value}}
    evaluation = evaluator.evaluate_split(params, out_dir, split="test_novel")

Written to out_dir: results.json ({task: {metric: value}}, fractions in [0, 1]),
intervals.json (95 % bootstrap intervals over videos) and <task>/predictions.json (readable
predictions; SSL heatmaps and AVS masks as PNGs).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from etils import epath

from av_unified_jax import atomic, sharding
from av_unified_jax.data import pipeline
from av_unified_jax.evaluation import intervals as intervals_lib
from av_unified_jax.evaluation import tasks as eval_tasks
from av_unified_jax.evaluation.runner import ModelRunner, gather_rows, to_global
from av_unified_jax.mask_tokenizer.decoder import MaskDecoder
from av_unified_jax.models.model import AVUnified

RESULTS_FILE = "results.json"
INTERVALS_FILE = "intervals.json"  # {task: {metric: [low, high]}}: 95 % bootstrap over videos.


def avs_token_groups(config, tokenizer, mask_decoder: MaskDecoder | None):
  """bool[V] foreground tokens for `eval.avs_decode="foreground"` (None otherwise, or without
  a mask decoder): AVS cells are decoded object-or-not first (`decoding.group_argmax`)."""
  mode = str(config.eval.avs_decode)
  if mode not in ("foreground", "greedy"):
    raise ValueError(f"eval.avs_decode={mode!r}: use 'foreground' or 'greedy'")
  if mode == "greedy" or not hasattr(mask_decoder, "foreground_tokens"):
    return None  # No mask tokenizer (or a bare codes -> logits function): plain argmax.
  return mask_decoder.foreground_tokens(tokenizer.layout)


GroundTruthFn = Callable[[eval_tasks.EvalTask, Mapping[str, Any]], dict]


@dataclasses.dataclass
class TaskScores:
  """One task's evaluation: metrics {name: value}, intervals {name: (low, high)} (95 %
  bootstrap over videos), the number of evaluated examples and of videos."""

  metrics: dict[str, float]
  intervals: dict[str, tuple[float, float]]
  examples: int
  videos: int


@dataclasses.dataclass
class Evaluation:
  """Every task's results {task: {metric: value}}, intervals {task: {metric: (low, high)}},
  and counts of examples and videos per task."""

  results: dict[str, dict[str, float]]
  intervals: dict[str, dict[str, tuple[float, float]]]
  examples: dict[str, int]
  videos: dict[str, int]

  def write(self, out_dir: epath.PathLike) -> None:
    out_dir = epath.Path(out_dir)  # Local or a URL (gs://...).
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out_dir / RESULTS_FILE,
                      json.dumps(self.results, indent=1, sort_keys=True) + "\n")
    atomic.write_text(out_dir / INTERVALS_FILE, json.dumps(
        intervals_lib.summary(self.intervals, self.videos), indent=1, sort_keys=True) + "\n")


def read_intervals(directory: epath.PathLike) -> dict[str, dict[str, tuple[float, float]]] | None:
  """{task: {metric: (low, high)}} from `directory`/intervals.json, None if it is not there."""
  path = epath.Path(directory) / INTERVALS_FILE
  if not path.exists():
    return None
  saved = json.loads(path.read_text())["intervals"]
  return {t: {m: (float(lo), float(hi)) for m, (lo, hi) in v.items()} for t, v in saved.items()}


@dataclasses.dataclass
class Evaluator:
  """Evaluates parameters on every active task (see the module docstring).

  Attributes: config (the run's ConfigDict), tokenizer, model (AVUnified), mesh and rules
  (the sharding of the parameters), mask_decoder (None: AVS is skipped with a message).
  """

  config: Any
  tokenizer: Any
  model: AVUnified
  mesh: jax.sharding.Mesh
  rules: Any
  mask_decoder: MaskDecoder | None = None
  log: Callable[[str], None] = print
  mask_codes: Callable | None = None  # AVS targets in the eval batches (not needed to score).
  check_stop: Callable[[], None] | None = None  # Before every batch; may raise to stop.

  def __post_init__(self):
    self.runner = ModelRunner(self.model, self.tokenizer, self.config.eval.beam_size,
                              avs_token_groups(self.config, self.tokenizer, self.mask_decoder),
                              float(self.config.eval.avs_foreground_threshold),
                              check_stop=self.check_stop)

  def tasks(self) -> list[str]:
    return pipeline.active_tasks(self.config)

  def make_task(self, name: str) -> eval_tasks.EvalTask:
    return eval_tasks.TASKS[name](self.tokenizer, self.config.eval, self.mask_decoder)

  def evaluate(self, params, out_dir: epath.PathLike, **kwargs) -> dict[str, dict[str, float]]:
    """Scores every active task; writes results.json, intervals.json and the predictions into
    `out_dir`; returns the results. `kwargs` as in `evaluate_split`."""
    return self.evaluate_split(params, out_dir, **kwargs).results

  def evaluate_split(self, params, out_dir: epath.PathLike, *, split: str | None = None,
                     max_examples: int | Mapping[str, int] | None = None,
                     ground_truth: Mapping[str, GroundTruthFn] | None = None,
                     tasks: Sequence[str] | None = None) -> Evaluation:
    """Scores `tasks` (default: every active task) on `split` (default config.data.eval_split)
    with their bootstrap intervals; writes results.json, intervals.json and the predictions
    into `out_dir`.

    Args:
      params: the model parameters.
      out_dir: where the files go.
      split: the converted split to read.
      max_examples: evaluation examples per task (0 = all; default config.eval.max_examples),
        or {task: count}.
      ground_truth: {task: fn(eval_task, example) -> gt dict} replacing `task.ground_truth`
        (e.g. a demo's composed annotation of a split that stores no dense labels).
      tasks: the tasks to score.
    """
    out_dir = epath.Path(out_dir)  # Local or a URL (gs://...).
    evaluation = Evaluation({}, {}, {}, {})
    for name in tasks if tasks is not None else self.tasks():
      if name == "avs" and self.mask_decoder is None:
        self.log("eval avs: skipped (no mask tokenizer in the work directory)")
        continue
      t0 = time.perf_counter()
      limit = max_examples.get(name) if isinstance(max_examples, Mapping) else max_examples
      scores = self.score_task(name, params, out_dir / name, split=split, max_examples=limit,
                               ground_truth=(ground_truth or {}).get(name))
      evaluation.results[name], evaluation.intervals[name] = scores.metrics, scores.intervals
      evaluation.examples[name], evaluation.videos[name] = scores.examples, scores.videos
      shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.metrics.items())
      self.log(f"eval {name}: {scores.examples} examples in {time.perf_counter() - t0:.1f} s: "
               f"{shown}")
    if jax.process_index() == 0:
      evaluation.write(out_dir)
    return evaluation

  def evaluate_task(self, name: str, params, out_dir: epath.Path) -> tuple[dict[str, float], int]:
    """One task's metrics and the number of evaluated examples (predictions into out_dir)."""
    scores = self.score_task(name, params, out_dir)
    return scores.metrics, scores.examples

  def score_task(self, name: str, params, out_dir: epath.Path, *, split: str | None = None,
                 max_examples: int | None = None,
                 ground_truth: GroundTruthFn | None = None) -> TaskScores:
    """One task's metrics, their bootstrap intervals over videos and the counts (predictions
    into out_dir). Arguments as in `evaluate_split`."""
    task = self.make_task(name)
    data = pipeline.make_eval_batches(self.config, name, self.tokenizer, split=split,
                                      max_examples=max_examples, mask_codes=self.mask_codes)
    truth = (lambda example: ground_truth(task, example)) if ground_truth else task.ground_truth
    gts: dict[int, dict] = {}
    outputs: dict[int, list[dict]] = collections.defaultdict(list)
    with sharding.activate(self.mesh, self.rules):
      for local in data.batches:
        tokens_, aux = self.runner(task, params, self._global(local))
        rows = {k: gather_rows(local[k]) for k in ("example_index", "frame_index", "valid",
                                                    "focus_segment", "segment_mask")}
        keep = np.flatnonzero(rows["valid"])
        for i in rows["example_index"][keep]:
          if int(i) not in gts:
            gts[int(i)] = truth(data.source[int(i)])
        queries = [eval_tasks.row_query(gts[int(rows["example_index"][j])],
                                        int(rows["focus_segment"][j]),
                                        int(rows["frame_index"][j]),
                                        int(rows["segment_mask"][j].sum())) for j in keep]
        picked = task.interpret(None if tokens_ is None else tokens_[keep],
                                {k: v[keep] for k, v in aux.items()}, queries)
        for j, out in zip(keep, picked, strict=True):
          outputs[int(rows["example_index"][j])].append(out)
    order = sorted(gts)
    gt_list, out_list = [gts[i] for i in order], [outputs[i] for i in order]
    result = {k: float(v) for k, v in task.score(gt_list, out_list).items()}
    bounds = intervals_lib.bootstrap(task, gt_list, out_list)
    if jax.process_index() == 0:
      task.write(out_dir, gt_list, out_list)
    return TaskScores(result, {k: v for k, v in bounds.items() if k in result}, len(order),
                      len(set(intervals_lib.video_keys(gt_list))))

  def _global(self, local: Mapping[str, np.ndarray]) -> dict:
    return to_global(local, self.mesh, self.rules)


def clip_sample(config, task: str, split: str, clips: int) -> tuple[int, int]:
  """The first `clips` videos of `task`'s `split` in stored order (all when it has fewer):
  (evaluation examples covering them, to pass as max_examples; the number of videos).
  An AVQA video brings all its questions, an AVS video all its annotated frames."""
  source = pipeline.open_source(config, task, split)
  items = pipeline.eval_items(task, source)
  videos: dict[str, None] = {}
  count = 0
  cache: dict[int, str] = {}
  for index in items[:, 0]:
    index = int(index)
    if index not in cache:
      example = source[index]
      cache[index] = str(example.get("video_id", example["id"]))
    if cache[index] not in videos:
      if len(videos) == clips:
        break
      videos[cache[index]] = None
    count += 1
  return count, len(videos)
