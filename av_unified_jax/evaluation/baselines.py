"""Trivial baselines, scored on the same test examples by the same code as the model.

Each baseline turns the test ground truth (only its shapes and ids) plus statistics of the
training split into the per-task outputs described in `evaluation.tasks`, so
`task.score(gts, outputs)` gives numbers directly comparable with the model's:

  ave   all background; the most frequent training class on every segment
  avvp  predict nothing; the most frequent training classes on every segment, both modalities
  avqa  the most frequent training answer of each question type
  ssl   a centred Gaussian heatmap; a centred box covering the middle half of the frame
  avs   an all-foreground mask; a centred box with the training masks' mean area

    stats = baselines.train_statistics(task, train_examples)
    table = baselines.score_baselines(task, gts, stats)   # {baseline: {metric: value}}
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from av_unified_jax.data import decode_masks
from av_unified_jax.evaluation import tasks as eval_tasks

AVS_LOGIT = 10.0  # |logit| of the baselines' confident mask pixels.


# ----------------------------------------------------------------------------- train stats
def train_statistics(task: eval_tasks.EvalTask, examples: Iterable[Mapping[str, Any]]) -> dict:
  """What the baselines of `task` learn from the training split (counts, mean mask area)."""
  examples = list(examples)
  if not examples:
    raise ValueError(f"{task.name}: no training examples to compute the baselines from")
  if task.name == "ave":
    return {"class_counts": collections.Counter(str(e["category"]) for e in examples)}
  if task.name == "avvp":
    labels = [list(e["weak_labels"]) for e in examples]
    return {"class_counts": collections.Counter(c for row in labels for c in row),
            "labels_per_video": float(np.median([len(r) for r in labels]))}
  if task.name == "avqa":
    per_type: dict[tuple, collections.Counter] = collections.defaultdict(collections.Counter)
    for e in examples:
      per_type[tuple(str(t) for t in e["question_type"])][str(e["answer"])] += 1
    overall = sum(per_type.values(), collections.Counter())
    return {"answers_by_type": dict(per_type), "answers": overall}
  if task.name == "ssl":
    return {}
  if task.name == "avs":
    fractions = [float(m.mean()) for e in examples
                 for m, a in zip(decode_masks(e), e["mask_annotated"], strict=True) if a]
    return {"foreground_fraction": float(np.mean(fractions)) if fractions else 0.25}
  raise ValueError(f"no baselines for task {task.name!r}")


def _most_common(counter: collections.Counter, k: int = 1) -> list[str]:
  """The k most frequent keys; ties broken by the key (deterministic)."""
  return [key for key, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


# ----------------------------------------------------------------------------- per task
def ave_baselines(task, gts, stats) -> dict[str, list[list[dict]]]:
  background = eval_tasks.AVE_OUTPUTS - 1
  top = task.classes.index(_most_common(stats["class_counts"])[0])
  return {
      "all background": [[{"segments": np.full(len(g["segments"]), background)}] for g in gts],
      "majority class": [[{"segments": np.full(len(g["segments"]), top)}] for g in gts],
  }


def avvp_baselines(task, gts, stats) -> dict[str, list[list[dict]]]:
  k = max(1, int(round(stats["labels_per_video"])))
  rows = [task.classes.index(c) for c in _most_common(stats["class_counts"], k)]

  def everywhere(g):
    so = np.zeros_like(g["GT_a"])
    so[rows] = 1
    return [{"SO_a": so, "SO_v": so.copy()}]

  nothing = [[{"SO_a": np.zeros_like(g["GT_a"]), "SO_v": np.zeros_like(g["GT_v"])}]
             for g in gts]
  return {"predict nothing": nothing,
          f"top-{k} classes everywhere": [everywhere(g) for g in gts]}


def avqa_baselines(task, gts, stats) -> dict[str, list[list[dict]]]:
  fallback = _most_common(stats["answers"])[0]
  by_type = {t: _most_common(c)[0] for t, c in stats["answers_by_type"].items()}
  return {"most frequent answer per type":
          [[{"answer": by_type.get(tuple(g["type"]), fallback)}] for g in gts]}


def centre_gaussian(size: int = eval_tasks.SSL_MAP_SIZE, sigma: float = 0.25) -> np.ndarray:
  """float32[size, size] Gaussian centred in the frame, sigma as a fraction of the side."""
  x = (np.arange(size) + 0.5) / size - 0.5
  g = np.exp(-(x[None, :] ** 2 + x[:, None] ** 2) / (2 * sigma ** 2))
  return g.astype(np.float32)


def centre_box(fraction: float) -> list[float]:
  """A centred square box [x0, y0, x1, y1] covering `fraction` of the frame's area."""
  half = float(np.sqrt(np.clip(fraction, 1e-4, 1.0))) / 2
  return [0.5 - half, 0.5 - half, 0.5 + half, 0.5 + half]


def ssl_baselines(task, gts, stats) -> dict[str, list[list[dict]]]:
  del task, stats
  gauss = centre_gaussian()
  box = centre_box(0.5)
  box_map = eval_tasks.box_heatmap(box)
  return {"centre Gaussian": [[{"heatmap": gauss, "box": None}] for _ in gts],
          "centre box": [[{"heatmap": box_map, "box": box}] for _ in gts]}


def _box_logits(box, size: int) -> np.ndarray:
  inside = eval_tasks.box_heatmap(box, size) > 0
  return np.where(inside, AVS_LOGIT, -AVS_LOGIT).astype(np.float32)


def avs_baselines(task, gts, stats) -> dict[str, list[list[dict]]]:
  del task
  box = centre_box(stats["foreground_fraction"])

  def frames(g, make):
    size = g["masks"].shape[-1]
    return [{"logits": make(size), "frame": int(k)} for k in np.flatnonzero(g["annotated"])]

  full = lambda size: np.full((size, size), AVS_LOGIT, np.float32)
  return {"all foreground": [frames(g, full) for g in gts],
          "centre box": [frames(g, lambda s: _box_logits(box, s)) for g in gts]}


BASELINES = {
    "ave": ave_baselines,
    "avvp": avvp_baselines,
    "avqa": avqa_baselines,
    "ssl": ssl_baselines,
    "avs": avs_baselines,
}


def score_baselines(task: eval_tasks.EvalTask, gts: list[dict],
                    stats: Mapping[str, Any]) -> dict[str, dict[str, float]]:
  """{baseline name: {metric: value}} of every baseline of `task` on the test `gts`."""
  outputs = BASELINES[task.name](task, gts, stats)
  return {name: task.score(gts, outs) for name, outs in outputs.items()}
