"""Two processes on localhost (`jax.distributed.initialize`, gloo collectives) train the tiny
config through the real entry point: each reads its own rows of the data, both report the
same losses, and the checkpoint holds one iterator state per process. The run then resumes
on one process from an earlier checkpoint and logs the same losses for the steps after it:
the data order does not depend on the process count."""

import json
import re
import socket
import shutil
import subprocess

import numpy as np
import train_helpers as th
from test_pipeline_shards import write_tiny_datasets

from av_unified_jax import checkpointing

STEPS = 5
SAVE = 3  # Checkpoint period: steps 3 and 5 are saved.
TIMEOUT = 600  # Seconds; two processes compile at once on 2 busy cores.
LOSS = re.compile(r"^\[process (\d)\] step (\d+)/\d+ \|.*\btrain/loss ([-+.\deE]+)", re.M)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_checkpoint_and_agree(tmp_path):
  shards = tmp_path / "shards"
  write_tiny_datasets(shards)
  workdir = tmp_path / "run"
  port = free_port()
  single = [f"--config=configs/tiny.py:steps={STEPS}", f"--config.data.shards_dir={shards}",
            "--config.log_every_steps=1", f"--config.checkpoint_every_steps={SAVE}",
            "--config.eval_every_steps=0"]
  args = [*single, "--distributed", "--num_processes=2",
          f"--coordinator_address=127.0.0.1:{port}"]
  procs = [subprocess.Popen(th.main_command(workdir, *args, f"--process_id={i}"), cwd=th.ROOT,
                            env=th.subprocess_env(2), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  try:
    outputs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for i, (p, out) in enumerate(zip(procs, outputs, strict=True)):
    assert p.returncode == 0, f"process {i}:\n{out[-4000:]}"
  assert "'data': 4" in outputs[0] and "(2 process(es))" in outputs[0]

  losses = [{int(s): float(v) for proc, s, v in LOSS.findall(out) if int(proc) == i}
            for i, out in enumerate(outputs)]
  assert sorted(losses[0]) == list(range(1, STEPS + 1))
  assert losses[0] == losses[1]  # One global computation: the same values on both hosts.
  # Only process 0 writes the metrics file, with the values it printed.
  logged = th.losses_by_step(workdir)
  assert sorted(logged) == sorted(losses[0])
  for step, loss in logged.items():
    assert f"{loss:.6g}" == f"{losses[0][step]:.6g}"

  # Each process checkpointed the state of its own part of the data stream.
  data_dir = workdir / checkpointing.CHECKPOINT_DIR / str(STEPS) / "data"
  for i in range(2):
    record = json.loads((data_dir / f"process_{i}-of-2.json").read_text())
    assert record["state"]["next_batch"] == STEPS
    assert record["state"]["about"]["process"] == [i, 2]

  # One process (the same 4 devices in all) resumes from step 3, the newest step removed:
  # steps 4 and 5 read the same global batches and give the same losses.
  shutil.rmtree(workdir / checkpointing.CHECKPOINT_DIR / str(STEPS))
  proc = subprocess.run(th.main_command(workdir, *single), cwd=th.ROOT,
                        env=th.subprocess_env(4), capture_output=True, text=True,
                        timeout=TIMEOUT)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "(1 process(es))" in proc.stdout + proc.stderr
  resumed = th.losses_by_step(workdir)
  assert sorted(resumed) == list(range(1, STEPS + 1))
  for step in range(SAVE + 1, STEPS + 1):
    np.testing.assert_allclose(resumed[step], losses[0][step], rtol=1e-4, err_msg=str(step))
  record = json.loads((data_dir.parent.parent / str(STEPS) / "data" /
                       "process_0-of-1.json").read_text())
  assert record["state"]["next_batch"] == STEPS
