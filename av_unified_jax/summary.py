"""`main.py --mode=summary`: parameters per module, FLOPs of one training example, and how the
parameters are sharded on the configured mesh. Nothing is allocated: shapes come from
`jax.eval_shape` and FLOPs from XLA's cost analysis of the lowered (uncompiled) train step.

    python main.py --mode=summary --config=configs/base.py [--workdir=W]   # W/summary.json
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from av_unified_jax import atomic, models, paths, sharding
from av_unified_jax.models import losses


def abstract_batch(config, cfg: models.ModelConfig, batch_size: int = 1):
  """ShapeDtypeStructs of a batch with the config's data and token sizes."""
  batch = models.example_batch(cfg, 1, config.data.num_segments, config.data.image_size,
                        config.tokens.max_prompt_len, config.tokens.max_target_len)
  return {k: jax.ShapeDtypeStruct((batch_size,) + v.shape[1:], v.dtype)
          for k, v in batch.items()}


def model_config(config) -> models.ModelConfig:
  return models.model_config_from(config.model)


def count_params(params) -> tuple[int, dict[str, int]]:
  """(total, {top-level module: count}) of a (boxed or plain, abstract or real) param tree."""
  params = nn.meta.unbox(params)
  by_module = {name: int(sum(math.prod(x.shape) for x in jax.tree.leaves(sub)))
               for name, sub in params.items()}
  return int(sum(by_module.values())), by_module


def train_flops(cfg: models.ModelConfig, batch) -> float:
  """FLOPs of one forward + backward pass of the loss on `batch` (abstract is fine).

  Counted on the unscanned, non-rematerialized model (same arithmetic; XLA's cost analysis
  counts a loop body once and remat adds recomputation)."""
  cfg = dataclasses.replace(cfg, scan_layers=False, remat=False)
  model = models.AVUnified(cfg)
  params = nn.meta.unbox(sharding.abstract_variables(model, batch))["params"]

  def loss_fn(p, b):
    out = model.apply({"params": p}, b, train=True, rngs={"dropout": jax.random.key(0)})
    return losses.model_loss(out, b, contrastive_weight=0.1, mil_weight=1.0)[0]

  lowered = jax.jit(jax.value_and_grad(loss_fn)).lower(params, batch)
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def sharding_axis_sizes(config) -> tuple[dict[str, int], str]:
  """Mesh axis sizes of the config on this host's devices (or, if it does not fit, with
  -1 read as 1), and a note saying which."""
  n = jax.device_count()
  try:
    return sharding.mesh_shape(config.mesh, n), f"{n} device(s) of this host"
  except ValueError:
    sizes = {a: max(int(config.mesh.get(a, 1)), 1) for a in sharding.MESH_AXES}
    return sizes, f"{math.prod(sizes.values())} devices (this host has {n})"


def summarize(config) -> dict:
  """The summary as a JSON-ready dict (see `run`)."""
  cfg = model_config(config)
  batch = abstract_batch(config, cfg)
  abstract = sharding.abstract_variables(models.AVUnified(cfg), batch)["params"]
  total, by_module = count_params(abstract)
  sizes, mesh_note = sharding_axis_sizes(config)
  rows = sharding.describe(abstract, sizes, sharding.logical_rules(config))
  bytes_per_device = sum(math.prod(r["shard_shape"]) * 4 for r in rows)
  return {
      "variant": config.model.variant,
      "model_config": dataclasses.asdict(cfg),
      "total_params": total,
      "params_by_module": by_module,
      "flops_per_example": train_flops(cfg, batch),
      "input_shapes": {k: list(v.shape) for k, v in batch.items()},
      "mesh": sizes,
      "mesh_note": mesh_note,
      "param_bytes_per_device": bytes_per_device,
      "param_sharding": {r["path"]: {"shape": list(r["shape"]), "logical": list(r["logical"]),
                                     "mesh": [_axes_text(a) for a in r["mesh"]],
                                     "shard_shape": list(r["shard_shape"])} for r in rows},
  }


def _axes_text(axes) -> str | None:
  if axes is None:
    return None
  return "+".join(axes) if isinstance(axes, tuple) else axes


def format_summary(s: Mapping) -> str:
  lines = [f"model variant {s['variant']!r}: {s['total_params']:,} parameters"]
  width = max(len(k) for k in s["params_by_module"])
  for name, n in sorted(s["params_by_module"].items(), key=lambda kv: -kv[1]):
    lines.append(f"  {name:<{width}}  {n:>14,}  {100 * n / max(s['total_params'], 1):5.1f}%")
  shapes = ", ".join(f"{k}{tuple(v)}" for k, v in s["input_shapes"].items()
                     if k in ("frames", "log_mel", "prompt_tokens", "target_tokens"))
  lines.append(f"FLOPs of one training example (forward + backward): "
               f"{s['flops_per_example']:.4g}  [{shapes}]")
  lines.append(f"sharding on mesh {s['mesh']} ({s['mesh_note']}): "
               f"{s['param_bytes_per_device'] / 2**20:,.1f} MiB of float32 params per device")
  for path, r in s["param_sharding"].items():
    spec = "(" + ", ".join(str(a) for a in r["mesh"]) + ")"
    lines.append(f"  {path:<70} {str(tuple(r['shape'])):<22} {spec:<28} "
                 f"per device {tuple(r['shard_shape'])}")
  return "\n".join(lines)


def run(config, flags, **_) -> int:
  """The summary mode: prints the summary; with --workdir also writes W/summary.json."""
  s = summarize(config)
  print(format_summary(s))
  workdir = getattr(flags, "workdir", None)
  if workdir:
    path = paths.as_path(workdir) / "summary.json"  # Local or a URL (gs://...).
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(s, indent=1, default=_json_default))
    print(f"wrote {path}")
  return 0


def _json_default(x):
  if isinstance(x, (np.integer, jnp.integer)):
    return int(x)
  if isinstance(x, tuple):
    return list(x)
  raise TypeError(f"not JSON serializable: {type(x)}")
