"""VGG-SS / Flickr localisation: GT maps, the two binarisations, cIoU and the AUC grid."""

import json

import numpy as np
import pytest
from conftest import FIXTURES

from av_unified_jax.metrics import (
    AUC_THRESHOLDS,
    ciou,
    flickr_gt_map,
    localization_summary,
    vggss_gt_map,
)

S = 224


def _entries():
    with open(FIXTURES / "metrics" / "vggss.json") as f:
        return {e["file"]: e["bbox"] for e in json.load(f)}


def _box_map(x0, y0, x1, y1, value=1.0):
    m = np.zeros((S, S))
    m[y0:y1, x0:x1] = value
    return m


# ------------------------------------------------------------------------------ GT maps

def test_gt_map_truncates_each_coordinate():
    gt = vggss_gt_map([[0.1, 0.2, 0.5, 0.75]])  # 22.4, 44.8, 112.0, 168.0 -> 22, 44, 112, 168
    assert gt.dtype == np.uint8 and gt.shape == (S, S)
    np.testing.assert_array_equal(gt, _box_map(22, 44, 112, 168))
    # The first real entry: 0.403125 * 224 = 90.3 -> 90 and 0.253125 * 224 = 56.7 -> 56.
    first = vggss_gt_map(_entries()["zpWuikVorYg_000032"])
    np.testing.assert_array_equal(first, _box_map(90, 56, 134, 168))


def test_gt_map_is_a_union_of_boxes():
    gt = vggss_gt_map([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]])
    assert gt.max() == 1 and int(gt.sum()) == 2 * 112 * 112 - 56 * 56


def test_corrupt_coordinates_become_zero():
    boxes = _entries()
    # ymax is -2.88e16: the first box is empty; only the second one counts.
    gt = vggss_gt_map(boxes["Db6Hjt0x28k_000056"])
    assert boxes["Db6Hjt0x28k_000056"][0][3] == -2.8823037615171176e16
    np.testing.assert_array_equal(gt, _box_map(11, 79, 168, 219))
    # xmax is -2.88e16: again only the second box.
    gt = vggss_gt_map(boxes["5VCZHHd4UKI_000098"])
    np.testing.assert_array_equal(gt, _box_map(116, 70, 178, 193))
    # A corrupt xmin starts the box at the left edge.
    np.testing.assert_array_equal(vggss_gt_map([[-2.88e16, 0.0, 0.5, 0.5]]),
                                  _box_map(0, 0, 112, 112))


def test_zero_area_box_adds_nothing():
    boxes = _entries()["UyCw7pCgYg8_000055"]
    assert boxes[2] == [0.00625, 0.015625, 0.00625, 0.015625]
    np.testing.assert_array_equal(vggss_gt_map(boxes), vggss_gt_map(boxes[:2]))
    assert vggss_gt_map([]).sum() == 0


def test_every_fixture_entry_gives_a_binary_map():
    for name, boxes in _entries().items():
        gt = vggss_gt_map(boxes)
        assert set(np.unique(gt)) <= {0, 1}, name


def test_flickr_consensus_map():
    one = flickr_gt_map([[0, 0, 128, 128]])  # 224 * 128 / 256 = 112
    np.testing.assert_array_equal(one, _box_map(0, 0, 112, 112, 0.5))
    two = flickr_gt_map([[0, 0, 128, 128], [0, 0, 100, 100]])  # 87.5 -> 87
    expected = _box_map(0, 0, 112, 112, 0.5) + _box_map(0, 0, 87, 87, 0.5)
    np.testing.assert_array_equal(two, expected)
    three = flickr_gt_map([[0, 0, 128, 128]] * 3)  # 1.5 clipped at 1
    np.testing.assert_array_equal(three, _box_map(0, 0, 112, 112, 1.0))


def test_box_errors():
    with pytest.raises(ValueError, match="4 numbers"):
        vggss_gt_map([[0.1, 0.2, 0.3]])
    with pytest.raises(ValueError, match="non-finite"):
        vggss_gt_map([[0.1, float("nan"), 0.3, 0.4]])


# ------------------------------------------------------------------------ cIoU per sample

def _three_level_heatmap():
    """10,000 pixels at 2, 30,000 at 1, 10,176 at 0: the median (index 25088) is a 1."""
    flat = np.zeros(S * S, np.float32)
    flat[:10000] = 2.0
    flat[10000:40000] = 1.0
    return flat.reshape(S, S)


def test_lvs_strict_versus_ezvsl_inclusive_median():
    heat = _three_level_heatmap()
    gt = (heat == 2.0).astype(np.uint8)
    np.testing.assert_allclose(ciou(heat, gt, "lvs"), 1.0, atol=0)
    np.testing.assert_allclose(ciou(heat, gt, "ezvsl"), 10000 / 40000, atol=1e-12)


def test_flickr_weights_enter_the_union():
    gt = flickr_gt_map([[0, 0, 128, 128]])  # 0.5 on 112 x 112
    heat = _box_map(0, 0, 112, 168).astype(np.float32)  # covers the box plus 56 x 112 outside
    expected = 0.5 * 112 * 112 / (0.5 * 112 * 112 + 56 * 112)
    np.testing.assert_allclose(ciou(heat, gt, "lvs"), expected, atol=1e-12)


