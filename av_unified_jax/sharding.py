"""Mesh and shardings from the config: logical axis names -> mesh axes (one rules table).

    mesh = sharding.make_mesh(config.mesh)                        # training: as configured
    sizes = sharding.fit_mesh_shape(config.mesh, jax.device_count())  # inference: fitted
    rules = sharding.logical_rules(config)
    abstract = sharding.abstract_variables(model, batch)          # no allocation
    shardings = sharding.param_shardings(abstract, mesh, rules)   # NamedSharding per param
    params = sharding.init_params(model, batch, rng, mesh, rules) # created already sharded
    with sharding.activate(mesh, rules):                          # activation constraints on
      out = jax.jit(fn, in_shardings=..., out_shardings=...)(params, batch)

Model code only names logical axes; only this module (and the rules table) names mesh axes.
A mesh axis whose size does not divide a parameter's dimension is dropped for that dimension
(the dimension is replicated) rather than failing, e.g. a vocabulary of 1003 on tensor=4.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Sequence[tuple[str, Any]]


def _configured_sizes(mesh_cfg: Mapping[str, int]) -> dict[str, int]:
  sizes = {axis: int(mesh_cfg.get(axis, 1)) for axis in MESH_AXES}
  unknown = sorted(set(mesh_cfg) - set(MESH_AXES))
  if unknown:
    raise ValueError(f"mesh axes {unknown} are not among {MESH_AXES}")
  fill = [a for a, s in sizes.items() if s == -1]
  if len(fill) > 1:
    raise ValueError(f"only one mesh axis may be -1, got {fill}")
  bad = [a for a, s in sizes.items() if s == 0 or s < -1]
  if bad:
    raise ValueError(f"mesh axes {bad} must be positive sizes (or -1 for one of them)")
  return sizes


def mesh_shape(mesh_cfg: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Resolves the config's mesh sizes ({"data": -1, "fsdp": 4, ...}; one -1 at most)."""
  sizes = _configured_sizes(mesh_cfg)
  fill = [a for a, s in sizes.items() if s == -1]
  known = math.prod(s for s in sizes.values() if s != -1)
  if fill:
    if num_devices % known:
      raise ValueError(f"cannot fill mesh axis {fill[0]!r}: {num_devices} devices are not "
                       f"divisible by the other axes' product {known}")
    sizes[fill[0]] = num_devices // known
  if math.prod(sizes.values()) != num_devices:
    raise ValueError(f"mesh {sizes} needs {math.prod(sizes.values())} devices but "
                     f"{num_devices} are available; change config.mesh")
  return sizes


