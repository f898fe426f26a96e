"""LLP / AVVP (audio-visual video parsing): segment- and event-level F-scores.

docs/BENCHMARKS.md section 2.3. Follows AVVP-ECCV20 `main_avvp.py::eval` and
`utils/eval_metrics.py` (MGN and CPSP use byte-identical copies). Every matrix is
[classes, segments] = [25, 10] with rows in `LLP_CLASSES` order. The per-video scores are
computed for many videos at once ([V, 25, 10] stacks); the official code loops per video.
"""

import functools

import numpy as np

from av_unified_jax.metrics._checks import as_binary, as_float
from av_unified_jax.metrics.labels import LLP_CLASSES, LLP_NUM_SEGMENTS

_CLASS_INDEX = {name: i for i, name in enumerate(LLP_CLASSES)}
_DATASET_KEYS = ("SO_a", "SO_v", "GT_a", "GT_v")


def avvp_predictions(video_prob, frame_prob_audio, frame_prob_visual):
    """Binary prediction matrices from the model's probabilities (the `main_avvp.eval` rule).

    `o = video_prob >= 0.5` (inclusive); `Pa = (frame_prob_audio >= 0.5) * o`, the same for
    visual, so the video-level prediction filters the frame-level ones; `SO_a = Pa.T`,
    `SO_v = Pv.T`, `SO_av = SO_a * SO_v`.

    Args:
      video_prob: float[25] fused video-level probabilities (the model's `output`).
      frame_prob_audio: float[10, 25] per-segment audio probabilities.
      frame_prob_visual: float[10, 25] per-segment visual probabilities.

    Returns:
      (SO_a, SO_v, SO_av), each int64[25, 10] of 0/1.
    """
    video_prob = as_float(video_prob, "video_prob", ndim=1)
    c = video_prob.shape[0]
    fa = as_float(frame_prob_audio, "frame_prob_audio", shape=(None, c))
    fv = as_float(frame_prob_visual, "frame_prob_visual", shape=fa.shape)
    o = video_prob >= 0.5  # bool[C]
    so_a = ((fa >= 0.5) & o).T.astype(np.int64)  # [T, C] -> [C, T]
    so_v = ((fv >= 0.5) & o).T.astype(np.int64)  # [T, C] -> [C, T]
    return so_a, so_v, so_a * so_v


def avvp_ground_truth(audio_rows, visual_rows):
    """Dense ground-truth matrices from the rows of `AVVP_eval_{audio,visual}.csv` of one video.

    Starts from zeros and sets `GT[class, int(onset):int(offset)] = 1` per row, so same-class
    rows that touch or overlap merge into one run (exactly like the official loop); offsets past
    10 are cut by the slice. `GT_av = GT_a * GT_v`.

    Args:
      audio_rows: list of (label_name, onset, offset) rows, label names from `LLP_CLASSES`,
        onset/offset in whole seconds (anything `int()` accepts). May be empty.
      visual_rows: the same for the visual track.

    Returns:
      (GT_a, GT_v, GT_av), each int64[25, 10] of 0/1.
    """
    gt_a = _rows_to_matrix(audio_rows, "audio_rows")
    gt_v = _rows_to_matrix(visual_rows, "visual_rows")
    return gt_a, gt_v, gt_a * gt_v


def avvp_segment_level(SO_a, SO_v, SO_av, GT_a, GT_v, GT_av):
    """Segment-level F-scores of one video (`eval_metrics.segment_level`).

    Per class, TP/FP/FN are counted over the segments; classes with TP+FP != 0 or TP+FN != 0
    are kept and `F = 2TP / (2TP + FP + FN)`; the score is the mean over kept classes, or 1.0
    when no class is kept. `event_avg` (Event@AV) adds the audio and visual counts per class
    before taking F.

    Args:
      SO_a, SO_v, SO_av, GT_a, GT_v, GT_av: 0/1 arrays [25, 10] (int, float or bool).

    Returns:
      (audio, visual, event_avg, av) as Python floats (the official return order).
    """
    mats = _check_video(SO_a, SO_v, SO_av, GT_a, GT_v, GT_av)
    scores = _video_scores(_segment_counts, *(m[None] for m in mats))
    return tuple(float(s[0]) for s in scores)


