"""Checkpoints of a training run: orbax `CheckpointManager` under `W/checkpoints`.

Each checkpoint step holds two items:
  * `state`: the train state (step, params, optimizer state) as global `jax.Array`s, unboxed
    (no flax `LogicallyPartitioned` wrappers), saved asynchronously (orbax PyTree format;
    arrays under `MIN_REPLICA_PARALLEL_BYTES` per replica are written by one replica);
  * `data`: the input iterator's state, one JSON file per process
    (`process_<i>-of-<n>.json`), so a resumed run continues with exactly the next batch.

Restoring takes an abstract target (`jax.ShapeDtypeStruct`s carrying the shardings wanted
now), so a checkpoint written on one mesh restores onto another (e.g. 8 devices -> 4).

A SIGTERM (preemption) is turned into "save at the next step boundary and exit 0" by
`PreemptionWatcher`; in a multi-process run the hosts agree on that step through JAX's
preemption sync service.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

CHECKPOINT_DIR = "checkpoints"
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
    if not path.exists():
      found = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
      raise ValueError(
          f"no input-iterator state {path.name} in {directory} (found {found}): the checkpoint "
          "was written by a different number of processes; resume with the same process count")
    record = json.loads(path.read_text())
    state = record["state"].encode("utf-8") if record["kind"] == "bytes" else record["state"]
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


def with_shardings(abstract_tree, shardings):
  """`ShapeDtypeStruct`s of `abstract_tree` carrying the matching leaf of `shardings`."""
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings)


# ----------------------------------------------------------------------------- preemption
class PreemptionWatcher:
  """Tells the loop when to save and stop after a SIGTERM.

  Single process: a SIGTERM handler sets a flag, `reached(step)` is True at the next step.
  Several processes: JAX's preemption sync service (started by `jax.distributed.initialize`)
  catches the signal and picks one step at which every host's `reached(step)` is True.
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

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
