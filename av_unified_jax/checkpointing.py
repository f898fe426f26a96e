"""Checkpoints of a training run: orbax `CheckpointManager` under `W/checkpoints`.

Each checkpoint step holds two items:
  * `state`: the train state (step, params, optimizer state) as global `jax.Array`s, unboxed
    (no flax `LogicallyPartitioned` wrappers), saved asynchronously (orbax PyTree format;
    arrays under `MIN_REPLICA_PARALLEL_BYTES` per replica are written by one replica);
  * `data`: the input iterator's state, one JSON file per process
    (`process_<i>-of-<n>.json`), so a resumed run continues with exactly the next batch.
    The training iterators' states name a global batch (`{"next_batch": k, ...}`, the same in
    every process's file), so a run may resume with another number of processes: a process
    without a file of its own reads process 0's.

Restoring takes an abstract target (`jax.ShapeDtypeStruct`s carrying the shardings wanted
now), so a checkpoint written on one mesh restores onto another (e.g. 8 devices -> 4).
`restore_latest` restores the newest checkpoint that restores: a corrupt one (a truncated
file, say) is reported with its step and the step before it is tried; once one restores, the
corrupt ones are moved to `W/corrupt_checkpoints/<step>`. An interrupted save (the process killed while writing) leaves only
a temporary directory, which orbax never counts as a step and removes on the next start.

Preemption: `PreemptionWatcher` turns a SIGTERM into "save a checkpoint at the next step
boundary, wait until it is durable (the asynchronous save finished and committed), and exit
with `PREEMPTED_EXIT_CODE`" (143 = 128 + SIGTERM, the code of a job ended by SIGTERM), so a
scheduler counts the job as interrupted, not finished, and requeues it; the same command
then resumes. A SIGTERM during an evaluation stops it before its next batch
(`PreemptionWatcher.check` raises `Preempted`), then the same save-and-exit path runs. In a
multi-process run the hosts agree on the step through JAX's preemption sync service, which
acts at step boundaries only: an evaluation in progress finishes first.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "corrupt_checkpoints"  # W/corrupt_checkpoints/<step>: set aside by restore_latest.
# Exit code of a run stopped by SIGTERM after saving: 128 + SIGTERM, as a shell reports a job
# ended by that signal; schedulers count it as a failure to retry, not as success.
PREEMPTED_EXIT_CODE = 128 + int(signal.SIGTERM)
# Arrays replicated over several devices are written by all replicas in parallel only when
# each replica's part is at least this big; small arrays come from one replica (splitting a
# 1 kB bias 8 ways costs far more than it saves).
MIN_REPLICA_PARALLEL_BYTES = 4 << 20


# ----------------------------------------------------------------------------- data iterator item
class DataIteratorHandler(ocp.CheckpointHandler):
  """Saves and restores an iterator with `get_state()` / `set_state(state)`, one file per process.

  The state may be `bytes` (grain `DataLoaderIterator`) or a JSON-serialisable object (grain
  `DatasetIterator` and the synthetic source); it is restored in the same form.
  """

  def save(self, directory: epath.Path, args: DataIteratorSave):
    state = args.item.get_state()
    if isinstance(state, bytes):
      record = {"kind": "bytes", "state": state.decode("utf-8")}
    else:
      record = {"kind": "json", "state": state}
    _process_file(directory).write_text(json.dumps(record))

  def restore(self, directory: epath.Path, args: DataIteratorRestore):
    path = _process_file(directory)
    if not path.exists():  # Written by another number of processes.
      path = _first_process_file(directory)
    record = json.loads(path.read_text())
    if record["kind"] == "bytes":
      if path != _process_file(directory):
        raise ValueError(
            f"the input-iterator state in {directory} was written by another number of "
            f"processes (found {path.name}) and is an opaque per-process state; resume with "
            "that process count")
      state = record["state"].encode("utf-8")
    else:
      state = record["state"]
    args.item.set_state(state)
    return args.item

  def metadata(self, directory: epath.Path):
    del directory
    return None

  def finalize(self, directory: epath.Path) -> None:
    del directory

  def close(self) -> None:
    pass


def _process_file(directory: epath.Path) -> epath.Path:
  return epath.Path(directory) / f"process_{jax.process_index()}-of-{jax.process_count()}.json"


def _first_process_file(directory: epath.Path) -> epath.Path:
  """Process 0's state file of a checkpoint written by any number of processes."""
  directory = epath.Path(directory)
  found = sorted(directory.glob("process_0-of-*.json")) if directory.exists() else []
  if not found:
    names = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
    raise ValueError(f"no input-iterator state process_0-of-<n>.json in {directory} (found "
                     f"{names}); the checkpoint is incomplete: resume from an earlier step")
  return found[0]


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
  item: Any


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
  item: Any


