"""Plots of a run (matplotlib, no display needed): training losses and results vs baselines.

    plots.plot_losses(workdir / "metrics.jsonl", workdir / "plots" / "losses.png")
    plots.plot_results(rows, workdir / "plots" / "results.png")
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # Files only; never opens a window.
import matplotlib.pyplot as plt  # noqa: E402

TASK_ORDER = ("ave", "avvp", "avqa", "ssl", "avs")


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
      `baseline_name`, as `main_job.result_rows` builds them.
  """
  if not rows:
    raise ValueError("no results to plot")
  labels = [f"{r['task']}\n{r['metric']}" for r in rows]
  x = range(len(rows))
  width = 0.38
  fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows)), 4.5))
  model = ax.bar([i - width / 2 for i in x], [100 * r["model"] for r in rows], width,
                 label="AV-Unified (demo)", color="tab:blue")
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


def _save(fig, out_path: str | Path) -> Path:
  out_path = Path(out_path)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  fig.savefig(out_path, dpi=110)
  plt.close(fig)
  return out_path
