"""Recovery from damaged checkpoints: a truncated file in the newest checkpoint (the run warns
naming the step and resumes from the one before), and a process killed with SIGKILL in the
middle of an asynchronous save (the half-written step is ignored and cleaned up)."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
import train_helpers as th

from av_unified_jax import checkpointing, train

TIMEOUT = 300  # Seconds, for the subprocess (jax and orbax import on 2 busy cores).


def largest_file(directory):
  files = [p for p in directory.rglob("*") if p.is_file()]
  return max(files, key=lambda p: p.stat().st_size)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
  config = th.tiny_config(**{"total_steps": 4, "checkpoint_every_steps": 2,
                             "log_every_steps": 1})
  data, model = th.stand_in_data_and_model(config)
  train.train(config, tmp_path, data=data, model=model, progress=False)
  reference = th.losses_by_step(tmp_path)
  ckpt = tmp_path / checkpointing.CHECKPOINT_DIR
  assert sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) == [2, 4]
  victim = largest_file(ckpt / "4" / "state")
  with open(victim, "r+b") as f:  # A file cut short, as by a full disk or a lost write.
    f.truncate(victim.stat().st_size // 2)
  capsys.readouterr()

  config.total_steps = 6
  data, _ = th.stand_in_data_and_model(config)
  result = train.train(config, tmp_path, data=data, model=model, progress=False)
  out = capsys.readouterr().out
  assert "warning: checkpoint 4 in" in out and "does not restore" in out, out
  assert "resuming from checkpoint 2" in out and "resuming from step 2" in out, out
  assert int(result.state.step) == 6
  # The resumed run repeats steps 3 and 4 exactly (state and data iterator of step 2).
  got = th.losses_by_step(tmp_path)
  assert sorted(got) == [1, 2, 3, 4, 5, 6]
  np.testing.assert_array_equal([got[s] for s in (1, 2, 3, 4)],
                                [reference[s] for s in (1, 2, 3, 4)])
  # The bad step is set aside (not deleted), and step 4 was saved again.
  assert (tmp_path / checkpointing.CORRUPT_DIR / "4" / "state").is_dir()
  assert list(checkpointing.make_manager(tmp_path, 3, read_only=True).all_steps()) == [2, 4, 6]


def test_no_restorable_checkpoint_is_an_error_and_moves_nothing(tmp_path):
  manager = checkpointing.make_manager(tmp_path, keep=3, async_save=False)
  checkpointing.save(manager, 2, {"w": jax.numpy.ones((64,))})
  victim = largest_file(tmp_path / checkpointing.CHECKPOINT_DIR / "2" / "state")
  victim.write_bytes(b"")
  warnings = []
  with pytest.raises(checkpointing.RestoreError, match="no checkpoint in .* restores: step 2: "):
    checkpointing.restore_latest(manager, {"w": jax.ShapeDtypeStruct((64,), np.float32)},
                                 warn=warnings.append)
  assert len(warnings) == 1 and "checkpoint 2" in warnings[0]
  assert (tmp_path / checkpointing.CHECKPOINT_DIR / "2").is_dir()
  assert not (tmp_path / checkpointing.CORRUPT_DIR).exists()
  # In a training run the same failure is an input error (one line, exit code 2).
  config = th.tiny_config(**{"total_steps": 2})
  data, model = th.stand_in_data_and_model(config)
  with pytest.raises(train.InputError, match="no checkpoint in .* restores: step 2: "):
    train.train(config, tmp_path, data=data, model=model, progress=False)


# Saves step 1 and waits; starts the asynchronous save of step 2 (64 MB) and, as soon as its
# temporary directory holds data, kills itself with SIGKILL.
KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys, time
    import jax, jax.numpy as jnp
    from av_unified_jax import checkpointing

    class It:
      def __init__(self, k): self.k = k
      def get_state(self): return {"next_batch": self.k}
      def set_state(self, s): self.k = s["next_batch"]

    workdir = sys.argv[1]
    manager = checkpointing.make_manager(workdir, keep=3)
    checkpointing.save(manager, 1, {"w": jnp.ones((16,))}, It(1))
    manager.wait_until_finished()
    checkpointing.save(manager, 2, {"w": jnp.ones((16 << 20,))}, It(2))
    root = os.path.join(workdir, checkpointing.CHECKPOINT_DIR)
    deadline = time.time() + 60
    while time.time() < deadline:
      tmp = [d for d in os.listdir(root) if d.startswith("2") and d != "2"]
      if tmp and any(files for _, _, files in os.walk(os.path.join(root, tmp[0]))):
        print("killing during", tmp[0], flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
      time.sleep(0.001)
    print("the save finished before the kill", flush=True)
""")


def test_kill_during_an_asynchronous_save_leaves_a_resumable_run(tmp_path):
  env = th.subprocess_env(1)
  proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(tmp_path)], cwd=th.ROOT,
                        env=env, capture_output=True, text=True, timeout=TIMEOUT)
  assert proc.returncode == -9, proc.stdout + proc.stderr[-3000:]
  assert "killing during" in proc.stdout
  root = tmp_path / checkpointing.CHECKPOINT_DIR
  leftovers = [p.name for p in root.iterdir() if p.name != "1"]
  assert leftovers and "2" not in leftovers, leftovers  # Only a temporary, half-written dir.

  class It:
    next_batch = None

    def get_state(self):
      return {"next_batch": self.next_batch}

    def set_state(self, state):
      self.next_batch = state["next_batch"]

  manager = checkpointing.make_manager(tmp_path, keep=3)
  it = It()
  step, state = checkpointing.restore_latest(
      manager, {"w": jax.ShapeDtypeStruct((16,), np.float32)}, it)
  assert step == 1 and it.next_batch == 1
  np.testing.assert_array_equal(np.asarray(state["w"]), np.ones(16))
  checkpointing.save(manager, 2, {"w": jax.numpy.zeros((16,))}, it)  # The step saves again.
  manager.wait_until_finished()
  assert list(manager.all_steps()) == [1, 2]
  assert sorted(os.listdir(root)) == ["1", "2"]  # The half-written directory is gone.
