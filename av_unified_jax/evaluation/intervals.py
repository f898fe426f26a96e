"""95 % bootstrap intervals over test videos for every metric of a task.

    stat = intervals.VideoStatistic.build(task, gts, outputs)   # per-video contributions
    stat.point()                        # {metric: value}: what task.score(gts, outputs) gives
    stat(idx)                           # idx int[R, V] resampled videos -> {metric: float[R]}
    intervals.bootstrap(task, gts, outputs)   # {metric: (low, high)}

The evaluated examples are grouped into videos (`gt["video_id"]`, else `gt["id"]`; an AVQA
video holds several questions), the videos are drawn with replacement (`RESAMPLES` times,
seed `SEED`), the task's official metric is computed on every resample and the 2.5 and 97.5
percentiles are taken. Each task's metric is recomputed from per-video contributions computed
once with the official scoring code, which gives exactly the official value on a resample:

  ave   correct and total segments per video (the accuracy is pooled over segments);
  avvp  the official per-video scores (`avvp_dataset_scores` of one video: the dataset numbers
        are means of them; *_type_avg is linear in them too);
  avqa  per question group, correct and asked questions per video (pooled accuracies);
  ssl   the cIoU of every clip, `localization_summary` of the resampled cIoUs;
  avs   per video, the summed frame IoUs and F curves and the counts of frames and of frames
        with a non-empty mask; a resample is cut into the official batches of 4 videos in the
        order drawn, and per batch mIoU (mean IoU) and F (max over thresholds of the mean curve)
        are averaged as `avs_test_scores` does.

A task without such a decomposition falls back to `task.score` on every resample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from av_unified_jax import metrics
from av_unified_jax.evaluation import tasks as eval_tasks

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
_AVS_CHUNK = 64  # Resamples per vectorised AVS step (bounds the [R, V, 255] array).


def video_keys(gts: Sequence[dict]) -> list[str]:
  """The video of each evaluated example (`video_id`, else the example id)."""
  return [str(g.get("video_id", g["id"])) for g in gts]


def group_by_video(gts: Sequence[dict]) -> tuple[np.ndarray, int]:
  """(video index int[E] of each example, number of videos), videos in order of appearance."""
  keys = video_keys(gts)
  order = {k: i for i, k in enumerate(dict.fromkeys(keys))}
  return np.array([order[k] for k in keys], np.int64), len(order)


def resample_indices(num_videos: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
  """int64[R, V]: R draws of V videos with replacement (fixed seed: reproducible)."""
  rng = np.random.default_rng(seed)
  return rng.integers(0, num_videos, size=(resamples, num_videos), dtype=np.int64)


def _weights(idx: np.ndarray, num_videos: int) -> np.ndarray:
  """float64[R, V]: how often each video is drawn in each resample."""
  r = idx.shape[0]
  flat = (idx + num_videos * np.arange(r)[:, None]).ravel()
  return np.bincount(flat, minlength=r * num_videos).reshape(r, num_videos).astype(np.float64)


def _per_video(values: np.ndarray, video: np.ndarray, num_videos: int) -> np.ndarray:
  """Per-example values [E, K] -> per-video sums [V, K]."""
  out = np.zeros((num_videos,) + values.shape[1:], np.float64)
  np.add.at(out, video, values)
  return out


class VideoStatistic:
  """A task's metrics as a function of resampled videos: `stat(idx int[R, V])` ->
  {metric: float64[R]} (NaN where a metric is undefined on a resample)."""

  num_videos: int = 0

  def __call__(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    raise NotImplementedError

  def point(self) -> dict[str, float]:
    """The metrics on the evaluated videos themselves (no resampling)."""
    values = self(np.arange(self.num_videos)[None])
    return {k: float(v[0]) for k, v in values.items()}

  @staticmethod
  def build(task: eval_tasks.EvalTask, gts: Sequence[dict],
            outputs: Sequence[Sequence[dict]]) -> VideoStatistic:
    gts, outputs = list(gts), list(outputs)
    if not gts:
      raise ValueError(f"{task.name}: no evaluated examples to resample")
    video, num_videos = group_by_video(gts)
    make = _BUILDERS.get(task.name)
    if make is None:
      return _Generic(task, gts, outputs, video, num_videos)
    return make(task, gts, outputs, video, num_videos)


class _Ratio(VideoStatistic):
  """metric = sum_v w_v num_v / sum_v w_v den_v per metric, then an optional `finish`."""

  def __init__(self, names: Sequence[str], num: np.ndarray, den: np.ndarray,
               finish: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None):
    self.names, self.num, self.den = list(names), num, den  # [V, K] each
    self.num_videos, self.finish = num.shape[0], finish

  def __call__(self, idx):
    w = _weights(np.asarray(idx), self.num_videos)
    num, den = w @ self.num, w @ self.den  # [R, K]
    with np.errstate(invalid="ignore", divide="ignore"):
      ratio = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    out = {name: ratio[:, k] for k, name in enumerate(self.names)}
    return self.finish(out) if self.finish else out


def _ave(task, gts, outputs, video, num_videos) -> VideoStatistic:
  counts = []
  for g, o in zip(gts, outputs, strict=True):
    total = len(g["segments"])
    correct = round(task.score([g], [o])["accuracy"] * total)  # official scoring, one video
    counts.append((correct, total))
  counts = _per_video(np.asarray(counts, np.float64), video, num_videos)
  return _Ratio(["accuracy"], counts[:, :1], counts[:, 1:])


def _avvp(task, gts, outputs, video, num_videos) -> VideoStatistic:
  per_example = [task.score([g], [o]) for g, o in zip(gts, outputs, strict=True)]
  names = list(per_example[0])
  values = np.array([[s[k] for k in names] for s in per_example], np.float64)
  return _Ratio(names, _per_video(values, video, num_videos),
                _per_video(np.ones_like(values), video, num_videos))


def _avqa(task, gts, outputs, video, num_videos) -> VideoStatistic:
  names = list(metrics.AVQA_RESULT_KEYS)
  num = np.zeros((len(gts), len(names)))
  den = np.zeros((len(gts), len(names)))
  for e, (g, o) in enumerate(zip(gts, outputs, strict=True)):
    for key, value in task.score([g], [o]).items():  # 1 or 0 in each group the question is in
      num[e, names.index(key)], den[e, names.index(key)] = value, 1.0
  return _Ratio(names, _per_video(num, video, num_videos), _per_video(den, video, num_videos))


class _Ssl(VideoStatistic):
  """`localization_summary` of the cIoUs of the drawn clips."""

  def __init__(self, cious: np.ndarray, video: np.ndarray, num_videos: int):
    self.cious, self.video, self.num_videos = cious, video, num_videos
    self.members = [np.flatnonzero(video == v) for v in range(num_videos)]

  def __call__(self, idx):
    rows = []
    for draw in np.asarray(idx):
      picked = self.cious[np.concatenate([self.members[v] for v in draw])]
      rows.append(metrics.localization_summary(picked))
    return {k: np.array([r[k] for r in rows], np.float64) for k in rows[0]}


def _ssl(task, gts, outputs, video, num_videos) -> VideoStatistic:
  return _Ssl(np.asarray(task.cious(gts, outputs), np.float64), video, num_videos)


class _Avs(VideoStatistic):
  """Per-batch mIoU and F over batches of `AVS_VIDEOS_PER_BATCH` drawn videos, averaged."""

  def __init__(self, iou_sum, frames, curve_sum, kept):
    self.iou_sum, self.frames, self.curve_sum, self.kept = iou_sum, frames, curve_sum, kept
    self.num_videos = len(frames)

  def __call__(self, idx):
    idx = np.asarray(idx)
    per = eval_tasks.AVS_VIDEOS_PER_BATCH
    r, v = idx.shape
    nb = -(-v // per)
    pad = np.full((r, nb * per - v), self.num_videos)  # a dummy video with no frame
    idx = np.concatenate([idx, pad], 1)
    iou_sum, frames = np.append(self.iou_sum, 0.0), np.append(self.frames, 0.0)
    curve_sum = np.concatenate([self.curve_sum, np.zeros((1, self.curve_sum.shape[1]))])
    kept = np.append(self.kept, 0.0)
    miou = (iou_sum[idx].reshape(r, nb, per).sum(-1) /
            frames[idx].reshape(r, nb, per).sum(-1)).mean(1)
    fscore = np.empty(r)
    for start in range(0, r, _AVS_CHUNK):
      chunk = idx[start:start + _AVS_CHUNK]
      c = len(chunk)
      curves = curve_sum[chunk].reshape(c, nb, per, -1).sum(2)  # [c, nb, 255]
      n_kept = kept[chunk].reshape(c, nb, per).sum(-1)  # [c, nb]
      with np.errstate(invalid="ignore", divide="ignore"):
        best = np.max(curves / np.maximum(n_kept, 1)[..., None], axis=-1)
      fscore[start:start + c] = np.where(n_kept > 0, best, 0.0).mean(1)
    return {"miou": miou, "fscore": fscore}


def _avs(task, gts, outputs, video, num_videos) -> VideoStatistic:
  # Only videos with scored frames take part, as in `AvsTask.batches`.
  scored = [(g, outs) for g, outs in zip(gts, outputs, strict=True) if outs]
  if not scored:
    raise ValueError("avs: no scored frames to resample")
  video, num_videos = group_by_video([g for g, _ in scored])
  rows = []
  for g, outs in scored:
    logits = np.stack([o["logits"] for o in outs])
    target = np.stack([g["masks"][o["frame"]] for o in outs])
    ious = metrics.avs_frame_iou(logits, target)
    curves, kept = metrics.avs_frame_f_curves(logits, target)
    rows.append((ious.sum(), len(outs), curves[kept].sum(0), kept.sum()))
  iou_sum = _per_video(np.array([r[0] for r in rows])[:, None], video, num_videos)[:, 0]
  frames = _per_video(np.array([r[1] for r in rows], np.float64)[:, None], video, num_videos)
  curves = _per_video(np.stack([r[2] for r in rows]), video, num_videos)
  kept = _per_video(np.array([r[3] for r in rows], np.float64)[:, None], video, num_videos)
  return _Avs(iou_sum, frames[:, 0], curves, kept[:, 0])


class _Generic(VideoStatistic):
  """`task.score` on the examples of the drawn videos (slow; any task)."""

  def __init__(self, task, gts, outputs, video, num_videos):
    self.task, self.gts, self.outputs = task, gts, outputs
    self.num_videos = num_videos
    self.members = [np.flatnonzero(video == v) for v in range(num_videos)]

  def __call__(self, idx):
    rows = []
    for draw in np.asarray(idx):
      picked = np.concatenate([self.members[v] for v in draw])
      rows.append(self.task.score([self.gts[i] for i in picked],
                                  [self.outputs[i] for i in picked]))
    names = sorted({k for r in rows for k in r})
    return {k: np.array([r.get(k, np.nan) for r in rows], np.float64) for k in names}


_BUILDERS = {"ave": _ave, "avvp": _avvp, "avqa": _avqa, "ssl": _ssl, "avs": _avs}


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
  """The central `level` percentile interval of the finite values, or None if there are none."""
  values = np.asarray(values, np.float64)
  values = values[np.isfinite(values)]
  if not values.size:
    return None
  tail = 100 * (1 - level) / 2
  low, high = np.percentile(values, [tail, 100 - tail])
  return float(low), float(high)


def bootstrap(task: eval_tasks.EvalTask, gts: Sequence[dict], outputs: Sequence[Sequence[dict]],
              resamples: int = RESAMPLES, seed: int = SEED,
              level: float = LEVEL) -> dict[str, tuple[float, float]]:
  """{metric: (low, high)}: the `level` bootstrap interval of each metric of `task` over the
  evaluated videos (metrics undefined on every resample are left out)."""
  stat = VideoStatistic.build(task, gts, outputs)
  values = stat(resample_indices(stat.num_videos, resamples, seed))
  out = {}
  for name, v in values.items():
    interval = percentile_interval(v, level)
    if interval is not None:
      out[name] = interval
  return out


def summary(task_intervals: dict[str, dict[str, tuple[float, float]]],
            videos: dict[str, int], resamples: int = RESAMPLES, seed: int = SEED,
            level: float = LEVEL) -> dict[str, Any]:
  """The JSON written as `intervals.json` next to `results.json`."""
  return {"level": level, "resamples": resamples, "seed": seed, "unit": "video",
          "videos": dict(videos),
          "intervals": {t: {m: [lo, hi] for m, (lo, hi) in iv.items()}
                        for t, iv in task_intervals.items()}}
