"""VGG-SS and Flickr-SoundNet sound-source localisation: cIoU, cIoU@0.5 and AUC.

docs/BENCHMARKS.md section 4.3. Follows LVS (Localizing-Visual-Sounds-the-Hard-Way) `test.py` and
`utils.py` (`testset_gt`, `normalize_img`, `Evaluator.cal_CIOU`), and for the `"ezvsl"`
protocol EZ-VSL `test.py`. Maps are 224x224, as the official `cal_CIOU` hard-codes.
"""

import math

import numpy as np

from av_unified_jax.metrics._checks import as_float

MAP_SIZE = 224
_MEDIAN_INDEX = MAP_SIZE * MAP_SIZE // 2  # int(224 * 224 / 2) = 25088
# The official AUC grid: Python floats 0.05 * i, so 0.05 * 3 == 0.15000000000000002.
AUC_THRESHOLDS = tuple(0.05 * i for i in range(21))
PROTOCOLS = ("lvs", "ezvsl")


def vggss_gt_map(bboxes):
    """VGG-SS ground-truth map: the union of the annotated boxes (LVS `testset_gt`).

    Each coordinate becomes `int(224 * max(v, 0))` (Python truncation, no upper clip; a slice
    end past 224 is simply cut), then `gt[ymin:ymax, xmin:xmax] = 1`. The corrupt
    `-2.8823037615171176e+16` values of `vggss.json` therefore become 0, which empties the
    box when they sit in xmax or ymax; zero-area boxes add nothing.

    Args:
      bboxes: list of `[xmin, ymin, xmax, ymax]` boxes normalised to [0, 1] (the `bbox` field
        of `metadata/vggss.json`). May be empty.

    Returns:
      uint8[224, 224] map of 0/1.
    """
    gt = np.zeros((MAP_SIZE, MAP_SIZE), np.uint8)
    for box in _boxes(bboxes, "bboxes"):
        xmin, ymin, xmax, ymax = (int(MAP_SIZE * max(v, 0)) for v in box)
        gt[ymin:ymax, xmin:xmax] = 1
    return gt


def flickr_gt_map(boxes256):
    """Flickr-SoundNet consensus map (LVS `testset_gt`, flickr branch).

    Each coordinate becomes `int(224 * int(v) / 256)`; the box indicators are summed over all
    annotators' boxes, divided by 2 and clipped at 1, so a pixel inside one box weighs 0.5.

    Args:
      boxes256: list of `[xmin, ymin, xmax, ymax]` boxes in 256-px units (the XML `bbox`
        values), from every annotator. May be empty.

    Returns:
      float64[224, 224] map with values in {0, 0.5, 1}.
    """
    gt = np.zeros((MAP_SIZE, MAP_SIZE), np.float64)
    for box in _boxes(boxes256, "boxes256"):
        coords = [int(MAP_SIZE * int(v) / 256) for v in box]
        if min(coords) < 0:
            raise ValueError(f"boxes256: negative coordinate in {box!r}; Flickr boxes are "
                             "pixel positions in a 256x256 frame")
        xmin, ymin, xmax, ymax = coords
        gt[ymin:ymax, xmin:xmax] += 1
    gt /= 2
    gt[gt > 1] = 1
    return gt