# ----------------------------------------------------------------------------- manager
def _state_handler() -> ocp.PyTreeCheckpointHandler:
  """The train-state item's handler: orbax's defaults, with `MIN_REPLICA_PARALLEL_BYTES`."""
  th = ocp.type_handlers
  scalar = th.ScalarHandler()
  types = th.create_type_handler_registry(
      (int, scalar), (float, scalar), (np.number, scalar), (np.ndarray, th.NumpyHandler()),
      (jax.Array, th.ArrayHandler(
          min_slice_bytes_for_replica_parallel=MIN_REPLICA_PARALLEL_BYTES)))
  return ocp.PyTreeCheckpointHandler(type_handler_registry=types)


def make_manager(workdir: str | Path, keep: int, *, async_save: bool = True,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """The run's checkpoint manager over `W/checkpoints`, keeping the newest `keep` steps.

  Steps are saved only when asked (`save(...)`); incomplete (interrupted) saves are removed.
  """
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      enable_async_checkpointing=async_save,
      create=not read_only,
      read_only=read_only,
      cleanup_tmp_directories=not read_only,
  )
  registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
  state_handler, data_handler = _state_handler(), DataIteratorHandler()
  registry.add("state", ocp.args.PyTreeSave, state_handler)
  registry.add("state", ocp.args.PyTreeRestore, state_handler)
  registry.add("data", DataIteratorSave, data_handler)
  registry.add("data", DataIteratorRestore, data_handler)
  return ocp.CheckpointManager(epath.Path(workdir) / CHECKPOINT_DIR, options=options,
                               handler_registry=registry)


def unbox(tree):
  """Strips flax `LogicallyPartitioned` (and other `nn.Partitioned`) boxes from a pytree."""
  return nn.meta.unbox(tree)


def save(manager: ocp.CheckpointManager, step: int, state, data_iter=None) -> None:
  """Starts an (async) save of `state` (+ the iterator state) as checkpoint `step`.

  Every leaf of `state` must be a global `jax.Array` (all processes call this together).
  """
  items = {"state": ocp.args.PyTreeSave(unbox(state))}
  if data_iter is not None:
    items["data"] = DataIteratorSave(data_iter)
  manager.save(int(step), args=ocp.args.Composite(**items), force=True)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state, data_iter=None):
  """Restores checkpoint `step` onto the shardings of `abstract_state`.

  Args:
    abstract_state: the state's pytree with `jax.ShapeDtypeStruct(shape, dtype, sharding=...)`
      leaves (the target mesh may differ from the one that saved).
    data_iter: if given, its `set_state` is called with the saved iterator state.
  Returns:
    the restored state (global `jax.Array`s with the target shardings).
  """
  items = {"state": ocp.args.PyTreeRestore(
      abstract_state, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state))}
  if data_iter is not None:
    items["data"] = DataIteratorRestore(data_iter)
  restored = manager.restore(int(step), args=ocp.args.Composite(**items))
  return restored["state"]


