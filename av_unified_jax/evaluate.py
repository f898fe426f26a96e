"""Evaluation of a run: `--mode=eval` on a trained work directory, and the training loop's
evaluation hook.

    step, results = evaluate.evaluate_workdir(workdir, step=None, overrides={})  # --mode=eval
    train.train_and_evaluate(config, W, make_evaluate_fn=evaluate.make_evaluate_fn)

For every task with a positive weight, the evaluation split (`config.data.eval_split`, at most
`config.eval.max_examples` examples, 0 = all) is read by the input pipeline without
augmentation, the model runs under `jit` (constrained greedy decoding, or beam search when
`config.eval.beam_size > 1`; AVVP with `eval.avvp_source="mil"` and SSL with
`eval.ssl_source="map"` only need the encoder's auxiliary outputs), `evaluation.tasks` turns
the outputs into the metric inputs, and `av_unified_jax.metrics` scores them. Written under W:

  eval/<step>/results.json            {task: {metric: value}} (metric names as returned by
                                      av_unified_jax.metrics; fractions in [0, 1])
  eval/<step>/intervals.json          95 % bootstrap intervals over videos (`intervals`)
  eval/<step>/<task>/predictions.json readable predictions (AVE segment labels per video, AVVP
                                      events, AVQA answers by question id, SSL and AVS files)
  eval/<step>/ssl/heatmaps/<id>.png, eval/<step>/avs/masks/<id>_<frame>.png

`--mode=eval` may override the keys of `runs.EVAL_OVERRIDES` over the run's config (another
copy of the data, another split, eval.*, the mesh); another split or copy is written under
eval/<step>/ (see `evaluation_dir`). The checkpoint is restored onto whatever devices are
present: the run's mesh fitted to them, or the --config.mesh.* given (`runs.inference_mesh`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from etils import epath

from av_unified_jax import paths, runs, sharding
from av_unified_jax.evaluation.evaluator import INTERVALS_FILE, RESULTS_FILE, Evaluation, Evaluator


def make_evaluator(ctx, log: Callable[[str], None] = print) -> Evaluator | None:
  """The evaluator of a training run (a `train.TrainContext`): its config, model and mesh,
  the tokenizer of its data and the mask decoder in W/mask_tokenizer, stopping at the next
  batch after a SIGTERM (`ctx.check_stop`); None on synthetic data (nothing to score)."""
  tokenizer = getattr(ctx.data, "tokenizer", None)
  if tokenizer is None:
    return None
  return Evaluator(ctx.config, tokenizer, ctx.model, ctx.mesh,
                   sharding.logical_rules(ctx.config),
                   runs.load_mask_decoder(ctx.workdir, tokenizer,
                                          int(ctx.config.eval.batch_size)), log,
                   check_stop=getattr(ctx, "check_stop", None))


def make_evaluate_fn(ctx, log: Callable[[str], None] = print
                     ) -> Callable[[Any, int], Evaluation | None]:
  """The training loop's hook (`train.train_and_evaluate(..., make_evaluate_fn=...)`):
  returns `evaluate_fn(state, step) -> Evaluation` writing W/eval/<step>/ (its `results` are
  {task: {metric: value}}); `evaluate_fn.evaluator` is the evaluator (None on synthetic data),
  to score more splits with it."""
  evaluator = make_evaluator(ctx, log)

  def evaluate_fn(state, step: int) -> Evaluation | None:
    if evaluator is None:
      return None  # Synthetic data: nothing to score.
    return evaluator.evaluate_split(state.params, runs.eval_dir(ctx.workdir, step))

  evaluate_fn.evaluator = evaluator
  return evaluate_fn


def evaluation_dir(workdir: epath.PathLike, step: int, run_config, config) -> epath.Path:
  """Where an evaluation of W's checkpoint `step` goes: W/eval/<step>/ on the run's own data,
  W/eval/<step>/<split>/ on another split of it, W/eval/<step>/<shards dir as a name>/<split>/
  on another copy of the data (`--config.data.shards_dir`)."""
  out = runs.eval_dir(workdir, step)
  own = str(paths.as_path(run_config.data.shards_dir or "."))
  other = str(paths.as_path(config.data.shards_dir or "."))
  if own != other:
    return out / ("_".join(p for p in Path(other).parts if p not in ("/", "\\", ""))
                  .replace(":", "")) / config.data.eval_split
  if config.data.eval_split != run_config.data.eval_split:
    return out / config.data.eval_split
  return out


def evaluate_workdir(workdir: epath.PathLike, step: int | None = None,
                     log: Callable[[str], None] = print,
                     overrides: Mapping[str, Any] | None = None) -> tuple[int, dict]:
  """--mode=eval: evaluates checkpoint `step` (default latest) of W, with the evaluation
  `overrides` ({dotted key: value}, see `runs.apply_overrides`) over the run's config; returns
  (step, results). Written to `evaluation_dir`."""
  overrides = dict(overrides or {})
  runs.check_overrides(overrides, "eval")  # before loading anything
  run = runs.load_run(workdir, step, overrides, mode="eval")
  evaluator = Evaluator(run.config, run.tokenizer, run.model, run.mesh, run.rules,
                        run.mask_decoder, log)
  out = evaluation_dir(workdir, run.step, runs.load_run_config(workdir), run.config)
  if overrides:
    shown = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
    log(f"evaluating step {run.step} with {shown} over "
        f"{paths.as_path(workdir) / runs.CONFIG_FILE}")
  log(f"evaluating on mesh {dict(run.mesh.shape)} ({run.mesh.size} device(s))")
  results = evaluator.evaluate(run.params, out)
  log(f"results of step {run.step}: {out / RESULTS_FILE} (intervals: {out / INTERVALS_FILE})")
  return run.step, results
