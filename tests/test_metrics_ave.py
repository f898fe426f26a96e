"""AVE segment accuracy: hand-computed cases for each official quirk."""

import numpy as np
import pytest

from av_unified_jax.metrics import (
    AVE_BACKGROUND_INDEX,
    AVE_CLASSES,
    ave_accuracy,
    ave_accuracy_gated,
)


def _one_hot(classes):
    """int[N, T] class ids -> float32[N, T, 29] one-hot labels."""
    classes = np.asarray(classes)
    return np.eye(29, dtype=np.float32)[classes]


def test_class_list_and_background():
    assert len(AVE_CLASSES) == 28 and AVE_BACKGROUND_INDEX == 28
    assert AVE_CLASSES[0] == "Church bell" and AVE_CLASSES[27] == "Mandolin"
    assert AVE_CLASSES[10] == "Frying (food)"


def test_accuracy_is_global_over_segments():
    # Video 0: 10/10 right; video 1: 5/10 right -> 15 of the 20 segments.
    labels = _one_hot([[3] * 10, [28] * 5 + [7] * 5])
    scores = labels.copy()
    scores[1, 5:] = _one_hot([[28] * 5])[0]  # predicts background where an event is
    np.testing.assert_allclose(ave_accuracy(scores, labels), 15 / 20, rtol=0, atol=1e-12)


def test_argmax_ties_take_the_first_index():
    labels = _one_hot([[5] * 10])
    scores = np.zeros((1, 10, 29), np.float32)
    scores[0, :, 5] = 1.0
    scores[0, :4, 2] = 1.0  # ties with class 5 on 4 segments: argmax picks 2 there
    np.testing.assert_allclose(ave_accuracy(scores, labels), 6 / 10, rtol=0, atol=1e-12)
    # An all-equal score row predicts class 0, not background.
    flat = np.zeros((1, 10, 29), np.float32)
    np.testing.assert_allclose(ave_accuracy(flat, _one_hot([[0] * 10])), 1.0, atol=0)
    np.testing.assert_allclose(ave_accuracy(flat, _one_hot([[28] * 10])), 0.0, atol=0)


def test_background_competes_in_29_way_argmax():
    labels = _one_hot([[28] * 3 + [1] * 7])
    scores = np.full((1, 10, 29), -1.0)
    scores[0, :, 1] = 0.5
    scores[0, :3, 28] = 0.9  # background wins on the first three segments
    np.testing.assert_allclose(ave_accuracy(scores, labels), 1.0, atol=0)


def test_gate_is_strict_sigmoid_above_half():
    labels = _one_hot([[28, 4, 4, 28]])  # [1, 4, 29]
    event_logits = np.zeros((1, 28), np.float32)
    event_logits[0, 4] = 3.0
    # Logit 0 -> sigmoid 0.5 exactly -> background (strict >).
    gate = np.array([[0.0, 2.0, 0.01, -1.0]], np.float32)
    np.testing.assert_allclose(ave_accuracy_gated(gate, event_logits, labels), 1.0, atol=0)
    # With the gate at exactly 0 on an event segment, that segment is wrong.
    gate2 = np.array([[-1.0, 0.0, 1.0, -1.0]], np.float32)
    np.testing.assert_allclose(ave_accuracy_gated(gate2, event_logits, labels), 3 / 4, atol=0)
    # A logit so small that float32 sigmoid rounds to 0.5 is background too.
    gate3 = np.array([[-1.0, 1e-9, 1.0, -1.0]], np.float32)
    np.testing.assert_allclose(ave_accuracy_gated(gate3, event_logits, labels), 3 / 4, atol=0)


def test_gated_uses_one_class_per_video_first_index():
    # Two event classes in one video cannot both be right under the gated scheme.
    labels = _one_hot([[2, 2, 9, 9], [28, 6, 6, 28]])
    gate = np.array([[5.0, 5.0, 5.0, 5.0], [-5.0, 5.0, 5.0, -5.0]])
    event_logits = np.zeros((2, 28))
    event_logits[0, [2, 9]] = 1.0  # tie: first index (2) wins
    event_logits[1, 6] = 1.0
    np.testing.assert_allclose(ave_accuracy_gated(gate, event_logits, labels), 6 / 8, atol=0)


@pytest.mark.parametrize("bad", [np.zeros((2, 10, 28)), np.zeros((2, 29))])
def test_shape_errors_name_the_argument(bad):
    with pytest.raises(ValueError, match="scores"):
        ave_accuracy(bad, np.zeros((2, 10, 29)))


def test_gated_shape_errors():
    with pytest.raises(ValueError, match="event_logits"):
        ave_accuracy_gated(np.zeros((2, 10)), np.zeros((2, 29)), np.zeros((2, 10, 29)))
    with pytest.raises(ValueError, match="labels"):
        ave_accuracy_gated(np.zeros((2, 10)), np.zeros((2, 28)), np.zeros((3, 10, 29)))