def avvp_event_level(SO_a, SO_v, SO_av, GT_a, GT_v, GT_av):
    """Event-level F-scores of one video (`eval_metrics.event_level`).

    Each class row is split into maximal runs of 1s. A predicted run is a TP if any GT run of
    that class has `|intersection| >= 0.5 * |union|` (IoU >= 0.5, inclusive), otherwise an FP;
    a GT run that no predicted run matches is an FN (no one-to-one matching). Kept classes,
    the 1.0 default and Event@AV pooling are as in `avvp_segment_level`.

    Args:
      SO_a, SO_v, SO_av, GT_a, GT_v, GT_av: 0/1 arrays [25, 10] (int, float or bool).

    Returns:
      (audio, visual, event_avg, av) as Python floats (the official return order).
    """
    mats = _check_video(SO_a, SO_v, SO_av, GT_a, GT_v, GT_av)
    scores = _video_scores(_event_counts, *(m[None] for m in mats))
    return tuple(float(s[0]) for s in scores)


def avvp_dataset_scores(videos) -> dict:
    """The ten reported LLP numbers: means over videos of the per-video scores.

    `SO_av = SO_a * SO_v` and `GT_av = GT_a * GT_v` are derived per video as in
    `main_avvp.eval`. `*_type_avg = (audio + visual + av) / 3` of the dataset means (Type@AV);
    `*_event_avg` is the mean of the per-video Event@AV score.

    Args:
      videos: list of dicts with keys `SO_a, SO_v, GT_a, GT_v`, each a 0/1 array [25, 10].

    Returns:
      dict of Python floats (fractions): seg_audio, seg_visual, seg_av, seg_type_avg,
      seg_event_avg, event_audio, event_visual, event_av, event_type_avg, event_event_avg.
    """
    if len(videos) == 0:
        raise ValueError("videos: empty list; pass one dict per evaluated video")
    stacks = []
    for key in _DATASET_KEYS:
        try:
            stacks.append(np.stack([np.asarray(v[key]) for v in videos]))  # [V, C, T]
        except KeyError as e:
            raise ValueError(f"videos: every dict needs the keys {_DATASET_KEYS}, "
                             f"one lacks {e}") from e
        except ValueError as e:
            raise ValueError(f"videos[...]['{key}']: shapes differ between videos ({e})") from e
    so_a, so_v, gt_a, gt_v = (
        as_binary(s, f"videos[...]['{k}']", shape=(None, len(LLP_CLASSES), None))
        for s, k in zip(stacks, _DATASET_KEYS, strict=True))
    _same_shape(so_a, so_v, gt_a, gt_v)
    mats = (so_a, so_v, so_a & so_v, gt_a, gt_v, gt_a & gt_v)
    out = {}
    for level, counts in (("seg", _segment_counts), ("event", _event_counts)):
        f_a, f_v, f_event, f_av = (float(np.mean(s)) for s in _video_scores(counts, *mats))
        out.update({
            f"{level}_audio": f_a,
            f"{level}_visual": f_v,
            f"{level}_av": f_av,
            f"{level}_type_avg": (f_av + f_a + f_v) / 3.0,
            f"{level}_event_avg": f_event,
        })
    return out


# ----------------------------------------------------------------------------- internals


def _rows_to_matrix(rows, name):
    gt = np.zeros((len(LLP_CLASSES), LLP_NUM_SEGMENTS), np.int64)
    for row in rows:
        try:
            label, onset, offset = row
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}: each row must be (label_name, onset, offset), "
                             f"got {row!r}") from e
        if label not in _CLASS_INDEX:
            raise ValueError(f"{name}: unknown LLP class {label!r}; use one of LLP_CLASSES "
                             "(underscored names such as 'Baby_cry_infant_cry')")
        start, end = int(onset), int(offset)
        if start < 0 or end < 0:
            raise ValueError(f"{name}: negative time in row {row!r}; onset/offset are seconds "
                             "in [0, 10]")
        gt[_CLASS_INDEX[label], start:end] = 1
    return gt


def _check_video(*mats):
    names = ("SO_a", "SO_v", "SO_av", "GT_a", "GT_v", "GT_av")
    arrs = [as_binary(m, n, ndim=2) for m, n in zip(mats, names, strict=True)]
    _same_shape(*arrs)
    if arrs[0].shape[0] != len(LLP_CLASSES):
        raise ValueError(f"SO_a: expected {len(LLP_CLASSES)} class rows ([25, 10]), got shape "
                         f"{arrs[0].shape}; transpose a [10, 25] matrix")
    return arrs


def _same_shape(*arrs):
    if len({a.shape for a in arrs}) != 1:
        raise ValueError("AVVP matrices must all have the same shape, got "
                         f"{[a.shape for a in arrs]}")


