"""Target and prompt codecs of every task: real annotations, round trips (property-based),
grammar acceptance, and rejection of malformed sequences with a clear error."""

import collections
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from av_unified_jax import tokens

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOK = tokens.Tokenizer.build(tokens.OFFICIAL_LABEL_SETS, extra_text=["Is there a voiceover?"])
LAY = TOK.layout
SETTINGS = settings(max_examples=60, deadline=None)


def accepts(name, seq):
    return tokens.walk(TOK.grammar("avvp" if name == "avvp_weak" else name,
                                   weak=name == "avvp_weak"), seq)


def round_trip(task, ann, weak=False):
    seq = TOK.encode_target(task, ann, weak=weak)
    assert seq.dtype == np.int32 and seq.ndim == 1 and seq[-1] == LAY.EOS
    assert accepts("avvp_weak" if weak else task, seq)
    assert len(seq) <= TOK.grammar(task, weak=weak).max_len
    return TOK.decode_target(task, seq, weak=weak)


# ----------------------------------------------------------------- real annotations
def read_tsv(name):
    with open(FIXTURES / "llp" / name) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_every_ave_annotation_row_round_trips():
    rows = [line.split("&") for line in
            (FIXTURES / "ave" / "Annotations.txt").read_text().splitlines() if line]
    assert len(rows) == 57
    for label, _vid, _quality, start, end in rows:
        ann = {"label": label, "start": int(start), "end": int(end)}
        assert round_trip("ave", ann) == ann
    zero = {"label": "Church bell", "start": 0, "end": 0}  # the zero-length row
    assert TOK.render(TOK.encode_target("ave", zero)) == "'Church' ' bell' <t_0> <t_0> <eos>"
    np.testing.assert_array_equal(
        tokens.ave_segment_labels(zero, tokens.AVE_CLASSES), np.full(10, 28))


def test_ave_no_event_and_segment_labels():
    assert TOK.encode_target("ave", {"label": None}).tolist() == [LAY.NONE, LAY.EOS]
    assert round_trip("ave", {"label": None}) == {"label": None, "start": 0, "end": 0}
    seg = tokens.ave_segment_labels({"label": "Bark", "start": 2, "end": 5}, tokens.AVE_CLASSES)
    np.testing.assert_array_equal(seg, [28, 28, 2, 2, 2, 28, 28, 28, 28, 28])
    assert seg.dtype == np.int32


def test_every_llp_weak_label_list_round_trips():
    n = 0
    for name in ("AVVP_train.csv", "AVVP_val_pd.csv", "AVVP_test_pd.csv"):
        for row in read_tsv(name):
            labels = row["event_labels"].split(",")
            order = sorted(labels, key=tokens.LLP_CLASSES.index)
            assert round_trip("avvp", labels, weak=True) == order
            n += 1
    assert n == 90


def test_every_llp_dense_parse_round_trips():
    videos = collections.defaultdict(list)
    for modality in ("audio", "visual"):
        for row in read_tsv(f"AVVP_eval_{modality}.csv"):
            videos[row["filename"]].append(
                (modality, row["event_labels"], int(row["onset"]), int(row["offset"])))
    assert max(len(v) for v in videos.values()) <= TOK.max_avvp_groups
    assert any(s == e for rows in videos.values() for _, _, s, e in rows)  # zero-length row
    for rows in videos.values():
        decoded = round_trip("avvp", rows)
        assert decoded == tokens.canonical_avvp(rows, tokens.LLP_CLASSES)
        assert sorted(decoded) == sorted(rows)


def test_every_music_avqa_answer_round_trips():
    rows = []
    for split in ("val", "test"):
        rows += json.loads((FIXTURES / "music_avqa" / f"avqa-{split}.json").read_text())
    for row in rows:
        assert round_trip("avqa", row["anser"]) == row["anser"]
        question = tokens.fill_avqa_template(row["question_content"], row["templ_values"])
        prompt = TOK.encode_prompt("avqa", question=question)
        assert prompt[0] == LAY.task_token("avqa")
        assert TOK.text.decode(LAY.token_text(prompt[1:])) == question
    for answer in tokens.MUSIC_AVQA_ANSWERS:
        assert round_trip("avqa", answer) == answer


