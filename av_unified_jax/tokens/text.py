"""A deterministic word-level text tokenizer with character and byte fallback.

Why not SentencePiece: the text of the five benchmarks is small and closed (class names,
41-42 answers, a few hundred question templates, the prompts). A word-level vocabulary gives
every class word and answer a single piece, so label tries stay shallow and targets short;
exact reversibility holds by construction (no normalisation, spaces are part of the pieces);
training is a sort by (count, piece), so it is byte-for-byte deterministic and independent of
the corpus order; and the saved file is a JSON list of pieces that a PyTorch-only user can
re-implement in twenty lines. SentencePiece needs special options to keep case, double spaces,
leading spaces and full-width punctuation, and cannot represent its own `▁` meta symbol.

Algorithm:
  * A string is split into *pre-pieces* by the regex ` ?\\w+| ?[^\\w\\s]|\\s` (a word or one
    punctuation character, each with its optional leading space; any other whitespace
    character alone). Concatenating the pre-pieces gives the string back exactly.
  * Vocabulary, in id order: the 256 byte tokens, every printable ASCII character and every
    character of the corpus (sorted by code point), then the corpus pre-pieces that are longer
    than one character, by decreasing count, ties by the piece string. A *shared word* (a
    class name or answer given to `train`) gets no space-prefixed piece: inside a sentence it
    is encoded as the space and then the word's own piece, so a question that names a class
    uses the very token that labels and answers use.
  * Encoding one pre-piece: its own id if it is in the vocabulary; else, if it starts with a
    space and the rest is a known piece, the space then that piece; else character by
    character, each character's id or, for an unknown character, its UTF-8 bytes.
    The encoding is canonical: one string has exactly one encoding.
  * Decoding concatenates the pieces (runs of byte tokens are UTF-8 decoded together).
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterable, Sequence

_PRE_PIECE = re.compile(r" ?\w+| ?[^\w\s]|\s")
_FORMAT = "av_unified_jax.word_tokenizer/1"
NUM_BYTES = 256
_ASCII = tuple(chr(c) for c in range(0x20, 0x7F))


def pre_pieces(text: str) -> list[str]:
    """Split a string into pre-pieces; `"".join(pre_pieces(s)) == s` for every str s."""
    return _PRE_PIECE.findall(text)


class TextTokenizer:
    """Word-level tokenizer with character and byte fallback (see the module docstring).

    Ids 0..255 are the bytes 0x00..0xFF (fallback), then single characters, then words.
    `decode(encode(s)) == s` for every Python str s.
    """

    def __init__(self, pieces: Sequence[str]):
        """Args: pieces: the non-byte pieces in id order (ids start at 256)."""
        pieces = list(pieces)
        if len(set(pieces)) != len(pieces) or any(not p for p in pieces):
            raise ValueError("text tokenizer pieces must be distinct non-empty strings")
        self.pieces = tuple(pieces)
        self._ids = {p: NUM_BYTES + i for i, p in enumerate(pieces)}

    # ---------------------------------------------------------------- training
    @classmethod
    def train(cls, corpus: Iterable[str], min_count: int = 1,
              max_words: int | None = None, shared_words: Iterable[str] = ()) -> TextTokenizer:
        """Builds the vocabulary from a corpus of strings (deterministic).

        Args:
          corpus: strings (labels, answers, prompts, questions); order does not matter.
          min_count: a multi-character pre-piece needs this many occurrences to become a piece.
          max_words: keep at most this many multi-character pieces (the most frequent).
          shared_words: words (single pre-pieces without a leading space, e.g. class names)
            whose space-prefixed form is not made a piece, so that " word" encodes as " " and
            then the piece "word".
        """
        counts: collections.Counter[str] = collections.Counter()
        chars = set(_ASCII)
        for text in corpus:
            if not isinstance(text, str):
                raise TypeError(f"text corpus entries must be str, got {type(text).__name__}")
            chars.update(text)
            counts.update(p for p in pre_pieces(text) if len(p) > 1)
        shared = {w for w in shared_words if pre_pieces(w) == [w] and not w.startswith(" ")}
        for word in shared:
            counts.pop(" " + word, None)
            if len(word) > 1:  # Its own piece, even where the corpus never has it alone.
                counts[word] = max(counts[word], min_count)
        words = sorted((p for p, n in counts.items() if n >= min_count),
                       key=lambda p: (-counts[p], p))
        if max_words is not None:
            words = words[:max_words]
        return cls(sorted(chars) + words)

    # ------------------------------------------------------------ encode/decode
    @property
    def vocab_size(self) -> int:
        return NUM_BYTES + len(self.pieces)

    def piece_to_id(self, piece: str) -> int | None:
        return self._ids.get(piece)

    def id_to_piece(self, i: int) -> str:
        """Piece string of id i; byte ids give `<0xAB>`."""
        i = int(i)
        if not 0 <= i < self.vocab_size:
            raise ValueError(f"text id {i} outside [0, {self.vocab_size})")
        return f"<0x{i:02X}>" if i < NUM_BYTES else self.pieces[i - NUM_BYTES]

    def _encode_piece(self, piece: str, out: list[int]) -> None:
        known = self._ids.get(piece)
        if known is not None:
            out.append(known)
            return
        if piece[0] == " " and len(piece) > 1 and piece[1:] in self._ids:
            out.extend((self._ids[" "], self._ids[piece[1:]]))
            return
        for ch in piece:
            known = self._ids.get(ch)
            if known is not None:
                out.append(known)
            else:
                out.extend(ch.encode("utf-8"))

    def encode(self, text: str) -> list[int]:
        """str -> list of text ids (canonical; empty string -> [])."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        out: list[int] = []
        for piece in pre_pieces(text):
            self._encode_piece(piece, out)
        return out

    def decode(self, ids: Iterable[int], errors: str = "strict") -> str:
        """List of text ids -> str. Byte runs that are not valid UTF-8 raise (errors='strict')
        or are replaced (errors='replace')."""
        parts: list[str] = []
        pending = bytearray()
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"text id {i} outside [0, {self.vocab_size})")
            if i < NUM_BYTES:
                pending.append(i)
                continue
            if pending:
                parts.append(pending.decode("utf-8", errors=errors))
                pending.clear()
            parts.append(self.pieces[i - NUM_BYTES])
        if pending:
            parts.append(pending.decode("utf-8", errors=errors))
        return "".join(parts)

    # -------------------------------------------------------------- save/load
    def to_json(self) -> str:
        data = {"format": _FORMAT, "num_bytes": NUM_BYTES, "pieces": list(self.pieces)}
        return json.dumps(data, indent=1, ensure_ascii=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TextTokenizer:
        data = json.loads(text)
        if data.get("format") != _FORMAT or data.get("num_bytes") != NUM_BYTES:
            raise ValueError(
                f"not a word tokenizer file (format {data.get('format')!r}, "
                f"expected {_FORMAT!r} with {NUM_BYTES} byte tokens)"
            )
        return cls(data["pieces"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextTokenizer) and self.pieces == other.pieces

    def __hash__(self) -> int:
        return hash(self.pieces)

    def __repr__(self) -> str:
        return f"TextTokenizer(vocab_size={self.vocab_size})"