def ciou(heatmap, gt, protocol="lvs") -> float:
    """cIoU of one sample after the protocol's median binarisation (`Evaluator.cal_CIOU`).

    `"lvs"`: `pred = 1 - normalize(-heatmap)` (min-max; a constant map is left as is, so
    pred = 1 + heatmap), `thr = sort(pred)[25088]`, `pred[pred > thr] = 1`,
    `pred[pred < 1] = 0`, then `pred >= 0.5`: strictly above the median, plus every pixel at
    1.0 or more. `"ezvsl"`: `pred = normalize(heatmap)`, `thr = sort(pred)[25088]`, then
    `pred >= thr`: ties at the median are included. The arithmetic keeps the heatmap's float
    dtype (the official heatmaps are float32).

    `cIoU = sum(infer * gt) / (sum(gt) + sum(infer * (gt == 0)))`: an empty GT gives 0, and an
    empty GT with an empty prediction gives NaN, as in the official code.

    Args:
      heatmap: float[224, 224] localisation map at full resolution (higher = sounding).
      gt: float or uint8[224, 224] map from `vggss_gt_map` or `flickr_gt_map`.
      protocol: "lvs" or "ezvsl".

    Returns:
      Python float in [0, 1], or NaN as described above.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
    heatmap = as_float(heatmap, "heatmap", shape=(MAP_SIZE, MAP_SIZE))
    gt = as_float(gt, "gt", shape=(MAP_SIZE, MAP_SIZE)).astype(np.float64)
    if not np.issubdtype(heatmap.dtype, np.floating):
        heatmap = heatmap.astype(np.float64)
    infer = _binarize_lvs(heatmap) if protocol == "lvs" else _binarize_ezvsl(heatmap)
    inter = np.sum(gt[infer])
    union = np.sum(gt) + np.sum(infer & (gt == 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.float64(inter) / np.float64(union))


def localization_summary(cious) -> dict:
    """Test-set numbers from per-sample cIoUs (LVS `test.py`; EZ-VSL prints the same).

    `ciou_at_0_5 = sum(cious >= 0.5) / N` (LVS "cIoU", EZ-VSL "AP50"); `auc` is
    `sklearn.metrics.auc(x, y)` with `x = [0.05 * i for i in range(21)]` and
    `y_i = sum(cious >= x_i) / N`, i.e. the trapezoid rule over those Python-float thresholds
    (0.05 * 3 is 0.15000000000000002, so a cIoU of exactly 0.15 is below the fourth one);
    `mean_ciou = mean(cious)` (EZ-VSL "Avg-cIoU"). A NaN cIoU counts as below every threshold
    and makes `mean_ciou` NaN, as in the official code.

    Args:
      cious: float[N] per-sample cIoUs from `ciou`.

    Returns:
      dict of Python floats: ciou_at_0_5, auc, mean_ciou.
    """
    c = np.asarray(cious, dtype=np.float64)
    if c.ndim != 1 or c.shape[0] == 0:
        raise ValueError(f"cious: expected a non-empty 1-D list of per-sample cIoUs, got shape "
                         f"{c.shape}")
    n = c.shape[0]
    y = np.array([np.sum(c >= t) / n for t in AUC_THRESHOLDS])  # float64[21]
    return {
        "ciou_at_0_5": float(np.sum(c >= 0.5) / n),
        "auc": float(np.trapezoid(y, np.array(AUC_THRESHOLDS))),
        "mean_ciou": float(np.mean(c)),
    }


def _normalize(value):
    """Min-max normalisation; a constant map is returned unchanged (`normalize_img`)."""
    vmin, vmax = value.min(), value.max()
    if vmax - vmin == 0:
        return value
    return (value - vmin) / (vmax - vmin)


def _binarize_lvs(heatmap):
    pred = 1 - _normalize(-heatmap)  # same float dtype as heatmap
    thr = np.partition(pred.ravel(), _MEDIAN_INDEX)[_MEDIAN_INDEX]  # == sort(pred)[25088]
    return (pred > thr) | (pred >= 1)  # bool[224, 224]


def _binarize_ezvsl(heatmap):
    pred = _normalize(heatmap)
    thr = np.partition(pred.ravel(), _MEDIAN_INDEX)[_MEDIAN_INDEX]
    return pred >= thr  # bool[224, 224]


def _boxes(boxes, name):
    out = []
    for box in boxes:
        try:
            vals = [float(v) for v in box]
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}: each box must be 4 numbers [xmin, ymin, xmax, ymax], "
                             f"got {box!r}") from e
        if len(vals) != 4:
            raise ValueError(f"{name}: each box must be 4 numbers [xmin, ymin, xmax, ymax], "
                             f"got {box!r}")
        if not all(math.isfinite(v) for v in vals):
            raise ValueError(f"{name}: non-finite coordinate in {box!r}")
        out.append(vals)
    return out
