"""Checkpoints: train state + input-iterator state, restore onto a different device count
(8 fake devices -> 4, with other shardings), keep-N, the iterator item's errors, and SIGTERM
(save at the next step, return 0)."""

import os
import signal

import jax
import numpy as np
import pytest
import train_helpers as th

from av_unified_jax import checkpointing, runs, sharding, steps, train


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
  # A checkpoint from another process count names the problem.
  data_dir = tmp_path / checkpointing.CHECKPOINT_DIR / "4" / "data"
  (data_dir / "process_0-of-1.json").rename(data_dir / "process_0-of-2.json")
  with pytest.raises(ValueError, match="different number of processes"):
    checkpointing.restore(manager, 4, target, _BytesIterator())


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


def test_sigterm_saves_at_the_next_step_and_returns_zero(tmp_path):
  config = th.tiny_config(**{"total_steps": 50, "checkpoint_every_steps": 40,
                             "log_every_steps": 40})
  data, model = th.stand_in_data_and_model(config)
  data.iterator = _SigtermAt(data.iterator, step=3)
  before = signal.getsignal(signal.SIGTERM)
  assert train.train_and_evaluate(config, tmp_path, data=data, model=model,
                                  progress=False) == 0
  assert signal.getsignal(signal.SIGTERM) == before  # The handler is uninstalled.
  assert list(checkpointing.make_manager(tmp_path, 3, read_only=True).all_steps()) == [3]
  assert [m["step"] for m in th.read_metrics(tmp_path)] == [3]
  saved = (tmp_path / checkpointing.CHECKPOINT_DIR / "3" / "data" / "process_0-of-1.json")
  assert '"next_batch": 3' in saved.read_text()
