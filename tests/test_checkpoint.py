"""Checkpoints: train state + input-iterator state, restore onto a different device count
(8 fake devices -> 4, with other shardings), keep-N, the iterator item across process counts,
SIGTERM (save at the next step or stop an evaluation, exit 143), a corrupt newest checkpoint
and a save killed half-way."""

import json
import os
import signal

import jax
import numpy as np
import pytest
import train_helpers as th

from av_unified_jax import checkpointing, runs, sharding, steps, synthetic, train


def _abstract_state(config, model, data, mesh):
  tx, _ = steps.make_optimizer(config.optim, config.total_steps)
  init_fn = runs.make_init_fn(model, tx, data.batch_spec)
  boxed = jax.eval_shape(init_fn, jax.random.key(0))
  shardings = sharding.param_shardings(boxed, mesh, sharding.logical_rules(config))
  return init_fn, shardings, checkpointing.with_shardings(checkpointing.unbox(boxed), shardings)


def test_restore_onto_four_devices_with_other_shardings(tmp_path):
  config = th.tiny_config(**{"mesh.data": 1, "mesh.fsdp": 8})
  data, model = th.stand_in_data_and_model(config)
  mesh8 = sharding.make_mesh(config.mesh)
  init_fn, shardings8, _ = _abstract_state(config, model, data, mesh8)
  state = jax.jit(lambda r: checkpointing.unbox(init_fn(r)), out_shardings=shardings8)(
      jax.random.key(0))
  state = state.replace(step=state.step + 3)
  for _ in range(3):
    next(data.iterator)
  manager = checkpointing.make_manager(tmp_path, keep=2)
  checkpointing.save(manager, 3, state, data.iterator)
  manager.wait_until_finished()
  assert state.params["embed"].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp")

  # A new process layout: 4 devices as fsdp=2 x tensor=2.
  mesh4 = sharding.make_mesh({"data": 1, "fsdp": 2, "tensor": 2}, devices=jax.devices()[:4])
  _, shardings4, abstract4 = _abstract_state(config, model, data, mesh4)
  fresh, _ = th.stand_in_data_and_model(config)
  restored = checkpointing.restore(checkpointing.make_manager(tmp_path, keep=2), 3, abstract4,
                                   fresh.iterator)
  assert int(restored.step) == 3
  for got, want, target in zip(jax.tree.leaves(restored), jax.tree.leaves(state),
                               jax.tree.leaves(shardings4), strict=True):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert got.sharding == target and len(got.sharding.device_set) == 4
  assert restored.params["embed"].sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
  # The iterator continues with the 4th batch.
  np.testing.assert_array_equal(next(fresh.iterator)["frames"], next(data.iterator)["frames"])


class _BytesIterator:
  """An iterator whose state is bytes (like grain's DataLoaderIterator)."""

  def __init__(self):
    self.position = 0

  def get_state(self) -> bytes:
    return b'{"position": %d}' % self.position

  def set_state(self, state: bytes) -> None:
    assert isinstance(state, bytes)
    self.position = int(state.decode().split(":")[1].strip(" }"))


def test_keep_n_and_the_iterator_item(tmp_path):
  value = {"w": np.arange(6, dtype=np.float32)}
  manager = checkpointing.make_manager(tmp_path, keep=2, async_save=False)
  it = _BytesIterator()
  for step in range(1, 5):
    it.position = 10 * step
    checkpointing.save(manager, step, {"w": jax.numpy.asarray(value["w"]) * step}, it)
  assert list(manager.all_steps()) == [3, 4]
  target = {"w": jax.ShapeDtypeStruct((6,), np.float32)}
  back = _BytesIterator()
  restored = checkpointing.restore(manager, 3, target, back)
  np.testing.assert_allclose(restored["w"], value["w"] * 3)
  assert back.position == 30
  # An opaque (bytes) state from another process count cannot be shared: the error says so.
  data_dir = tmp_path / checkpointing.CHECKPOINT_DIR / "4" / "data"
  (data_dir / "process_0-of-1.json").rename(data_dir / "process_0-of-2.json")
  with pytest.raises(ValueError, match="another number of processes.*resume with that"):
    checkpointing.restore(manager, 4, target, _BytesIterator())


