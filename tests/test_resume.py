"""Exact resume of the real entry point on the tiny config over tiny converted datasets:
a run killed with SIGKILL, restarted, stopped with SIGTERM (saves, exits 0) and restarted
again logs the same per-step losses as an uninterrupted run; a checkpoint written on 8
devices resumes on 4."""

import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import train_helpers as th
from test_pipeline_shards import write_tiny_datasets

from av_unified_jax import checkpointing

STEPS = 10
TIMEOUT = 600  # Seconds; compiling on 2 busy cores can take minutes.


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """(shards directory, compilation cache, reference workdir of an uninterrupted run)."""
  shards = tmp_path_factory.mktemp("shards")
  write_tiny_datasets(shards)
  cache = tmp_path_factory.mktemp("jax_cache")
  ref = tmp_path_factory.mktemp("ref")
  proc = subprocess.run(th.main_command(ref, *args(shards)), cwd=th.ROOT, timeout=TIMEOUT,
                        env=th.subprocess_env(8, cache), capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return shards, cache, ref


def args(shards):
  return [f"--config=configs/tiny.py:steps={STEPS}", f"--config.data.shards_dir={shards}",
          "--config.log_every_steps=1", "--config.checkpoint_every_steps=3",
          "--config.keep_checkpoints=10"]


def wait_for_step(workdir, step, proc):
  """Polls metrics.jsonl until `step` is logged; returns the last logged step."""
  deadline = time.time() + TIMEOUT
  while time.time() < deadline:
    logged = max(th.losses_by_step(workdir), default=0)
    if logged >= step:
      return logged
    assert proc.poll() is None, f"the run exited early with code {proc.returncode}"
    time.sleep(0.02)
  raise AssertionError(f"step {step} was not logged within {TIMEOUT} s")


def checkpoint_steps(workdir):
  manager = checkpointing.make_manager(workdir, 10, read_only=True)
  return list(manager.all_steps())


def test_killed_and_preempted_run_logs_the_same_losses(setup, tmp_path):
  shards, cache, ref = setup
  expected = th.losses_by_step(ref)
  assert sorted(expected) == list(range(1, STEPS + 1))
  log = tmp_path / "log.txt"

  # 1. SIGKILL mid-run (after the checkpoint at step 3 is due).
  proc = th.start_main(tmp_path, args(shards), cache_dir=cache, log=log)
  wait_for_step(tmp_path, 4, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait(TIMEOUT)
  killed_at = max(th.losses_by_step(tmp_path))
  assert killed_at < STEPS, "the run finished before it was killed; make it longer"

  # 2. Restart with the same command; SIGTERM mid-run: it saves where it is and exits 0.
  proc = th.start_main(tmp_path, args(shards), cache_dir=cache, log=log)
  wait_for_step(tmp_path, killed_at + 1, proc)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(TIMEOUT) == 0, log.read_text()[-3000:]
  stopped_at = max(th.losses_by_step(tmp_path))
  assert stopped_at < STEPS, "the run finished before SIGTERM; make it longer"
  assert max(checkpoint_steps(tmp_path)) == stopped_at
  assert f"SIGTERM: saved checkpoint {stopped_at}" in log.read_text()

  # 3. Restart again: it finishes, and every step's loss equals the uninterrupted run's.
  proc = th.start_main(tmp_path, args(shards), cache_dir=cache, log=log)
  assert proc.wait(TIMEOUT) == 0, log.read_text()[-3000:]
  got = th.losses_by_step(tmp_path)
  assert sorted(got) == list(range(1, STEPS + 1))
  np.testing.assert_array_equal([got[s] for s in sorted(got)],
                                [expected[s] for s in sorted(expected)])
  assert STEPS in checkpoint_steps(tmp_path)


def test_checkpoint_from_8_devices_resumes_on_4(setup, tmp_path):
  shards, cache, ref = setup
  shutil.copytree(ref, tmp_path, dirs_exist_ok=True)
  for step in checkpoint_steps(tmp_path):
    if step > 6:
      shutil.rmtree(tmp_path / checkpointing.CHECKPOINT_DIR / str(step))
  proc = subprocess.run(th.main_command(tmp_path, *args(shards)), cwd=th.ROOT,
                        timeout=TIMEOUT, env=th.subprocess_env(4, cache), capture_output=True,
                        text=True)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "resuming from step 6" in proc.stdout and "'data': 4" in proc.stdout
  expected, got = th.losses_by_step(ref), th.losses_by_step(tmp_path)
  assert sorted(got) == list(range(1, STEPS + 1))
  # Same data, same state; only the order of the 4-way (not 8-way) reductions differs.
  np.testing.assert_allclose([got[s] for s in range(7, STEPS + 1)],
                             [expected[s] for s in range(7, STEPS + 1)], rtol=2e-4)
