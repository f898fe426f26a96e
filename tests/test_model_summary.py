"""--mode=summary: parameters per module, FLOPs per example and sharding, into summary.json."""

import json
import types

import flax.linen as nn
import jax

from av_unified_jax import cli, models, summary
from configs import tiny


def test_summary_mode_writes_summary_json(tmp_path, capsys):
  config = tiny.get_config()
  flags = types.SimpleNamespace(workdir=str(tmp_path))
  assert cli.run("summary", config, flags) == 0
  s = json.loads((tmp_path / "summary.json").read_text())
  cfg = models.model_config_from(config.model)
  batch = summary.abstract_batch(config, cfg)
  abstract = jax.eval_shape(models.AVUnified(cfg).init, jax.random.key(0), batch)
  leaves = jax.tree.leaves(nn.meta.unbox(abstract)["params"])
  assert s["total_params"] == sum(x.size for x in leaves)
  assert sum(s["params_by_module"].values()) == s["total_params"]
  assert {"visual_encoder", "audio_encoder", "temporal", "spatial", "decoder"} <= set(
      s["params_by_module"])
  # Forward + backward is at least 2x the forward's 2 FLOPs per weight use; a loose bound
  # that still catches a missing backward pass or a cost analysis of the wrong function.
  assert s["flops_per_example"] > 6 * (s["total_params"] - s["params_by_module"]["embed"])
  assert len(s["param_sharding"]) == len(leaves)
  out = capsys.readouterr().out
  assert "FLOPs" in out and "temporal" in out and "summary.json" in out


def test_summary_describes_the_configured_mesh_without_its_devices():
  config = tiny.get_config()
  config.mesh.fsdp = 16  # More devices than this host has: layout shown for 16 devices.
  config.mesh.data = 1
  sizes, note = summary.sharding_axis_sizes(config)
  assert sizes == {"data": 1, "fsdp": 16, "tensor": 1} and "this host has" in note
