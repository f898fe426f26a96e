"""Decoding grammars as arrays: structure, tight max_len, stacking, and constrained decoding of
a batch that mixes all tasks inside one `jax.jit`."""

import numpy as np
import pytest

from av_unified_jax import tokens

TOK = tokens.Tokenizer.build(tokens.OFFICIAL_LABEL_SETS)
LAY = TOK.layout
GRAMMARS = TOK.grammars()
TASK_OF = {name: ("avvp", True) if name == "avvp_weak" else (name, False) for name in GRAMMARS}


def test_one_grammar_per_format():
    assert tuple(GRAMMARS) == ("ave", "avvp", "avvp_weak", "avqa", "ssl", "avs")
    assert all(g.name == name for name, g in GRAMMARS.items())


@pytest.mark.parametrize("name", list(GRAMMARS))
def test_tables_have_the_documented_structure(name):
    g = GRAMMARS[name]
    num, vocab = g.allowed.shape
    assert vocab == LAY.vocab_size and g.next_state.shape == (num, vocab)
    assert g.allowed.dtype == bool and g.next_state.dtype == np.int32
    assert g.accepting.dtype == bool and g.accepting.shape == (num,)
    assert g.next_state.min() >= 0 and g.next_state.max() < num
    (final,) = np.flatnonzero(g.accepting)
    assert not g.accepting[g.start_state]
    # final state: only <pad>, which loops; <pad> nowhere else; <eos> always leads to final
    assert g.allowed[final].tolist() == [v == LAY.PAD for v in range(vocab)]
    assert g.next_state[final, LAY.PAD] == final
    assert not g.allowed[np.arange(num) != final, LAY.PAD].any()
    eos_rows = np.flatnonzero(g.allowed[:, LAY.EOS])
    assert (g.next_state[eos_rows, LAY.EOS] == final).all() and len(eos_rows) > 0
    # every state allows something; a disallowed token leaves the state unchanged
    assert g.allowed.any(axis=1).all()
    stay = np.broadcast_to(np.arange(num)[:, None], g.next_state.shape)
    np.testing.assert_array_equal(g.next_state[~g.allowed], stay[~g.allowed])
    assert len(g.state_names) == num


def longest_target(name):
    if name == "ave":
        return max(len(TOK.encode_target("ave", {"label": c, "start": 0, "end": 1}))
                   for c in tokens.AVE_CLASSES)
    if name == "avvp":
        worst = max(tokens.LLP_CLASSES, key=lambda c: len(TOK.text.encode(c)))
        return len(TOK.encode_target("avvp", [("audio", worst, 0, 1)] * TOK.max_avvp_groups))
    if name == "avvp_weak":
        return len(TOK.encode_target("avvp", tokens.LLP_CLASSES, weak=True))
    if name == "avqa":
        return max(len(TOK.encode_target("avqa", a)) for a in tokens.MUSIC_AVQA_ANSWERS)
    return {"ssl": 5, "avs": 65}[name]


@pytest.mark.parametrize("name", list(GRAMMARS))
def test_max_len_is_the_longest_valid_target(name):
    assert GRAMMARS[name].max_len == longest_target(name)


def sample_walk(g, rng, start=None):
    """Emits uniformly random allowed tokens until the grammar accepts."""
    state, seq = g.start_state if start is None else start, []
    while not g.accepting[state]:
        v = int(rng.choice(np.flatnonzero(g.allowed[state])))
        seq.append(v)
        state = int(g.next_state[state, v])
    return seq


@pytest.mark.parametrize("name", list(GRAMMARS))
def test_random_walks_decode_and_reencode(name):
    rng = np.random.default_rng(0)
    g, (task, weak) = GRAMMARS[name], TASK_OF[name]
    for _ in range(40):
        seq = sample_walk(g, rng)
        assert len(seq) <= g.max_len and tokens.walk(g, seq)
        if name == "ssl" and (seq[0] > seq[2] or seq[1] > seq[3]):
            with pytest.raises(tokens.InvalidSequenceError, match="corners out of order"):
                TOK.decode_target(task, seq)
            continue
        ann = TOK.decode_target(task, seq, weak=weak)
        again = TOK.encode_target(task, ann, weak=weak).tolist()
        assert sorted(again) == sorted(seq) if name == "avvp" else again == seq


