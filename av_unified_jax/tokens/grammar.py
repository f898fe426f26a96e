"""Decoding grammars compiled to arrays, so constrained decoding can run inside `jax.jit`.

A grammar is a deterministic automaton over the whole vocabulary:
  * at state s only tokens v with `allowed[s, v]` may be emitted;
  * after emitting v the state is `next_state[s, v]` (for a disallowed v it stays s);
  * a state is `accepting` once `<eos>` has been emitted; there only `<pad>` is allowed and it
    loops, so a finished row of a batch keeps emitting `<pad>`;
  * every path from the start state is acyclic until it accepts, and `max_len` is the length
    of the longest accepted sequence (including `<eos>`), so a decode loop of `max_len` steps
    always has room to finish.

Constrained decoding then is `logits = where(allowed[state], logits, -inf)`, pick `v`,
`state = next_state[state, v]`, which needs no Python control flow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from av_unified_jax.tokens.layout import InvalidSequenceError

PAD = 0
EOS = 2


@dataclasses.dataclass(frozen=True, eq=False)
class Grammar:
    """One task's decoding grammar.

    Attributes:
      allowed: bool[S, V], the tokens allowed at each state.
      next_state: int32[S, V], the state after emitting a token (the state itself if disallowed).
      start_state: the state before the first target token.
      accepting: bool[S], True for the state reached after `<eos>`.
      max_len: length of the longest accepted sequence, `<eos>` included.
      state_names: a readable description of each state, for error messages.
      name: the grammar's name (e.g. "ave", "avvp_weak").
    """

    allowed: np.ndarray
    next_state: np.ndarray
    start_state: int
    accepting: np.ndarray
    max_len: int
    state_names: tuple[str, ...] = ()
    name: str = ""

    @property
    def num_states(self) -> int:
        return self.allowed.shape[0]

    @property
    def vocab_size(self) -> int:
        return self.allowed.shape[1]


@dataclasses.dataclass(frozen=True, eq=False)
class GrammarStack:
    """Several grammars in one table set: states of grammar i are offset by `offsets[i]`.

    Attributes:
      allowed: bool[S_total, V]; next_state: int32[S_total, V] (global state ids);
      accepting: bool[S_total]; start_states: int32[G], the start state of each grammar;
      offsets: int32[G]; max_len: the largest max_len; names: the grammars' names.
    A batch mixing tasks starts row b at `start_states[grammar_index[b]]`.
    """

    allowed: np.ndarray
    next_state: np.ndarray
    accepting: np.ndarray
    start_states: np.ndarray
    offsets: np.ndarray
    max_len: int
    names: tuple[str, ...]
    state_names: tuple[str, ...] = ()

    def index(self, name: str) -> int:
        if name not in self.names:
            raise KeyError(f"no grammar named {name!r} in this stack; it has {self.names}")
        return self.names.index(name)


def stack_grammars(grammars: Sequence[Grammar] | Mapping[str, Grammar]) -> GrammarStack:
    """Concatenates grammars along the state axis (same vocabulary) with per-grammar offsets."""
    items = list(grammars.values()) if isinstance(grammars, Mapping) else list(grammars)
    if not items:
        raise ValueError("stack_grammars needs at least one grammar")
    vocab = {g.vocab_size for g in items}
    if len(vocab) != 1:
        raise ValueError(f"grammars to stack must share one vocabulary size, got {sorted(vocab)}")
    sizes = np.array([g.num_states for g in items], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)
    next_state = np.concatenate(
        [g.next_state + off for g, off in zip(items, offsets, strict=True)], axis=0)
    names = tuple(grammars.keys()) if isinstance(grammars, Mapping) else tuple(
        g.name for g in items)
    return GrammarStack(
        allowed=np.concatenate([g.allowed for g in items], axis=0),
        next_state=next_state.astype(np.int32),
        accepting=np.concatenate([g.accepting for g in items], axis=0),
        start_states=(offsets + np.array([g.start_state for g in items])).astype(np.int32),
        offsets=offsets,
        max_len=max(g.max_len for g in items),
        names=names,
        state_names=tuple(n for g in items for n in g.state_names),
    )


def walk(grammar: Grammar | GrammarStack, token_seq, start_state: int | None = None,
         require_accept: bool = True) -> bool:
    """True if `token_seq` (int[L], trailing `<pad>` allowed after `<eos>`) is accepted.

    For a GrammarStack pass `start_state` (e.g. `stack.start_states[i]`).
    With `require_accept=False`, True means the sequence is a valid prefix.
    """
    try:
        check_sequence(grammar, token_seq, start_state, require_accept=require_accept)
    except InvalidSequenceError:
        return False
    return True


def check_sequence(grammar: Grammar | GrammarStack, token_seq, start_state: int | None = None,
                   describe=None, require_accept: bool = True) -> int:
    """Walks `token_seq`; returns the final state or raises InvalidSequenceError explaining
    where and why the sequence breaks the grammar. `describe(token_id) -> str` names tokens."""
    seq = np.asarray(token_seq)
    if seq.ndim != 1 or not (np.issubdtype(seq.dtype, np.integer) or seq.size == 0):
        raise InvalidSequenceError(
            f"expected a 1-D integer token sequence, got shape {seq.shape} dtype {seq.dtype}")
    if start_state is None:
        if isinstance(grammar, GrammarStack):
            raise ValueError("walking a GrammarStack needs start_state")
        start_state = grammar.start_state
    describe = describe or (lambda v: f"token {v}")
    state, vocab = int(start_state), grammar.allowed.shape[1]
    for pos, v in enumerate(seq.tolist()):
        if not 0 <= v < vocab:
            raise InvalidSequenceError(f"position {pos}: token id {v} outside [0, {vocab})")
        if not grammar.allowed[state, v]:
            raise InvalidSequenceError(
                f"position {pos}: {describe(v)} is not allowed {_state_text(grammar, state)}; "
                f"allowed there: {_allowed_text(grammar, state, describe)}")
        state = int(grammar.next_state[state, v])
    if require_accept and not grammar.accepting[state]:
        raise InvalidSequenceError(
            f"sequence of {len(seq)} tokens ended {_state_text(grammar, state)} without <eos>; "
            f"it can continue with: {_allowed_text(grammar, state, describe)}")
    return state


def _state_text(grammar, state: int) -> str:
    names = grammar.state_names
    return f"at state {state} ({names[state]})" if names else f"at state {state}"


def _allowed_text(grammar, state: int, describe, limit: int = 6) -> str:
    ids = np.flatnonzero(grammar.allowed[state])
    shown = ", ".join(describe(int(v)) for v in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


class GrammarBuilder:
    """Builds a deterministic automaton state by state, then compiles it to arrays."""

    def __init__(self, name: str = ""):
        self.name = name
        self.names: list[str] = []
        self.edges: list[dict[int, int]] = []
        self.final = self.add_state("done (after <eos>)")
        self.edges[self.final][PAD] = self.final

    def add_state(self, name: str) -> int:
        self.names.append(name)
        self.edges.append({})
        return len(self.names) - 1

    def add_edge(self, state: int, token: int, target: int) -> None:
        old = self.edges[state].get(token)
        if old is not None and old != target:
            raise ValueError(
                f"grammar {self.name!r}: token {token} at state {state} ({self.names[state]}) "
                f"would lead to two states ({old}, {target}); the label set is ambiguous")
        self.edges[state][token] = target

    def add_edges(self, state: int, tokens, target: int) -> None:
        for t in np.asarray(tokens).reshape(-1).tolist():
            self.add_edge(state, int(t), target)

    def add_eos(self, state: int) -> None:
        self.add_edge(state, EOS, self.final)

    def compile(self, vocab_size: int, start_state: int) -> Grammar:
        num = len(self.names)
        allowed = np.zeros((num, vocab_size), dtype=bool)
        next_state = np.repeat(np.arange(num, dtype=np.int32)[:, None], vocab_size, axis=1)
        for s, edges in enumerate(self.edges):
            if not edges:
                raise ValueError(f"grammar {self.name!r}: state {s} ({self.names[s]}) is a "
                                 "dead end (no token allowed)")
            toks = np.fromiter(edges.keys(), dtype=np.int64)
            allowed[s, toks] = True
            next_state[s, toks] = np.fromiter(edges.values(), dtype=np.int32)
        accepting = np.zeros(num, dtype=bool)
        accepting[self.final] = True
        max_len = self._longest_path(start_state)
        return Grammar(allowed, next_state, int(start_state), accepting, max_len,
                       tuple(self.names), self.name)

    def _longest_path(self, start: int) -> int:
        """Longest token path from `start` into the final state; raises on a cycle."""
        memo: dict[int, int] = {self.final: 0}
        visiting: set[int] = set()
        order = [(start, False)]
        while order:  # iterative post-order DFS (grammars can be hundreds of states deep)
            s, done = order.pop()
            if s in memo:
                continue
            if done:
                visiting.discard(s)
                memo[s] = 1 + max(memo[t] for t in self.edges[s].values())
                continue
            if s in visiting:
                raise ValueError(f"grammar {self.name!r} has a cycle through state {s}")
            visiting.add(s)
            order.append((s, True))
            for t in set(self.edges[s].values()):
                if t in visiting:
                    raise ValueError(f"grammar {self.name!r} has a cycle through state {t}")
                if t not in memo:
                    order.append((t, False))
        return memo[start]
