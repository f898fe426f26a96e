"""Plots of a run (matplotlib, no display needed): training losses and results vs baselines.

    plots.plot_losses(workdir / "metrics.jsonl", workdir / "plots" / "losses.png")
    plots.plot_results(rows, workdir / "plots" / "results.png")
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

matplotlib.use("Agg")  # Files only; never opens a window.
import matplotlib.pyplot as plt  # noqa: E402

from av_unified_jax.tokens.layout import TASKS as TASK_ORDER  # noqa: E402


def read_metrics(path: str | Path) -> list[dict]:
  """The records of a `metrics.jsonl` (one JSON object per line; broken lines skipped)."""
  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: train first (it is written by --mode=train)")
  out = []
  for line in path.read_text().splitlines():
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return out


def loss_series(records: Sequence[dict]) -> dict[str, tuple[list[int], list[float]]]:
  """{"total" or task: (steps, losses)} from `train/loss` and `train/loss/<task>` scalars."""
  series: dict[str, tuple[list[int], list[float]]] = {}
  for rec in records:
    for key, value in rec.items():
      if key == "train/loss":
        name = "total"
      elif key.startswith("train/loss/"):
        name = key[len("train/loss/"):]
      else:
        continue
      steps, values = series.setdefault(name, ([], []))
      steps.append(int(rec["step"]))
      values.append(float(value))
  return series


def plot_losses(metrics_path: str | Path, out_path: str | Path) -> Path:
  """Training loss (total and per task) against the step, log scale; returns the file."""
  series = loss_series(read_metrics(metrics_path))
  if not series:
    raise ValueError(f"{metrics_path} has no train/loss scalars to plot")
  fig, ax = plt.subplots(figsize=(7, 4.2))
  for name in ["total"] + [t for t in TASK_ORDER if t in series] + sorted(
      set(series) - set(TASK_ORDER) - {"total"}):
    steps, values = series[name]
    ax.plot(steps, values, label=name, linewidth=2.2 if name == "total" else 1.2,
            color="black" if name == "total" else None)
  ax.set_yscale("log")
  ax.set_xlabel("step")
  ax.set_ylabel("token cross-entropy (total: with auxiliary losses)")
  ax.set_title("Training loss per task")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return _save(fig, out_path)


def plot_results(rows: Sequence[dict], out_path: str | Path) -> Path:
  """Grouped bars: the model and its strongest baseline for each headline metric.

  Args:
    rows: dicts with `task`, `metric`, `model` and `baseline` (fractions in [0, 1]) and
      `baseline_name`, as `main_job.result_rows` builds them; the model's 95 % interval
      (`ci_low`, `ci_high`), where given, is drawn as an error bar.
  """
  if not rows:
    raise ValueError("no results to plot")
  labels = [f"{r['task']}\n{r['metric']}" for r in rows]
  x = range(len(rows))
  width = 0.38
  fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows)), 4.5))
  has_ci = [r.get("ci_low") is not None and r.get("ci_high") is not None for r in rows]
  yerr = None
  if any(has_ci):
    yerr = np.array([[max(0.0, 100 * (r["model"] - r["ci_low"])) if ok else 0.0,
                      max(0.0, 100 * (r["ci_high"] - r["model"])) if ok else 0.0]
                     for r, ok in zip(rows, has_ci, strict=True)]).T
  model = ax.bar([i - width / 2 for i in x], [100 * r["model"] for r in rows], width,
                 yerr=yerr, capsize=2, error_kw={"elinewidth": 0.8},
                 label="AV-Unified (demo), 95% interval", color="tab:blue")
  base = ax.bar([i + width / 2 for i in x], [100 * r["baseline"] for r in rows], width,
                label="strongest trivial baseline", color="tab:gray")
  for bars in (model, base):
    ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
  ax.set_xticks(list(x), labels, fontsize=8)
  ax.set_ylabel("score (%)")
  ax.set_ylim(0, 105)
  ax.set_title("Official metrics on the demo test split")
  ax.legend(fontsize=8, loc="upper right")
  ax.grid(axis="y", alpha=0.3)
  return _save(fig, out_path)


def _save(fig, out_path: str | Path, tight: bool = True) -> Path:
  out_path = Path(out_path)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  if tight:
    fig.tight_layout()
  fig.savefig(out_path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return out_path


# ----------------------------------------------------------------------------- predictions
def _frame_strip(fig, grid_row, frames, count: int):
  """Thumbnails of the first `count` frames in one row of a GridSpec; returns the axes."""
  axes = []
  sub = grid_row.subgridspec(1, count, wspace=0.04)
  for i in range(count):
    ax = fig.add_subplot(sub[0, i])
    if i < len(frames):
      ax.imshow(frames[i])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{i} s", fontsize=7)
    axes.append(ax)
  return axes


def _timeline(ax, rows: list[tuple[str, int, int, str]], seconds: int) -> None:
  """Bars [start, end) per labelled row (label, start, end, colour) on a time axis."""
  labels = list(dict.fromkeys(r[0] for r in rows)) or ["(no event)"]
  for label, start, end, colour in rows:
    y = labels.index(label)
    ax.barh(y, end - start, left=start, height=0.6, color=colour, alpha=0.85)
  ax.set_yticks(range(len(labels)), labels, fontsize=8)
  ax.set_xlim(0, seconds)
  ax.set_ylim(-0.7, len(labels) - 0.3)
  ax.set_xticks(range(seconds + 1))
  ax.set_xlabel("time (s)")
  ax.invert_yaxis()
  ax.grid(axis="x", alpha=0.3)


def _timeline_rows(task: str, record: dict) -> list[tuple[str, int, int, str]]:
  if task == "ave":
    event = record["event"]
    if event is None or event["end"] <= event["start"]:
      return []
    return [(event["label"], event["start"], event["end"], "tab:purple")]
  rows = [(f"audio: {e['class']}", e["start"], e["end"], "tab:orange") for e in record["audio"]]
  return rows + [(f"visual: {e['class']}", e["start"], e["end"], "tab:green")
                 for e in record["visual"]]


def _overlay(frame, heat, colour=None, alpha: float = 0.5):
  """float RGB image: `frame` uint8[H, W, 3] blended, weighted by heat in [0, 1], with
  `colour` (an RGB triple) or, when None, the heat's colour on the jet colormap."""
  img = frame.astype(np.float32) / 255.0
  heat = np.clip(heat, 0.0, 1.0)
  w = alpha * heat[..., None]
  paint = plt.cm.jet(heat)[..., :3] if colour is None else np.asarray(colour, np.float32)
  return img * (1 - w) + paint * w


