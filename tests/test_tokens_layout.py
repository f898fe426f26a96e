"""Vocabulary layout: ranges, id helpers and their inverses, quantization, JSON save/load."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from av_unified_jax import tokens

LAYOUT = tokens.VocabLayout(tasks=tokens.TASKS, max_time=10, num_loc_bins=100,
                            num_mask_codes=512, text_vocab_size=300)


def test_ranges_are_contiguous_in_design_order_and_cover_the_vocab():
    ranges = LAYOUT.ranges
    assert tuple(ranges) == ("special", "task", "time", "loc", "code", "text")
    stops = [0] + [stop for _, stop in ranges.values()]
    starts = [start for start, _ in ranges.values()]
    assert starts == stops[:-1]
    sizes = {k: b - a for k, (a, b) in ranges.items()}
    assert sizes == {"special": 8, "task": 5, "time": 11, "loc": 100, "code": 512, "text": 300}
    assert LAYOUT.vocab_size == 8 + 5 + 11 + 100 + 512 + 300 == stops[-1]
    assert LAYOUT.loc_range == ranges["loc"] and LAYOUT.text_range == ranges["text"]


def test_special_ids_follow_the_design_table():
    got = [LAYOUT.PAD, LAYOUT.BOS, LAYOUT.EOS, LAYOUT.UNK, LAYOUT.SEP, LAYOUT.NONE,
           LAYOUT.AUDIO, LAYOUT.VISUAL]
    assert got == list(range(8))
    assert [LAYOUT.token_name(i) for i in got] == list(tokens.SPECIALS)
    assert LAYOUT.PAD == 0


def test_every_id_has_one_kind_and_its_inverse_round_trips():
    for token_id in range(LAYOUT.vocab_size):
        kind = LAYOUT.kind(token_id)
        if kind == "task":
            assert LAYOUT.task_token(LAYOUT.token_task(token_id)) == token_id
        elif kind == "time":
            assert LAYOUT.time_token(LAYOUT.token_time(token_id)) == token_id
        elif kind == "loc":
            assert LAYOUT.loc_token(LAYOUT.token_loc(token_id)) == token_id
        elif kind == "code":
            assert LAYOUT.code_token(LAYOUT.token_code(token_id)) == token_id
        elif kind == "text":
            assert LAYOUT.text_token(LAYOUT.token_text(token_id)) == token_id
        else:
            assert kind == "special" and token_id < 8
    kinds = LAYOUT.kinds(np.arange(-1, LAYOUT.vocab_size + 1))
    assert kinds[0] == -1 and kinds[-1] == -1
    assert [tokens.RANGE_NAMES[k] for k in kinds[1:-1]] == [
        LAYOUT.kind(i) for i in range(LAYOUT.vocab_size)]


def test_named_tokens():
    assert LAYOUT.token_name(LAYOUT.task_token("avqa")) == "<avqa>"
    assert LAYOUT.token_name(LAYOUT.time_token(10)) == "<t_10>"
    assert LAYOUT.token_name(LAYOUT.loc_token(99)) == "<loc_99>"
    assert LAYOUT.token_name(LAYOUT.code_token(0)) == "<code_0>"
    assert [LAYOUT.task_token(t) for t in tokens.TASKS] == list(range(8, 13))


def test_array_helpers_match_scalar_helpers():
    ks = np.array([[0, 5], [511, 7]])
    ids = LAYOUT.code_token(ks)
    assert ids.shape == (2, 2)
    np.testing.assert_array_equal(ids, [[LAYOUT.code_token(int(k)) for k in row] for row in ks])
    np.testing.assert_array_equal(LAYOUT.token_code(ids), ks)


@pytest.mark.parametrize("call, match", [
    (lambda: LAYOUT.time_token(11), r"time index \[?11"),
    (lambda: LAYOUT.loc_token(-1), "loc index"),
    (lambda: LAYOUT.code_token(512), "code index"),
    (lambda: LAYOUT.text_token(300), "text index"),
    (lambda: LAYOUT.task_token("asr"), "unknown task 'asr'"),
    (lambda: LAYOUT.token_time(LAYOUT.loc_token(0)), "not time tokens"),
    (lambda: LAYOUT.kind(LAYOUT.vocab_size), "outside the vocabulary"),
])
def test_out_of_range_ids_raise_naming_the_range(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_float_index_is_a_type_error():
    with pytest.raises(TypeError, match="integer"):
        LAYOUT.time_token(2.0)


def test_json_round_trip_and_tamper_detection():
    restored = tokens.VocabLayout.from_json(LAYOUT.to_json())
    assert restored == LAYOUT
    assert restored.ranges == LAYOUT.ranges and restored.vocab_size == LAYOUT.vocab_size
    data = json.loads(LAYOUT.to_json())
    assert data["vocab_size"] == LAYOUT.vocab_size
    data["num_loc_bins"] = 50  # ranges no longer match the fields
    with pytest.raises(ValueError, match="disagree"):
        tokens.VocabLayout.from_dict(data)
    with pytest.raises(ValueError, match="not a vocabulary layout"):
        tokens.VocabLayout.from_json('{"tasks": ["ave"]}')


def test_bad_layout_arguments_raise():
    with pytest.raises(ValueError, match="distinct"):
        tokens.VocabLayout(tasks=("ave", "ave"))
    with pytest.raises(ValueError, match="num_loc_bins"):
        tokens.VocabLayout(num_loc_bins=1)


def test_quantization_endpoints_and_half_up_rounding():
    assert tokens.quantize_coord(0.0, 100) == 0
    assert tokens.quantize_coord(1.0, 100) == 99
    assert tokens.quantize_coord(0.5, 100) == 50  # 49.5 rounds up
    assert tokens.quantize_coord(0.5, 101) == 50
    np.testing.assert_array_equal(tokens.quantize_coord([0.0, 0.25, 1.0], 5), [0, 1, 4])
    assert tokens.dequantize_loc(99, 100) == 1.0
    assert LAYOUT.token_coord(LAYOUT.coord_token(1.0)) == 1.0


@pytest.mark.parametrize("bad", [-2.8823037615171176e16, 1.0000001, float("nan"), -0.01])
def test_quantization_rejects_values_outside_the_unit_interval(bad):
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        tokens.quantize_coord(bad, 100)


@settings(max_examples=200, deadline=None)
@given(c=st.floats(0.0, 1.0), bins=st.integers(2, 1000))
def test_dequantize_of_quantize_is_within_half_a_bin(c, bins):
    b = tokens.quantize_coord(c, bins)
    assert 0 <= b < bins
    np.testing.assert_allclose(tokens.dequantize_loc(b, bins), c, atol=0.5 / (bins - 1) + 1e-12)
    assert tokens.quantize_coord(tokens.dequantize_loc(b, bins), bins) == b