def test_constant_heatmaps():
    gt = vggss_gt_map([[0.0, 0.0, 0.5, 0.5]])
    # LVS: normalize is a no-op, pred = 1 + c; pred < 1 is zeroed, so any c < 0 selects
    # nothing and c >= 0 selects everything.
    np.testing.assert_allclose(ciou(np.zeros((S, S), np.float32), gt), 12544 / (S * S), atol=1e-12)
    np.testing.assert_allclose(ciou(np.full((S, S), 0.3, np.float32), gt), 12544 / (S * S),
                               atol=1e-12)
    np.testing.assert_allclose(ciou(np.full((S, S), -0.2, np.float32), gt), 0.0, atol=0)
    assert np.isnan(ciou(np.full((S, S), -0.2, np.float32), np.zeros((S, S))))
    # EZ-VSL: every pixel ties with the median.
    np.testing.assert_allclose(ciou(np.full((S, S), -0.2, np.float32), gt, "ezvsl"),
                               12544 / (S * S), atol=1e-12)


def test_empty_gt_gives_zero():
    np.testing.assert_allclose(ciou(_three_level_heatmap(), np.zeros((S, S))), 0.0, atol=0)


def _official_steps(heatmap, gt, protocol):
    """Step-by-step transcription of the two official test loops, for comparison."""
    def normalize(v):
        lo, hi = v.min(), v.max()
        return v if hi - lo == 0 else (v - lo) / (hi - lo)
    if protocol == "lvs":
        pred = 1 - normalize(-heatmap.copy())
        thr = np.sort(pred.flatten())[int(S * S / 2)]
        pred[pred > thr] = 1
        pred[pred < 1] = 0
        thres = 0.5
    else:
        pred = normalize(heatmap.copy())
        thres = np.sort(pred.flatten())[int(S * S / 2)]
    infer = np.zeros((S, S))
    infer[pred >= thres] = 1
    return np.sum(infer * gt) / (np.sum(gt) + np.sum(infer * (gt == 0)))


@pytest.mark.parametrize("protocol", ["lvs", "ezvsl"])
def test_matches_official_steps_on_random_heatmaps(protocol):
    rng = np.random.default_rng(3)
    boxes = list(_entries().values())
    for i in range(12):
        heat = rng.normal(size=(S, S)).astype(np.float32)
        if i % 3 == 0:
            heat = np.round(heat * 2) / 2  # many ties, as after a ReLU or coarse upsampling
        gt = vggss_gt_map(boxes[i])
        np.testing.assert_allclose(ciou(heat, gt, protocol), _official_steps(heat, gt, protocol),
                                   atol=1e-12)


def test_ciou_errors():
    with pytest.raises(ValueError, match="protocol"):
        ciou(np.zeros((S, S)), np.zeros((S, S)), "median")
    with pytest.raises(ValueError, match="heatmap"):
        ciou(np.zeros((7, 7)), np.zeros((S, S)))


# ------------------------------------------------------------------------ summary numbers

def test_auc_thresholds_are_inexact_floats():
    assert AUC_THRESHOLDS[3] == 0.15000000000000002 and AUC_THRESHOLDS[10] == 0.5


def test_ciou_of_exactly_0_15_misses_the_fourth_threshold():
    gt = np.zeros((S, S), np.uint8)
    gt[0, :20] = 1
    heat = np.zeros((S, S), np.float32)
    heat[0, :3] = 1.0  # 3 of the 20 GT pixels, nothing outside: cIoU = 3 / 20
    value = ciou(heat, gt)
    assert value == 0.15
    out = localization_summary([value])
    # y = [1, 1, 1, 0, ...]: 0.05 + 0.025; with an exact 0.15 threshold it would be 0.175.
    np.testing.assert_allclose(out["auc"], 0.125, rtol=1e-12)
    np.testing.assert_allclose(out["ciou_at_0_5"], 0.0, atol=0)
    np.testing.assert_allclose(out["mean_ciou"], 0.15, atol=0)


def test_summary_hand_computed():
    out = localization_summary([0.5, 0.0])
    # cIoU >= 0.5 is inclusive; y = [1, 0.5 x 10, 0 x 10] -> 0.0375 + 0.225 + 0.0125.
    np.testing.assert_allclose(out["ciou_at_0_5"], 0.5, atol=0)
    np.testing.assert_allclose(out["auc"], 0.275, rtol=1e-12)
    np.testing.assert_allclose(out["mean_ciou"], 0.25, atol=0)
    np.testing.assert_allclose(localization_summary([1.0, 1.0])["auc"], 1.0, rtol=1e-12)


def test_summary_with_nan_ciou():
    out = localization_summary([float("nan"), 1.0])
    np.testing.assert_allclose(out["ciou_at_0_5"], 0.5, atol=0)
    np.testing.assert_allclose(out["auc"], 0.5, rtol=1e-12)
    assert np.isnan(out["mean_ciou"])
    with pytest.raises(ValueError, match="cious"):
        localization_summary([])


def test_auc_equals_sklearn_auc():
    metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn not installed")
    rng = np.random.default_rng(5)
    cious = rng.random(97)
    x = [0.05 * i for i in range(21)]
    y = [np.sum(cious >= t) / len(cious) for t in x]
    np.testing.assert_allclose(localization_summary(cious)["auc"], metrics.auc(x, y), rtol=1e-15)
