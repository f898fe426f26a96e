"""The training function: mesh -> data -> abstract state -> shardings -> step functions ->
restore -> loop -> final evaluation. One flat function in sections, each calling a helper.

  result = train(config, workdir, make_evaluate_fn=...)  # TrainResult: step, state, evaluation
  exit_code = train_and_evaluate(config, workdir)          # --mode=train: 0, or 143 when preempted

Writes under the work directory W: `config.json`, `metrics.jsonl`, `tensorboard/`,
`checkpoints/<step>/` (orbax), and whatever the evaluation hook writes (`eval/<step>/`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec

from av_unified_jax import (checkpointing, metric_writers, models, paths, runs, sharding, steps,
                            synthetic)
from av_unified_jax.data import pipeline
from av_unified_jax.data.pipeline import TrainData
from av_unified_jax.mask_tokenizer import mask_codes

# evaluate_fn(state, step) -> an evaluation whose `.results` are {task: {metric: value}}, or
# that mapping itself (or None); called on eval steps.
EvaluateFn = Callable[[steps.TrainState, int], Any]


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or infinite; the message names the step."""


class InputError(ValueError):
  """The config, the data or the devices do not allow training; the message says what to do."""


@dataclasses.dataclass
class TrainContext:
  """What an evaluation hook may need; given to `make_evaluate_fn(ctx)`."""
  config: Any
  workdir: epath.Path
  model: Any
  mesh: jax.sharding.Mesh
  state_shardings: Any
  data: Any
  # Called before every evaluation batch; raises checkpointing.Preempted after a SIGTERM.
  check_stop: Callable[[], None] | None = None


@dataclasses.dataclass
class TrainResult:
  """What a call of `train` ends with: the last step run, the train state there, the last
  evaluation the hook returned (None without one), and whether a SIGTERM cut the run short."""
  step: int
  state: Any
  evaluation: Any = None
  preempted: bool = False


def train_and_evaluate(config, workdir: epath.PathLike, **kwargs) -> int:
  """--mode=train: `train` (same arguments); returns the exit code: 0, or
  `checkpointing.PREEMPTED_EXIT_CODE` (143) when a SIGTERM stopped the run after saving."""
  result = train(config, workdir, **kwargs)
  return checkpointing.PREEMPTED_EXIT_CODE if result.preempted else 0


