"""Text tokenizer and Tokenizer save/load on the real label, answer and question strings.

Fixtures are unchanged excerpts of the official annotation files (tests/fixtures/<benchmark>/).
"""

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from av_unified_jax import tokens

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ROOT = Path(__file__).resolve().parents[1]


def avqa_rows():
    rows = []
    for split in ("val", "test"):
        rows += json.loads((FIXTURES / "music_avqa" / f"avqa-{split}.json").read_text())
    return rows


def avqa_questions():
    rows = avqa_rows()
    filled = [tokens.fill_avqa_template(r["question_content"], r["templ_values"]) for r in rows]
    return sorted({r["question_content"] for r in rows} | set(filled))


def other_strings():
    """Text that is not a target label but still must round-trip (prompt-side class names)."""
    vggss = json.loads((FIXTURES / "vggss" / "vggss.json").read_text())
    return sorted({e["class"] for e in vggss}) + list(tokens.AVS_S4_CATEGORIES)


def build(**kw):
    return tokens.Tokenizer.build(tokens.OFFICIAL_LABEL_SETS, extra_text=avqa_questions(), **kw)


@pytest.fixture(scope="module")
def tok():
    return build()


def test_official_label_set_sizes():
    assert len(tokens.AVE_CLASSES) == 28 and len(set(tokens.AVE_CLASSES)) == 28
    assert len(tokens.LLP_CLASSES) == 25 and len(set(tokens.LLP_CLASSES)) == 25
    assert len(tokens.MUSIC_AVQA_ANSWERS) == 41 and len(set(tokens.MUSIC_AVQA_ANSWERS)) == 41


def test_fixture_labels_are_in_the_official_sets():
    ave = {line.split("&")[0] for line in (FIXTURES / "ave" / "Annotations.txt").read_text()
           .splitlines() if line}
    assert ave == set(tokens.AVE_CLASSES)  # the excerpt has every class
    llp = set()
    for name in ("AVVP_train.csv", "AVVP_val_pd.csv", "AVVP_test_pd.csv"):
        with open(FIXTURES / "llp" / name) as f:
            for row in csv.DictReader(f, delimiter="\t"):
                llp.update(row["event_labels"].split(","))
    assert llp <= set(tokens.LLP_CLASSES) and len(llp) >= 20
    answers = {r["anser"] for r in avqa_rows()}
    assert answers <= set(tokens.MUSIC_AVQA_ANSWERS)


def test_every_real_string_round_trips_exactly(tok):
    strings = [s for labels in tokens.OFFICIAL_LABEL_SETS.values() for s in labels]
    strings += avqa_questions() + other_strings() + list(tok.prompts.values())
    strings += ["more than ten", "Male speech", "Rodents"]  # spellings used elsewhere
    assert any("？" in s for s in strings) and any(s.endswith("? ") for s in strings)
    for s in strings:
        ids = tok.text.encode(s)
        assert all(0 <= i < tok.text.vocab_size for i in ids)
        assert tok.text.decode(ids) == s, s


def test_corpus_words_are_single_pieces(tok):
    for label in tokens.MUSIC_AVQA_ANSWERS + tokens.LLP_CLASSES + tokens.AVE_CLASSES:
        # one piece per word (underscores are word characters) or punctuation mark
        assert len(tok.text.encode(label)) == len(tokens.pre_pieces(label)), label
    assert all(len(tok.text.encode(a)) == 1 for a in tokens.MUSIC_AVQA_ANSWERS)
    assert tok.text.encode("Frying_(food)") == [
        tok.text.piece_to_id(p) for p in ("Frying_", "(", "food", ")")]
    assert tok.text.encode("Is there a voiceover?") == [
        tok.text.piece_to_id(p) for p in ("Is", " there", " a", " voiceover", "?")]


def test_answers_named_in_questions_use_the_answer_token(tok):
    """A one-word answer (an instrument) inside a question is the space token and then the
    answer's own token, the one the decoder emits; a word that is no label keeps its
    space-prefixed piece."""
    questions = [q for q in avqa_questions() if " violin" in q]
    assert questions
    violin, space = tok.text.piece_to_id("violin"), tok.text.piece_to_id(" ")
    assert tok.text.piece_to_id(" violin") is None
    for q in questions:
        ids = tok.text.encode(q)
        assert tok.text.decode(ids) == q
        at = ids.index(violin)
        assert ids[at - 1] == space, q
    assert tok.text.piece_to_id(" there") is not None


def test_shared_words_get_their_own_piece():
    text = tokens.TextTokenizer.train(["Is the dog barking?"] * 3, min_count=2,
                                      shared_words=["dog", "cat", "two words"])
    ids = text.encode("Is the dog barking? the cat")
    assert [text.id_to_piece(i) for i in ids] == [
        "Is", " the", " ", "dog", " barking", "?", " the", " ", "cat"]
    plain = tokens.TextTokenizer.train(["Is the dog barking?"] * 3, min_count=2)
    assert plain.piece_to_id(" dog") is not None and plain.piece_to_id("dog") is None