def test_vggss_boxes_round_trip_and_corrupt_boxes_raise():
    entries = json.loads((FIXTURES / "vggss" / "vggss.json").read_text())
    good = bad = 0
    for entry in entries:
        for box in entry["bbox"]:
            if min(box) < 0 or max(box) > 1:
                with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
                    TOK.encode_target("ssl", box)
                bad += 1
                continue
            np.testing.assert_allclose(round_trip("ssl", box), box, atol=0.5 / 99 + 1e-12)
            good += 1
    assert good > 30 and bad > 0
    zero_area = [0.26875, 1.0, 0.753125, 1.0]
    np.testing.assert_allclose(round_trip("ssl", zero_area), zero_area, atol=0.5 / 99)


# ------------------------------------------------------------------ properties
times = st.integers(0, 10)
spans = st.tuples(times, times).map(sorted)
ave_anns = st.one_of(
    st.just({"label": None, "start": 0, "end": 0}),
    st.builds(lambda lab, sp: {"label": lab, "start": sp[0], "end": sp[1]},
              st.sampled_from(tokens.AVE_CLASSES), spans))
dense_rows = st.builds(lambda m, c, sp: (m, c, sp[0], sp[1]), st.sampled_from(tokens.MODALITIES),
                       st.sampled_from(tokens.LLP_CLASSES), spans)
boxes = st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)).map(
    lambda b: (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])))
grids = st.lists(st.integers(0, 511), min_size=64, max_size=64).map(
    lambda v: np.array(v, dtype=np.int64).reshape(8, 8))


@SETTINGS
@given(ann=ave_anns)
def test_ave_round_trip(ann):
    assert round_trip("ave", ann) == ann


@SETTINGS
@given(rows=st.lists(dense_rows, max_size=16))
def test_avvp_dense_round_trip(rows):
    assert round_trip("avvp", rows) == tokens.canonical_avvp(rows, tokens.LLP_CLASSES)


@SETTINGS
@given(classes=st.lists(st.sampled_from(tokens.LLP_CLASSES), max_size=30))
def test_avvp_weak_round_trip(classes):
    assert round_trip("avvp", classes, weak=True) == sorted(set(classes),
                                                            key=tokens.LLP_CLASSES.index)


@SETTINGS
@given(box=boxes)
def test_ssl_round_trip(box):
    decoded = round_trip("ssl", box)
    np.testing.assert_allclose(decoded, box, atol=0.5 / 99 + 1e-12)
    np.testing.assert_array_equal(TOK.encode_target("ssl", decoded), TOK.encode_target("ssl", box))


@SETTINGS
@given(codes=grids)
def test_avs_round_trip(codes):
    decoded = round_trip("avs", codes)
    assert decoded.dtype == np.int32 and decoded.shape == (8, 8)
    np.testing.assert_array_equal(decoded, codes)


def valid_targets():
    """A few valid targets per format (used for mutations below)."""
    return {
        "ave": [TOK.encode_target("ave", {"label": "Rodents, rats, mice", "start": 3, "end": 9}),
                TOK.encode_target("ave", {"label": None})],
        "avvp": [TOK.encode_target("avvp", [("audio", "Frying_(food)", 0, 4),
                                            ("visual", "Dog", 2, 2)]),
                 TOK.encode_target("avvp", [])],
        "avvp_weak": [TOK.encode_target("avvp", ["Speech", "Dog", "Clapping"], weak=True)],
        "avqa": [TOK.encode_target("avqa", "more_than_ten")],
        "ssl": [TOK.encode_target("ssl", (0.1, 0.2, 0.3, 0.4))],
        "avs": [TOK.encode_target("avs", np.arange(64).reshape(8, 8))],
    }


VALID = valid_targets()
CASES = [(name, k) for name, seqs in VALID.items() for k in range(len(seqs))]
interesting = st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 13, 18, 23, 24, 123, 124, 635, 636,
                               LAY.vocab_size - 1])


def decode_or_raise(name, seq):
    task, weak = ("avvp", True) if name == "avvp_weak" else (name, False)
    return TOK.decode_target(task, seq, weak=weak)


def mutate(seq, op, i, token):
    seq = list(seq)
    if op == "replace":
        seq[i] = token
    elif op == "insert":
        seq.insert(i, token)
    elif op == "delete":
        del seq[i]
    else:
        seq = seq[:i]
    return seq


def probe_tokens():
    """Specials, task and time tokens, edge loc/code ids and label pieces of each set."""
    ids = list(range(LAY.time_range[1])) + [LAY.loc_token(b) for b in (0, 5, 98, 99)]
    ids += [LAY.code_token(k) for k in (0, 1, 511)] + [LAY.vocab_size - 1]
    for word in ("Dog", "Speech", "Clapping", "Cat", "Bark", "Rodents", " rats", "yes",
                 "more_than_ten", "Frying_"):
        ids.append(LAY.text_token(TOK.text.piece_to_id(word)))
    return ids


