"""ABLATIONS.md and its bar chart from the ablation study's json (`benchmarks.ablations`).

Per split a table: rows = runs, columns = each task's headline metric as the mean over seeds
with the seeds' range; then, claim by claim, a verdict per task, summed up first in plain
words (the tasks each claim holds for, is reversed for, or leaves undecided). A difference counts only
when the two runs' seed ranges do not overlap ("beyond the seed spread"); with one seed per
run there is no spread, and the verdict says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # Files only; never opens a window.
import matplotlib.pyplot as plt  # noqa: E402

from av_unified_jax import atomic  # noqa: E402
from av_unified_jax.data.tasks import TASK_ORDER  # noqa: E402

SPLIT_TITLES = {
    "test": "test (the training sources in new scenes)",
    "test_novel": "test_novel (held-out sources: new recordings and photos)",
}
METRIC_NAMES = {"ave": "AVE accuracy", "avvp": "AVVP seg_type_avg", "avqa": "AVQA overall",
                "ssl": "SSL cIoU@0.5", "avs": "AVS mIoU"}
# claim -> what it says; "joint" compares full with only_<task>, the others full with the run
# of that name (the component switched off).
CLAIMS = {
    "joint": "Training on all five tasks jointly beats training each task alone",
    "no_temporal_multiscale": "Multi-scale temporal perception helps",
    "no_spatial_guidance": "Cross-modal guidance of the spatial perception helps",
    "no_task_prompts": "Task-specific prompts help",
}

# What switching a component off removes (models/config.py), for the reader of the tables.
SWITCH_NOTES = {
    "no_temporal_multiscale": "one 1-s temporal scale and no task-aware mix of scales",
    "no_spatial_guidance": "uniform spatial maps and a mean-pooled visual vector: no audio "
                           "guidance, and no sound-source map for SSL and AVS to read",
    "no_task_prompts": "the prompt enters neither the fused memory nor the scale mix, so AVQA "
                       "never sees its question and AVS not its second",
}


def seed_values(record: dict, run: str, split: str, task: str) -> list[float]:
  """The run's headline values of `task` on `split`, one per finished seed."""
  out = []
  for rec in record.get("runs", {}).values():
    if rec["run"] == run:
      value = rec.get("metrics", {}).get(split, {}).get(task)
      if value is not None:
        out.append(float(value))
  return out


def cell(values: Sequence[float]) -> str:
  """'mean [min, max] (n)' in percent; '-' when there is nothing."""
  if not values:
    return "-"
  v = 100 * np.asarray(values)
  if len(v) == 1:
    return f"{v[0]:.1f} (1)"
  return f"{v.mean():.1f} [{v.min():.1f}, {v.max():.1f}] ({len(v)})"


def compare(full: Sequence[float], other: Sequence[float]) -> str:
  """Plain words for full vs other (higher is better)."""
  if not full or not other:
    return "not measured yet"
  diff = 100 * (np.mean(full) - np.mean(other))
  text = f"{100 * np.mean(full):.1f} vs {100 * np.mean(other):.1f} ({diff:+.1f})"
  if len(full) < 2 or len(other) < 2:
    word = "higher" if diff > 0 else "lower" if diff < 0 else "equal"
    return f"{text}: {word} with one seed, no spread to judge it by"
  if min(full) > max(other):
    return f"{text}: **holds**, beyond the seed spread"
  if max(full) < min(other):
    return f"{text}: **reversed**, beyond the seed spread"
  return f"{text}: within the seed spread, undecided"


def outcome(full: Sequence[float], other: Sequence[float]) -> str:
  """One of "holds", "reversed", "undecided" (ranges overlap), "one seed", "not measured"."""
  if not full or not other:
    return "not measured"
  if len(full) < 2 or len(other) < 2:
    return "one seed"
  if min(full) > max(other):
    return "holds"
  if max(full) < min(other):
    return "reversed"
  return "undecided"


# How `plain_words` names each outcome, in the order it lists them.
OUTCOME_WORDS = {
    "holds": "holds, beyond the seed spread, for",
    "reversed": "is reversed (the run without it does better, beyond the seed spread) for",
    "undecided": "cannot be told from the seed spread for",
    "one seed": "is not judged yet (one seed) for",
    "not measured": "is not measured yet for",
}


def plain_words(record: dict, split: str) -> list[str]:
  """Claim by claim, which tasks it holds for, which it is reversed for and which the seed
  spread leaves undecided, each with the difference of the means in points."""
  lines = []
  for claim, words in CLAIMS.items():
    groups: dict[str, list[str]] = {}
    for task in TASK_ORDER:
      other = seed_values(record, f"only_{task}" if claim == "joint" else claim, split, task)
      full = seed_values(record, "full", split, task)
      kind = outcome(full, other)
      diff = f" ({100 * (np.mean(full) - np.mean(other)):+.1f})" if full and other else ""
      groups.setdefault(kind, []).append(f"{task.upper()}{diff}")
    parts = [f"{OUTCOME_WORDS[k]} {', '.join(groups[k])}" for k in OUTCOME_WORDS if k in groups]
    lines.append(f"- **{words}**: {'; '.join(parts)}.")
  return lines


def run_names(record: dict) -> list[str]:
  """Runs in the record, in first-seen order with `full` first."""
  names = list(dict.fromkeys(r["run"] for r in record.get("runs", {}).values()))
  return sorted(names, key=lambda n: (n != "full", not n.startswith("no_"), names.index(n)))


