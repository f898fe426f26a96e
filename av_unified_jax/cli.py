"""Dispatch of main.py's modes. Each mode is one function; errors become one-line messages."""

from __future__ import annotations

import json
import os
import sys

import jax
from absl import logging
from ml_collections import config_flags

from av_unified_jax import evaluate as evaluate_lib
from av_unified_jax import main_job as main_job_lib
from av_unified_jax import predict as predict_lib
from av_unified_jax import runs
from av_unified_jax import summary as summary_lib
from av_unified_jax import train as train_lib


class UserError(Exception):
  """A problem with the user's input (paths, flags, data): printed as one line, exit code 2."""


def _not_available(mode: str):
  def run(config, flags, **_):
    raise UserError(f"--mode={mode} is not available yet in this version of av_unified_jax.")
  return run


def initialize_distributed(flags) -> None:
  """`jax.distributed.initialize` for `--distributed` runs (before any device is touched)."""
  if not getattr(flags, "distributed", False):
    return
  jax.distributed.initialize(coordinator_address=flags.coordinator_address,
                             num_processes=flags.num_processes, process_id=flags.process_id)


def train(config, flags, **_) -> int:
  """--mode=train: trains in --workdir (resuming from its latest checkpoint)."""
  if not flags.workdir:
    raise UserError("--mode=train needs --workdir=W (checkpoints, logs and results go there)")
  _quiet_library_logs(flags)
  initialize_distributed(flags)
  try:  # orbax needs an absolute checkpoint path
    return train_lib.train_and_evaluate(config, os.path.abspath(flags.workdir),
                                        make_evaluate_fn=evaluate_lib.make_evaluate_fn)
  except train_lib.InputError as e:
    raise UserError(str(e)) from None
  except train_lib.NonFiniteLossError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1


def _quiet_library_logs(flags) -> None:
  """Library INFO logs (orbax reports every save) only with an explicit --verbosity."""
  try:
    explicit = flags["verbosity"].present
  except (KeyError, TypeError, AttributeError):
    return  # Not parsed by main.py (e.g. a namespace in tests): logging as it is.
  if not explicit:
    logging.set_verbosity(logging.WARNING)


def summary(config, flags, **_) -> int:
  """--mode=summary: parameters per module, FLOPs per example, parameter sharding."""
  return summary_lib.run(config, flags)


def export(config, flags, **_) -> int:
  """--mode=export: writes a PyTorch export of W's checkpoint to --export_dir (+ --verify),
  restored onto the devices present (--config.mesh.* may set the mesh; other keys are an
  error)."""
  del config  # The run's own config (W/config.json) describes the model.
  overrides = checked_overrides(flags, "export")
  _quiet_library_logs(flags)
  if not flags.workdir or not flags.export_dir:
    raise UserError("--mode=export needs --workdir=W (a trained run) and --export_dir=E")
  from av_unified_jax.export import exporter  # Late: it loads torch, only this mode needs it.

  try:
    return exporter.run(flags.workdir, flags.export_dir, step=flags.step, dtype=flags.dtype,
                        verify=flags.verify, overrides=overrides)
  except exporter.ExportError as e:
    raise UserError(str(e)) from None


def config_overrides(flags) -> dict:
  """{dotted key: value} of the `--config.<key>=value` flags given on the command line."""
  try:
    return dict(config_flags.get_override_values(flags["config"]))
  except (KeyError, TypeError, AttributeError):
    return {}  # Not parsed by main.py (e.g. a namespace in tests): no overrides.


def checked_overrides(flags, mode: str) -> dict:
  """`config_overrides` of a mode that loads a trained run (eval, predict, export); a key
  that cannot apply to it (runs.OVERRIDES) is a UserError naming it."""
  overrides = config_overrides(flags)
  try:
    runs.check_overrides(overrides, mode)
  except runs.RunError as e:
    raise UserError(str(e)) from None
  return overrides


def evaluate(config, flags, **_) -> int:
  """--mode=eval: evaluates W's latest (or --step) checkpoint with the run's own config
  (W/config.json) and the evaluation overrides given as --config.<key> (data.shards_dir,
  data.eval_split, eval.*, mesh.*, ...; any other key is an error) into W/eval/<step>/...,
  on the devices present (the run's mesh fitted to them, or --config.mesh.*)."""
  del config  # The run's own config (W/config.json) says what to evaluate.
  overrides = checked_overrides(flags, "eval")
  _quiet_library_logs(flags)
  if not flags.workdir:
    raise UserError("--mode=eval needs --workdir=W (a trained run)")
  try:
    evaluate_lib.evaluate_workdir(flags.workdir, flags.step, overrides=overrides)
  except runs.RunError as e:
    raise UserError(str(e)) from None
  return 0


def predict(config, flags, **_) -> int:
  """--mode=predict: one video -> --out/prediction.json and prediction.png, on the devices
  present (--config.eval.*, data.shards_dir and mesh.* may be overridden; other keys are an
  error)."""
  del config
  overrides = checked_overrides(flags, "predict")
  _quiet_library_logs(flags)
  missing = [f"--{name}" for name in ("workdir", "video", "task", "out")
             if not getattr(flags, name)]
  if missing:
    raise UserError(f"--mode=predict needs {' '.join(missing)} (e.g. --workdir=W "
                    "--video=clip.mp4 --task=ave --out=DIR)")
  try:
    record = predict_lib.predict(flags.workdir, flags.video, flags.task, flags.out,
                                 question=flags.question, step=flags.step,
                                 overrides=overrides)
  except predict_lib.PredictError as e:
    raise UserError(str(e)) from None
  print(f"prediction ({flags.task}) written to {flags.out}/prediction.json and prediction.png")
  print(json.dumps({k: v for k, v in record.items() if k not in ("workdir", "video")}))
  return 0


# mode name -> callable(config, flags, default_job=bool) -> int exit code.
MODES = {
    "train": train,
    "eval": evaluate,
    "predict": predict,
    "export": export,
    "summary": summary,
}


def main_job(config, flags, **_) -> int:
  """A bare `python main.py`: the demo main job (av_unified_jax.main_job)."""
  del flags
  return main_job_lib.run(config)


def run(mode: str, config, flags, default_job: bool = False) -> int:
  try:
    if default_job:
      return main_job(config, flags) or 0
    return MODES[mode](config, flags, default_job=default_job) or 0
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
