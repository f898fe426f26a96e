"""AVSBench mIoU and F-score: hand-computed batches and a per-threshold loop oracle."""

import numpy as np
import pytest

from av_unified_jax.metrics import (
    avs_frame_f_curves,
    avs_frame_iou,
    avs_fscore,
    avs_miou,
    avs_test_scores,
)
from av_unified_jax.metrics.avs import F_THRESHOLDS


def _logit(p):
    p = np.asarray(p, np.float64)
    with np.errstate(divide="ignore"):
        return np.log(p / (1 - p))


def _frame(probs, target):
    """1-D lists -> logits float32[1, 1, P] and target int[1, 1, P]."""
    return (_logit(probs).astype(np.float32)[None, None],
            np.asarray(target, np.int64)[None, None])


def _batch(*frames):
    logits, targets = zip(*frames, strict=True)
    return np.concatenate(logits), np.concatenate(targets)


F_QUARTER = 1.3 * 0.25 / (0.3 * 0.25 + 1)  # precision 1/4, recall 1


# ------------------------------------------------------------------------------- mIoU

def test_miou_hand_computed_with_empty_gt_frame():
    t1 = np.zeros((4, 4), np.int64)
    t1[0, :4] = 1
    p1 = np.zeros((4, 4), bool)
    p1[0, :2] = True
    p1[1, :2] = True  # inter 2, union 6
    t2 = np.zeros((4, 4), np.int64)
    p2 = np.zeros((4, 4), bool)
    p2[3, :3] = True  # empty GT: true-negative fraction 13 / 16
    logits = np.where(np.stack([p1, p2]), 4.0, -4.0).astype(np.float32)
    target = np.stack([t1, t2])
    np.testing.assert_allclose(avs_frame_iou(logits, target),
                               [2 / (6 + 1e-7), 13 / (16 + 1e-7)], rtol=1e-12)
    np.testing.assert_allclose(avs_miou(logits, target), (2 / 6 + 13 / 16) / 2, rtol=1e-6)


def test_miou_sigmoid_threshold_is_strict():
    target = np.ones((1, 2, 2), np.int64)
    logits = np.array([[[0.0, 0.0], [1.0, 1e-9]]], np.float32)  # sigmoid 0.5 is background
    np.testing.assert_allclose(avs_miou(logits, target), 1 / (4 + 1e-7), rtol=1e-12)


def test_miou_all_empty_and_perfect():
    empty = np.zeros((3, 8, 8))
    np.testing.assert_allclose(avs_miou(np.full((3, 8, 8), -1.0), empty), 64 / (64 + 1e-7),
                               rtol=1e-12)
    np.testing.assert_allclose(avs_miou(np.full((3, 8, 8), 1.0), empty), 0.0, atol=0)


# ---------------------------------------------------------------------------- F-score

def test_f_curve_of_one_frame():
    logits, target = _frame([0.6, 0.2, 0.2, 0.2], [1, 0, 0, 0])
    curves, kept = avs_frame_f_curves(logits, target)
    assert curves.shape == (1, 255) and kept.tolist() == [True]
    th = F_THRESHOLDS
    probs = 1 / (1 + np.exp(-logits[0, 0].astype(np.float32)))
    low, high = probs[1], probs[0]
    np.testing.assert_allclose(curves[0, th <= low], F_QUARTER, rtol=1e-12)
    np.testing.assert_allclose(curves[0, (th > low) & (th <= high)], 1.0, rtol=1e-12)
    np.testing.assert_allclose(curves[0, th > high], 0.0, atol=0)  # 0/0 -> NaN -> 0


def test_last_threshold_is_exactly_one_and_inclusive():
    assert F_THRESHOLDS.dtype == np.float32 and F_THRESHOLDS[-1] == 1.0 and F_THRESHOLDS[0] == 0
    logits = np.array([[[60.0, -60.0]]], np.float32)  # float32 sigmoid: exactly 1.0 and ~0
    curves, _ = avs_frame_f_curves(logits, np.array([[[1, 0]]]))
    np.testing.assert_allclose(curves[0, -1], 1.0, rtol=1e-12)
    np.testing.assert_allclose(curves[0, 0], 1.3 * 0.5 / (0.3 * 0.5 + 1), rtol=1e-12)


