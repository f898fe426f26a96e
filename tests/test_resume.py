"""Exact resume of the real entry point on the tiny config over tiny converted datasets: a run
killed with SIGKILL and restarted with the same command logs the same per-step losses as an
uninterrupted run. (Restoring onto 4 devices and SIGTERM are tested in-process in
test_checkpoint.py, with a small model, to keep compile time down.)"""

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
          "--config.log_every_steps=1", "--config.checkpoint_every_steps=4",
          "--config.keep_checkpoints=10", "--config.eval_every_steps=0"]


def wait_for_checkpoint(workdir, step, proc):
  """Polls until checkpoint `step` is complete (orbax renames it into place when done)."""
  final = workdir / checkpointing.CHECKPOINT_DIR / str(step)
  deadline = time.time() + TIMEOUT
  while time.time() < deadline:
    if final.exists():
      return
    assert proc.poll() is None, f"the run exited early with code {proc.returncode}"
    time.sleep(0.02)
  raise AssertionError(f"checkpoint {step} was not written within {TIMEOUT} s")


def checkpoint_steps(workdir):
  manager = checkpointing.make_manager(workdir, 10, read_only=True)
  return list(manager.all_steps())


def test_killed_run_resumes_with_the_same_losses(setup, tmp_path):
  shards, cache, ref = setup
  expected = th.losses_by_step(ref)
  assert sorted(expected) == list(range(1, STEPS + 1))
  log = tmp_path / "log.txt"

  # SIGKILL mid-run, once the checkpoint of step 4 is complete.
  proc = th.start_main(tmp_path, args(shards), cache_dir=cache, log=log)
  wait_for_checkpoint(tmp_path, 4, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait(TIMEOUT)
  killed_at = max(th.losses_by_step(tmp_path))
  assert 4 <= killed_at < STEPS, "the run finished before it was killed; make it longer"

  # Restart with the same command: it finishes, and every step's loss equals the
  # uninterrupted run's (the restored state and data iterator continue exactly).
  proc = th.start_main(tmp_path, args(shards), cache_dir=cache, log=log)
  assert proc.wait(TIMEOUT) == 0, log.read_text()[-3000:]
  got = th.losses_by_step(tmp_path)
  assert sorted(got) == list(range(1, STEPS + 1))
  np.testing.assert_array_equal([got[s] for s in sorted(got)],
                                [expected[s] for s in sorted(expected)])
  assert STEPS in checkpoint_steps(tmp_path)
  assert log.read_text().count("resuming from step") == 1
