"""LLP / AVVP F-scores: hand-computed quirks, a per-video loop oracle and real dense rows."""

import csv
import itertools

import numpy as np
import pytest
from conftest import FIXTURES

from av_unified_jax.metrics import (
    LLP_CLASSES,
    avvp_dataset_scores,
    avvp_event_level,
    avvp_ground_truth,
    avvp_predictions,
    avvp_segment_level,
)

C, T = 25, 10


def _row(runs):
    """List of (start, end) runs -> int[T] row."""
    x = np.zeros(T, np.int64)
    for s, e in runs:
        x[s:e] = 1
    return x


def _video(audio=None, visual=None, gt_audio=None, gt_visual=None):
    """Dicts {class_index: [(s, e), ...]} -> the six [25, 10] matrices of one video."""
    def mat(spec):
        m = np.zeros((C, T), np.int64)
        for c, runs in (spec or {}).items():
            m[c] = _row(runs)
        return m
    so_a, so_v, gt_a, gt_v = mat(audio), mat(visual), mat(gt_audio), mat(gt_visual)
    return so_a, so_v, so_a * so_v, gt_a, gt_v, gt_a * gt_v


# --------------------------------------------------------------- loop oracle (per video)

def _oracle_runs(row):
    runs, pos = [], 0
    for value, group in itertools.groupby(row.tolist()):
        n = len(list(group))
        if value:
            runs.append(set(range(pos, pos + n)))
        pos += n
    return runs


def _oracle_counts(pred, gt, level):
    out = []
    for p, g in zip(pred, gt, strict=True):
        if level == "seg":
            out.append((int(np.sum(p & g)), int(np.sum(p & ~g)), int(np.sum(~p & g))))
            continue
        pr, gr = _oracle_runs(p), _oracle_runs(g)
        ok = lambda a, b: len(a & b) >= 0.5 * len(a | b)  # noqa: E731
        tp = sum(any(ok(a, b) for b in gr) for a in pr)
        fn = sum(not any(ok(b, a) for a in pr) for b in gr)
        out.append((tp, len(pr) - tp, fn))
    return np.array(out)  # [C, 3]


def _oracle_f(counts):
    fs = [2 * tp / (2 * tp + fp + fn) for tp, fp, fn in counts if tp + fp or tp + fn]
    return sum(fs) / len(fs) if fs else 1.0


def _oracle_video(mats, level):
    so_a, so_v, so_av, gt_a, gt_v, gt_av = (np.asarray(m).astype(bool) for m in mats)
    ca = _oracle_counts(so_a, gt_a, level)
    cv = _oracle_counts(so_v, gt_v, level)
    cav = _oracle_counts(so_av, gt_av, level)
    return _oracle_f(ca), _oracle_f(cv), _oracle_f(ca + cv), _oracle_f(cav)


# ------------------------------------------------------------------- hand-computed quirks

def test_predictions_threshold_inclusive_and_filtered_by_video_level():
    video = np.zeros(C)
    video[[0, 1]] = [0.5, 0.4999]  # class 0 passes (>= 0.5), class 1 is filtered out
    fa = np.zeros((T, C))
    fa[:3, 0] = 0.5
    fa[:3, 1] = 0.9
    fv = np.zeros((T, C))
    fv[2:5, 0] = 0.7
    so_a, so_v, so_av = avvp_predictions(video, fa, fv)
    assert so_a.shape == (C, T) and so_a.dtype == np.int64
    np.testing.assert_array_equal(so_a[0], _row([(0, 3)]))
    np.testing.assert_array_equal(so_a[1], np.zeros(T))
    np.testing.assert_array_equal(so_v[0], _row([(2, 5)]))
    np.testing.assert_array_equal(so_av[0], _row([(2, 3)]))
    assert so_a.sum() == 3 and so_v.sum() == 3 and so_av.sum() == 1


def test_ground_truth_merges_adjacent_and_overlapping_rows():
    audio = [("Speech", 0, 3), ("Speech", 3, 5), ("Dog", 2, 6), ("Dog", 4, 8),
             ("Cat", 9, 9), ("Car", "8", "12")]
    visual = [("Speech", 4, 10)]
    gt_a, gt_v, gt_av = avvp_ground_truth(audio, visual)
    np.testing.assert_array_equal(gt_a[0], _row([(0, 5)]))
    np.testing.assert_array_equal(gt_a[3], _row([(2, 8)]))
    np.testing.assert_array_equal(gt_a[4], np.zeros(T))  # zero-length row adds nothing
    np.testing.assert_array_equal(gt_a[1], _row([(8, 10)]))  # offset past 10 is cut
    np.testing.assert_array_equal(gt_av[0], _row([(4, 5)]))
    assert gt_v.sum() == 6 and gt_av.sum() == 1
    # Merged rows are one event: a prediction covering [0, 5) is one TP and no FN.
    pred = np.zeros((C, T), np.int64)
    pred[0] = _row([(0, 5)])
    zero = np.zeros((C, T), np.int64)
    gt_speech = np.zeros((C, T), np.int64)
    gt_speech[0] = gt_a[0]
    f_a = avvp_event_level(pred, zero, zero, gt_speech, zero, zero)[0]
    np.testing.assert_allclose(f_a, 1.0, atol=0)  # as two events it would be 2/3


