"""Train-step pieces: schedule, weight decay mask, per-task losses, exact gradient
accumulation, metric writers, and a diverging run that stops naming the step."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import train_helpers as th

from av_unified_jax import checkpointing, metric_writers, steps, synthetic, train


def test_schedule_warms_up_then_decays_to_the_end_fraction():
  cfg = th.tiny_config(**{"optim.learning_rate": 1e-3, "optim.warmup_steps": 10,
                          "optim.end_lr_fraction": 0.1}).optim
  lr = [float(steps.make_schedule(cfg, 100)(s)) for s in range(101)]
  np.testing.assert_allclose(lr[0], 0.0, atol=1e-12)
  np.testing.assert_allclose(lr[5], 5e-4, rtol=1e-6)
  np.testing.assert_allclose(lr[10], 1e-3, rtol=1e-6)
  np.testing.assert_allclose(lr[100], 1e-4, rtol=1e-5)
  assert all(a >= b for a, b in zip(lr[10:], lr[11:], strict=False))  # Decays monotonically.


def test_weight_decay_skips_biases_and_clipping_bounds_the_update():
  cfg = th.tiny_config(**{"optim.weight_decay": 0.5, "optim.learning_rate": 0.1,
                          "optim.warmup_steps": 0, "optim.grad_clip_norm": 1.0}).optim
  tx, _ = steps.make_optimizer(cfg, 10)
  params = {"kernel": jnp.ones((2, 3)), "bias": jnp.ones((3,))}
  update = jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[0])
  updates = update(jax.tree.map(jnp.zeros_like, params), params)
  np.testing.assert_allclose(updates["bias"], 0.0, atol=1e-12)  # No decay on 1-d params.
  np.testing.assert_allclose(updates["kernel"], -0.1 * 0.5, rtol=1e-5)  # -lr * wd * p.
  # A huge gradient is clipped, and Adam's first step moves each entry by at most ~lr.
  updates = update({"kernel": jnp.full((2, 3), 1e6), "bias": jnp.full((3,), 1e6)}, params)
  assert np.all(np.abs(np.asarray(updates["bias"])) <= 0.1 + 1e-6)


def _logits_for(targets, vocab, correct_logit):
  """float32[B, L, V]: `correct_logit` on the target token, 0 elsewhere."""
  return jax.nn.one_hot(targets, vocab) * correct_logit


def test_per_task_losses_and_task_loss_weights():
  vocab = 11
  targets = jnp.array([[3, 4, 0], [5, 6, 7], [8, 0, 0], [9, 9, 9]], jnp.int32)
  weights = (targets > 0).astype(jnp.float32)
  task_id = jnp.array([0, 2, 2, 4], jnp.int32)  # ave, avqa, avqa, avs; no avvp, no ssl.
  correct = jnp.array([2.0, 0.0, 1.0, 3.0])[:, None, None]  # Per-example confidence.
  outputs = {"logits": _logits_for(targets, vocab, 1.0) * correct,
             "audio_embed": jnp.ones((4, 2, 3)), "visual_embed": jnp.ones((4, 2, 3)),
             "mil_video_probs": jnp.full((4, 5), 0.5)}
  batch = {"target_tokens": targets, "target_weights": weights, "task_id": task_id,
           "segment_mask": jnp.ones((4, 2), bool), "weak_labels": jnp.zeros((4, 5)),
           "has_weak": jnp.zeros((4,), bool)}
  # Cross-entropy of one token whose logit is c, the other V - 1 logits 0.
  ce = lambda c: float(np.log(np.exp(c) + vocab - 1) - c)
  cfg = th.tiny_config(**{"loss.contrastive_weight": 0.0, "loss.mil_weight": 0.0})
  task_weights = jnp.array([1.0, 1.0, 1.0, 1.0, 0.0])  # avs switched off.
  loss, metrics = jax.jit(lambda o, b: steps.compute_loss(o, b, cfg.loss, task_weights))(
      outputs, batch)
  logged = steps.host_scalars(jax.device_get(dict(metrics, loss=loss)))
  np.testing.assert_allclose(logged["train/loss/ave"], ce(2.0), rtol=1e-5)
  np.testing.assert_allclose(logged["train/loss/avqa"], (3 * ce(0.0) + ce(1.0)) / 4, rtol=1e-5)
  np.testing.assert_allclose(logged["train/loss/avs"], ce(3.0), rtol=1e-5)
  assert "train/loss/avvp" not in logged and "train/loss/ssl" not in logged
  # The total token loss ignores avs (weight 0): the mean of the ave and avqa means, each task
  # counting once whatever its number of tokens.
  np.testing.assert_allclose(float(loss), (ce(2.0) + (3 * ce(0.0) + ce(1.0)) / 4) / 2,
                             rtol=1e-5)
  # A task weight scales that task's share: avs at weight 2 beside ave and avqa at 1.
  loss2, _ = steps.compute_loss(outputs, batch, cfg.loss, jnp.array([1.0, 1.0, 1.0, 1.0, 2.0]))
  np.testing.assert_allclose(
      float(loss2), (ce(2.0) + (3 * ce(0.0) + ce(1.0)) / 4 + 2 * ce(3.0)) / 4, rtol=1e-5)


def test_contrastive_loss_skips_silent_seconds():
  b, t, d = 3, 4, 5
  rng = np.random.default_rng(0)
  log_mel = rng.normal(size=(b, t, 6, 4)).astype(np.float32)
  log_mel[0, 1] = -13.8  # digital silence: a flat log-mel
  log_mel[2, 3] = -13.8
  batch = {"segment_mask": np.ones((b, t), bool), "log_mel": log_mel}
  batch["segment_mask"][1, 0] = False
  sounding = np.asarray(steps.sounding_segments(batch))
  expected = np.ones((b, t), bool)
  expected[0, 1] = expected[2, 3] = expected[1, 0] = False
  np.testing.assert_array_equal(sounding, expected)
  # The silent pairs do not enter the loss: changing their embeddings changes nothing.
  audio, visual = rng.normal(size=(2, b, t, d)).astype(np.float32)
  base = steps.losses.contrastive_loss(audio, visual, sounding)
  audio[0, 1] += 10.0
  np.testing.assert_allclose(steps.losses.contrastive_loss(audio, visual, sounding), base,
                             rtol=1e-6)


def _one_step(config, batch, model, params):
  tx, schedule = steps.make_optimizer(config.optim, config.total_steps)
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=tx.init(params))
  step = jax.jit(steps.make_train_step(model, tx, schedule, config))
  return step(state, batch, jax.random.key(0))


def test_gradient_accumulation_equals_the_whole_batch():
  config = th.tiny_config(**{"loss.contrastive_weight": 0.0, "loss.mil_weight": 0.0,
                             "tasks.avqa.loss_weight": 2.0})
  data, _ = th.stand_in_data_and_model(config)
  model = th.StandInModel(data.vocab_size, data.num_classes, dropout_rate=0.0)
  batch = {k: jnp.asarray(v) for k, v in next(data.iterator).items()}
  params = checkpointing.unbox(jax.jit(model.init)(jax.random.key(1), batch)["params"])
  whole_state, whole = _one_step(config, batch, model, params)
  config.optim.grad_accum_steps = 4
  accum_state, accum = _one_step(config, batch, model, params)
  np.testing.assert_allclose(accum["loss"], whole["loss"], rtol=1e-5)
  np.testing.assert_allclose(accum["grad_norm"], whole["grad_norm"], rtol=1e-4)
  np.testing.assert_allclose(accum["task_loss_sum"], whole["task_loss_sum"], rtol=1e-5)
  np.testing.assert_allclose(accum["examples"], 8.0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
               accum_state.params, whole_state.params)
  assert int(accum_state.step) == 1


def test_eval_step_sums_add_up_over_batch_parts():
  config = th.tiny_config()
  data, model = th.stand_in_data_and_model(config)
  batch = {k: jnp.asarray(v) for k, v in next(data.iterator).items()}
  params = checkpointing.unbox(jax.jit(model.init)(jax.random.key(1), batch)["params"])
  eval_step = jax.jit(steps.make_eval_step(model, config))
  whole = eval_step(params, batch)
  halves = [eval_step(params, {k: v[i * 4:(i + 1) * 4] for k, v in batch.items()})
            for i in range(2)]
  for key in ("task_loss_sum", "task_token_count", "target_tokens", "examples"):
    np.testing.assert_allclose(halves[0][key] + halves[1][key], whole[key], rtol=1e-5,
                               err_msg=key)
  np.testing.assert_allclose(eval_step(params, batch)["loss"], whole["loss"], rtol=0)


def test_gradient_accumulation_rejects_an_indivisible_batch():
  config = th.tiny_config(**{"optim.grad_accum_steps": 3})
  data, model = th.stand_in_data_and_model(config)
  batch = {k: jnp.asarray(v) for k, v in next(data.iterator).items()}
  params = checkpointing.unbox(jax.jit(model.init)(jax.random.key(1), batch)["params"])
  with pytest.raises(ValueError, match="grad_accum_steps=3"):
    _one_step(config, batch, model, params)


def test_synthetic_batches_are_deterministic_and_split_by_process():
  spec = synthetic.SyntheticSpec(batch_size=4, num_segments=3, image_size=8, mel_frames=4,
                                 mel_bins=2, prompt_len=5, target_len=6, vocab_size=40,
                                 num_classes=3)
  whole = synthetic.SyntheticIterator(spec, seed=7)
  halves = [synthetic.SyntheticIterator(spec, seed=7, process_index=p, process_count=2)
            for p in range(2)]
  for _ in range(2):
    full = next(whole)
    parts = [next(h) for h in halves]
    for key, value in full.items():
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), value, key)
  again = synthetic.SyntheticIterator(spec, seed=7)
  again.set_state(whole.get_state())
  np.testing.assert_array_equal(next(again)["frames"], next(whole)["frames"])
  assert full["target_tokens"].max() < 40 and full["frames"].dtype == np.uint8


def test_metric_writer_files_and_resume_truncation(tmp_path):
  w = metric_writers.MetricWriter(tmp_path, total_steps=6, start_step=0, progress=False)
  w.write_config(th.tiny_config())
  for step in range(1, 7):
    w.write_scalars(step, {"train/loss": 1.0 / step})
  w.close()
  assert json.loads((tmp_path / "config.json").read_text())["data"]["synthetic"] is True
  assert list((tmp_path / "tensorboard").iterdir())
  # A run resumed from step 4 drops what the interrupted run wrote after its checkpoint.
  w = metric_writers.MetricWriter(tmp_path, total_steps=6, start_step=4, progress=False,
                                  tensorboard=False)
  w.write_scalars(5, {"train/loss": 0.5})
  w.close()
  records = th.read_metrics(tmp_path)
  assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
  np.testing.assert_allclose(records[-1]["train/loss"], 0.5)
  # Other processes write no files.
  other = tmp_path / "other"
  metric_writers.MetricWriter(other, total_steps=6, start_step=0, is_primary=False,
                              progress=False).write_scalars(1, {"train/loss": 1.0})
  assert not other.exists()


class _PoisonAt:
  """Wraps an iterator: the batch of step `step` gets a NaN log-mel."""

  def __init__(self, inner, step):
    self.inner, self.step, self.count = inner, step, 0

  def __next__(self):
    batch = dict(next(self.inner))
    self.count += 1
    if self.count == self.step:
      batch["log_mel"] = np.full_like(batch["log_mel"], np.nan)
    return batch

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, state):
    self.inner.set_state(state)


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  config = th.tiny_config(**{"total_steps": 8, "checkpoint_every_steps": 2,
                             "log_every_steps": 4})
  data, model = th.stand_in_data_and_model(config)
  data.iterator = _PoisonAt(data.iterator, step=5)
  with pytest.raises(train.NonFiniteLossError, match=r"at step 5\b.*last good checkpoint is "
                     r"step 4"):
    train.train_and_evaluate(config, tmp_path, data=data, model=model, progress=False)
  manager = checkpointing.make_manager(tmp_path, 3, read_only=True)
  assert list(manager.all_steps()) == [2, 4]
  assert [m["step"] for m in th.read_metrics(tmp_path)] == [4]
