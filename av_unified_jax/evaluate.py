"""Evaluation: constrained decoding (or auxiliary maps) -> detokenize -> official metrics.

    step, results = evaluate.evaluate_workdir(workdir, step=None, overrides={})  # --mode=eval
    train.train_and_evaluate(config, W, make_evaluate_fn=evaluate.make_evaluate_fn)

For every task with a positive weight, the evaluation split (`config.data.eval_split`, at most
`config.eval.max_examples` examples, 0 = all) is read by the input pipeline without
augmentation, the model runs under `jit` (constrained greedy decoding, or beam search when
`config.eval.beam_size > 1`; AVVP with `eval.avvp_source="mil"` and SSL with
`eval.ssl_source="map"` only need the encoder's auxiliary outputs), `eval_tasks` turns the
outputs into the metric inputs, and `av_unified_jax.metrics` scores them. Written under W:

  eval/<step>/results.json            {task: {metric: value}} (metric names as returned by
                                      av_unified_jax.metrics; fractions in [0, 1])
  eval/<step>/intervals.json          95 % bootstrap intervals over videos (`intervals`)
  eval/<step>/<task>/predictions.json readable predictions (AVE segment labels per video, AVVP
                                      events, AVQA answers by question id, SSL and AVS files)
  eval/<step>/ssl/heatmaps/<id>.png, eval/<step>/avs/masks/<id>_<frame>.png

`--mode=eval` may override the keys of EVAL_OVERRIDES over the run's config (another copy of
the data, another split, eval.*); another split or copy is written under eval/<step>/ (see
`evaluation_dir`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from av_unified_jax import decoding, eval_tasks, sharding, tokens
from av_unified_jax import intervals as intervals_lib
from av_unified_jax.models.model import AVUnified

EVAL_DIR = "eval"
RESULTS_FILE = "results.json"
INTERVALS_FILE = "intervals.json"  # {task: {metric: [low, high]}}: 95 % bootstrap over videos.
MASK_TOKENIZER_DIR = "mask_tokenizer"  # W/mask_tokenizer: the run's mask tokenizer.
AUX_KEYS = ("loc_maps", "mil_frame_probs", "mil_video_probs")  # What eval_tasks may read.


# ----------------------------------------------------------------------------- model runner
class ModelRunner:
  """Runs the model on evaluation batches under `jit`: `(task, params, batch)` ->
  (tokens int32[B, L] or None, {aux name: array[B, ...]}), all numpy on the host.

  `batch` holds global `jax.Array`s (or numpy arrays on one host) with the model's fields.
  """

  def __init__(self, model: AVUnified, tokenizer, beam_size: int = 1, token_groups=None):
    """`token_groups` bool[V] or None: greedy decoding picks a group first
    (`decoding.group_argmax`; AVS: `MaskDecoder.foreground_tokens`)."""
    self.model, self.tokenizer, self.beam_size = model, tokenizer, int(beam_size)
    self.token_groups = None if token_groups is None else jnp.asarray(token_groups, bool)
    grammars = tokenizer.grammars()
    self.stack = tokens.stack_grammars(grammars)
    self.allowed = jnp.asarray(self.stack.allowed)
    self.next_state = jnp.asarray(self.stack.next_state)
    self.start_states = jnp.asarray(self.stack.start_states)
    self._encode_fn = None

  @property
  def max_len(self) -> int:
    """Decoding steps: the longest sequence of any grammar, capped by the KV cache. One value
    for every task, so all tasks share one compiled decoder; the loop stops as soon as every
    row of a batch has emitted <eos>."""
    return min(self.stack.max_len, self.model.cfg.max_decode_len)

  def _encode(self, params, batch) -> dict:
    """The encoder's auxiliary outputs `AUX_KEYS` (one compiled function for every task)."""
    if self._encode_fn is None:
      model = self.model

      @jax.jit
      def encode(params, batch):
        out = model.apply({"params": params}, batch, method=AVUnified.encode)
        return {k: out[k] for k in AUX_KEYS}

      self._encode_fn = encode
    return self._encode_fn(params, batch)

  def __call__(self, task: eval_tasks.EvalTask, params, batch) -> tuple[Any, dict]:
    keys = tuple(task.aux_keys)
    if not task.decodes:
      aux = self._encode(params, batch)
      return None, _to_host({k: aux[k] for k in keys})
    b = batch["task_id"].shape[0]
    index = jnp.full((b,), self.stack.index(task.name), jnp.int32)
    args = (self.model, params, batch, self.allowed, self.next_state, self.start_states,
            self.max_len)
    if self.beam_size > 1:
      out = decoding.beam_search(*args, beam_size=self.beam_size, grammar_index=index)
      aux = self._encode(params, batch) if keys else {}
    else:
      out, aux = decoding.greedy_decode(*args, grammar_index=index, return_aux=True,
                                        token_groups=self.token_groups)
      aux = {k: aux[k] for k in keys}
    return _to_host(out), _to_host(aux)