def fit_mesh_shape(mesh_cfg: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """The config's mesh sizes fitted to `num_devices` (inference on other devices than a run
  trained on): `mesh_shape` where it fits; otherwise "tensor", then "fsdp", keep the largest
  size dividing both their configured size (a -1 asks for all devices left) and the devices
  left, and "data" takes the rest. A run trained with fsdp=8 gets fsdp=1 on one device,
  fsdp=4 on four, and fsdp=4, data=3 on twelve."""
  configured = _configured_sizes(mesh_cfg)
  try:
    return mesh_shape(mesh_cfg, num_devices)
  except ValueError:
    pass
  sizes, left = {}, num_devices
  for axis in ("tensor", "fsdp"):
    wanted = configured[axis]
    sizes[axis] = math.gcd(left if wanted == -1 else wanted, left)
    left //= sizes[axis]
  sizes["data"] = left
  return {axis: sizes[axis] for axis in MESH_AXES}


def make_mesh(mesh_cfg: Mapping[str, int], devices=None) -> Mesh:
  """A Mesh with axes ("data", "fsdp", "tensor") of Auto type (flax linen constraints)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = mesh_shape(mesh_cfg, len(devices))
  return jax.make_mesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES,
                       axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def logical_rules(config) -> tuple[tuple[str, Any], ...]:
  """The rules table of a config (or a rules sequence passed through), as nested tuples."""
  rules = getattr(config, "logical_axis_rules", config)
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in rules)


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules):
  """Makes `nn.with_logical_constraint` effective: sets the mesh and the rules."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(tuple(rules)):
    yield


def abstract_variables(model: nn.Module, batch, rng=None, **kwargs):
  """`model.init` under `jax.eval_shape`: boxed ShapeDtypeStructs, nothing allocated."""
  rng = jax.random.key(0) if rng is None else rng
  return jax.eval_shape(lambda r, b: model.init(r, b, **kwargs), rng, batch)


def mesh_spec(logical_spec: P, rules: Rules) -> P:
  """Logical PartitionSpec -> mesh PartitionSpec (no mesh needed)."""
  return nn.logical_to_mesh_axes(tuple(logical_spec), tuple(rules))


def fit_spec(spec: P, shape: Sequence[int], axis_sizes: Mapping[str, int]) -> P:
  """Drops mesh axes whose (product of) sizes does not divide the dimension they shard."""
  out = []
  for i, axes in enumerate(tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
    kept = tuple(n for n in names if axis_sizes[n] > 1)
    if kept and shape[i] % math.prod(axis_sizes[n] for n in kept):
      kept = ()
    out.append(None if not kept else (kept[0] if len(kept) == 1 else kept))
  while out and out[-1] is None:
    out.pop()
  return P(*out)


def param_shardings(abstract_vars, mesh: Mesh, rules: Rules):
  """NamedSharding per variable (same tree as `nn.meta.unbox(abstract_vars)`)."""
  logical = nn.get_partition_spec(abstract_vars)
  shapes = nn.meta.unbox(abstract_vars)
  sizes = dict(mesh.shape)
  return jax.tree.map(
      lambda spec, x: NamedSharding(mesh, fit_spec(mesh_spec(spec, rules), x.shape, sizes)),
      logical, shapes, is_leaf=lambda x: isinstance(x, P))


def init_params(model: nn.Module, batch, rng, mesh: Mesh, rules: Rules):
  """Initializes the parameters directly into their shardings; returns the plain params."""
  abstract = abstract_variables(model, batch, rng)
  shardings = param_shardings(abstract, mesh, rules)["params"]
  init = lambda r, b: nn.meta.unbox(model.init(r, b))["params"]
  # Outside `activate`: with rules set, the boxes would also constrain dimensions that
  # `fit_spec` leaves replicated; out_shardings alone places every parameter.
  return jax.jit(init, out_shardings=shardings)(rng, batch)


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int) -> NamedSharding:
  """Sharding of a batch field: the leading (batch) axis by the "batch" rule."""
  spec = mesh_spec(P("batch", *([None] * (ndim - 1))), rules)
  return NamedSharding(mesh, spec)


def batch_shardings(batch, mesh: Mesh, rules: Rules):
  """A NamedSharding for every field of a batch (dict of arrays with a leading batch axis)."""
  return jax.tree.map(lambda x: batch_sharding(mesh, rules, np.ndim(x)), batch)


def describe(abstract_params, axis_sizes: Mapping[str, int], rules: Rules) -> list[dict]:
  """One row per parameter: path, shape, logical axes, mesh spec and per-device shape.

  Needs no devices (`axis_sizes` such as `mesh_shape(config.mesh, n)`), so a pod's layout
  can be inspected on a laptop.
  """
  logical = nn.get_partition_spec(abstract_params)
  shapes = nn.meta.unbox(abstract_params)
  rows = []
  flat_specs = jax.tree_util.tree_leaves_with_path(
      logical, is_leaf=lambda x: isinstance(x, P))
  for (path, spec), x in zip(flat_specs, jax.tree.leaves(shapes), strict=True):
    mspec = fit_spec(mesh_spec(spec, rules), x.shape, axis_sizes)
    shard = list(x.shape)
    for i, axes in enumerate(mspec):
      names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
      shard[i] //= math.prod(axis_sizes[n] for n in names)
    rows.append({"path": "/".join(_key(k) for k in path), "shape": tuple(x.shape),
                 "logical": tuple(spec), "mesh": tuple(mspec), "shard_shape": tuple(shard)})
  return rows


def _key(k) -> str:
  return str(getattr(k, "key", getattr(k, "idx", k)))