def test_prefixes_of_valid_targets_are_valid_prefixes():
    seq = TOK.encode_target("avvp", [("audio", "Dog", 0, 3), ("visual", "Cat", 5, 10)])
    g = TOK.grammar("avvp")
    for k in range(len(seq)):
        assert tokens.walk(g, seq[:k], require_accept=False)
        assert not tokens.walk(g, seq[:k])


def test_stack_offsets_states_and_walks_like_the_parts():
    stack = tokens.stack_grammars(list(GRAMMARS.values()))
    sizes = [g.num_states for g in GRAMMARS.values()]
    assert stack.names == tuple(GRAMMARS)
    np.testing.assert_array_equal(stack.offsets, np.cumsum([0] + sizes[:-1]))
    assert stack.allowed.shape == (sum(sizes), LAY.vocab_size)
    assert stack.max_len == max(g.max_len for g in GRAMMARS.values())
    assert stack.accepting.sum() == len(GRAMMARS)
    rng = np.random.default_rng(1)
    for i, (name, g) in enumerate(GRAMMARS.items()):
        assert stack.start_states[i] == stack.offsets[i] + g.start_state
        assert stack.index(name) == i
        lo, hi = stack.offsets[i], stack.offsets[i] + g.num_states
        assert ((stack.next_state[lo:hi] >= lo) & (stack.next_state[lo:hi] < hi)).all()
        seq = sample_walk(g, rng)
        assert tokens.walk(stack, seq, start_state=int(stack.start_states[i]))
        other = stack.start_states[(i + 1) % len(GRAMMARS)]
        assert tokens.walk(stack, seq, start_state=int(other)) == tokens.walk(
            list(GRAMMARS.values())[(i + 1) % len(GRAMMARS)], seq)
    with pytest.raises(ValueError, match="start_state"):
        tokens.walk(stack, [LAY.EOS])


def test_stack_rejects_mismatched_or_empty_input():
    small = tokens.Tokenizer.build({"avqa": ["yes", "no"]}, tasks=("avqa",))
    with pytest.raises(ValueError, match="one vocabulary size"):
        tokens.stack_grammars([GRAMMARS["avqa"], small.grammar("avqa")])
    with pytest.raises(ValueError, match="at least one"):
        tokens.stack_grammars([])


def test_constrained_decoding_of_a_mixed_batch_under_jit():
    import jax
    import jax.numpy as jnp

    stack = tokens.stack_grammars(GRAMMARS)
    allowed, next_state = jnp.asarray(stack.allowed), jnp.asarray(stack.next_state)

    @jax.jit
    def decode(logits, start):  # logits f32[B, L, V], start int32[B]
        def step(state, step_logits):  # state int32[B], step_logits f32[B, V]
            masked = jnp.where(allowed[state], step_logits, -jnp.inf)  # [B, V]
            token = jnp.argmax(masked, axis=-1)  # [B]
            return next_state[state, token], token

        final, toks = jax.lax.scan(step, start, jnp.swapaxes(logits, 0, 1))  # toks [L, B]
        return toks.T, final  # [B, L], [B]

    names = list(GRAMMARS) * 3
    start = jnp.asarray(stack.start_states[[stack.index(n) for n in names]])
    logits = jax.random.normal(jax.random.key(0), (len(names), stack.max_len, LAY.vocab_size))
    toks, final = decode(logits, start)
    toks, final = np.asarray(toks), np.asarray(final)
    assert toks.shape == (len(names), stack.max_len)
    assert stack.accepting[final].all()  # every row finished within max_len
    for name, row in zip(names, toks, strict=True):
        task, weak = TASK_OF[name]
        assert tokens.walk(GRAMMARS[name], row)
        try:
            TOK.decode_target(task, row, weak=weak)
        except tokens.InvalidSequenceError as err:
            assert name == "ssl" and "corners out of order" in str(err)