def test_grammar_and_decoder_agree_on_every_single_token_edit():
    """Exhaustive over positions x probe tokens x edit kinds (see the property test below)."""
    accepted = rejected = 0
    for name, k in CASES:
        seq = VALID[name][k]
        positions = range(len(seq) + 1)
        if len(seq) > 20:  # the 65-token AVS target: its ends are what differs
            positions = [*positions[:4], *positions[-4:]]
        for i in positions:
            edits = [("cut", None)] + [("insert", t) for t in probe_tokens()]
            if i < len(seq):
                edits += [("delete", None)] + [("replace", t) for t in probe_tokens()]
            for op, token in edits:
                if check_agreement(name, mutate(seq, op, i, token)):
                    accepted += 1
                else:
                    rejected += 1
    assert accepted > 100 and rejected > 1000


@settings(max_examples=300, deadline=None)
@given(case=st.sampled_from(CASES), op=st.sampled_from(["replace", "insert", "delete", "cut"]),
       where=st.integers(0, 80), token=interesting | st.integers(0, LAY.vocab_size - 1))
def test_grammar_and_decoder_agree_on_mutated_targets(case, op, where, token):
    name, k = case
    check_agreement(name, mutate(VALID[name][k], op, where % len(VALID[name][k]), token))


def check_agreement(name, seq) -> bool:
    """A sequence is either rejected by both the grammar and the decoder, or accepted by both
    and then re-encodes to itself (the grammar admits only canonical targets, except that
    dense AVVP groups may come in any order and SSL corners may be out of order).
    Returns whether the decoder accepted it."""
    ok = accepts(name, seq)
    try:
        ann = decode_or_raise(name, seq)
    except tokens.InvalidSequenceError as err:
        assert str(err).startswith(f"invalid {name} target [")
        assert ok is False or (name == "ssl" and "corners out of order" in str(err))
        return False
    assert ok
    task, weak = ("avvp", True) if name == "avvp_weak" else (name, False)
    again = TOK.encode_target(task, ann, weak=weak).tolist()
    body = [int(t) for t in seq[:seq.index(LAY.EOS) + 1]]
    if name == "avvp":
        assert sorted(again) == sorted(body)  # same groups, canonical order
    else:
        assert again == body
    return True


@pytest.mark.parametrize("name, seq, match", [
    ("ave", ["<t_3>", "<t_5>", "<eos>"], r"position 0: <t_3> is not allowed"),
    ("ave", ["Bark", "<t_5>", "<t_3>", "<eos>"],
     r"position 2: <t_3> is not allowed .*end time >= 5"),
    ("ave", ["Bark", "<t_1>", "<t_3>"], "ended .* without <eos>"),
    ("ave", ["<none>", "<t_1>", "<eos>"], "position 1"),
    ("avvp", ["<audio>", "Dog", "<t_1>", "<eos>"], "position 3: <eos> is not allowed"),
    ("avvp", ["Dog", "<t_1>", "<t_2>", "<eos>"], "position 0"),
    ("avvp_weak", ["Dog", "<sep>", "Speech", "<eos>"], r"position 2: 'Speech'.*index > 3"),
    ("avvp_weak", ["Dog", "<sep>", "Dog", "<eos>"], "position 2"),
    ("avvp_weak", ["Dog", "<sep>", "<eos>"], "position 2"),
    ("avqa", ["Bark", "<eos>"], "position 0: 'Bark' is not allowed"),
    ("avqa", ["yes", "<eos>", "<eos>"], "position 2: <eos>"),
    ("ssl", ["<loc_1>", "<loc_2>", "<loc_3>", "<eos>"], "position 3"),
    ("ssl", ["<loc_5>", "<loc_1>", "<loc_4>", "<loc_9>", "<eos>"], "corners out of order"),
    ("avs", ["<code_1>"] * 63 + ["<eos>"], "position 63"),
    ("avs", ["<code_1>"] * 64 + ["<eos>", "<code_1>"], r"position 65: <code_1>.*after <eos>"),
])
def test_malformed_targets_raise_clear_errors(name, seq, match):
    ids = [name_to_id(t) for t in seq]
    with pytest.raises(tokens.InvalidSequenceError, match=match):
        decode_or_raise(name, ids)
    assert issubclass(tokens.InvalidSequenceError, ValueError)
    if "corners" not in match:
        assert not accepts(name, ids)


