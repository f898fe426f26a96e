"""Per-device bytes of parameters + optimizer state under FSDP, and compile time.

The `base` variant's train state (params and AdamW moments, float32) is built abstractly with
`jax.eval_shape`, given the shardings the train loop uses (`sharding.param_shardings` on a
mesh of data=1, fsdp=N), and its bytes are counted per device from each leaf's shard
indices -- nothing is allocated. The fake CPU devices must exist before jax is imported, so
the parent process runs this module in a subprocess:

    python -m benchmarks.fsdp_memory --devices 1,2,4,8 --compile 1,8 \
        [--compile_config demo] --out result.json

Compile time is that of the jitted train step (lower, then compile) of `--compile_config`
(default base; `demo` in quick runs, since base takes minutes to compile on a small CPU) on
fsdp=N meshes with a global batch of 2 examples per device.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec

from av_unified_jax import runs, sharding, steps, synthetic, tokens
from av_unified_jax.models import model_config_from

ROOT = Path(__file__).resolve().parents[1]


def run_in_subprocess(devices=(1, 2, 4, 8), compile_devices=(1, 8),
                      compile_config: str = "base", timeout_s: float = 900.0) -> dict:
  """Runs `measure` in a fresh Python with enough fake CPU devices; returns its dict."""
  flag = f"--xla_force_host_platform_device_count={max([*devices, *compile_devices])}"
  env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flag).strip(),
             JAX_PLATFORMS="cpu")
  with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "fsdp.json"
    cmd = [sys.executable, "-m", "benchmarks.fsdp_memory",
           "--devices", ",".join(map(str, devices)),
           "--compile", ",".join(map(str, compile_devices)),
           "--compile_config", compile_config, "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    if proc.returncode != 0:
      last = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
      raise RuntimeError(f"python -m benchmarks.fsdp_memory failed (exit {proc.returncode}): "
                         f"{last[0]}")
    return json.loads(out.read_text())


def _config(name: str, n: int):
  """configs/<name>.py on an fsdp=n mesh, with a global batch of 2 examples per device."""
  module = importlib.import_module(f"configs.{name}")
  config = module.get_config()
  config.unlock()
  config.mesh.data, config.mesh.fsdp = 1, n
  config.data.batch_size = 2 * n
  config.lock()
  return config


@dataclasses.dataclass
class Setup:
  """A config's model, optimizer and abstract (unallocated) train state and batch."""
  config: Any
  model: Any
  tx: Any
  schedule: Any
  boxed: Any  # The TrainState of ShapeDtypeStructs, params boxed with their logical axes.
  batch: dict

  @property
  def state(self):
    return nn.meta.unbox(self.boxed)


def abstract_setup(config, vocab: int) -> Setup:
  """`jax.eval_shape` of the train loop's init function for `config` (nothing allocated)."""
  classes = len(tokens.LLP_CLASSES)
  model = runs.build_model(config, vocab, classes)
  cfg = model_config_from(config.model)
  spec = synthetic.SyntheticSpec(
      batch_size=config.data.batch_size, num_segments=config.data.num_segments,
      image_size=config.data.image_size, mel_frames=cfg.mel_frames, mel_bins=cfg.mel_bins,
      prompt_len=config.tokens.max_prompt_len, target_len=config.tokens.max_target_len,
      vocab_size=vocab, num_classes=classes)
  example = synthetic.make_batch(dataclasses.replace(spec, batch_size=1), 0, 0)
  batch = {k: jax.ShapeDtypeStruct((spec.batch_size,) + v.shape[1:], v.dtype)
           for k, v in example.items()}
  state = runs.abstract_state(config, model, batch)
  return Setup(config, model, state.tx, state.schedule, state.boxed, batch)


def device_bytes(abstract_state, shardings, devices) -> dict[int, int]:
  """{device id: bytes of its shards} of every leaf of an (unboxed) abstract state."""
  per_device = {d.id: 0 for d in devices}
  for leaf, sh in zip(jax.tree.leaves(abstract_state), jax.tree.leaves(shardings),
                      strict=True):
    itemsize = leaf.dtype.itemsize
    for device, index in sh.devices_indices_map(leaf.shape).items():
      shape = [len(range(*s.indices(dim))) for s, dim in zip(index, leaf.shape, strict=True)]
      per_device[device.id] += math.prod(shape) * itemsize
  return per_device


