"""MUSIC-AVQA: answer accuracy per question type, pooled (micro) counts.

docs/BENCHMARKS.md section 3.3. Follows MUSIC-AVQA `net_grd_avst/main_avst.py::test` (TSPM and
PSTP-Net `main_test.py` are identical).
"""

import json

import numpy as np

from av_unified_jax.metrics._checks import as_array

# (modality, question type) -> result key, in the order the official script prints them.
AVQA_TYPE_KEYS = {
    ("Audio", "Counting"): "audio_counting",
    ("Audio", "Comparative"): "audio_comparative",
    ("Visual", "Counting"): "visual_counting",
    ("Visual", "Location"): "visual_location",
    ("Audio-Visual", "Existential"): "av_existential",
    ("Audio-Visual", "Counting"): "av_counting",
    ("Audio-Visual", "Location"): "av_location",
    ("Audio-Visual", "Comparative"): "av_comparative",
    ("Audio-Visual", "Temporal"): "av_temporal",
}
AVQA_MODALITY_KEYS = {"Audio": "audio_avg", "Visual": "visual_avg", "Audio-Visual": "av_avg"}
AVQA_RESULT_KEYS = (
    "audio_counting", "audio_comparative", "audio_avg",
    "visual_counting", "visual_location", "visual_avg",
    "av_existential", "av_counting", "av_location", "av_comparative", "av_temporal", "av_avg",
    "overall",
)


def avqa_accuracy(types, predicted, target) -> dict:
    """Accuracies of the nine question types, the three modality averages and overall.

    A question is correct when `predicted == target` (answer indices; take the prediction as
    `np.argmax(logits, -1)`, first index on ties, like `torch.max`). Every number is pooled
    over its questions: the modality averages are correct/total over all their questions, not
    means of the type accuracies, and `overall` is correct/total over all questions.

    Args:
      types: length-N list of `(modality, qtype)` pairs such as `("Audio", "Counting")` or
        `("Audio-Visual", "Temporal")`; the JSON-encoded `type` string of the annotation files
        (`'["Audio", "Counting"]'`) is accepted too. Must align with `predicted` by position.
      predicted: int[N] predicted answer indices.
      target: int[N] ground-truth answer indices.

    Returns:
      dict with the keys of `AVQA_RESULT_KEYS`; values are Python floats in [0, 1], or None
      for a group with no questions (the official script would divide by zero).
    """
    predicted = as_array(predicted, "predicted", ndim=1)
    target = as_array(target, "target", shape=predicted.shape)
    for name, arr in (("predicted", predicted), ("target", target)):
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name}: expected integer answer indices, got dtype {arr.dtype}; "
                             "pass np.argmax(logits, -1)")
    pairs = [_parse_type(t) for t in types]
    if len(pairs) != predicted.shape[0]:
        raise ValueError(f"types has {len(pairs)} entries but predicted has "
                         f"{predicted.shape[0]}; they must align question by question")
    correct = predicted == target  # bool[N]
    group = np.array([AVQA_TYPE_KEYS[p] for p in pairs], dtype=object)
    modality = np.array([AVQA_MODALITY_KEYS[p[0]] for p in pairs], dtype=object)
    out = {}
    for key in AVQA_RESULT_KEYS:
        if key == "overall":
            mask = np.ones(correct.shape, bool)
        elif key in AVQA_MODALITY_KEYS.values():
            mask = modality == key
        else:
            mask = group == key
        n = int(mask.sum())
        out[key] = None if n == 0 else int(correct[mask].sum()) / n
    return out


def _parse_type(t):
    if isinstance(t, str):
        try:
            t = json.loads(t)
        except json.JSONDecodeError as e:
            raise ValueError(f"types: cannot parse {t!r} as a JSON list") from e
    try:
        pair = tuple(t)
    except TypeError as e:
        raise ValueError(f"types: expected a (modality, qtype) pair, got {t!r}") from e
    if pair not in AVQA_TYPE_KEYS:
        raise ValueError(f"types: unknown question type {pair!r}; known types are "
                         f"{sorted(AVQA_TYPE_KEYS)}")
    return pair