def name_to_id(name):
    if name in tokens.SPECIALS:
        return tokens.SPECIALS.index(name)
    for prefix, fn in (("<t_", LAY.time_token), ("<loc_", LAY.loc_token),
                       ("<code_", LAY.code_token)):
        if name.startswith(prefix):
            return fn(int(name[len(prefix):-1]))
    (piece,) = TOK.text.encode(name)
    return LAY.text_token(piece)


def test_trailing_pad_after_eos_is_accepted_and_other_inputs_rejected():
    seq = TOK.encode_target("avqa", "yes")
    padded = np.concatenate([seq, np.zeros(5, np.int32)])
    assert TOK.decode_target("avqa", padded) == "yes"
    with pytest.raises(tokens.InvalidSequenceError, match="1-D integer"):
        TOK.decode_target("avqa", padded.reshape(1, -1))
    with pytest.raises(tokens.InvalidSequenceError, match="outside"):
        TOK.decode_target("avqa", [LAY.vocab_size, LAY.EOS])
    with pytest.raises(tokens.InvalidSequenceError, match="without <eos>"):
        TOK.decode_target("avqa", [])


@pytest.mark.parametrize("task, ann, match", [
    ("ave", {"label": "Dog", "start": 0, "end": 2}, "unknown ave label 'Dog'"),
    ("ave", {"label": "Bark", "start": 5, "end": 2}, "start 5 > end 2"),
    ("ave", {"label": "Bark", "start": 0, "end": 11}, r"outside \[0, 10\]"),
    ("ave", {"label": "Bark", "start": 0.5, "end": 2}, "whole number"),
    ("ave", "Bark", "must be a dict"),
    ("avvp", [("both", "Dog", 0, 1)], "modality"),
    ("avvp", [("audio", "Dog", 0, 1)] * 17, "more than max_avvp_groups=16"),
    ("avqa", "ten", "unknown avqa label 'ten'"),
    ("ssl", (0.5, 0.1, 0.2, 0.9), "x0 > x1"),
    ("ssl", (0.1, 0.2, 0.3), "shape"),
    ("avs", np.zeros((4, 4), np.int64), r"shape \(8, 8\)"),
    ("avs", np.full((8, 8), 512), "code index"),
])
def test_bad_annotations_raise_naming_the_problem(task, ann, match):
    with pytest.raises(ValueError, match=match):
        TOK.encode_target(task, ann)


def test_weak_labels_reject_unknown_class_and_bare_string():
    with pytest.raises(ValueError, match="unknown avvp label 'Bark'"):
        TOK.encode_target("avvp", ["Dog", "Bark"], weak=True)
    with pytest.raises(ValueError, match="list of class names"):
        TOK.encode_target("avvp", "Dog", weak=True)
    with pytest.raises(ValueError, match="only for task 'avvp'"):
        TOK.encode_target("ave", {"label": None}, weak=True)


# -------------------------------------------------------------------- prompts
def test_prompts_start_with_the_task_token_and_decode_to_their_text():
    for task in tokens.TASKS:
        kw = {"question": "Is there a voiceover?"} if task == "avqa" else {}
        kw.update({"second": 4} if task == "avs" else {})
        prompt = TOK.encode_prompt(task, **kw)
        assert prompt.dtype == np.int32 and prompt[0] == LAY.task_token(task)
        body = prompt[1:-1] if task == "avs" else prompt[1:]
        expected = kw["question"] if task == "avqa" else TOK.prompts[task]
        assert TOK.text.decode(LAY.token_text(body)) == expected
    assert TOK.encode_prompt("avs", second=4)[-1] == LAY.time_token(4)
    weak = TOK.encode_prompt("avvp", weak=True)
    assert weak[0] == LAY.task_token("avvp")
    assert weak.tolist() != TOK.encode_prompt("avvp").tolist()


@pytest.mark.parametrize("kw, match", [
    ({"task": "avqa"}, "question is required"),
    ({"task": "ave", "question": "why?"}, "question is required for 'avqa' and only there"),
    ({"task": "avs"}, "second= is required"),
    ({"task": "avs", "second": 11}, "time index"),
    ({"task": "avqa", "question": "  "}, "non-empty"),
    ({"task": "asr"}, "unknown task"),
])
def test_bad_prompt_arguments_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        TOK.encode_prompt(**kw)