def run_lines(record: dict) -> list[str]:
  """One line per run: its config difference and, for a switch, what it removes."""
  lines = []
  for name in run_names(record):
    rec = next(r for r in record["runs"].values() if r["run"] == name)
    diff = ", ".join(f"`{k}={v}`" for k, v in rec.get("overrides", {}).items())
    if name.startswith("only_"):
      diff = f"every other task's sampling weight 0 ({diff})"
    note = f": {SWITCH_NOTES[name]}" if name in SWITCH_NOTES else ""
    lines.append(f"- `{name}`: {diff or 'configs/demo.py as it is'}{note}")
  return lines


def table(record: dict, split: str) -> str:
  names = run_names(record)
  lines = ["| run | " + " | ".join(METRIC_NAMES[t] for t in TASK_ORDER) + " | wall (min) |",
           "|---" * (len(TASK_ORDER) + 2) + "|"]
  for name in names:
    walls = [r["wall_seconds"] / 60 for r in record["runs"].values() if r["run"] == name]
    cells = [cell(seed_values(record, name, split, t)) for t in TASK_ORDER]
    lines.append(f"| {name} | " + " | ".join(cells) + f" | {np.mean(walls):.1f} |")
  base = record.get("baselines", {}).get(split, {})
  if base:
    cells = [f"{100 * base[t][1]:.1f} ({base[t][0]})" if t in base else "-" for t in TASK_ORDER]
    lines.append("| strongest trivial baseline | " + " | ".join(cells) + " | |")
  return "\n".join(lines)


def verdicts(record: dict, split: str) -> list[str]:
  lines = []
  for claim, words in CLAIMS.items():
    lines.append(f"- {words}:")
    for task in TASK_ORDER:
      other = f"only_{task}" if claim == "joint" else claim
      against = "alone" if claim == "joint" else f"`{claim}`"
      full = seed_values(record, "full", split, task)
      lines.append(f"  - {task}: full vs {against}: "
                   f"{compare(full, seed_values(record, other, split, task))}")
  return lines


def markdown(record: dict, chart_name: str) -> str:
  study = record.get("study", {})
  finished = list(record.get("runs", {}).values())
  hours = sum(r["wall_seconds"] for r in finished) / 3600
  seeds = sorted({int(r["seed"]) for r in finished})
  commits = sorted({r.get("commit", "?") for r in finished})
  out = [f"# Ablations on the demo ({study.get('name', '?')} study)", "",
         f"Generated by `python -m benchmarks.ablations{' --quick' if study.get('name') == 'quick' else ''}` "
         f"from `benchmarks/{study.get('json', 'ablations.json')}`: "
         f"{len(finished)} finished runs of {study.get('steps')} steps (configs/demo.py), seeds "
         f"{seeds}, {hours:.1f} h of training and evaluation in all, commit(s) {', '.join(commits)}. "
         "Each cell is the mean over seeds [lowest, highest] (seeds), in percent. A difference "
         "is called real only when the two runs' seed ranges do not overlap.", "",
         f"![headline metrics per run]({chart_name})", "", "Runs:", ""] + run_lines(record) + [""]
  for split in ("test", "test_novel"):
    out += [f"## In plain words: {SPLIT_TITLES[split]}", "",
            "Each claim against the run without its component (for joint training: each "
            "task trained alone); in brackets the full model's mean minus the other run's, "
            "in points.", ""] + plain_words(record, split) + [""]
  for split in ("test", "test_novel"):
    out += [f"## {SPLIT_TITLES[split]}", "", table(record, split), "",
            f"### The paper's claims on {split}", ""] + verdicts(record, split) + [""]
  return "\n".join(out)


def chart(record: dict, out_path: Path) -> Path:
  """Grouped bars per task (one bar per run, seed range as error bars), one panel per split."""
  names = run_names(record)
  fig, axes = plt.subplots(1, 2, figsize=(14, 4.5), sharey=True)
  width = 0.8 / max(1, len(names))
  x = np.arange(len(TASK_ORDER))
  for ax, split in zip(axes, ("test", "test_novel")):
    for k, name in enumerate(names):
      vals = [seed_values(record, name, split, t) for t in TASK_ORDER]
      mean = np.array([100 * np.mean(v) if v else np.nan for v in vals])
      # Clipped at 0: equal seeds give a mean a rounding error off their common value.
      low = np.array([max(0.0, 100 * (np.mean(v) - min(v))) if v else 0 for v in vals])
      high = np.array([max(0.0, 100 * (max(v) - np.mean(v))) if v else 0 for v in vals])
      ax.bar(x + (k - (len(names) - 1) / 2) * width, mean, width, yerr=[low, high],
             label=name, capsize=2)
    base = record.get("baselines", {}).get(split, {})
    for i, t in enumerate(TASK_ORDER):
      if t in base:
        ax.hlines(100 * base[t][1], i - 0.4, i + 0.4, colors="k", linestyles="dashed")
    ax.set_xticks(x, [METRIC_NAMES[t] for t in TASK_ORDER], rotation=15)
    ax.set_title(SPLIT_TITLES[split])
    ax.set_ylabel("%")
  axes[1].legend(fontsize=7, ncol=2)
  fig.suptitle("Headline metric per run (dashed: strongest trivial baseline)")
  fig.tight_layout()
  out_path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out_path, dpi=100)
  plt.close(fig)
  return out_path


def render(record: dict, md_path: Path, chart_path: Path,
           log: Callable[[str], None] = print) -> None:
  """Writes the markdown and the chart of `record`."""
  if not record.get("runs"):
    raise ValueError("the ablation study has no finished run yet: run "
                     "`python -m benchmarks.ablations [--quick]` first")
  chart(record, Path(chart_path))
  rel = Path(chart_path).relative_to(Path(md_path).parent) if Path(chart_path).is_relative_to(
      Path(md_path).parent) else Path(chart_path)
  atomic.write_text(md_path, markdown(record, str(rel)))
  log(f"[ablations] wrote {md_path} and {chart_path}")