def train(config, workdir: epath.PathLike, *,
          make_evaluate_fn: Callable[[TrainContext], EvaluateFn] | None = None,
          data: TrainData | None = None, model=None,
          progress: bool | None = None) -> TrainResult:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns a TrainResult.

  Args:
    config: the experiment ConfigDict (configs/common.py has every key).
    workdir: the run's work directory W.
    make_evaluate_fn: builds the evaluation hook `evaluate_fn(state, step)` from a
      `TrainContext`; it runs every `eval_every_steps` and at the end (never when
      `eval_every_steps` is 0).
    data: the training input (default: `make_train_data(config, workdir)`).
    model: the flax module (default: `models.AVUnified` for `config.model`).
    progress: show a progress bar (default: when stderr is a terminal).
  Raises NonFiniteLossError (after keeping the last good checkpoint) if the loss diverges.
  A SIGTERM saves a checkpoint at the next step (or stops an evaluation before its next
  batch and saves the step evaluated), waits until it is written and returns (`preempted`).
  """
  workdir = paths.as_path(workdir)
  is_primary = jax.process_index() == 0
  check_periods(config)

  # ---- Mesh.
  try:
    mesh = sharding.make_mesh(config.mesh)
  except ValueError as e:
    raise InputError(str(e)) from None
  rules = sharding.logical_rules(config)

  # ---- Data (each process reads its own part of every global batch).
  data = data or make_train_data(config, workdir)

  # ---- Model and abstract (shape-only) train state.
  model = model or runs.build_model(config, data.vocab_size, data.num_classes)
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))

  # ---- Shardings: logical axis names -> mesh axes.
  shapes = runs.abstract_state(config, model, data.batch_spec, mesh, rules)
  tx, schedule, init_fn = shapes.tx, shapes.schedule, shapes.init_fn
  state_shardings, abstract_state = shapes.shardings, shapes.abstract
  batch_shardings = sharding.batch_shardings(data.batch_spec, mesh, rules)
  replicated = NamedSharding(mesh, PartitionSpec())

  # ---- Step functions (jitted once, the state donated).
  train_step = jax.jit(
      steps.make_train_step(model, tx, schedule, config),
      in_shardings=(state_shardings, batch_shardings, replicated),
      out_shardings=(state_shardings, replicated),
      donate_argnums=(0,))
  init_state = jax.jit(lambda r: checkpointing.unbox(init_fn(r)), out_shardings=state_shardings)

  # ---- Restore the latest checkpoint, or initialize.
  manager = checkpointing.make_manager(workdir, config.keep_checkpoints)
  warnings: list[str] = []  # About checkpoints that did not restore; logged below.
  try:
    start_step, state = checkpointing.restore_latest(manager, abstract_state, data.iterator,
                                                     warn=warnings.append)
  except checkpointing.RestoreError as e:
    raise InputError(str(e)) from None
  if state is None:
    state = init_state(init_rng)
  writer = metric_writers.MetricWriter(
      workdir, total_steps=config.total_steps, start_step=start_step, is_primary=is_primary,
      progress=progress,
      prefix=f"[process {jax.process_index()}] " if jax.process_count() > 1 else "")
  writer.write_config(config)
  for line in warnings:
    writer.write_text(line)
  writer.write_text(describe_run(config, mesh, abstract_state, start_step))

  # ---- Loop.
  watcher = checkpointing.PreemptionWatcher(manager)
  pending: list[tuple[int, dict]] = []  # Device metrics of the steps not yet checked.
  meter = ThroughputMeter(start_step, config.data.batch_size)
  step, evaluated_at, evaluation = start_step, None, None
  try:
    evaluate_fn = None
    if make_evaluate_fn is not None and config.eval_every_steps > 0:
      evaluate_fn = make_evaluate_fn(TrainContext(config, workdir, model, mesh, state_shardings,
                                                  data, check_stop=watcher.check))
    with sharding.activate(mesh, rules):
      for step in range(start_step + 1, config.total_steps + 1):
        batch = pipeline.global_batch(next(data.iterator), batch_shardings, data.batch_spec)
        state, metrics = train_step(state, batch, dropout_rng)
        pending.append((step, metrics))
        writer.progress(step)
        is_last = step == config.total_steps
        preempted = watcher.reached(step)
        log_now = step % config.log_every_steps == 0 or is_last or preempted
        save_now = step % config.checkpoint_every_steps == 0 or is_last or preempted
        if log_now or save_now:
          check_finite(pending)  # Before any save: never checkpoint a diverged state.
          pending.clear()
        if log_now:
          writer.write_scalars(step, log_scalars(metrics, meter, step))
        if save_now:
          checkpointing.save(manager, step, state, data.iterator)
        if preempted:
          stop_for_preemption(manager, step, state, data.iterator, pending, writer)
          return TrainResult(step, state, evaluation, preempted=True)
        if evaluate_fn and (step % config.eval_every_steps == 0 or is_last):
          evaluation = run_evaluation(evaluate_fn, state, step, writer)
          evaluated_at = step

    # ---- Final evaluation (when the run was already complete before this call).
    if evaluate_fn and evaluated_at != config.total_steps:
      with sharding.activate(mesh, rules):
        evaluation = run_evaluation(evaluate_fn, state, step, writer)
  except checkpointing.Preempted:  # A SIGTERM during an evaluation (of the state at `step`).
    stop_for_preemption(manager, step, state, data.iterator, pending, writer)
    return TrainResult(step, state, evaluation, preempted=True)
  except NonFiniteLossError as e:
    manager.wait_until_finished()
    raise NonFiniteLossError(f"{e}; {last_good_checkpoint(manager, workdir)}") from None
  finally:
    manager.wait_until_finished()
    watcher.close()
    writer.close()
    if hasattr(data.iterator, "close"):
      data.iterator.close()
  return TrainResult(step, state, evaluation)


# ----------------------------------------------------------------------------- helpers
SYNTHETIC_VOCAB_SIZE = 256  # Token ids of synthetic batches (no tokenizer).
SYNTHETIC_NUM_CLASSES = 25  # Weak-label classes of synthetic batches (as LLP).


def make_train_data(config, workdir: epath.PathLike) -> TrainData:
  """This process's training input: the grain pipeline over `data.shards_dir` (tokenizer kept
  in W/tokenizer; AVS targets from the mask tokenizer in W/mask_tokenizer when there is one),
  or deterministic synthetic batches when `data.synthetic`."""
  try:
    model_cfg = models.model_config_from(config.model)
    if config.data.synthetic:
      return synthetic_train_data(config, model_cfg)
    tokenizer = pipeline.load_or_build_tokenizer(config, workdir)
    return pipeline.make_train_data(config, tokenizer, model_cfg=model_cfg,
                                    mask_codes=avs_mask_codes(config, workdir))
  except (ValueError, FileNotFoundError) as e:
    raise InputError(str(e)) from None


def avs_mask_codes(config, workdir: epath.PathLike):
  """AVS target codes from W/mask_tokenizer (None without one: AVS targets get no weight)."""
  directory = paths.as_path(workdir) / runs.MASK_TOKENIZER_DIR
  if "avs" not in pipeline.active_tasks(config) or not directory.is_dir():
    return None
  log = print if jax.process_index() == 0 else (lambda *_: None)
  return mask_codes.MaskCodeTable.for_run(config, directory, log=log)


def synthetic_train_data(config, model_cfg) -> TrainData:
  spec = synthetic.SyntheticSpec(
      batch_size=config.data.batch_size, num_segments=config.data.num_segments,
      image_size=config.data.image_size, mel_frames=model_cfg.mel_frames,
      mel_bins=model_cfg.mel_bins, prompt_len=config.tokens.max_prompt_len,
      target_len=config.tokens.max_target_len, vocab_size=SYNTHETIC_VOCAB_SIZE,
      num_classes=SYNTHETIC_NUM_CLASSES)
  iterator = synthetic.SyntheticIterator(spec, config.seed, jax.process_index(),
                                         jax.process_count())
  example = synthetic.make_batch(dataclasses.replace(spec, batch_size=1), config.seed, 0)
  batch_spec = {k: jax.ShapeDtypeStruct((spec.batch_size,) + v.shape[1:], v.dtype)
                for k, v in example.items()}
  return TrainData(iterator, batch_spec, SYNTHETIC_VOCAB_SIZE, SYNTHETIC_NUM_CLASSES,
                   tokenizer=None)


def check_periods(config) -> None:
  """Periods in steps must be positive (`eval_every_steps` may be 0: no evaluation)."""
  for key in ("total_steps", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
    if int(config[key]) < 1:
      raise InputError(f"config.{key}={config[key]} must be >= 1")
  if int(config.eval_every_steps) < 0:
    raise InputError(f"config.eval_every_steps={config.eval_every_steps} must be >= 0 "
                     "(0: no evaluation during training)")


def stop_for_preemption(manager, step: int, state, data_iter, pending, writer) -> None:
  """After a SIGTERM: saves checkpoint `step` unless it is saved already, and waits until it
  is durable (the asynchronous save finished and committed)."""
  manager.wait_until_finished()
  if manager.latest_step() != step:
    check_finite(pending)  # Never checkpoint a diverged state.
    checkpointing.save(manager, step, state, data_iter)
    manager.wait_until_finished()
  writer.write_text(f"SIGTERM: saved checkpoint {step} in {manager.directory}; exiting with "
                    f"code {checkpointing.PREEMPTED_EXIT_CODE} (the same command resumes)")


def check_finite(pending: list[tuple[int, dict]]) -> None:
  """Raises NonFiniteLossError naming the first step whose loss is NaN or infinite."""
  losses = jax.device_get([m["loss"] for _, m in pending])
  for (step, _), loss in zip(pending, losses, strict=True):
    if not np.isfinite(loss):
      raise NonFiniteLossError(f"non-finite training loss ({float(loss)}) at step {step}")


def last_good_checkpoint(manager, workdir: epath.Path) -> str:
  last = manager.latest_step()
  where = workdir / checkpointing.CHECKPOINT_DIR
  return (f"training stopped, the last good checkpoint is "
          f"{f'step {last}' if last else 'none'} in {where}. Lower optim.learning_rate, raise "
          "optim.warmup_steps or lower optim.grad_clip_norm, then resume")


def log_scalars(metrics, meter: ThroughputMeter, step: int) -> dict[str, float]:
  """The logged scalars of a step: losses, grad norm, lr (fetched now) and throughput."""
  host = jax.device_get(metrics)
  out = {**steps.host_scalars(host), **meter.scalars(step)}
  out["train/target_tokens_per_s"] = float(host["target_tokens"]) * out["train/steps_per_s"]
  return out


class ThroughputMeter:
  """steps/s and examples/s between consecutive log steps."""

  def __init__(self, step: int, global_batch_size: int):
    self._step, self._time, self._batch = step, time.perf_counter(), global_batch_size

  def scalars(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    rate = (step - self._step) / max(now - self._time, 1e-9)
    self._step, self._time = step, now
    return {"train/steps_per_s": rate, "train/examples_per_s": rate * self._batch}


def run_evaluation(evaluate_fn: EvaluateFn, state, step: int, writer):
  """Calls the evaluation hook, logs its `{task: {metric: value}}` as `eval/<task>/<m>` and
  returns what the hook returned."""
  evaluation = evaluate_fn(state, step)
  results = getattr(evaluation, "results", evaluation)
  if results:
    writer.write_scalars(step, {f"eval/{task}/{name}": float(value)
                                for task, metrics in results.items()
                                for name, value in metrics.items()})
  return evaluation


def describe_run(config, mesh, abstract_state, start_step: int) -> str:
  n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_state.params))
  where = f"resuming from step {start_step}" if start_step else "from scratch"
  return (f"training {config.model.variant} ({n_params:,} parameters) for "
          f"{config.total_steps} steps on mesh {dict(mesh.shape)} "
          f"({jax.process_count()} process(es)), {where}")