def test_ground_truth_rejects_unknown_labels_and_negative_times():
    with pytest.raises(ValueError, match="unknown LLP class"):
        avvp_ground_truth([("Baby cry", 0, 1)], [])
    with pytest.raises(ValueError, match="negative"):
        avvp_ground_truth([], [("Speech", -1, 3)])


def test_no_class_present_scores_one():
    mats = _video()
    np.testing.assert_allclose(avvp_segment_level(*mats), (1.0, 1.0, 1.0, 1.0), atol=0)
    np.testing.assert_allclose(avvp_event_level(*mats), (1.0, 1.0, 1.0, 1.0), atol=0)
    # A visual prediction on a video without visual GT drops visual to 0.
    mats = _video(visual={4: [(0, 2)]})
    np.testing.assert_allclose(avvp_segment_level(*mats), (1.0, 0.0, 0.0, 1.0), atol=0)


def test_segment_level_hand_computed():
    # Audio: class 0 GT [0,5) pred [3,8): TP 2, FP 3, FN 3 -> F 0.4; class 1 FP only -> 0.
    # Visual: class 0 GT [0,10) pred [0,5): TP 5, FN 5 -> F 2/3.
    # Event@AV class 0: TP 7, FP 3, FN 8 -> 14/25; class 1: 0 -> mean 0.28.
    # AV: pred [3,5), GT [0,5): TP 2, FN 3 -> 4/7.
    mats = _video(audio={0: [(3, 8)], 1: [(0, 1)]}, visual={0: [(0, 5)]},
                  gt_audio={0: [(0, 5)]}, gt_visual={0: [(0, 10)]})
    np.testing.assert_allclose(avvp_segment_level(*mats), (0.2, 2 / 3, 0.28, 4 / 7), atol=1e-12)


def test_event_iou_half_is_inclusive():
    # GT [0,4); pred [0,2): |inter| 2 = 0.5 * |union| 4 -> TP.
    mats = _video(audio={0: [(0, 2)]}, gt_audio={0: [(0, 4)]})
    np.testing.assert_allclose(avvp_event_level(*mats)[0], 1.0, atol=0)
    # pred [0,3) vs GT [1,5): |inter| 2 < 0.5 * |union| 5 -> FP and FN.
    mats = _video(audio={0: [(0, 3)]}, gt_audio={0: [(1, 5)]})
    np.testing.assert_allclose(avvp_event_level(*mats)[0], 0.0, atol=0)


def test_event_level_hand_computed():
    # Audio class 2: GT runs [0,2), [5,9); pred runs [0,2), [4,6), [8,10):
    # [0,2) TP; [4,6) vs [5,9): 1 < 2.5 FP; [8,10) vs [5,9): 1 < 2.5 FP; GT [5,9) FN.
    # -> TP 1, FP 2, FN 1 -> F 2/5. Visual: nothing -> 1.0. Event@AV: same counts -> 0.4.
    mats = _video(audio={2: [(0, 2), (4, 6), (8, 10)]}, gt_audio={2: [(0, 2), (5, 9)]})
    np.testing.assert_allclose(avvp_event_level(*mats), (0.4, 1.0, 0.4, 1.0), atol=1e-12)
    # Segments: pred {0,1,4,5,8,9}, GT {0,1,5,6,7,8}: TP 4, FP 2, FN 2 -> 8/12.
    np.testing.assert_allclose(avvp_segment_level(*mats)[0], 8 / 12, atol=1e-12)


def test_single_video_functions_match_loop_oracle():
    rng = np.random.default_rng(0)
    for _ in range(40):
        density = rng.uniform(0.05, 0.6)
        so_a, so_v, gt_a, gt_v = (
            (rng.random((C, T)) < density) * (rng.random((C, 1)) < 0.3) for _ in range(4))
        mats = (so_a, so_v, so_a & so_v, gt_a, gt_v, gt_a & gt_v)
        for level, fn in (("seg", avvp_segment_level), ("event", avvp_event_level)):
            np.testing.assert_allclose(fn(*mats), _oracle_video(mats, level), atol=1e-12)


def test_other_segment_counts_match_loop_oracle():
    rng = np.random.default_rng(2)
    for t in (1, 3, 16):  # 16 segments take the path without the per-code table
        for _ in range(5):
            so_a, so_v, gt_a, gt_v = (rng.random((C, t)) < 0.5 for _ in range(4))
            mats = (so_a, so_v, so_a & so_v, gt_a, gt_v, gt_a & gt_v)
            np.testing.assert_allclose(avvp_event_level(*mats), _oracle_video(mats, "event"),
                                       atol=1e-12)


