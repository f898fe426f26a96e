"""Official evaluation metrics of the five benchmarks, as pure numpy functions.

Each function reproduces its benchmark's official evaluation code, quirks included
(docs/BENCHMARKS.md sections 1.3, 2.3, 3.3, 4.3 and 5.2). Values are fractions in [0, 1]; papers
print them multiplied by 100.
"""

from av_unified_jax.metrics.ave import ave_accuracy, ave_accuracy_gated
from av_unified_jax.metrics.avqa import AVQA_RESULT_KEYS, AVQA_TYPE_KEYS, avqa_accuracy
from av_unified_jax.metrics.avs import (
    avs_frame_f_curves,
    avs_frame_iou,
    avs_fscore,
    avs_miou,
    avs_test_scores,
)
from av_unified_jax.metrics.avvp import (
    avvp_dataset_scores,
    avvp_event_level,
    avvp_ground_truth,
    avvp_predictions,
    avvp_segment_level,
)
from av_unified_jax.metrics.labels import (
    AVE_BACKGROUND_INDEX,
    AVE_CLASSES,
    LLP_CLASSES,
    LLP_NUM_SEGMENTS,
)
from av_unified_jax.metrics.vggss import (
    AUC_THRESHOLDS,
    ciou,
    flickr_gt_map,
    localization_summary,
    vggss_gt_map,
)

__all__ = [
    "AUC_THRESHOLDS",
    "AVE_BACKGROUND_INDEX",
    "AVE_CLASSES",
    "AVQA_RESULT_KEYS",
    "AVQA_TYPE_KEYS",
    "LLP_CLASSES",
    "LLP_NUM_SEGMENTS",
    "ave_accuracy",
    "ave_accuracy_gated",
    "avqa_accuracy",
    "avs_frame_f_curves",
    "avs_frame_iou",
    "avs_fscore",
    "avs_miou",
    "avs_test_scores",
    "avvp_dataset_scores",
    "avvp_event_level",
    "avvp_ground_truth",
    "avvp_predictions",
    "avvp_segment_level",
    "ciou",
    "flickr_gt_map",
    "localization_summary",
    "vggss_gt_map",
]
