"""eval, export and predict run on whatever devices exist: a run trained with fsdp=8 on the 8
fake devices is evaluated and exported (and the export verified) with one device visible;
the run's mesh is fitted to the devices present unless --config.mesh.* sets it."""

import json
import subprocess

import jax
import pytest

from av_unified_jax import runs, sharding

import demo_cache  # noqa: I001  (tests/ helpers)
import train_helpers

STEPS = 2
ONLY_AVE = [f"--config.tasks.{t}.weight=0" for t in ("avvp", "avqa", "ssl", "avs")]


@pytest.mark.parametrize("configured, devices, fitted", [
    ({"data": -1, "fsdp": 8, "tensor": 1}, 8, {"data": 1, "fsdp": 8, "tensor": 1}),  # fits
    ({"data": -1, "fsdp": 8, "tensor": 1}, 1, {"data": 1, "fsdp": 1, "tensor": 1}),
    ({"data": 1, "fsdp": 8, "tensor": 1}, 4, {"data": 1, "fsdp": 4, "tensor": 1}),
    ({"data": -1, "fsdp": 8, "tensor": 1}, 12, {"data": 3, "fsdp": 4, "tensor": 1}),
    ({"data": 2, "fsdp": 2, "tensor": 2}, 2, {"data": 1, "fsdp": 1, "tensor": 2}),
    ({"data": 1, "fsdp": -1, "tensor": 4}, 6, {"data": 1, "fsdp": 3, "tensor": 2}),
])
def test_fit_mesh_shape(configured, devices, fitted):
  assert sharding.fit_mesh_shape(configured, devices) == fitted
  with pytest.raises(ValueError, match="only one mesh axis may be -1"):
    sharding.fit_mesh_shape({"data": -1, "fsdp": -1}, devices)


def _run(args, devices: int, timeout: int = 900) -> subprocess.CompletedProcess:
  return subprocess.run(train_helpers.main_command(*args), cwd=train_helpers.ROOT,
                        capture_output=True, text=True, timeout=timeout,
                        env=train_helpers.subprocess_env(devices))


def _ok(proc) -> subprocess.CompletedProcess:
  assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
  return proc


def test_trained_with_fsdp8_then_evaluated_and_exported_on_one_device(tmp_path):
  demo = demo_cache.tiny_demo()
  work = tmp_path / "run"
  _ok(_run([work, f"--config=configs/tiny.py:steps={STEPS}", "--config.mesh.data=1",
            "--config.mesh.fsdp=8", f"--config.data.shards_dir={demo / 'shards'}",
            "--config.eval_every_steps=0", *ONLY_AVE], devices=8))
  assert json.loads((work / "config.json").read_text())["mesh"]["fsdp"] == 8

  # In this process (8 devices): the run's own mesh, or the one --config.mesh.* sets.
  own = runs.load_run(work)
  assert dict(own.mesh.shape) == {"data": 1, "fsdp": 8, "tensor": 1}
  moved = runs.load_run(work, overrides={"mesh.data": -1, "mesh.fsdp": 2}, mode="export")
  assert dict(moved.mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
  assert moved.config.mesh.to_dict() == {"data": 4, "fsdp": 2, "tensor": 1}
  for a, b in zip(jax.tree.leaves(own.params), jax.tree.leaves(moved.params), strict=True):
    assert b.sharding.mesh.shape["fsdp"] == 2
    assert (jax.device_get(a) == jax.device_get(b)).all()
  with pytest.raises(runs.RunError, match=r"--config\.mesh\.fsdp: .*8 are available"):
    runs.load_run(work, overrides={"mesh.fsdp": 3}, mode="eval")

  # One device visible: the mesh is fitted (fsdp 8 -> 1); evaluation and a verified export.
  proc = _ok(_run([work, "--mode=eval"], devices=1))
  assert "{'data': 1, 'fsdp': 1, 'tensor': 1} (1 device(s))" in proc.stdout
  results = json.loads((work / "eval" / str(STEPS) / "results.json").read_text())
  assert set(results) == {"ave"} and 0.0 <= results["ave"]["accuracy"] <= 1.0
  export_dir = tmp_path / "export"
  proc = _ok(_run([work, "--mode=export", f"--export_dir={export_dir}", "--verify"],
                  devices=1))
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert report["greedy_tokens_equal"] and report["max_abs_logit_diff"] <= 1e-4, report
  assert (export_dir / "model.safetensors").exists()

  # A mesh set by --config.mesh.* is honoured as given: on one device fsdp=8 is an error.
  proc = _run([work, "--mode=eval", "--config.mesh.fsdp=8"], devices=1)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr[-2000:]
  assert lines[0].startswith("error: --config.mesh.fsdp: ") and "1 are available" in lines[0]