def test_iterator_state_of_two_processes_restores_in_one(tmp_path):
  """The training iterators' states name a global batch, the same in every process's file:
  a checkpoint of 2 processes resumes in 1, which continues with the next global batch."""
  config = th.tiny_config()
  two = [synthetic.SyntheticIterator(_spec(config), config.seed, p, 2) for p in range(2)]
  for it in two:
    for _ in range(3):
      next(it)
  manager = checkpointing.make_manager(tmp_path, keep=2, async_save=False)
  checkpointing.save(manager, 3, {"w": jax.numpy.zeros(2)}, two[0])
  data_dir = tmp_path / checkpointing.CHECKPOINT_DIR / "3" / "data"
  # As written by 2 processes: one file each (this test process is process 0 of 1).
  (data_dir / "process_0-of-1.json").rename(data_dir / "process_0-of-2.json")
  (data_dir / "process_1-of-2.json").write_text(json.dumps(
      {"kind": "json", "state": two[1].get_state()}))
  one = synthetic.SyntheticIterator(_spec(config), config.seed, 0, 1)
  checkpointing.restore(manager, 3, {"w": jax.ShapeDtypeStruct((2,), np.float32)}, one)
  got = next(one)
  parts = [next(it) for it in two]  # Each process's rows of global batch 3.
  for key, value in got.items():
    np.testing.assert_array_equal(value, np.concatenate([p[key] for p in parts]), err_msg=key)


def _spec(config):
  return train.make_train_data(config, workdir=None).iterator.spec


class _SigtermAt:
  """Wraps an iterator: fetching the batch of step `step` sends this process a SIGTERM."""

  def __init__(self, inner, step):
    self.inner, self.step, self.count = inner, step, 0

  def __next__(self):
    self.count += 1
    if self.count == self.step:
      os.kill(os.getpid(), signal.SIGTERM)
    return next(self.inner)

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, state):
    self.inner.set_state(state)


def test_sigterm_saves_at_the_next_step_and_exits_with_the_requeue_code(tmp_path):
  config = th.tiny_config(**{"total_steps": 50, "checkpoint_every_steps": 40,
                             "log_every_steps": 40})
  data, model = th.stand_in_data_and_model(config)
  data.iterator = _SigtermAt(data.iterator, step=3)
  before = signal.getsignal(signal.SIGTERM)
  assert checkpointing.PREEMPTED_EXIT_CODE == 143
  assert train.train_and_evaluate(config, tmp_path, data=data, model=model,
                                  progress=False) == 143
  assert signal.getsignal(signal.SIGTERM) == before  # The handler is uninstalled.
  assert list(checkpointing.make_manager(tmp_path, 3, read_only=True).all_steps()) == [3]
  assert [m["step"] for m in th.read_metrics(tmp_path)] == [3]
  saved = (tmp_path / checkpointing.CHECKPOINT_DIR / "3" / "data" / "process_0-of-1.json")
  assert '"next_batch": 3' in saved.read_text()
  # The saved checkpoint is whole: a new run resumes from it and finishes.
  config.total_steps = 5
  data, _ = th.stand_in_data_and_model(config)
  result = train.train(config, tmp_path, data=data, model=model, progress=False)
  assert not result.preempted and int(result.state.step) == 5
  assert [m["step"] for m in th.read_metrics(tmp_path)] == [3, 5]


def test_sigterm_during_evaluation_stops_it_then_saves_and_exits(tmp_path):
  """The evaluation hook checks `ctx.check_stop` before each batch (as the evaluator does):
  a SIGTERM in batch 2 of a long evaluation stops it at batch 3, the evaluated step (4,
  not a checkpoint step) is saved, and the run exits with 143."""
  config = th.tiny_config(**{"total_steps": 8, "checkpoint_every_steps": 6,
                             "log_every_steps": 8, "eval_every_steps": 4})
  data, model = th.stand_in_data_and_model(config)
  batches = []

  def make_evaluate_fn(ctx):
    def evaluate_fn(state, step):
      for k in range(10_000):  # Without the check, all 10,000 batches would run.
        ctx.check_stop()
        batches.append((step, k))
        if k == 2:
          os.kill(os.getpid(), signal.SIGTERM)
        jax.block_until_ready(jax.tree.leaves(state.params)[0] + k)
      return {}
    return evaluate_fn

  assert train.train_and_evaluate(config, tmp_path, data=data, model=model, progress=False,
                                  make_evaluate_fn=make_evaluate_fn) == 143
  assert batches == [(4, 0), (4, 1), (4, 2)]
  manager = checkpointing.make_manager(tmp_path, 3, read_only=True)
  assert list(manager.all_steps()) == [4]
  _, _, abstract = _abstract_state(config, model, data, sharding.make_mesh(config.mesh))
  fresh, _ = th.stand_in_data_and_model(config)
  restored = checkpointing.restore(manager, 4, abstract, fresh.iterator)
  assert int(restored.step) == 4 and fresh.iterator.get_state()["next_batch"] == 4
