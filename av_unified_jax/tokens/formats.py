"""Target formats of the five tasks: numpy encode/decode pairs and their grammars.

One class per target format (docs/MODEL.md, Tokens); `FORMATS` maps a format name to its class.
Every format owns three things that must agree: `encode(annotation) -> list[int]` (ending
with `<eos>`), `decode(body) -> annotation` for the tokens before `<eos>` of a sequence
already checked against `grammar()`, and `grammar() -> Grammar`.

Time rule (AVE and AVVP): `<t_s> <t_e>` with `0 <= s <= e <= max_time`. Spans are the
segments [s, e). Equal times are allowed because the real annotations contain zero-length
rows (AVE Annotations.txt `Church bell&VWi2ENBuTbw&good&0&0`, 6 LLP audio rows), which must
encode; such a span covers no segment.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from av_unified_jax.tokens.grammar import Grammar, GrammarBuilder
from av_unified_jax.tokens.layout import InvalidSequenceError, VocabLayout, quantize_coord
from av_unified_jax.tokens.text import TextTokenizer

MODALITIES = ("audio", "visual")


class LabelSet:
    """A closed set of label strings and their token sequences (global ids)."""

    def __init__(self, name: str, labels: Sequence[str], text: TextTokenizer,
                 layout: VocabLayout):
        labels = tuple(labels)
        bad = [lab for lab in labels if not isinstance(lab, str) or not lab]
        if bad or not labels:
            raise ValueError(f"{name} labels must be a non-empty list of non-empty str, got "
                             f"bad entries {bad[:5]}")
        if len(set(labels)) != len(labels):
            dup = sorted({lab for lab in labels if labels.count(lab) > 1})
            raise ValueError(f"{name} labels contain duplicates: {dup}")
        self.name, self.labels = name, labels
        self.index = {lab: i for i, lab in enumerate(labels)}
        self.seqs = [tuple(int(t) for t in layout.text_token(np.array(text.encode(lab),
                                                                        dtype=np.int64)))
                     for lab in labels]
        self.by_seq = {seq: i for i, seq in enumerate(self.seqs)}
        self._prefixes = {s[:k] for s in self.seqs for k in range(1, len(s) + 1)}

    def encode(self, label: str) -> list[int]:
        if label not in self.index:
            raise ValueError(f"unknown {self.name} label {label!r}; the tokenizer knows "
                             f"{len(self.labels)} labels, e.g. {list(self.labels[:5])}")
        return list(self.seqs[self.index[label]])

    def read(self, seq: Sequence[int], pos: int) -> tuple[int, int]:
        """Reads the label starting at `pos` (its text tokens run to the next non-text token).
        Returns (label index, position after the label)."""
        end = pos
        while end < len(seq) and tuple(seq[pos:end + 1]) in self._prefixes:
            end += 1
        key = tuple(seq[pos:end])
        if key not in self.by_seq:
            raise InvalidSequenceError(f"tokens {list(key)} at position {pos} are not a "
                                       f"{self.name} label")
        return self.by_seq[key], end

    def add_trie(self, b: GrammarBuilder, root: int, indices, tag: str) -> dict[int, int]:
        """Adds a trie of the labels `indices` below state `root`. Returns label -> the state
        after its last token (the caller adds what may follow a complete label there)."""
        nodes: dict[tuple[int, ...], int] = {(): root}
        ends = {}
        for i in indices:
            seq = self.seqs[i]
            for k in range(1, len(seq) + 1):
                if seq[:k] not in nodes:
                    text = self.labels[i][:12]
                    nodes[seq[:k]] = b.add_state(f"{tag}: {k} tokens into a label ({text}...)")
                b.add_edge(nodes[seq[:k - 1]], seq[k - 1], nodes[seq[:k]])
            ends[i] = nodes[seq]
        return ends


def _second(value, what: str, max_time: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != int(value):
        raise ValueError(f"{what} must be a whole number of seconds, got {value!r}")
    if not 0 <= int(value) <= max_time:
        raise ValueError(f"{what} {value} outside [0, {max_time}] seconds")
    return int(value)


def _span(layout: VocabLayout, start, end, what: str) -> list[int]:
    s = _second(start, f"{what} start", layout.max_time)
    e = _second(end, f"{what} end", layout.max_time)
    if s > e:
        raise ValueError(f"{what} span start {s} > end {e}; spans need start <= end")
    return [layout.time_token(s), layout.time_token(e)]


def _add_span(b: GrammarBuilder, layout: VocabLayout, roots, then: int, tag: str) -> None:
    """`<t_s> <t_e>` with s <= e, from each state in `roots` to state `then` (the states
    after the start time are shared by all roots)."""
    for s in range(layout.max_time + 1):
        after = b.add_state(f"{tag}: after start <t_{s}>, expecting end time >= {s}")
        for root in roots:
            b.add_edge(root, layout.time_token(s), after)
        b.add_edges(after, layout.time_token(np.arange(s, layout.max_time + 1)), then)


class AveFormat:
    """AVE: `<class words> <t_s> <t_e> <eos>`, or `<none> <eos>` for a clip without event.

    Annotation: {"label": str | None, "start": int, "end": int}. Decoding `<none> <eos>`
    gives {"label": None, "start": 0, "end": 0}.
    """

    def __init__(self, layout: VocabLayout, labels: LabelSet, **_):
        self.layout, self.labels = layout, labels

    def encode(self, ann) -> list[int]:
        if not isinstance(ann, dict) or "label" not in ann:
            raise ValueError(f"AVE annotation must be a dict with label/start/end, got {ann!r}")
        if ann["label"] is None:
            return [self.layout.NONE, self.layout.EOS]
        span = _span(self.layout, ann.get("start"), ann.get("end"), "AVE event")
        return self.labels.encode(ann["label"]) + span + [self.layout.EOS]

    def decode(self, seq: list[int]) -> dict:
        if seq[0] == self.layout.NONE:
            return {"label": None, "start": 0, "end": 0}
        i, pos = self.labels.read(seq, 0)
        start, end = (self.layout.token_time(t) for t in seq[pos:pos + 2])
        return {"label": self.labels.labels[i], "start": start, "end": end}

    def grammar(self) -> Grammar:
        b = GrammarBuilder("ave")
        root = b.add_state("ave: expecting a class or <none>")
        none = b.add_state("ave: after <none>, expecting <eos>")
        b.add_edge(root, self.layout.NONE, none)
        b.add_eos(none)
        done = b.add_state("ave: after the span, expecting <eos>")
        b.add_eos(done)
        ends = self.labels.add_trie(b, root, range(len(self.labels.labels)), "ave")
        _add_span(b, self.layout, ends.values(), done, "ave")
        return b.compile(self.layout.vocab_size, root)


def ave_segment_labels(ann, classes: Sequence[str], num_segments: int = 10) -> np.ndarray:
    """AVE annotation -> int32[num_segments] class index per 1-s segment, background =
    len(classes). The event covers segments [start, end); a `None` label is all background."""
    out = np.full((num_segments,), len(classes), dtype=np.int32)
    if ann.get("label") is None:
        return out
    if ann["label"] not in classes:
        raise ValueError(f"AVE label {ann['label']!r} is not one of the {len(classes)} classes")
    s = _second(ann["start"], "AVE start", num_segments)
    e = _second(ann["end"], "AVE end", num_segments)
    out[s:e] = list(classes).index(ann["label"])
    return out


def canonical_avvp(parse, classes: Sequence[str]) -> list[tuple[str, str, int, int]]:
    """Dense AVVP parse in target order: sorted by (start, end, modality, class index)."""
    rows = []
    for row in parse:
        if len(row) != 4 or row[0] not in MODALITIES:
            raise ValueError(f"AVVP dense rows are (modality in {MODALITIES}, class, start, "
                             f"end); got {row!r}")
        if row[1] not in classes:
            raise ValueError(f"unknown AVVP class {row[1]!r}")
        rows.append((row[0], row[1], int(row[2]), int(row[3])))
    order = {c: i for i, c in enumerate(classes)}
    return sorted(rows, key=lambda r: (r[2], r[3], MODALITIES.index(r[0]), order[r[1]]))


class AvvpDenseFormat:
    """AVVP dense parse: groups `<audio>|<visual> <class words> <t_s> <t_e>`, then `<eos>`;
    `<none> <eos>` for an empty parse. At most `max_groups` groups.

    Annotation: list of (modality, class, start, end). The encoder writes the groups in
    `canonical_avvp` order; the grammar accepts any order (tracking it would multiply the
    states by the number of time tokens), and decoding keeps the order it reads.
    """

    def __init__(self, layout: VocabLayout, labels: LabelSet, max_groups: int = 16, **_):
        self.layout, self.labels, self.max_groups = layout, labels, int(max_groups)

    def encode(self, parse) -> list[int]:
        rows = canonical_avvp(parse, self.labels.labels)
        if len(rows) > self.max_groups:
            raise ValueError(f"AVVP parse has {len(rows)} rows, more than max_avvp_groups="
                             f"{self.max_groups}; build the tokenizer with a larger cap")
        if not rows:
            return [self.layout.NONE, self.layout.EOS]
        out = []
        for modality, label, start, end in rows:
            tag = self.layout.AUDIO if modality == "audio" else self.layout.VISUAL
            out += [tag] + self.labels.encode(label) + _span(self.layout, start, end, "AVVP")
        return out + [self.layout.EOS]

    def decode(self, seq: list[int]) -> list[tuple[str, str, int, int]]:
        rows, pos = [], 0
        if seq[0] == self.layout.NONE:
            return rows
        while pos < len(seq):
            modality = "audio" if seq[pos] == self.layout.AUDIO else "visual"
            i, pos = self.labels.read(seq, pos + 1)
            start, end = (self.layout.token_time(t) for t in seq[pos:pos + 2])
            rows.append((modality, self.labels.labels[i], start, end))
            pos += 2
        return rows

    def grammar(self) -> Grammar:
        b, lay = GrammarBuilder("avvp"), self.layout
        root = b.add_state("avvp: expecting <audio>, <visual> or <none>")
        none = b.add_state("avvp: after <none>, expecting <eos>")
        b.add_edge(root, lay.NONE, none)
        b.add_eos(none)
        group_start = root
        for k in range(self.max_groups):
            tag = f"avvp group {k + 1}"
            label_root = b.add_state(f"{tag}: after the modality, expecting a class")
            b.add_edges(group_start, [lay.AUDIO, lay.VISUAL], label_root)
            after = b.add_state(f"{tag} done: expecting <audio>, <visual> or <eos>"
                                if k + 1 < self.max_groups else f"{tag} (last) done: <eos>")
            b.add_eos(after)
            ends = self.labels.add_trie(b, label_root, range(len(self.labels.labels)), tag)
            _add_span(b, lay, ends.values(), after, tag)
            group_start = after
        return b.compile(lay.vocab_size, root)


class AvvpWeakFormat:
    """AVVP weak labels: `<class words> (<sep> <class words>)* <eos>`, classes in strictly
    increasing class-index order (so no repeats), or `<none> <eos>` for an empty list.

    Annotation: list of class names (a set: order and repeats are dropped when encoding).
    """

    def __init__(self, layout: VocabLayout, labels: LabelSet, **_):
        self.layout, self.labels = layout, labels

    def encode(self, classes) -> list[int]:
        if isinstance(classes, str):
            raise ValueError(f"weak AVVP labels must be a list of class names, got {classes!r}")
        for c in classes:
            self.labels.encode(c)  # raises on an unknown class
        idx = sorted({self.labels.index[c] for c in classes})
        if not idx:
            return [self.layout.NONE, self.layout.EOS]
        out = []
        for k, i in enumerate(idx):
            out += ([self.layout.SEP] if k else []) + list(self.labels.seqs[i])
        return out + [self.layout.EOS]

    def decode(self, seq: list[int]) -> list[str]:
        if seq[0] == self.layout.NONE:
            return []
        out, pos = [], 0
        while pos < len(seq):
            i, pos = self.labels.read(seq, pos)
            out.append(self.labels.labels[i])
            pos += 1  # <sep>
        return out

    def grammar(self) -> Grammar:
        b, lay, n = GrammarBuilder("avvp_weak"), self.layout, len(self.labels.labels)
        root = b.add_state("avvp_weak: expecting a class or <none>")
        none = b.add_state("avvp_weak: after <none>, expecting <eos>")
        b.add_edge(root, lay.NONE, none)
        b.add_eos(none)
        # after_sep[i]: the state after "<class i> <sep>", where only classes > i may follow.
        after_sep = [b.add_state(f"avvp_weak: after class {i} and <sep>, expecting a class "
                                 f"with index > {i}") for i in range(n - 1)]
        for prev, state in [(-1, root)] + list(enumerate(after_sep)):
            ends = self.labels.add_trie(b, state, range(prev + 1, n), "avvp_weak")
            for i, end in ends.items():
                b.add_eos(end)
                if i + 1 < n:
                    b.add_edge(end, lay.SEP, after_sep[i])
        return b.compile(lay.vocab_size, root)


class AvqaFormat:
    """MUSIC-AVQA: `<answer words> <eos>`, constrained to the answer set. Annotation: str."""

    def __init__(self, layout: VocabLayout, labels: LabelSet, **_):
        self.layout, self.labels = layout, labels

    def encode(self, answer) -> list[int]:
        return self.labels.encode(answer) + [self.layout.EOS]

    def decode(self, seq: list[int]) -> str:
        return self.labels.labels[self.labels.read(seq, 0)[0]]

    def grammar(self) -> Grammar:
        b = GrammarBuilder("avqa")
        root = b.add_state("avqa: expecting an answer")
        for end in self.labels.add_trie(b, root, range(len(self.labels.labels)), "avqa").values():
            b.add_eos(end)
        return b.compile(self.layout.vocab_size, root)


class SslFormat:
    """VGG-SS box: `<loc x0> <loc y0> <loc x1> <loc y1> <eos>`.

    Annotation: (x0, y0, x1, y1) floats in [0, 1] with x0 <= x1 and y0 <= y1 (zero-area boxes
    occur in vggss.json and are allowed). The grammar only requires four location tokens:
    enforcing corner order would need B*B states. `decode` therefore rejects a box whose
    corners are out of order (InvalidSequenceError) and returns the bin centres
    `bin / (B - 1)` otherwise.
    """

    def __init__(self, layout: VocabLayout, **_):
        self.layout = layout

    def encode(self, box) -> list[int]:
        box = np.asarray(box, dtype=np.float64)
        if box.shape != (4,):
            raise ValueError(f"SSL box must be (x0, y0, x1, y1), got shape {box.shape}")
        bins = quantize_coord(box, self.layout.num_loc_bins)
        if box[0] > box[2] or box[1] > box[3]:
            raise ValueError(f"SSL box {box.tolist()} has x0 > x1 or y0 > y1")
        return [int(t) for t in self.layout.loc_token(bins)] + [self.layout.EOS]

    def decode(self, seq: list[int]) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = (float(self.layout.token_coord(t)) for t in seq[:4])
        if x0 > x1 or y0 > y1:
            raise InvalidSequenceError(
                f"SSL box corners out of order: x0={x0:.3f} x1={x1:.3f} y0={y0:.3f} "
                f"y1={y1:.3f}; a box needs x0 <= x1 and y0 <= y1")
        return (x0, y0, x1, y1)

    def grammar(self) -> Grammar:
        b, lay = GrammarBuilder("ssl"), self.layout
        names = ("x0", "y0", "x1", "y1")
        states = [b.add_state(f"ssl: expecting {n}") for n in names]
        last = b.add_state("ssl: after y1, expecting <eos>")
        b.add_eos(last)
        locs = lay.loc_token(np.arange(lay.num_loc_bins))
        for s, t in zip(states, states[1:] + [last], strict=True):
            b.add_edges(s, locs, t)
        return b.compile(lay.vocab_size, states[0])


class AvsFormat:
    """AVS mask codes: `Kh * Kw` code tokens (row-major) then `<eos>`.
    Annotation: int array [Kh, Kw] of codebook indices in [0, num_mask_codes)."""

    def __init__(self, layout: VocabLayout, mask_grid=(8, 8), **_):
        self.layout, self.grid = layout, tuple(int(k) for k in mask_grid)

    def encode(self, codes) -> list[int]:
        codes = np.asarray(codes)
        if codes.shape != self.grid or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"AVS codes must be an int array of shape {self.grid}, got "
                             f"{codes.dtype}{list(codes.shape)}")
        return [int(t) for t in self.layout.code_token(codes.reshape(-1))] + [self.layout.EOS]

    def decode(self, seq: list[int]) -> np.ndarray:
        codes = self.layout.token_code(np.asarray(seq, dtype=np.int64))  # [Kh * Kw]
        return codes.reshape(self.grid).astype(np.int32)  # [Kh, Kw]

    def grammar(self) -> Grammar:
        b, lay, n = GrammarBuilder("avs"), self.layout, self.grid[0] * self.grid[1]
        states = [b.add_state(f"avs: expecting code {k + 1} of {n}") for k in range(n)]
        last = b.add_state(f"avs: after {n} codes, expecting <eos>")
        b.add_eos(last)
        codes = lay.code_token(np.arange(lay.num_mask_codes))
        for s, t in zip(states, states[1:] + [last], strict=True):
            b.add_edges(s, codes, t)
        return b.compile(lay.vocab_size, states[0])


FORMATS = {
    "ave": AveFormat,
    "avvp": AvvpDenseFormat,
    "avvp_weak": AvvpWeakFormat,
    "avqa": AvqaFormat,
    "ssl": SslFormat,
    "avs": AvsFormat,
}