def test_fscore_is_max_of_the_batch_mean_curve():
    a = _frame([0.6, 0.2, 0.2, 0.2], [1, 0, 0, 0])  # F = 1 for th in (0.2, 0.6]
    b = _frame([0.95, 0.7, 0.7, 0.7], [1, 0, 0, 0])  # F = 1 for th in (0.7, 0.95]
    empty = _frame([0.9, 0.9, 0.1, 0.1], [0, 0, 0, 0])
    # On (0.2, 0.6] the mean curve is (1 + F_QUARTER) / 2; the per-frame maxima would give 1.
    expected = (1 + F_QUARTER) / 2
    np.testing.assert_allclose(avs_fscore(*_batch(a, b)), expected, rtol=1e-12)
    # Frames with an empty GT are skipped, wherever they are in the batch.
    np.testing.assert_allclose(avs_fscore(*_batch(empty, a, b)), expected, rtol=1e-12)
    np.testing.assert_allclose(avs_fscore(*_batch(a)), 1.0, rtol=1e-12)
    # So the test score depends on the batching.
    split = avs_test_scores([_batch(a), _batch(b)])
    joint = avs_test_scores([_batch(a, b)])
    np.testing.assert_allclose(split["fscore"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(joint["fscore"], expected, rtol=1e-12)
    np.testing.assert_allclose(split["miou"], joint["miou"], rtol=1e-12)


def test_batch_without_gt_scores_zero():
    np.testing.assert_allclose(avs_fscore(np.ones((2, 4, 4)), np.zeros((2, 4, 4))), 0.0, atol=0)


def test_test_scores_are_unweighted_batch_means():
    a = _frame([0.6, 0.2, 0.2, 0.2], [1, 0, 0, 0])
    b = _frame([0.95, 0.7, 0.7, 0.7], [1, 0, 0, 0])
    out = avs_test_scores([_batch(a), _batch(a, b, b)])
    np.testing.assert_allclose(out["miou"], (avs_miou(*_batch(a)) + avs_miou(*_batch(a, b, b))) / 2,
                               rtol=1e-12)
    np.testing.assert_allclose(
        out["fscore"], (avs_fscore(*_batch(a)) + avs_fscore(*_batch(a, b, b))) / 2, rtol=1e-12)
    assert set(out) == {"miou", "fscore"} and all(isinstance(v, float) for v in out.values())


def _oracle_fscore(logits, target):
    """Per-threshold, per-frame loop in float32, as the official `_eval_pr` runs."""
    probs = (1 / (1 + np.exp(-logits.astype(np.float32)))).astype(np.float32)
    total, kept = np.zeros(255), 0
    for p, t in zip(probs, target.astype(np.float32), strict=True):
        if t.mean() == 0:
            continue
        prec, rec = np.zeros(255), np.zeros(255)
        for i, th in enumerate(F_THRESHOLDS):
            y = (p >= th).astype(np.float32)
            tp = (y * t).sum()
            prec[i], rec[i] = tp / (y.sum() + 1e-20), tp / (t.sum() + 1e-20)
        with np.errstate(invalid="ignore"):
            f = 1.3 * prec * rec / (0.3 * prec + rec)
        total += np.nan_to_num(f, nan=0.0)
        kept += 1
    return (total / kept).max() if kept else 0.0


def test_fscore_matches_threshold_loop():
    rng = np.random.default_rng(7)
    for _ in range(3):
        logits = (rng.normal(size=(6, 12, 12)) * 3).astype(np.float32)
        logits[0, :4] = np.round(logits[0, :4])  # ties between pixels
        target = (rng.random((6, 12, 12)) < 0.3).astype(np.int64)
        target[2] = 0
        np.testing.assert_allclose(avs_fscore(logits, target), _oracle_fscore(logits, target),
                                   rtol=1e-6)


def test_full_size_batch_shapes():
    rng = np.random.default_rng(8)
    logits = rng.normal(size=(20, 224, 224)).astype(np.float32)
    target = rng.random((20, 224, 224)) < 0.2
    curves, kept = avs_frame_f_curves(logits, target)
    assert curves.shape == (20, 255) and kept.all()
    assert 0.0 < avs_fscore(logits, target) <= 1.0 and 0.0 < avs_miou(logits, target) < 1.0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="0/255"):
        avs_miou(np.zeros((1, 4, 4)), np.full((1, 4, 4), 255))
    with pytest.raises(ValueError, match="squeeze"):
        avs_fscore(np.zeros((2, 1, 4, 4)), np.zeros((2, 1, 4, 4)))
    with pytest.raises(ValueError, match="target"):
        avs_miou(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="NaN"):
        avs_miou(np.full((1, 4, 4), np.nan), np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="batches"):
        avs_test_scores([])