class RestoreError(RuntimeError):
  """Checkpoints exist but none of them restores; the message names each step's error."""


def restore_latest(manager: ocp.CheckpointManager, abstract_state, data_iter=None,
                   warn: Callable[[str], None] = print) -> tuple[int, Any]:
  """Restores the newest checkpoint that restores: (its step, the state), or (0, None) when
  there is none.

  A checkpoint that fails (a truncated or missing file) is reported through `warn` with its
  step, and the one before it is tried. Once an earlier one restores, the failed newer ones
  are moved to `W/corrupt_checkpoints/<step>` (by process 0, every process waiting), so the
  resumed run can save those steps again. When none restores, nothing is moved (the cause may
  be the target, e.g. another model config) and RestoreError names every step's error.
  """
  failed: dict[int, str] = {}
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      state = restore(manager, step, abstract_state, data_iter)
    except Exception as e:  # noqa: BLE001  A damaged file fails in orbax, tensorstore or json.
      failed[step] = f"{type(e).__name__}: {_first_line(e)}"
      warn(f"warning: checkpoint {step} in {manager.directory} does not restore "
           f"({failed[step]}); trying the previous one")
      continue
    if failed:
      moved = _set_aside(manager, sorted(failed))
      warn(f"warning: resuming from checkpoint {step}; the newer checkpoint(s) "
           f"{sorted(failed)} that did not restore were moved to {moved}")
    return step, state
  if failed:
    raise RestoreError(
        f"no checkpoint in {manager.directory} restores: "
        + "; ".join(f"step {k}: {v}" for k, v in sorted(failed.items()))
        + ". If the config changed, resume with the run's own config (W/config.json); if the "
        "files are damaged, move the bad step directories away (the run resumes from the "
        "newest remaining one, or starts over without any)")
  return 0, None


def _first_line(error: Exception, limit: int = 300) -> str:
  text = str(error).strip().splitlines()
  return (text[0] if text else "")[:limit]


def _set_aside(manager: ocp.CheckpointManager, steps: list[int]) -> epath.Path:
  """Moves step directories out of the manager's directory into its sibling CORRUPT_DIR."""
  target = epath.Path(manager.directory).parent / CORRUPT_DIR
  if jax.process_index() == 0:
    target.mkdir(parents=True, exist_ok=True)
    for step in steps:
      dest = target / str(step)
      if dest.exists():  # Set aside before: keep both.
        dest = target / f"{step}.{time.time_ns()}"
      (epath.Path(manager.directory) / str(step)).rename(dest)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("av_unified_jax: corrupt checkpoints set aside")
  manager.reload()
  return target


def with_shardings(abstract_tree, shardings):
  """`ShapeDtypeStruct`s of `abstract_tree` carrying the matching leaf of `shardings`."""
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings)


# ----------------------------------------------------------------------------- preemption
class Preempted(Exception):
  """A SIGTERM asked the run to stop; raised by `PreemptionWatcher.check` (between
  evaluation batches)."""


class PreemptionWatcher:
  """Tells the loop when to save and stop after a SIGTERM.

  Single process: a SIGTERM handler sets a flag, `reached(step)` is True at the next step,
  and `check()` (called before each evaluation batch) raises `Preempted`.
  Several processes: JAX's preemption sync service (started by `jax.distributed.initialize`)
  catches the signal and picks one step at which every host's `reached(step)` is True;
  `check()` does nothing (the hosts could not agree on a batch), so an evaluation finishes.
  """

  def __init__(self, manager: ocp.CheckpointManager):
    self._manager = manager
    self._event = threading.Event()
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self._event.set()

  def reached(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self._event.is_set()
    return self._manager.reached_preemption(int(step))

  def check(self) -> None:
    """Raises `Preempted` once a SIGTERM arrived (single process; see the class docstring)."""
    if self._event.is_set():
      raise Preempted("SIGTERM received")

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