def _resize(values, size: tuple[int, int]) -> np.ndarray:
  """float[h, w] -> float32[H, W] (bilinear, PIL)."""
  img = Image.fromarray(np.asarray(values, np.float32), mode="F")
  return np.asarray(img.resize((size[1], size[0]), Image.BILINEAR), np.float32)


def draw_prediction(task: str, record: dict, frames: np.ndarray, outputs: list[dict],
                    out_dir: str | Path) -> Path:
  """DIR/prediction.png for one prediction (and DIR/mask_<k>.png for AVS); see predict.py.

  Args:
    task: ave, avvp, avqa, ssl or avs. record: the prediction.json content.
    frames: uint8[S, H, W, 3], one frame per second of the video.
    outputs: `evaluation.tasks` outputs of the prediction (SSL: heatmap; AVS: logits per second).
  """
  out_dir = Path(out_dir)
  title = f"{task.upper()}: {Path(record['video']).name}"
  if task in ("ave", "avvp"):
    count = min(len(frames), 10)
    fig = plt.figure(figsize=(10, 4.2))
    grid = fig.add_gridspec(2, 1, height_ratios=(1, 1.6), hspace=0.35)
    _frame_strip(fig, grid[0], frames, count)
    ax = fig.add_subplot(grid[1])
    _timeline(ax, _timeline_rows(task, record), max(count, 1))
    fig.suptitle(title, fontsize=10)
  elif task == "avqa":
    count = min(len(frames), 6)
    fig = plt.figure(figsize=(10, 2.8))
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1))
    idx = np.linspace(0, len(frames) - 1, count).round().astype(int)
    _frame_strip(fig, grid[0], frames[idx], count)
    ax = fig.add_subplot(grid[1])
    ax.axis("off")
    ax.text(0.0, 0.75, f"Q: {record['question']}", fontsize=10, transform=ax.transAxes)
    ax.text(0.0, 0.15, f"A: {record['answer']}", fontsize=11, weight="bold",
            transform=ax.transAxes)
    fig.suptitle(title, fontsize=10)
  elif task == "ssl":
    frame = frames[min(record["focus_second"], len(frames) - 1)]
    heat = _resize(outputs[0]["heatmap"], frame.shape[:2])
    span = float(heat.max() - heat.min())
    heat = (heat - heat.min()) / (span if span > 0 else 1.0)
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
    axes[0].imshow(frame)
    axes[0].set_title(f"frame at {record['focus_second']} s", fontsize=9)
    axes[1].imshow(_overlay(frame, heat, alpha=0.6))
    axes[1].set_title("sound-source heatmap", fontsize=9)
    if record.get("box"):
      x0, y0, x1, y1 = (v * s for v, s in zip(record["box"], frame.shape[1::-1] * 2))
      axes[1].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="yellow"))
    for ax in axes:
      ax.axis("off")
    fig.suptitle(title, fontsize=10)
  else:
    fig, axes = plt.subplots(1, max(len(outputs), 1), figsize=(2.4 * max(len(outputs), 1), 2.8),
                             squeeze=False)
    for ax, o in zip(axes[0], outputs, strict=False):
      frame = frames[min(o["frame"], len(frames) - 1)]
      mask = _resize((o["logits"] > 0).astype(np.float32), frame.shape[:2]) > 0.5
      _save_mask(mask, out_dir / f"mask_{o['frame']}.png")
      ax.imshow(_overlay(frame, mask.astype(np.float32), (0.0, 1.0, 0.3), 0.55))
      ax.set_title(f"{o['frame']} s", fontsize=9)
      ax.axis("off")
    fig.suptitle(title + " (sounding objects in green)", fontsize=10)
  return _save(fig, out_dir / "prediction.png", tight=task in ("ssl", "avs"))


def _save_mask(mask: np.ndarray, path: Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(mask.astype(np.uint8) * 255).save(path)
