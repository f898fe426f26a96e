"""A run's work directory W: the names of its parts, building the model and its abstract
(shape-only) train state, and loading a trained run for evaluation, prediction or export.

    W/config.json          the run's config (written by training)
    W/tokenizer/           the vocabulary (TOKENIZER_DIR, built from the data on the first run)
    W/mask_tokenizer/      the mask tokenizer (MASK_TOKENIZER_DIR) and its cached AVS codes
    W/checkpoints/<step>/  orbax checkpoints (checkpointing.CHECKPOINT_DIR)
    W/eval/<step>/         evaluations (EVAL_DIR)

    model = build_model(config, vocab_size, num_classes)
    state = abstract_state(config, model, batch_spec, mesh, rules)  # .abstract, .shardings
    run = load_run(W, step=None, overrides={}, mode="eval")  # config, tokenizer, model,
                                         # params on the devices present (inference_mesh), ...
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from etils import epath

from av_unified_jax import checkpointing, models, paths, sharding, steps, tokens
from av_unified_jax.data import pipeline
from av_unified_jax.data.tasks import TOKENIZER_DIR
from av_unified_jax.mask_tokenizer.decoder import MaskDecoder
from configs import common

CONFIG_FILE = "config.json"
EVAL_DIR = "eval"
MASK_TOKENIZER_DIR = "mask_tokenizer"  # W/mask_tokenizer: the run's mask tokenizer.
CHECKPOINT_DIR = checkpointing.CHECKPOINT_DIR

__all__ = ["CHECKPOINT_DIR", "CONFIG_FILE", "EVAL_DIR", "EVAL_OVERRIDES", "MASK_TOKENIZER_DIR",
           "OVERRIDES", "TOKENIZER_DIR", "AbstractState", "Run", "RunError", "abstract_state",
           "apply_overrides", "build_model", "check_eval_overrides", "check_overrides",
           "eval_dir", "inference_mesh", "load_mask_decoder", "load_run", "load_run_config",
           "make_init_fn", "model_config"]


def eval_dir(workdir: epath.PathLike, step: int) -> epath.Path:
  return paths.as_path(workdir) / EVAL_DIR / str(int(step))


# ----------------------------------------------------------------------------- model and state
def model_config(config, vocab_size: int, num_classes: int) -> models.ModelConfig:
  """The `ModelConfig` of `config.model` with the data's vocabulary and class count (and, unless
  set, the layout's <avs> as the task token of the cell queries)."""
  overrides = {}
  if config.model.get("mask_task_token") is None:  # The layout's <avs>: AVS gets cell queries.
    overrides["mask_task_token"] = tokens.VocabLayout().task_token("avs")
  return models.model_config_from(config.model, vocab_size=vocab_size,
                                  num_mil_classes=num_classes, **overrides)


def build_model(config, vocab_size: int, num_classes: int):
  """`models.AVUnified` for `config.model` with the data's vocabulary and class count."""
  return models.AVUnified(model_config(config, vocab_size, num_classes))


def make_init_fn(model, tx, batch_spec: Mapping[str, jax.ShapeDtypeStruct]):
  """`init_fn(rng) -> TrainState` with boxed (logically partitioned) params; a batch of one."""
  def init_fn(rng):
    dummy = {k: jnp.zeros((1,) + s.shape[1:], s.dtype) for k, s in batch_spec.items()}
    params = model.init({"params": rng, "dropout": rng}, dummy, train=False)["params"]
    return steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                            opt_state=tx.init(params))
  return init_fn


@dataclasses.dataclass
class AbstractState:
  """The train state of `model` with nothing allocated.

  Attributes: tx and schedule (`steps.make_optimizer`), init_fn (`make_init_fn`), boxed (the
  TrainState of ShapeDtypeStructs, params boxed with their logical axes), and on a mesh
  shardings (NamedSharding per leaf) and abstract (unboxed ShapeDtypeStructs carrying them,
  the restore target of a checkpoint); both None without a mesh.
  """

  tx: Any
  schedule: Any
  init_fn: Any
  boxed: Any
  shardings: Any = None
  abstract: Any = None


def abstract_state(config, model, batch_spec: Mapping[str, jax.ShapeDtypeStruct],
                   mesh: jax.sharding.Mesh | None = None, rules=None) -> AbstractState:
  """The optimizer of `config.optim`, the init function and `jax.eval_shape` of it; with a
  mesh, the state's shardings from the logical axis names (`rules`)."""
  tx, schedule = steps.make_optimizer(config.optim, config.total_steps)
  init_fn = make_init_fn(model, tx, batch_spec)
  boxed = jax.eval_shape(init_fn, jax.random.key(0))
  state = AbstractState(tx, schedule, init_fn, boxed)
  if mesh is not None:
    state.shardings = sharding.param_shardings(boxed, mesh, rules)
    state.abstract = checkpointing.with_shardings(checkpointing.unbox(boxed), state.shardings)
  return state


# ----------------------------------------------------------------------------- a trained run
class RunError(ValueError):
  """The work directory lacks what evaluation or prediction needs; the message says what."""


