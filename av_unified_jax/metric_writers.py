"""Where training scalars go: stdout, `W/metrics.jsonl`, TensorBoard, a progress bar.

Only the primary process (`jax.process_index() == 0`) writes files and shows the progress bar;
every process prints its stdout line (prefixed with `[process i]` in multi-process runs), so
each host's log shows the values it computed. The loop calls the same methods on every host.

`W/metrics.jsonl` holds one JSON object per line: `{"step": int, "<name>": float, ...}` with
names such as `train/loss`, `train/loss/<task>`, `train/grad_norm`, `train/lr`,
`train/steps_per_s`, `train/examples_per_s`. When a run resumes from step `s`, lines with
`step > s` (written after the checkpoint by the interrupted run) are dropped first, so the file
reads as one uninterrupted run; the shortened file replaces the old one atomically, as does
`config.json` (`atomic`), so a crash at any moment leaves a whole file.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

from etils import epath
from tqdm import tqdm

from av_unified_jax import atomic, paths

Scalars = Mapping[str, float]


def _fmt(value: float) -> str:
  if isinstance(value, int) or (math.isfinite(value) and float(value).is_integer()
                                and abs(value) < 1e9):
    return str(int(value))
  return f"{value:.6g}"


class JsonlWriter:
  """Appends `{"step": s, **scalars}` lines to a file (see the module docstring).

  On an object store (a `gs://` work directory), which cannot append, the whole file is
  rewritten at every write (it holds one short line per log step).
  """

  def __init__(self, path: epath.PathLike, resume_step: int):
    self.path = epath.Path(path)
    if self.path.exists():
      self._truncate_after(resume_step)
    self._lines = None  # The file's lines, kept only where it is rewritten whole.
    if paths.is_url(self.path):
      self._lines = self.path.read_text().splitlines() if self.path.exists() else []
      self._file = None
    else:
      self._file = self.path.open("a")

  def _truncate_after(self, step: int) -> None:
    kept = []
    for line in self.path.read_text().splitlines():
      try:
        if json.loads(line).get("step", 0) <= step:
          kept.append(line)
      except json.JSONDecodeError:
        continue  # A line cut short by a killed process.
    atomic.write_text(self.path, "".join(line + "\n" for line in kept))

  def write(self, step: int, scalars: Scalars) -> None:
    record = {"step": int(step)}
    record.update({k: float(v) for k, v in scalars.items()})
    if self._file is None:
      self._lines.append(json.dumps(record))
      self.path.write_text("".join(line + "\n" for line in self._lines))
      return
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()


class TensorBoardWriter:
  """Scalars to TensorBoard event files under `W/tensorboard` (tensorboardX)."""

  def __init__(self, logdir: epath.PathLike, resume_step: int):
    from tensorboardX import SummaryWriter  # Imported late: only the primary host needs it.

    # purge_step hides events the interrupted run wrote after the restored checkpoint.
    self._writer = SummaryWriter(str(logdir), purge_step=resume_step + 1 if resume_step else None)

  def write(self, step: int, scalars: Scalars) -> None:
    for name, value in scalars.items():
      self._writer.add_scalar(name, float(value), int(step))
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class ProgressBar:
  """A tqdm bar with ETA on stderr, only when stderr is a terminal."""

  def __init__(self, total_steps: int, start_step: int, enabled: bool):
    self._bar = None
    if enabled:
      self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

  def update(self, step: int) -> None:
    if self._bar is not None:
      self._bar.update(step - self._bar.n)

  def print(self, line: str) -> None:
    if self._bar is not None:
      self._bar.write(line, file=sys.stdout)
    else:
      print(line, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


class MetricWriter:
  """Fans scalars out to stdout, metrics.jsonl and TensorBoard; drives the progress bar.

  Args:
    workdir: the run's work directory W.
    total_steps: last step of the run (for the progress bar and the stdout prefix).
    start_step: step the run starts (or resumes) from; 0 for a fresh run.
    is_primary: False on every process but the first: no files, no progress bar.
    progress: show a progress bar (default: when stderr is a terminal).
    tensorboard: also write TensorBoard event files.
    prefix: put before every stdout line (e.g. "[process 1] ").
  """

  def __init__(self, workdir: str | os.PathLike, *, total_steps: int, start_step: int,
               is_primary: bool = True, progress: bool | None = None,
               tensorboard: bool = True, prefix: str = ""):
    self.workdir = epath.Path(workdir)
    self.total_steps = total_steps
    self.is_primary = is_primary
    self.prefix = prefix
    self._sinks: list[Any] = []
    if progress is None:
      progress = sys.stderr.isatty()
    self._bar = ProgressBar(total_steps, start_step, enabled=progress and is_primary)
    if not is_primary:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    self._sinks.append(JsonlWriter(self.workdir / "metrics.jsonl", start_step))
    if tensorboard:
      self._sinks.append(TensorBoardWriter(self.workdir / "tensorboard", start_step))

  def write_scalars(self, step: int, scalars: Scalars) -> None:
    """Writes `scalars` (name -> float) for `step` to every sink and one line to stdout."""
    for sink in self._sinks:
      sink.write(step, scalars)
    items = " | ".join(f"{k} {_fmt(v)}" for k, v in sorted(scalars.items()))
    self._bar.print(f"{self.prefix}step {step}/{self.total_steps} | {items}")

  def write_text(self, line: str) -> None:
    """One informational line on stdout."""
    self._bar.print(self.prefix + line)

  def write_config(self, config) -> None:
    """Writes the resolved config to `W/config.json` (a ConfigDict or a plain dict)."""
    if not self.is_primary:
      return
    as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    atomic.write_text(self.workdir / "config.json",
                      json.dumps(as_dict, indent=2, default=str) + "\n")

  def progress(self, step: int) -> None:
    self._bar.update(step)

  def close(self) -> None:
    self._bar.close()
    for sink in self._sinks:
      sink.close()
    self._sinks = []