def test_dataset_scores_match_loop_oracle():
    rng = np.random.default_rng(1)
    videos, per_video = [], {"seg": [], "event": []}
    for i in range(60):
        so_a, so_v, gt_a, gt_v = (
            ((rng.random((C, T)) < 0.4) * (rng.random((C, 1)) < 0.15)).astype(np.int64)
            for _ in range(4))
        if i % 7 == 0:
            gt_v[:] = 0  # videos without visual events
        videos.append({"SO_a": so_a, "SO_v": so_v, "GT_a": gt_a, "GT_v": gt_v})
        mats = (so_a, so_v, so_a * so_v, gt_a, gt_v, gt_a * gt_v)
        for level in per_video:
            per_video[level].append(_oracle_video(mats, level))
    out = avvp_dataset_scores(videos)
    assert len(out) == 10 and all(isinstance(v, float) for v in out.values())
    for level, rows in per_video.items():
        f_a, f_v, f_ev, f_av = np.mean(np.array(rows), axis=0)
        np.testing.assert_allclose(
            [out[f"{level}_audio"], out[f"{level}_visual"], out[f"{level}_av"],
             out[f"{level}_type_avg"], out[f"{level}_event_avg"]],
            [f_a, f_v, f_av, (f_a + f_v + f_av) / 3, f_ev], atol=1e-12)


def test_dataset_scores_are_means_over_videos():
    v1 = dict(zip(("SO_a", "SO_v", "SO_av", "GT_a", "GT_v", "GT_av"), _video(), strict=True))
    v2 = dict(zip(("SO_a", "SO_v", "SO_av", "GT_a", "GT_v", "GT_av"),
                  _video(audio={0: [(0, 2)]}, gt_audio={0: [(0, 4)]}), strict=True))
    out = avvp_dataset_scores([v1, v2])
    # Video 1: all 1.0. Video 2 audio segment F = 2*2/(4+2) = 2/3, event F = 1; visual 1.0;
    # AV: no GT, no prediction -> 1.0; Event@AV = audio.
    np.testing.assert_allclose(out["seg_audio"], (1 + 2 / 3) / 2, atol=1e-12)
    np.testing.assert_allclose(out["seg_visual"], 1.0, atol=0)
    np.testing.assert_allclose(out["seg_type_avg"], (5 / 6 + 1 + 1) / 3, atol=1e-12)
    np.testing.assert_allclose(out["seg_event_avg"], 5 / 6, atol=1e-12)
    np.testing.assert_allclose(out["event_audio"], 1.0, atol=0)


def _fixture_ground_truth():
    def rows(name):
        with open(FIXTURES / "metrics" / name) as f:
            return list(csv.DictReader(f, delimiter="\t"))
    test_ids = [r["filename"] for r in rows("AVVP_test_pd.csv")]
    dense = {"audio": rows("AVVP_eval_audio.csv"), "visual": rows("AVVP_eval_visual.csv")}
    per_video = []
    for vid in test_ids:
        a, v = ([(r["event_labels"], r["onset"], r["offset"]) for r in dense[m]
                 if r["filename"] == vid] for m in ("audio", "visual"))
        per_video.append((vid, a, v))
    return per_video


def test_real_rows_perfect_and_empty_predictions():
    per_video = _fixture_ground_truth()
    assert len(per_video) == 30
    perfect, empty = [], []
    for _, a, v in per_video:
        gt_a, gt_v, _ = avvp_ground_truth(a, v)
        perfect.append({"SO_a": gt_a, "SO_v": gt_v, "GT_a": gt_a, "GT_v": gt_v})
        zero = np.zeros_like(gt_a)
        empty.append({"SO_a": zero, "SO_v": zero, "GT_a": gt_a, "GT_v": gt_v})
    for value in avvp_dataset_scores(perfect).values():
        np.testing.assert_allclose(value, 1.0, atol=1e-12)
    # Predicting nothing scores 1.0 exactly on videos without events of that kind, else 0.
    no_visual = np.mean([not any(int(e) > int(s) for _, s, e in v) for _, _, v in per_video])
    no_audio = np.mean([not any(int(e) > int(s) for _, s, e in a) for _, a, _ in per_video])
    assert 0 < no_visual < 1
    out = avvp_dataset_scores(empty)
    np.testing.assert_allclose(out["seg_visual"], no_visual, atol=1e-12)
    np.testing.assert_allclose(out["event_visual"], no_visual, atol=1e-12)
    np.testing.assert_allclose(out["seg_audio"], no_audio, atol=1e-12)


def test_bad_inputs_raise_clear_errors():
    mats = list(_video())
    with pytest.raises(ValueError, match="transpose"):
        avvp_segment_level(*(m.T for m in mats))
    mats[0] = mats[0] + 2
    with pytest.raises(ValueError, match="SO_a"):
        avvp_event_level(*mats)
    with pytest.raises(ValueError, match="keys"):
        avvp_dataset_scores([{"SO_a": np.zeros((C, T))}])
    with pytest.raises(ValueError, match="empty"):
        avvp_dataset_scores([])
    assert LLP_CLASSES[22] == "Baby_cry_infant_cry"
