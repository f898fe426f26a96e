"""Losses against numpy references, and the model learns: a few optimizer steps on one fixed
tiny batch drive the loss down."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import model_helpers as H
from av_unified_jax.data import tasks
from av_unified_jax.models import losses


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_token_cross_entropy_matches_numpy_with_weights_and_smoothing():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
  targets = rng.integers(0, 5, (2, 3)).astype(np.int32)
  weights = np.array([[1, 1, 0], [2, 0.5, 1]], np.float32)
  logp = _log_softmax(logits)
  nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  total, norm = losses.token_cross_entropy(logits, targets, weights)
  np.testing.assert_allclose(float(total), (nll * weights).sum(), rtol=1e-5)
  np.testing.assert_allclose(float(norm), weights.sum(), rtol=1e-6)
  eps = 0.1
  smooth = (1 - eps) * nll - eps / 5 * logp.sum(-1)
  total, _ = losses.token_cross_entropy(logits, targets, weights, label_smoothing=eps)
  np.testing.assert_allclose(float(total), (smooth * weights).sum(), rtol=1e-5)
  scaled = losses.task_token_weights(weights, np.array([1, 0]), [2.0, 3.0])
  np.testing.assert_allclose(np.asarray(scaled), weights * np.array([[3.0], [2.0]]))


def test_contrastive_loss_matches_numpy_and_prefers_aligned_pairs():
  rng = np.random.default_rng(1)
  b, t, d, tau = 3, 2, 8, 0.1
  a = rng.normal(size=(b, t, d)).astype(np.float32)
  mask = np.array([[1, 1], [1, 0], [1, 1]], bool)
  v = a + 0.1 * rng.normal(size=a.shape).astype(np.float32)
  got = float(losses.contrastive_loss(a, v, mask, tau))
  # Reference: rows are (clip, segment) pairs; negatives are valid segments of other clips,
  # and an invalid segment is on neither side (its row and its column are masked).
  an = a.reshape(b * t, d) / np.linalg.norm(a.reshape(b * t, d), axis=-1, keepdims=True)
  vn = v.reshape(b * t, d) / np.linalg.norm(v.reshape(b * t, d), axis=-1, keepdims=True)
  clip, valid = np.repeat(np.arange(b), t), mask.reshape(-1)
  keep = (np.eye(b * t, dtype=bool) | (clip[:, None] != clip[None])) & valid[None] \
      & valid[:, None]
  sim = np.where(keep, an @ vn.T / tau, -1e9)
  ce = lambda s: -np.diag(_log_softmax(s))
  ref = ((ce(sim) + ce(sim.T)) / 2 * valid).sum() / valid.sum()
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)  # float32 against float64
  shuffled = float(losses.contrastive_loss(a, v[::-1], mask, tau))
  assert got < shuffled


def test_mil_bce_matches_numpy_and_skips_examples_without_weak_labels():
  probs = np.array([[0.9, 0.2], [0.5, 0.5]], np.float32)
  labels = np.array([[1, 0], [0, 1]], np.float32)
  got = float(losses.mil_bce(probs, labels, np.array([True, False])))
  np.testing.assert_allclose(got, -(np.log(0.9) + np.log(0.8)) / 2, rtol=1e-5)
  assert float(losses.mil_bce(probs, labels, np.array([False, False]))) == 0.0
  weighted = float(losses.mil_bce(probs, labels, np.array([True, False]), positive_weight=3.0))
  np.testing.assert_allclose(weighted, -(3 * np.log(0.9) + np.log(0.8)) / 2, rtol=1e-5)


def test_event_segment_bce_matches_numpy_and_rewards_probabilities_on_the_event():
  # Two examples, 3 segments, 2 classes; example 0's event (class 1) covers segment 1 and its
  # last segment is padding; example 1 has no event.
  probs = np.full((2, 3, 2, 2), 0.5, np.float32)
  probs[0, :, 0, 1] = [0.2, 0.9, 0.7]  # audio, class 1
  probs[0, :, 1, 1] = [0.6, 0.8, 0.1]  # visual, class 1
  labels = np.array([[0, 1], [1, 0]], np.float32)
  events = np.array([[0, 1, 0], [1, 1, 1]], np.float32)
  valid = np.array([[True, True, False], [True, True, True]])
  has = np.array([True, False])
  got = float(losses.event_segment_bce(probs, labels, events, has, valid))
  want = (-np.log(1 - 0.2 * 0.6) - np.log(0.9) - np.log(0.8)) / 2
  np.testing.assert_allclose(got, want, rtol=1e-5)
  on_event = probs.copy()
  on_event[0, :, :, 1] = [[0.01, 0.01], [0.99, 0.99], [0.5, 0.5]]
  assert float(losses.event_segment_bce(on_event, labels, events, has, valid)) < got / 10
  assert float(losses.event_segment_bce(probs, labels, events, has & False, valid)) == 0.0


def test_map_loss_matches_numpy_and_prefers_maps_on_the_mask():
  # A 4x4 mask grid over a 2x2 map: the object covers the top-left quarter fully and a
  # quarter of the top-right one.
  focus_map = np.zeros((2, 4, 4), np.float32)
  focus_map[:, :2, :2] = 1.0
  focus_map[:, 0, 2] = 1.0
  target = np.array([[4.0, 1.0], [0.0, 0.0]]) / 5.0  # Area-averaged cells, normalised.
  maps = np.full((2, 3, 2, 2), 0.25, np.float32)
  maps[0, 1] = [[0.7, 0.2], [0.05, 0.05]]
  focus = np.array([1, 2], np.int32)
  got = float(losses.map_loss(maps, focus, focus_map, np.array([True, True])))
  ce = lambda m: -(target * np.log(m + 1e-6)).sum()
  np.testing.assert_allclose(got, (ce(maps[0, 1]) + ce(maps[1, 2])) / 2, rtol=1e-3)
  only_good = float(losses.map_loss(maps, focus, focus_map, np.array([True, False])))
  only_uniform = float(losses.map_loss(maps, focus, focus_map, np.array([False, True])))
  assert only_good < only_uniform
  assert float(losses.map_loss(maps, focus, focus_map, np.array([False, False]))) == 0.0


def test_focus_map_gives_cell_fractions_of_the_mask():
  mask = np.zeros((32, 32), bool)
  mask[4:12, 0:16] = True
  cells, has = tasks.focus_map(mask, grid=4)
  assert has and cells.shape == (4, 4) and cells.dtype == np.float32
  np.testing.assert_allclose(cells[0], [0.5, 0.5, 0.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(cells[1], [0.5, 0.5, 0.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(cells[2:], 0.0, atol=1e-6)
  empty, has_empty = tasks.focus_map(np.zeros((32, 32), bool), grid=4)
  assert not has_empty and not empty.any()
  assert not tasks.focus_map(None)[1]


def test_a_few_optimizer_steps_on_one_batch_drive_the_loss_down():
  batch = H.batch(b=2, lt=5)
  params = H.params()
  tx = optax.adam(3e-3)

  def loss_fn(p, rng):
    out = H.MODEL.apply({"params": p}, batch, train=True, rngs={"dropout": rng})
    return losses.model_loss(out, batch, task_loss_weights=[1.0] * 5, contrastive_weight=0.1,
                             mil_weight=1.0)

  @jax.jit
  def step(p, opt_state, rng):
    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, rng)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss, parts

  opt_state = tx.init(params)
  history = []
  for i in range(20):
    params, opt_state, loss, parts = step(params, opt_state, jax.random.key(i))
    history.append((float(loss), float(parts["token_loss"]), float(parts["mil_loss"])))
  first, last = history[0], history[-1]
  assert all(np.isfinite(h).all() for h in history)
  assert last[0] < 0.5 * first[0], history
  assert last[1] < 0.5 * first[1], history  # The decoder learns the targets.
  assert last[2] < first[2], history  # The MIL head fits the weak labels.
  assert float(jnp.asarray(parts["contrastive_loss"])) > 0