def _video_scores(counts_fn, so_a, so_v, so_av, gt_a, gt_v, gt_av):
    """Per-video (audio, visual, event_avg, av) scores, each float64[V]."""
    tp_a, fp_a, fn_a = counts_fn(so_a, gt_a)  # each int[V, C]
    tp_v, fp_v, fn_v = counts_fn(so_v, gt_v)
    tp_av, fp_av, fn_av = counts_fn(so_av, gt_av)
    return (_mean_f(tp_a, fp_a, fn_a),
            _mean_f(tp_v, fp_v, fn_v),
            _mean_f(tp_a + tp_v, fp_a + fp_v, fn_a + fn_v),
            _mean_f(tp_av, fp_av, fn_av))


def _mean_f(tp, fp, fn):
    """Mean F over the kept classes of each video, 1.0 where none is kept: float64[V]."""
    kept = (tp + fp != 0) | (tp + fn != 0)  # bool[V, C]
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(kept, 2.0 * tp / (2.0 * tp + fn + fp), 0.0)  # float64[V, C]
    n_kept = kept.sum(axis=1)
    return np.where(n_kept > 0, f.sum(axis=1) / np.maximum(n_kept, 1), 1.0)


def _segment_counts(pred, gt):
    """TP, FP, FN per video and class over the segments: each int64[V, C]."""
    tp = np.sum(pred & gt, axis=-1)
    fp = np.sum(pred & ~gt, axis=-1)
    fn = np.sum(~pred & gt, axis=-1)
    return tp, fp, fn


def _event_counts(pred, gt):
    """Event-level TP, FP, FN per video and class: each int64[V, C]."""
    starts, ends, match = _run_table(pred.shape[-1])
    pred_runs = _runs(pred, starts, ends)  # bool[V, C, P]
    gt_runs = _runs(gt, starts, ends)
    # match is symmetric; counting through float32 matmuls is exact for these small counts.
    pred_hit = (gt_runs.astype(np.float32) @ match) > 0  # run p overlaps some GT run enough
    gt_hit = (pred_runs.astype(np.float32) @ match) > 0  # run p overlaps some predicted run
    tp = np.sum(pred_runs & pred_hit, axis=-1)
    fp = np.sum(pred_runs, axis=-1) - tp
    fn = np.sum(gt_runs & ~gt_hit, axis=-1)
    return tp, fp, fn


@functools.lru_cache(maxsize=8)
def _run_table(num_segments):
    """All candidate runs [s, e) of a row and which pairs have IoU >= 0.5.

    Returns int64[P] starts, int64[P] ends and float32[P, P] match (1.0 where
    `|a ∩ b| >= 0.5 * |a ∪ b|`), with P = T(T+1)/2.
    """
    starts, ends = np.triu_indices(num_segments + 1, k=1)  # s < e, both in [0, T]
    lo = np.maximum(starts[:, None], starts[None, :])
    hi = np.minimum(ends[:, None], ends[None, :])
    inter = np.clip(hi - lo, 0, None)  # [P, P]
    length = ends - starts
    union = length[:, None] + length[None, :] - inter  # [P, P]
    match = (inter >= 0.5 * union).astype(np.float32)
    return starts, ends, match


def _runs(x, starts, ends):
    """Which candidate runs are maximal runs of 1s: bool[V, C, T] -> bool[V, C, P]."""
    num_segments = x.shape[-1]
    if num_segments > _MAX_TABLE_SEGMENTS:
        return _runs_direct(x, starts, ends)
    codes = x.astype(np.int64) @ (1 << np.arange(num_segments))  # row as a bit code: [V, C]
    return _code_runs(num_segments)[codes]  # [V, C, P]


_MAX_TABLE_SEGMENTS = 12


@functools.lru_cache(maxsize=8)
def _code_runs(num_segments):
    """Maximal runs of every possible row, indexed by its bit code: bool[2**T, P]."""
    codes = np.arange(2**num_segments)
    rows = ((codes[:, None] >> np.arange(num_segments)) & 1).astype(bool)  # [2**T, T]
    starts, ends, _ = _run_table(num_segments)
    return _runs_direct(rows[None], starts, ends)[0]


def _runs_direct(x, starts, ends):
    """`_runs` computed from the rows themselves: bool[V, C, T] -> bool[V, C, P]."""
    padded = np.pad(x, [(0, 0), (0, 0), (1, 1)])  # [V, C, T + 2], zero on both sides
    csum = np.concatenate(
        [np.zeros(x.shape[:-1] + (1,), np.int64), np.cumsum(x, axis=-1)], axis=-1)  # [V,C,T+1]
    full = (csum[..., ends] - csum[..., starts]) == (ends - starts)  # all ones in [s, e)
    left_open = ~padded[..., starts]  # x[s - 1] is 0 or outside
    right_open = ~padded[..., ends + 1]  # x[e] is 0 or outside
    return full & left_open & right_open
