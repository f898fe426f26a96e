"""Shared pieces of the training tests: a small stand-in model with AVUnified's output dict
(so step and checkpoint logic is tested in seconds, without compiling the real network), a
tiny config with synthetic data, and a runner for the real entry point in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

from av_unified_jax import train
from configs import tiny

ROOT = Path(__file__).resolve().parents[1]


def dense(features, names, name):
  return nn.Dense(features, name=name, kernel_init=nn.with_logical_partitioning(
      nn.initializers.lecun_normal(), names))


class StandInModel(nn.Module):
  """Maps a batch to AVUnified's outputs with a few sharded dense layers.

  Outputs: logits float32[B, Lt, V], audio_embed / visual_embed float32[B, T, D],
  mil_video_probs float32[B, C], mil_frame_probs float32[B, T, 2, C].
  """
  vocab_size: int
  num_classes: int
  dim: int = 16
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, batch, train: bool = False):
    frames = batch["frames"].astype(jnp.float32).mean(axis=(2, 3)) / 255.0  # [B, T, 3]
    mel = batch["log_mel"].astype(jnp.float32).mean(axis=2)  # [B, T, M]
    audio = dense(self.dim, ("channels", "embed"), "audio")(mel)  # [B, T, D]
    visual = dense(self.dim, ("channels", "embed"), "visual")(frames)  # [B, T, D]
    table = self.param("embed", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ("vocab", "embed")), (self.vocab_size, self.dim))
    prompt = table[batch["prompt_tokens"]].mean(axis=1)  # [B, D]
    length = batch["target_tokens"].shape[1]
    positions = self.param("positions", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ("length", "embed")), (length, self.dim))
    context = prompt + (audio + visual).mean(axis=1)  # [B, D]
    h = context[:, None, :] + positions[None]  # [B, Lt, D]
    h = jax.nn.gelu(dense(2 * self.dim, ("embed", "mlp"), "mlp_in")(h))
    h = nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    h = dense(self.dim, ("mlp", "embed"), "mlp_out")(h)  # [B, Lt, D]
    logits = jnp.einsum("bld,vd->blv", h, table)  # [B, Lt, V]
    b, t = batch["segment_mask"].shape
    frame_probs = jax.nn.sigmoid(dense(2 * self.num_classes, ("embed", "classes"), "mil")(
        audio + visual)).reshape(b, t, 2, self.num_classes)  # [B, T, 2, C]
    return {"logits": logits, "audio_embed": audio, "visual_embed": visual,
            "mil_frame_probs": frame_probs, "mil_video_probs": frame_probs.mean(axis=(1, 2))}


def tiny_config(**overrides):
  """configs/tiny.py with synthetic data and `overrides` ("optim.learning_rate": 1e-2, ...)."""
  c = tiny.get_config()
  c.data.synthetic = True
  for key, value in overrides.items():
    node = c
    *path, leaf = key.split(".")
    for part in path:
      node = node[part]
    node[leaf] = value
  return c


def stand_in_data_and_model(config):
  data = train.make_train_data(config, workdir=None)
  return data, StandInModel(data.vocab_size, data.num_classes)


def read_metrics(workdir) -> list[dict]:
  path = Path(workdir) / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def losses_by_step(workdir) -> dict[int, float]:
  return {m["step"]: m["train/loss"] for m in read_metrics(workdir) if "train/loss" in m}


def main_command(workdir, *args) -> list[str]:
  return [sys.executable, str(ROOT / "main.py"), f"--workdir={workdir}", *args]


def subprocess_env(devices: int, cache_dir=None) -> dict:
  """Environment of an entry-point subprocess with `devices` fake CPU devices.

  `cache_dir` turns on JAX's persistent compilation cache, so runs of the same program (a
  restart after a kill) load the compiled step instead of compiling it again. LLVM
  optimisation is off: it roughly halves compile time, and a few tiny steps barely notice.
  """
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}",
                                       "--xla_backend_optimization_level=0"])
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONUNBUFFERED"] = "1"
  if cache_dir is not None:
    env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  return env


def start_main(workdir, args, *, devices: int = 8, cache_dir=None, log=None) -> subprocess.Popen:
  """Starts `python main.py --workdir=W args...` in the repository root."""
  out = open(log, "a") if log is not None else subprocess.DEVNULL  # noqa: SIM115
  return subprocess.Popen(main_command(workdir, *args), cwd=ROOT, stdout=out,
                          stderr=subprocess.STDOUT, env=subprocess_env(devices, cache_dir))
