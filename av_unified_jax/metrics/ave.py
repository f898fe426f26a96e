"""AVE (audio-visual event localisation): segment accuracy as the official code computes it.

docs/BENCHMARKS.md section 1.3. Both functions return a fraction of correct segments, pooled over
every segment of every video (the papers print it multiplied by 100).
"""

import numpy as np

from av_unified_jax.metrics._checks import as_float, sigmoid_float32
from av_unified_jax.metrics.labels import AVE_BACKGROUND_INDEX, AVE_NUM_OUTPUTS


def ave_accuracy(scores, labels) -> float:
    """Global segment accuracy of 29-way predictions (background competes with the events).

    Follows AVE-ECCV18 `supervised_main.py::compute_acc` (also `weak_supervised_main.py` and
    PSP `measure.py`): for every video i and segment j, `pred = argmax(scores[i, j, :29])` and
    `true = argmax(labels[i, j, :])`, both taking the first index on ties (`np.argmax`); the
    result is `accuracy_score(true, pred)` over all N*T segments.

    Args:
      scores: float[N, T, 29] segment scores (logits or probabilities; only the argmax matters).
        T is 10 for AVE.
      labels: float or int[N, T, 29] one-hot segment labels, background at index 28.

    Returns:
      Python float in [0, 1].
    """
    scores = as_float(scores, "scores", shape=(None, None, AVE_NUM_OUTPUTS))
    labels = as_float(labels, "labels", shape=scores.shape)
    _require_segments(scores)
    pred = np.argmax(scores, axis=-1)  # int[N, T]
    true = np.argmax(labels, axis=-1)  # int[N, T]
    return float(np.mean(pred == true))


def ave_accuracy_gated(is_event_logits, event_logits, labels) -> float:
    """Global segment accuracy of the CMBS/CPSP gated prediction.

    Follows CMBS `supv_main.py::compute_accuracy_supervised` (CPSP identical, `bg_flag=28`):
    a segment is an event iff `sigmoid(is_event_logit) > 0.5` (strict, computed in float32 as
    PyTorch does, so a logit of exactly 0 is background); an event segment gets the video's
    class `argmax(event_logits)` (first index on ties), every other segment gets 28. The score
    is the fraction of segments equal to `argmax(labels)`, pooled over all N*T segments (the
    AverageMeter weights batches by `bs*10`, so batching does not change it).

    Args:
      is_event_logits: float[N, T] per-segment event logits (before the sigmoid).
      event_logits: float[N, 28] video-level class scores over the 28 events.
      labels: float or int[N, T, 29] one-hot segment labels, background at index 28.

    Returns:
      Python float in [0, 1].
    """
    is_event_logits = as_float(is_event_logits, "is_event_logits", ndim=2)
    n, t = is_event_logits.shape
    event_logits = as_float(event_logits, "event_logits", shape=(n, AVE_BACKGROUND_INDEX))
    labels = as_float(labels, "labels", shape=(n, t, AVE_NUM_OUTPUTS))
    _require_segments(labels)
    is_event = sigmoid_float32(is_event_logits) > 0.5  # bool[N, T]
    video_class = np.argmax(event_logits, axis=-1)  # int[N]
    pred = np.where(is_event, video_class[:, None], AVE_BACKGROUND_INDEX)  # int[N, T]
    true = np.argmax(labels, axis=-1)  # int[N, T]
    return float(np.mean(pred == true))


def _require_segments(arr):
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"AVE accuracy needs at least one video and one segment, got shape "
                         f"{arr.shape}")