def _to_host(tree):
  """Device arrays -> numpy (all rows gathered from every process in multi-host runs)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(np.asarray, jax.device_get(tree))


def _gather_rows(values: np.ndarray) -> np.ndarray:
  """This process's rows of a bookkeeping field -> the global batch's rows (all processes)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    return np.asarray(multihost_utils.process_allgather(values, tiled=True))
  return np.asarray(values)


# ----------------------------------------------------------------------------- mask decoder
class MaskDecoder:
  """Mask codes int32[B, Kh, Kw] -> mask logits float32[B, S, S] with the mask tokenizer's
  decoder (jitted; batches padded to `batch_size` so it compiles once)."""

  def __init__(self, cfg, variables, batch_size: int = 16):
    from av_unified_jax.models import mask_tokenizer as mt  # pylint: disable=g-import-not-at-top

    self.cfg, self.variables, self.batch_size = cfg, variables, int(batch_size)
    model = mt.MaskTokenizer(cfg)
    self._decode = jax.jit(lambda v, c: model.apply(v, c, method=mt.MaskTokenizer.decode))

  @classmethod
  def load(cls, directory: str | Path, grid: tuple[int, int], num_codes: int,
           batch_size: int = 16) -> MaskDecoder:
    """Loads the mask tokenizer saved in `directory`; checks it matches the token layout."""
    from av_unified_jax.models import mask_tokenizer as mt  # pylint: disable=g-import-not-at-top

    cfg, variables = mt.load_tokenizer(directory)
    if (cfg.grid, cfg.grid) != tuple(grid) or cfg.codebook_size != num_codes:
      raise ValueError(f"the mask tokenizer in {directory} has a {cfg.grid}x{cfg.grid} grid of "
                       f"{cfg.codebook_size} codes, but the tokens expect {tuple(grid)} and "
                       f"{num_codes} codes; train it with matching model.grid/codebook_size")
    return cls(cfg, variables, batch_size)

  def foreground_codes(self) -> np.ndarray:
    """bool[K]: codes whose grid, every cell that code, decodes to mostly foreground."""
    k, g = self.cfg.codebook_size, self.cfg.grid
    logits = self(np.broadcast_to(np.arange(k, dtype=np.int32)[:, None, None], (k, g, g)))
    return (logits > 0).mean(axis=(1, 2)) > 0.5

  def foreground_tokens(self, layout) -> np.ndarray:
    """bool[V] over the vocabulary of `layout`: the tokens of `foreground_codes`."""
    out = np.zeros(layout.vocab_size, bool)
    codes = np.flatnonzero(self.foreground_codes())
    out[[layout.code_token(int(c)) for c in codes]] = True
    return out

  def __call__(self, codes) -> np.ndarray:
    codes = np.asarray(codes, np.int32)
    out = []
    for start in range(0, len(codes), self.batch_size):
      chunk = codes[start:start + self.batch_size]
      pad = np.zeros((self.batch_size - len(chunk),) + chunk.shape[1:], np.int32)
      logits = self._decode(self.variables, np.concatenate([chunk, pad]))
      out.append(np.asarray(logits)[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, self.cfg.mask_size, self.cfg.mask_size))


def avs_token_groups(config, tokenizer, mask_decoder: MaskDecoder | None):
  """bool[V] foreground tokens for `eval.avs_decode="foreground"` (None otherwise, or without
  a mask decoder): AVS cells are decoded object-or-not first (`decoding.group_argmax`)."""
  mode = str(config.eval.avs_decode)
  if mode not in ("foreground", "greedy"):
    raise ValueError(f"eval.avs_decode={mode!r}: use 'foreground' or 'greedy'")
  if mode == "greedy" or not hasattr(mask_decoder, "foreground_tokens"):
    return None  # No mask tokenizer (or a bare codes -> logits function): plain argmax.
  return mask_decoder.foreground_tokens(tokenizer.layout)


