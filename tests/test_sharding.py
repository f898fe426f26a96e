"""Sharding: every parameter is annotated, the config's mesh resolves, and on a 2x4 fake mesh
the sharded forward pass equals the unsharded one."""

import dataclasses

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import model_helpers as H
from av_unified_jax import models, sharding
from configs import common

RULES = common.LOGICAL_AXIS_RULES
RULE_NAMES = {name for name, _ in RULES}


@pytest.mark.parametrize("scan", [False, True])
def test_every_parameter_has_logical_axis_names(scan):
  model = models.AVUnified(dataclasses.replace(H.CFG, scan_layers=scan))
  abstract = jax.eval_shape(model.init, jax.random.key(0), H.batch())
  leaves = jax.tree.leaves(abstract, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert len(leaves) > 100
  for box in leaves:
    assert isinstance(box, nn.LogicallyPartitioned), box
    assert len(box.names) == box.value.ndim, box
    assert set(box.names) <= RULE_NAMES, box.names
  specs = jax.tree.leaves(sharding.param_shardings(
      abstract, sharding.make_mesh({"data": 2, "fsdp": 4}), RULES))
  assert all(isinstance(s, jax.sharding.NamedSharding) for s in specs)
  assert sum("fsdp" in str(s.spec) for s in specs) > len(specs) // 2  # Most are split.


def test_mesh_shape_from_the_config():
  assert sharding.mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8) == {
      "data": 4, "fsdp": 2, "tensor": 1}
  with pytest.raises(ValueError, match="only one"):
    sharding.mesh_shape({"data": -1, "fsdp": -1}, 8)
  with pytest.raises(ValueError, match="devices"):
    sharding.mesh_shape({"data": 3, "fsdp": 1}, 8)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_fit_spec_replicates_dimensions_a_mesh_axis_does_not_divide():
  sizes = {"data": 2, "fsdp": 4, "tensor": 4}
  assert sharding.fit_spec(P("tensor", "fsdp"), (1003, 64), sizes) == P(None, "fsdp")
  assert sharding.fit_spec(P(("data", "fsdp"), None), (16, 3), sizes) == P(("data", "fsdp"))
  assert sharding.fit_spec(P(("data", "fsdp")), (4,), sizes) == P()
  rows = sharding.describe(
      jax.eval_shape(H.MODEL.init, jax.random.key(0), H.batch())["params"], sizes, RULES)
  row = {r["path"]: r for r in rows}
  emb = row["embed/embedding"]  # The vocabulary (535) is not divisible by tensor=4.
  assert emb["mesh"] == (None, "fsdp") and emb["shard_shape"] == (H.V, H.CFG.embed_dim // 4)
  wi = row["decoder/blocks/layers_0/mlp/wi/kernel"]
  assert wi["logical"] == ("embed", "mlp") and wi["mesh"] == ("fsdp", "tensor")
  assert wi["shard_shape"] == (H.CFG.embed_dim // 4, H.CFG.mlp_dim // 4)


LAYOUTS = [{"data": 2, "fsdp": 4, "tensor": 1}, {"data": 2, "fsdp": 1, "tensor": 4}]


@pytest.mark.parametrize("layout", LAYOUTS, ids=["data2_fsdp4", "data2_tensor4"])
def test_sharded_forward_equals_unsharded(layout):
  mesh = sharding.make_mesh(layout)
  batch = H.batch()
  abstract = sharding.abstract_variables(H.MODEL, batch)
  shardings = sharding.param_shardings(abstract, mesh, RULES)["params"]
  if layout["fsdp"] > 1:  # Parameters created directly into their shardings.
    params = sharding.init_params(H.MODEL, batch, H.init_key(), mesh, RULES)
  else:
    params = jax.device_put(H.params(), shardings)
  wi = params["decoder"]["blocks"]["layers_0"]["mlp"]["wi"]["kernel"]  # ("embed", "mlp")
  expected = P("fsdp") if layout["fsdp"] > 1 else P(None, "tensor")
  assert wi.sharding.spec == expected, wi.sharding
  assert wi.addressable_shards[0].data.size == wi.size // 4
  batch_sh = sharding.batch_shardings(batch, mesh, RULES)
  gbatch = jax.device_put(batch, batch_sh)
  forward = jax.jit(lambda p, b: H.MODEL.apply({"params": p}, b),
                    in_shardings=(shardings, batch_sh))
  with sharding.activate(mesh, RULES):
    out = forward(params, gbatch)
  ref = H.forward(jax.device_get(params), batch)
  assert out["logits"].sharding.spec[0] in ("data", ("data", "fsdp"))
  for key in ("logits", "loc_maps", "mil_video_probs", "audio_embed", "visual_embed"):
    np.testing.assert_allclose(np.asarray(out[key]), np.asarray(ref[key]), atol=1e-5,
                               err_msg=key)
