"""MUSIC-AVQA accuracy: pooled counts per type and per modality, on the real type strings."""

import json

import numpy as np
import pytest
from conftest import FIXTURES

from av_unified_jax.metrics import AVQA_RESULT_KEYS, avqa_accuracy


def _fixture_types():
    with open(FIXTURES / "metrics" / "avqa-test.json") as f:
        return [q["type"] for q in json.load(f)]  # JSON-encoded strings, as in the files


def test_fixture_has_four_questions_per_type():
    types = [tuple(json.loads(t)) for t in _fixture_types()]
    assert len(types) == 36 and all(types.count(t) == 4 for t in set(types))


def test_pooled_accuracies_on_real_types():
    types = _fixture_types()
    pairs = [tuple(json.loads(t)) for t in types]
    target = np.arange(len(types)) % 5
    predicted = target.copy()
    # Make wrong: all Audio/Comparative, 1 of 4 Visual/Location, 3 of 4 AV/Temporal.
    wrong_budget = {("Audio", "Comparative"): 4, ("Visual", "Location"): 1,
                    ("Audio-Visual", "Temporal"): 3}
    for i, p in enumerate(pairs):
        if wrong_budget.get(p, 0) > 0:
            predicted[i] = target[i] + 1
            wrong_budget[p] -= 1
    out = avqa_accuracy(types, predicted, target)
    assert tuple(out) == AVQA_RESULT_KEYS
    expected = {
        "audio_counting": 1.0, "audio_comparative": 0.0, "audio_avg": 4 / 8,
        "visual_counting": 1.0, "visual_location": 3 / 4, "visual_avg": 7 / 8,
        "av_existential": 1.0, "av_counting": 1.0, "av_location": 1.0, "av_comparative": 1.0,
        "av_temporal": 1 / 4, "av_avg": 17 / 20, "overall": 28 / 36,
    }
    for key, value in expected.items():
        np.testing.assert_allclose(out[key], value, rtol=0, atol=1e-12, err_msg=key)


def test_modality_average_is_pooled_not_mean_of_types():
    types = [("Audio", "Counting")] * 3 + [("Audio", "Comparative")]
    out = avqa_accuracy(types, np.array([1, 1, 1, 0]), np.array([1, 1, 1, 2]))
    np.testing.assert_allclose(out["audio_avg"], 3 / 4, atol=1e-12)  # mean of types: 0.5
    np.testing.assert_allclose(out["audio_counting"], 1.0, atol=0)
    np.testing.assert_allclose(out["audio_comparative"], 0.0, atol=0)


def test_group_without_questions_gives_none():
    out = avqa_accuracy([("Visual", "Location"), ("Visual", "Location")], [3, 4], [3, 3])
    np.testing.assert_allclose(out["visual_location"], 0.5, atol=0)
    np.testing.assert_allclose(out["visual_avg"], 0.5, atol=0)
    np.testing.assert_allclose(out["overall"], 0.5, atol=0)
    assert out["audio_counting"] is None and out["audio_avg"] is None
    assert out["av_temporal"] is None and out["av_avg"] is None
    assert all(isinstance(v, float) for k, v in out.items() if v is not None)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown question type"):
        avqa_accuracy([("Audio", "Location")], [1], [1])
    with pytest.raises(ValueError, match="align"):
        avqa_accuracy([("Audio", "Counting")] * 2, [1], [1])
    with pytest.raises(ValueError, match="integer"):
        avqa_accuracy([("Audio", "Counting")], [0.7], [1])
    with pytest.raises(ValueError, match="predicted"):
        avqa_accuracy([("Audio", "Counting")], np.zeros((1, 42), np.int64), [1])