def load_mask_decoder(workdir: str | Path, tokenizer, batch_size: int = 16) -> MaskDecoder | None:
  """The run's mask decoder from W/mask_tokenizer, or None when the run has none."""
  directory = Path(workdir) / MASK_TOKENIZER_DIR
  if not directory.exists():
    return None
  return MaskDecoder.load(directory, tokenizer.mask_grid, tokenizer.layout.num_mask_codes,
                          batch_size)


# ----------------------------------------------------------------------------- evaluator
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

  def write(self, out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RESULTS_FILE).write_text(json.dumps(self.results, indent=1, sort_keys=True)
                                        + "\n")
    (out_dir / INTERVALS_FILE).write_text(json.dumps(
        intervals_lib.summary(self.intervals, self.videos), indent=1, sort_keys=True) + "\n")


def read_intervals(directory: str | Path) -> dict[str, dict[str, tuple[float, float]]] | None:
  """{task: {metric: (low, high)}} from `directory`/intervals.json, None if it is not there."""
  path = Path(directory) / INTERVALS_FILE
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

  def __post_init__(self):
    self.runner = ModelRunner(self.model, self.tokenizer, self.config.eval.beam_size,
                              avs_token_groups(self.config, self.tokenizer, self.mask_decoder))

  def tasks(self) -> list[str]:
    from av_unified_jax.data import pipeline  # pylint: disable=g-import-not-at-top

    return pipeline.active_tasks(self.config)

  def make_task(self, name: str) -> eval_tasks.EvalTask:
    return eval_tasks.TASKS[name](self.tokenizer, self.config.eval, self.mask_decoder)

  def evaluate(self, params, out_dir: str | Path, **kwargs) -> dict[str, dict[str, float]]:
    """Scores every active task; writes results.json, intervals.json and the predictions into
    `out_dir`; returns the results. `kwargs` as in `evaluate_split`."""
    return self.evaluate_split(params, out_dir, **kwargs).results

  def evaluate_split(self, params, out_dir: str | Path, *, split: str | None = None,
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
    out_dir = Path(out_dir)
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

  def evaluate_task(self, name: str, params, out_dir: Path) -> tuple[dict[str, float], int]:
    """One task's metrics and the number of evaluated examples (predictions into out_dir)."""
    scores = self.score_task(name, params, out_dir)
    return scores.metrics, scores.examples

  def score_task(self, name: str, params, out_dir: Path, *, split: str | None = None,
                 max_examples: int | None = None,
                 ground_truth: GroundTruthFn | None = None) -> TaskScores:
    """One task's metrics, their bootstrap intervals over videos and the counts (predictions
    into out_dir). Arguments as in `evaluate_split`."""
    from av_unified_jax.data import pipeline  # pylint: disable=g-import-not-at-top

    task = self.make_task(name)
    data = pipeline.make_eval_batches(self.config, name, self.tokenizer, split=split,
                                      max_examples=max_examples, mask_codes=self.mask_codes)
    truth = (lambda example: ground_truth(task, example)) if ground_truth else task.ground_truth
    gts: dict[int, dict] = {}
    outputs: dict[int, list[dict]] = collections.defaultdict(list)
    with sharding.activate(self.mesh, self.rules):
      for local in data.batches:
        tokens_, aux = self.runner(task, params, self._global(local))
        rows = {k: _gather_rows(local[k]) for k in ("example_index", "frame_index", "valid",
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


def to_global(local: Mapping[str, np.ndarray], mesh, rules) -> dict:
  """This process's rows of a batch (the model fields) -> global jax.Arrays sharded along
  the batch axis."""
  from av_unified_jax.data import pipeline, tasks  # pylint: disable=g-import-not-at-top

  fields = {k: np.asarray(local[k]) for k in tasks.MODEL_FIELDS}
  n = jax.process_count()
  spec = {k: (v.shape[0] * n,) + v.shape[1:] for k, v in fields.items()}
  shardings = {k: sharding.batch_sharding(mesh, rules, len(s)) for k, s in spec.items()}
  return pipeline.global_batch(fields, shardings, spec)


def eval_dir(workdir: str | Path, step: int) -> Path:
  return Path(workdir) / EVAL_DIR / str(int(step))


# ----------------------------------------------------------------------------- training hook
def make_evaluate_fn(ctx) -> Callable[[Any, int], dict]:
  """The training loop's hook (`train.train_and_evaluate(..., make_evaluate_fn=...)`):
  returns `evaluate_fn(state, step) -> {task: {metric: value}}` writing W/eval/<step>/."""
  tokenizer = getattr(ctx.data, "tokenizer", None)
  if tokenizer is None:
    return lambda state, step: None  # Synthetic data: nothing to score.
  evaluator = Evaluator(ctx.config, tokenizer, ctx.model, ctx.mesh,
                        sharding.logical_rules(ctx.config),
                        load_mask_decoder(ctx.workdir, tokenizer,
                                          int(ctx.config.eval.batch_size)))

  def evaluate_fn(state, step: int):
    return evaluator.evaluate(state.params, eval_dir(ctx.workdir, step))

  evaluate_fn.evaluator = evaluator  # The main job scores more splits with it.
  return evaluate_fn


# ----------------------------------------------------------------------------- a trained run
class RunError(ValueError):
  """The work directory lacks what evaluation or prediction needs; the message says what."""


def load_run_config(workdir: str | Path):
  """The run's config: W/config.json (written by training) over the complete base key set."""
  from configs import common  # pylint: disable=g-import-not-at-top

  path = Path(workdir) / "config.json"
  if not path.exists():
    raise RunError(f"{path} not found: {workdir} is not a training work directory; train first "
                   f"(python main.py --config=configs/demo.py --workdir={workdir})")
  config = common.base_config()
  _assign(config, json.loads(path.read_text()))
  config.lock()
  return config


def _assign(target, values: Mapping[str, Any]) -> None:
  for key, value in values.items():
    if key not in target:
      raise RunError(f"config.json has key {key!r} that this version does not know")
    if isinstance(value, Mapping):
      _assign(target[key], value)
    else:
      target[key] = _tuples(value)


def _tuples(value):
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


@dataclasses.dataclass
class Run:
  """A trained run loaded for inference: config, tokenizer, model, params (restored onto the
  current devices), mesh, rules, step, and the mask decoder (None if the run has none)."""

  config: Any
  tokenizer: Any
  model: AVUnified
  params: Any
  mesh: jax.sharding.Mesh
  rules: Any
  step: int
  mask_decoder: MaskDecoder | None


# Config keys that may differ between training and an evaluation of the trained run: which
# data is read (data.shards_dir, data.eval_split, data.prefetch, tasks.<t>.dataset, and
# tasks.<t>.weight: 0 leaves a task out), how it is scored (eval.*) and the device mesh.
EVAL_OVERRIDES = ("data.shards_dir", "data.eval_split", "data.prefetch", "eval.*", "mesh.*",
                  "tasks.*.dataset", "tasks.*.weight")


def _eval_override_allowed(key: str) -> bool:
  parts = key.split(".")
  for pattern in EVAL_OVERRIDES:
    want = pattern.split(".")
    if len(parts) >= len(want) and all(w in ("*", p) for w, p in zip(want, parts)):
      if want[-1] != "*" and len(parts) != len(want):
        continue
      return True
  return False


def check_eval_overrides(overrides: Mapping[str, Any]) -> None:
  """Raises RunError naming every overridden key that cannot apply to an evaluation."""
  bad = [k for k in overrides if not _eval_override_allowed(k)]
  if bad:
    names = ", ".join(f"--config.{k}" for k in bad)
    raise RunError(f"{names} cannot apply to eval: a trained run is evaluated with its own "
                   f"config (W/config.json); only {', '.join(EVAL_OVERRIDES)} may be overridden")


def apply_overrides(config, overrides: Mapping[str, Any]):
  """A copy of `config` with the dotted `overrides` ({"data.shards_dir": "..."}) applied
  (checked by `check_eval_overrides`)."""
  check_eval_overrides(overrides)
  config = config.copy_and_resolve_references()
  config.unlock()
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = _tuples(value) if isinstance(value, list) else value
  config.lock()
  return config


def load_run(workdir: str | Path, step: int | None = None,
             overrides: Mapping[str, Any] | None = None) -> Run:
  """Loads W's config (with the evaluation `overrides`, see `apply_overrides`), tokenizer,
  mask tokenizer and the checkpoint `step` (default latest)."""
  from av_unified_jax import checkpointing, steps, train  # pylint: disable=g-import-not-at-top
  from av_unified_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from av_unified_jax import models  # pylint: disable=g-import-not-at-top

  workdir = Path(workdir).absolute()  # orbax reads absolute paths only
  config = load_run_config(workdir)
  if overrides:
    config = apply_overrides(config, overrides)
  if not (workdir / pipeline.TOKENIZER_DIR / "tokenizer.json").exists():
    raise RunError(f"{workdir / pipeline.TOKENIZER_DIR} not found: the run saved no tokenizer "
                   "(it is written when training starts); train first")
  tokenizer = tokens.Tokenizer.load(workdir / pipeline.TOKENIZER_DIR)
  manager = checkpointing.make_manager(workdir, config.keep_checkpoints, async_save=False,
                                       read_only=True)
  available = list(manager.all_steps())
  if not available:
    raise RunError(f"no checkpoint in {workdir / checkpointing.CHECKPOINT_DIR}: train first")
  step = max(available) if step is None else int(step)
  if step not in available:
    raise RunError(f"no checkpoint for --step={step} in {workdir}; available: {available}")
  num_classes = len(tokenizer.label_sets.get("avvp", ()))
  model = train.build_model(config, tokenizer.layout.vocab_size, num_classes)
  mesh, rules = sharding.make_mesh(config.mesh), sharding.logical_rules(config)
  tx, _ = steps.make_optimizer(config.optim, config.total_steps)
  mcfg = models.model_config_from(config.model)
  spec = pipeline.batch_spec(config, tokenizer, mcfg)
  abstract_boxed = jax.eval_shape(train.make_init_fn(model, tx, spec), jax.random.key(0))
  shardings = sharding.param_shardings(abstract_boxed, mesh, rules)
  abstract = checkpointing.with_shardings(checkpointing.unbox(abstract_boxed), shardings)
  state = checkpointing.restore(manager, step, abstract)
  manager.close()
  decoder = load_mask_decoder(workdir, tokenizer, int(config.eval.batch_size))
  return Run(config, tokenizer, model, state.params, mesh, rules, step, decoder)


def evaluation_dir(workdir: str | Path, step: int, run_config, config) -> Path:
  """Where an evaluation of W's checkpoint `step` goes: W/eval/<step>/ on the run's own data,
  W/eval/<step>/<split>/ on another split of it, W/eval/<step>/<shards dir as a name>/<split>/
  on another copy of the data (`--config.data.shards_dir`)."""
  out = eval_dir(workdir, step)
  own = str(Path(run_config.data.shards_dir).absolute())
  other = str(Path(config.data.shards_dir).absolute())
  if own != other:
    return out / ("_".join(p for p in Path(other).parts if p not in ("/", "\\", ""))
                  .replace(":", "")) / config.data.eval_split
  if config.data.eval_split != run_config.data.eval_split:
    return out / config.data.eval_split
  return out


def evaluate_workdir(workdir: str | Path, step: int | None = None,
                     log: Callable[[str], None] = print,
                     overrides: Mapping[str, Any] | None = None) -> tuple[int, dict]:
  """--mode=eval: evaluates checkpoint `step` (default latest) of W, with the evaluation
  `overrides` ({dotted key: value}, see `apply_overrides`) over the run's config; returns
  (step, results). Written to `evaluation_dir`."""
  overrides = dict(overrides or {})
  check_eval_overrides(overrides)  # before loading anything
  run = load_run(workdir, step, overrides)
  evaluator = Evaluator(run.config, run.tokenizer, run.model, run.mesh, run.rules,
                        run.mask_decoder, log)
  out = evaluation_dir(workdir, run.step, load_run_config(workdir), run.config)
  if overrides:
    shown = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
    log(f"evaluating step {run.step} with {shown} over {Path(workdir) / 'config.json'}")
  results = evaluator.evaluate(run.params, out)
  log(f"results of step {run.step}: {out / RESULTS_FILE} (intervals: {out / INTERVALS_FILE})")
  return run.step, results


def clip_sample(config, task: str, split: str, clips: int) -> tuple[int, int]:
  """The first `clips` videos of `task`'s `split` in stored order (all when it has fewer):
  (evaluation examples covering them, to pass as max_examples; the number of videos).
  An AVQA video brings all its questions, an AVS video all its annotated frames."""
  from av_unified_jax.data import pipeline  # pylint: disable=g-import-not-at-top

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