def mesh_and_shardings(setup: Setup, n: int):
  """(mesh of the first n devices with data=1, fsdp=n; state shardings on it)."""
  mesh = sharding.make_mesh({"data": 1, "fsdp": n, "tensor": 1}, jax.devices()[:n])
  rules = sharding.logical_rules(setup.config)
  return mesh, sharding.param_shardings(setup.boxed, mesh, rules)


def measure_bytes(setup: Setup, n: int) -> dict:
  """Bytes of the train state per device on an fsdp=n mesh (the batch plays no part)."""
  mesh, shardings = mesh_and_shardings(setup, n)
  state = setup.state
  per_device = device_bytes(state, shardings, jax.devices()[:n])
  total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  params = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.params))
  row = {"devices": n, "mesh": dict(mesh.shape), "total_bytes": int(total),
         "param_bytes": int(params), "per_device_bytes_max": int(max(per_device.values())),
         "per_device_bytes_min": int(min(per_device.values())), "ideal_bytes": total / n}
  row["over_ideal"] = row["per_device_bytes_max"] / row["ideal_bytes"]
  return row


def measure_compile(name: str, n: int, vocab: int) -> dict:
  """Seconds to lower and compile the jitted train step of configs/<name>.py on n devices."""
  setup = abstract_setup(_config(name, n), vocab)
  mesh, shardings = mesh_and_shardings(setup, n)
  rules = sharding.logical_rules(setup.config)
  replicated = NamedSharding(mesh, PartitionSpec())
  batch_sh = sharding.batch_shardings(setup.batch, mesh, rules)
  step = jax.jit(steps.make_train_step(setup.model, setup.tx, setup.schedule, setup.config),
                 in_shardings=(shardings, batch_sh, replicated),
                 out_shardings=(shardings, replicated), donate_argnums=(0,))
  args = (setup.state, setup.batch, jax.eval_shape(lambda: jax.random.key(0)))
  return {"devices": n, "batch_size": setup.config.data.batch_size,
          **compile_times(step, args, mesh, rules)}


def compile_times(step, args, mesh, rules) -> dict:
  """{"lower_s", "compile_s", "activation_constraints"}: the step lowered and compiled with
  the logical rules active (as the train loop runs it) or, if tracing fails that way, with
  the parameter and batch shardings only (the reason is kept under "constraints_error")."""
  out = {"activation_constraints": True}
  try:
    with sharding.activate(mesh, rules):
      t0 = time.perf_counter()
      lowered = step.lower(*args)
  except ValueError as e:
    out = {"activation_constraints": False,
           "constraints_error": str(e).splitlines()[0][:300]}
    t0 = time.perf_counter()
    lowered = step.lower(*args)
  t1 = time.perf_counter()
  lowered.compile()
  return {**out, "lower_s": t1 - t0, "compile_s": time.perf_counter() - t1}


def measure(devices, compile_devices, bytes_config: str = "base",
            compile_config: str = "base") -> dict:
  """{"bytes": {config, variant, rows}, "compile": {config, variant, rows}}."""
  if jax.device_count() < max([*devices, *compile_devices]):
    raise RuntimeError(f"{jax.device_count()} devices, need {max(devices)}: set XLA_FLAGS="
                       f"--xla_force_host_platform_device_count before importing jax")
  vocab = tokens.Tokenizer.build(tokens.OFFICIAL_LABEL_SETS).layout.vocab_size
  setup = abstract_setup(_config(bytes_config, 1), vocab)
  return {
      "bytes": {"config": f"configs/{bytes_config}.py",
                "variant": setup.config.model.variant,
                "rows": [measure_bytes(setup, n) for n in devices]},
      "compile": {"config": f"configs/{compile_config}.py",
                  "variant": _config(compile_config, 1).model.variant,
                  "rows": [measure_compile(compile_config, n, vocab)
                           for n in compile_devices]},
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--devices", default="1,2,4,8", help="mesh sizes (fsdp=N)")
  parser.add_argument("--compile", default="8", help="mesh sizes whose train step is compiled")
  parser.add_argument("--compile_config", default="base", help="configs/<name>.py compiled")
  parser.add_argument("--out", required=True, help="JSON output file")
  args = parser.parse_args(argv)
  devices = [int(x) for x in args.devices.split(",") if x]
  compile_devices = [int(x) for x in args.compile.split(",") if x]
  result = measure(devices, compile_devices, compile_config=args.compile_config)
  Path(args.out).write_text(json.dumps(result, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