def load_run_config(workdir: epath.PathLike):
  """The run's config: W/config.json (written by training) over the complete base key set."""
  path = paths.as_path(workdir) / CONFIG_FILE
  if not path.exists():
    raise RunError(f"{path} not found: {workdir} is not a training work directory; train first "
                   f"(python main.py --config=configs/demo.py --workdir={workdir})")
  config = common.base_config()  # Locked: only the keys this version knows.
  _assign(config, json.loads(path.read_text()))
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
  model: models.AVUnified
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
# Per mode, the config keys a run may be loaded with other values of: prediction decodes as
# an evaluation does (eval.*) and reads the conversion settings of the data
# (data.shards_dir); an export only places the parameters on a mesh.
OVERRIDES = {
    "eval": EVAL_OVERRIDES,
    "predict": ("data.shards_dir", "eval.*", "mesh.*"),
    "export": ("mesh.*",),
}


def _override_allowed(key: str, patterns: tuple[str, ...]) -> bool:
  parts = key.split(".")
  for pattern in patterns:
    want = pattern.split(".")
    if len(parts) >= len(want) and all(w in ("*", p) for w, p in zip(want, parts)):
      if want[-1] != "*" and len(parts) != len(want):
        continue
      return True
  return False


def check_overrides(overrides: Mapping[str, Any], mode: str = "eval") -> None:
  """Raises RunError naming every overridden key that cannot apply to `mode` (a key of
  OVERRIDES: eval, predict, export)."""
  patterns = OVERRIDES[mode]
  bad = [k for k in overrides if not _override_allowed(k, patterns)]
  if bad:
    names = ", ".join(f"--config.{k}" for k in bad)
    raise RunError(f"{names} cannot apply to {mode}: a trained run is loaded with its own "
                   f"config (W/config.json); only {', '.join(patterns)} may be overridden")


def check_eval_overrides(overrides: Mapping[str, Any]) -> None:
  """`check_overrides` for --mode=eval."""
  check_overrides(overrides, "eval")


def apply_overrides(config, overrides: Mapping[str, Any], mode: str = "eval"):
  """A copy of `config` with the dotted `overrides` ({"data.shards_dir": "..."}) applied
  (checked by `check_overrides` for `mode`)."""
  check_overrides(overrides, mode)
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = _tuples(value) if isinstance(value, list) else value
  config.lock()
  return config


def inference_mesh(config, overrides: Mapping[str, Any]) -> jax.sharding.Mesh:
  """The mesh a trained run is loaded onto: the run's `config.mesh` fitted to the devices
  present (`sharding.fit_mesh_shape`), or, when --config.mesh.* is overridden, exactly the
  overridden mesh. Writes the sizes used into `config.mesh`."""
  n = jax.device_count()
  given = sorted(f"--config.{k}" for k in overrides if k.startswith("mesh."))
  try:
    sizes = (sharding.mesh_shape(config.mesh, n) if given
             else sharding.fit_mesh_shape(config.mesh, n))
  except ValueError as e:
    raise RunError(f"{', '.join(given) or 'config.mesh'}: {e}") from None
  for axis, size in sizes.items():
    config.mesh[axis] = size
  return sharding.make_mesh(sizes)


def load_mask_decoder(workdir: epath.PathLike, tokenizer,
                      batch_size: int = 16) -> MaskDecoder | None:
  """The run's mask decoder from W/mask_tokenizer, or None when the run has none."""
  directory = paths.as_path(workdir) / MASK_TOKENIZER_DIR
  if not directory.exists():
    return None
  return MaskDecoder.load(directory, tokenizer.mask_grid, tokenizer.layout.num_mask_codes,
                          batch_size)


def load_run(workdir: epath.PathLike, step: int | None = None,
             overrides: Mapping[str, Any] | None = None, mode: str = "eval") -> Run:
  """Loads W's config (with the `overrides` that apply to `mode`, see `apply_overrides`),
  tokenizer, mask tokenizer and the checkpoint `step` (default latest), restored onto
  `inference_mesh` (whatever devices are present)."""
  workdir = paths.as_path(workdir)  # orbax reads absolute paths only (or URLs)
  overrides = dict(overrides or {})
  config = apply_overrides(load_run_config(workdir), overrides, mode)
  mesh, rules = inference_mesh(config, overrides), sharding.logical_rules(config)
  if not (workdir / TOKENIZER_DIR / "tokenizer.json").exists():
    raise RunError(f"{workdir / TOKENIZER_DIR} not found: the run saved no tokenizer "
                   "(it is written when training starts); train first")
  tokenizer = tokens.Tokenizer.load(workdir / TOKENIZER_DIR)
  manager = checkpointing.make_manager(workdir, config.keep_checkpoints, async_save=False,
                                       read_only=True)
  available = list(manager.all_steps())
  if not available:
    raise RunError(f"no checkpoint in {workdir / CHECKPOINT_DIR}: train first")
  step = max(available) if step is None else int(step)
  if step not in available:
    raise RunError(f"no checkpoint for --step={step} in {workdir}; available: {available}")
  num_classes = len(tokenizer.label_sets.get("avvp", ()))
  model = build_model(config, tokenizer.layout.vocab_size, num_classes)
  spec = pipeline.batch_spec(config, tokenizer, models.model_config_from(config.model))
  state = checkpointing.restore(manager, step,
                                abstract_state(config, model, spec, mesh, rules).abstract)
  manager.close()
  decoder = load_mask_decoder(workdir, tokenizer, int(config.eval.batch_size))
  return Run(config, tokenizer, model, state.params, mesh, rules, step, decoder)