def test_case_and_unseen_text_fall_back_to_characters_and_bytes(tok):
    assert tok.text.encode("violin") != tok.text.encode("Violin")
    unseen = "Zyxw \u2581ünïcødé\t🎻 ？"
    ids = tok.text.encode(unseen)
    assert tok.text.decode(ids) == unseen
    assert min(ids) < 256  # the emoji needs byte fallback
    with pytest.raises(UnicodeDecodeError):
        tok.text.decode([0xF0, 0x9F])  # a truncated UTF-8 sequence
    assert tok.text.decode([0xF0, 0x9F], errors="replace") == "\ufffd"
    with pytest.raises(ValueError, match="outside"):
        tok.text.decode([tok.text.vocab_size])


@settings(max_examples=300, deadline=None)
@given(s=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
       | st.text(alphabet=" _?？,()\u2581\t\nabcXYZviolnSpech", max_size=40))
def test_any_string_round_trips(s):
    text = TEXT_FOR_PROPERTIES
    assert text.decode(text.encode(s)) == s
    assert "".join(tokens.pre_pieces(s)) == s


TEXT_FOR_PROPERTIES = tokens.TextTokenizer.train(
    list(tokens.AVE_CLASSES) + list(tokens.LLP_CLASSES) + ["a b  c", "x？"])


def test_training_is_deterministic_and_order_independent(tmp_path):
    build().save(tmp_path / "a")
    build().save(tmp_path / "b")
    shuffled = {k: list(v) for k, v in tokens.OFFICIAL_LABEL_SETS.items()}
    questions = avqa_questions()
    random.Random(0).shuffle(questions)
    text_a = tokens.TextTokenizer.train(questions + shuffled["avqa"])
    text_b = tokens.TextTokenizer.train(sorted(questions + shuffled["avqa"], reverse=True))
    assert text_a == text_b
    for name in ("layout.json", "text_tokenizer.json", "tokenizer.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_files_are_identical_across_processes_with_different_hash_seeds(tmp_path):
    code = ("import sys; sys.path.insert(0, sys.argv[2]); from av_unified_jax import tokens; "
            "tokens.Tokenizer.build(tokens.OFFICIAL_LABEL_SETS, "
            "extra_text=['Is there a <Object> sound?']).save(sys.argv[1])")
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", code, str(tmp_path / seed), str(ROOT)],
                       check=True, env=env)
    for name in ("layout.json", "text_tokenizer.json", "tokenizer.json"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()


def test_save_load_round_trip(tok, tmp_path):
    tok.save(tmp_path)
    loaded = tokens.Tokenizer.load(tmp_path)
    assert loaded.layout == tok.layout and loaded.text == tok.text
    assert loaded.label_sets == tok.label_sets and loaded.prompts == tok.prompts
    assert loaded.mask_grid == tok.mask_grid and loaded.max_avvp_groups == tok.max_avvp_groups
    np.testing.assert_array_equal(loaded.encode_prompt("avqa", question=avqa_questions()[0]),
                                  tok.encode_prompt("avqa", question=avqa_questions()[0]))
    for name, g in tok.grammars().items():
        h = loaded.grammars()[name]
        np.testing.assert_array_equal(h.allowed, g.allowed)
        np.testing.assert_array_equal(h.next_state, g.next_state)
        assert h.max_len == g.max_len and h.start_state == g.start_state


def test_load_rejects_incomplete_or_mismatched_directories(tok, tmp_path):
    with pytest.raises(FileNotFoundError, match="Tokenizer.save"):
        tokens.Tokenizer.load(tmp_path)
    tok.save(tmp_path)
    small = tokens.TextTokenizer.train(["only a few words"])
    (tmp_path / "text_tokenizer.json").write_text(small.to_json())
    with pytest.raises(ValueError, match="not built together"):
        tokens.Tokenizer.load(tmp_path)


def test_official_vocab_sizes(tok):
    """The sizes the report quotes: labels + prompts only, and with the fixture questions."""
    labels_only = tokens.Tokenizer.build(tokens.OFFICIAL_LABEL_SETS)
    for t in (labels_only, tok):
        ranges = t.layout.ranges
        assert ranges["text"][0] == 8 + 5 + 11 + 100 + 512 == 636
        assert t.layout.vocab_size == 636 + t.text.vocab_size
    assert tok.text.vocab_size > labels_only.text.vocab_size
    print(f"vocab: labels+prompts {labels_only.layout.vocab_size} "
          f"(text {labels_only.text.vocab_size}); + fixture questions {tok.layout.vocab_size} "
          f"(text {tok.text.vocab_size})")


def test_fill_avqa_template():
    assert tokens.fill_avqa_template("Is the <Object> louder than the <Object>?",
                                     '["guzheng", "piano"]') == \
        "Is the guzheng louder than the piano?"
    assert tokens.fill_avqa_template("Where is the performance?", "[]") == \
        "Where is the performance?"
    with pytest.raises(ValueError, match="1 placeholders but 2"):
        tokens.fill_avqa_template("Is there a <Object> sound?", ["a", "b"])


def test_build_requires_labels_of_labelled_tasks():
    with pytest.raises(ValueError, match=r"no labels for task\(s\) \['avqa'\]"):
        tokens.Tokenizer.build({"ave": tokens.AVE_CLASSES, "avvp": tokens.LLP_CLASSES})
    with pytest.raises(ValueError, match="duplicates"):
        tokens.Tokenizer.build({"ave": ["Bark", "Bark"], "avvp": ["a"], "avqa": ["b"]})
    small = tokens.Tokenizer.build({"avqa": ["yes", "no"]}, tasks=("avqa", "ssl"))
    assert small.layout.tasks == ("avqa", "ssl") and small.format_names == ("avqa", "ssl")
