"""AVSBench-object (S4 / MS3): mask mIoU (J) and F-score (beta^2 = 0.3), per batch.

docs/BENCHMARKS.md section 5.2. Follows AVSBench `avs_scripts/avs_{s4,ms3}/utils/utility.py`
(`mask_iou`, `_eval_pr`, `Eval_Fmeasure`) and the test loop of `test.py` (AVSegFormer uses the
same code). Inputs are logits: the sigmoid is applied here, in float32 like PyTorch. Both
numbers depend on how frames are grouped into batches; the official test passes
`--test_batch_size 4`, i.e. 20 frames per batch.
"""

import numpy as np

from av_unified_jax.metrics._checks import as_binary, as_float, sigmoid_float32

BETA2 = 0.3
NUM_THRESHOLDS = 255
# linspace(0, 1 - 1e-10, 255) in float32: the last threshold is exactly 1.0. PyTorch's
# float32 linspace can differ from these correctly rounded values by one ulp at some
# thresholds (it depends on the PyTorch version and CPU); that matters only for a
# probability lying exactly on such a threshold.
F_THRESHOLDS = np.linspace(0.0, 1.0 - 1e-10, NUM_THRESHOLDS).astype(np.float32)
_IOU_EPS = 1e-7
_PR_EPS = 1e-20


def avs_frame_iou(logits, target):
    """Per-frame IoU of `mask_iou`: float64[N].

    The mask is `sigmoid(logit) > 0.5` (strict); `iou = sum(p * t) / (sum(max(p, t)) + 1e-7)`;
    a frame whose GT is empty scores the true-negative fraction
    `sum((1 - t) * (1 - p)) / (H * W + 1e-7)`.

    Args:
      logits: float[N, H, W] mask logits (before the sigmoid).
      target: 0/1 array [N, H, W] (bool, int or float).
    """
    logits, target = _check(logits, target)
    pred = sigmoid_float32(logits) > 0.5  # bool[N, H, W]
    n, h, w = logits.shape
    pred, target = pred.reshape(n, h * w), target.reshape(n, h * w)  # [N, HW]
    inter = np.sum(pred & target, axis=1)
    union = np.sum(pred | target, axis=1)
    empty = ~target.any(axis=1)  # bool[N]
    inter = np.where(empty, np.sum(~pred & ~target, axis=1), inter)
    union = np.where(empty, h * w, union)
    return inter / (union + _IOU_EPS)


def avs_miou(logits, target) -> float:
    """mIoU (J) of one batch: the mean of `avs_frame_iou` over its N frames (`mask_iou`).

    Args:
      logits: float[N, H, W] mask logits (before the sigmoid); N = batch videos x 5 frames.
      target: 0/1 array [N, H, W].

    Returns:
      Python float in [0, 1].
    """
    return float(np.mean(avs_frame_iou(logits, target)))


def avs_frame_f_curves(logits, target):
    """Per-frame F curves over the 255 thresholds (`_eval_pr` + the F formula).

    For thresholds `th = F_THRESHOLDS`, the prediction is `sigmoid(logit) >= th`;
    `prec = tp / (sum(pred) + 1e-20)`, `rec = tp / (sum(t) + 1e-20)`,
    `F = 1.3 * prec * rec / (0.3 * prec + rec)` with NaN set to 0. Frames with an all-zero GT
    are skipped by the official metric and get `kept = False` here.

    Args:
      logits: float[N, H, W] mask logits (before the sigmoid).
      target: 0/1 array [N, H, W].

    Returns:
      (curves float64[N, 255], kept bool[N]); rows of frames that are not kept are 0.
    """
    logits, target = _check(logits, target)
    n = logits.shape[0]
    probs = sigmoid_float32(logits).reshape(n, -1)  # float32[N, HW]
    target = target.reshape(n, -1)  # bool[N, HW]
    # Thresholds passed by each pixel: th[i] <= p for i < k, with k in [0, 255].
    k = np.searchsorted(F_THRESHOLDS, probs, side="right")  # int[N, HW]
    bins = NUM_THRESHOLDS + 1
    flat = (k + bins * np.arange(n)[:, None]).ravel()  # frame-offset bin ids
    hist_all = np.bincount(flat, minlength=n * bins).reshape(n, bins)
    hist_pos = np.bincount(flat, weights=target.ravel(), minlength=n * bins).reshape(n, bins)
    # Pixels passing threshold i are those with k > i: reverse cumulative sums from bin i+1.
    n_pred = np.cumsum(hist_all[:, ::-1], axis=1)[:, ::-1][:, 1:]  # [N, 255]
    tp = np.cumsum(hist_pos[:, ::-1], axis=1)[:, ::-1][:, 1:]  # [N, 255]
    n_gt = target.sum(axis=1, keepdims=True)  # [N, 1]
    prec = tp / (n_pred + _PR_EPS)
    rec = tp / (n_gt + _PR_EPS)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = (1 + BETA2) * prec * rec / (BETA2 * prec + rec)
    f = np.nan_to_num(f, nan=0.0)
    kept = n_gt[:, 0] > 0
    return np.where(kept[:, None], f, 0.0), kept


def avs_fscore(logits, target) -> float:
    """F-score of one batch (`Eval_Fmeasure`, beta^2 = 0.3, 255 thresholds).

    The F curves of the frames with a non-empty GT are averaged over the batch and the maximum
    over thresholds is taken, so the value depends on the batch composition. A batch with no
    such frame scores 0.

    Args:
      logits: float[N, H, W] mask logits (before the sigmoid).
      target: 0/1 array [N, H, W].

    Returns:
      Python float in [0, 1].
    """
    curves, kept = avs_frame_f_curves(logits, target)
    if not kept.any():
        return 0.0
    return float(np.max(curves[kept].mean(axis=0)))


def avs_test_scores(batches) -> dict:
    """Test-set mIoU and F: unweighted means of the per-batch values (`pyutils.AverageMeter`).

    Args:
      batches: list of `(logits, target)` pairs, each float[N, H, W] and 0/1 [N, H, W]; use
        the official grouping of 4 videos (20 frames) per batch.

    Returns:
      dict of Python floats: miou, fscore.
    """
    if len(batches) == 0:
        raise ValueError("batches: empty list; pass one (logits, target) pair per test batch")
    mious, fscores = [], []
    for logits, target in batches:
        mious.append(avs_miou(logits, target))
        fscores.append(avs_fscore(logits, target))
    return {"miou": float(np.mean(mious)), "fscore": float(np.mean(fscores))}


def _check(logits, target):
    if np.ndim(logits) == 4 and np.shape(logits)[1] == 1:
        raise ValueError(f"logits: expected [N, H, W], got {np.shape(logits)}; squeeze the "
                         "channel axis (the official code uses output.squeeze(1))")
    logits = as_float(logits, "logits", ndim=3)
    if logits.shape[0] == 0:
        raise ValueError("logits: a batch needs at least one frame")
    target = as_binary(target, "target", shape=logits.shape)
    return logits, target
