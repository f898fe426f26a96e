"""The vocabulary layout: the single source of truth for every token id.

One vocabulary is laid out in contiguous ranges, in this order (docs/MODEL.md, Tokens):

| range     | tokens                                                                        |
|-----------|-------------------------------------------------------------------------------|
| `special` | `<pad>`=0 `<bos>` `<eos>` `<unk>` `<sep>` `<none>` `<audio>` `<visual>`       |
| `task`    | one per task, `<ave>` `<avvp>` `<avqa>` `<ssl>` `<avs>` (in `tasks` order)    |
| `time`    | `<t_0>` ... `<t_{max_time}>`: segment boundaries in whole seconds             |
| `loc`     | `<loc_0>` ... `<loc_{B-1}>`: a coordinate c in [0, 1] is `round(c * (B-1))`    |
| `code`    | `<code_0>` ... `<code_{K-1}>`: indices of the mask tokenizer's codebook       |
| `text`    | `<text_0>` ... : the ids of the text tokenizer, shifted by the range start    |

Ranges are `(start, stop)` pairs, half open. The layout is a frozen dataclass saved as JSON
with every checkpoint and export; `VocabLayout.from_json(layout.to_json()) == layout`.
The id helpers accept a Python int or an integer numpy array and return the same kind.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

TASKS = ("ave", "avvp", "avqa", "ssl", "avs")
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>", "<sep>", "<none>", "<audio>", "<visual>")
RANGE_NAMES = ("special", "task", "time", "loc", "code", "text")
_LAYOUT_FORMAT = "av_unified_jax.vocab_layout/1"


class InvalidSequenceError(ValueError):
    """A token sequence is not a valid target (raised by detokenizers and grammar walks)."""


def quantize_coord(c, num_bins: int):
    """Coordinate(s) c in [0, 1] -> location bin(s) `round(c * (num_bins - 1))`.

    Rounds half up (`floor(x + 0.5)`), so 0.5 with 100 bins is bin 50 on every platform.
    Args: c: float or float array, each value in [0, 1] (NaN and values outside raise).
    Returns: int (for a scalar) or int64 array of the same shape.
    """
    arr = np.asarray(c, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0.0) or np.any(arr > 1.0):
        raise ValueError(
            f"coordinate(s) {arr.tolist()} outside [0, 1]: boxes must be normalised to the "
            "frame and finite; clip or drop corrupt boxes before tokenizing"
        )
    bins = np.floor(arr * (num_bins - 1) + 0.5).astype(np.int64)
    return int(bins) if bins.ndim == 0 else bins


def dequantize_loc(b, num_bins: int):
    """Location bin(s) -> coordinate(s) `b / (num_bins - 1)` (float or float64 array)."""
    arr = np.asarray(b)
    if np.any(arr < 0) or np.any(arr >= num_bins):
        raise ValueError(f"location bin(s) {arr.tolist()} outside [0, {num_bins})")
    out = arr.astype(np.float64) / (num_bins - 1)
    return float(out) if out.ndim == 0 else out


@dataclasses.dataclass(frozen=True)
class VocabLayout:
    """Token-id ranges of the unified vocabulary (see the module docstring for the order).

    Attributes:
      tasks: task names, one task token each, in id order.
      max_time: largest time token `<t_max_time>`; there are `max_time + 1` time tokens.
      num_loc_bins: B, the number of location bins (>= 2).
      num_mask_codes: K, the mask tokenizer's codebook size.
      text_vocab_size: size of the text tokenizer's vocabulary.
    """

    tasks: tuple[str, ...] = TASKS
    max_time: int = 10
    num_loc_bins: int = 100
    num_mask_codes: int = 512
    text_vocab_size: int = 0

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be non-empty and distinct, got {self.tasks}")
        for field, low in (("max_time", 1), ("num_loc_bins", 2), ("num_mask_codes", 1),
                           ("text_vocab_size", 0)):
            value = getattr(self, field)
            if not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"VocabLayout.{field} must be an int >= {low}, got {value!r}")

    # ------------------------------------------------------------------ ranges
    @property
    def ranges(self) -> dict[str, tuple[int, int]]:
        """Range name -> (start, stop) for `special, task, time, loc, code, text`."""
        sizes = (len(SPECIALS), len(self.tasks), self.max_time + 1, self.num_loc_bins,
                 self.num_mask_codes, self.text_vocab_size)
        out, start = {}, 0
        for name, size in zip(RANGE_NAMES, sizes, strict=True):
            out[name] = (start, start + size)
            start += size
        return out

    @property
    def vocab_size(self) -> int:
        return self.ranges["text"][1]

    special_range = property(lambda self: self.ranges["special"])
    task_range = property(lambda self: self.ranges["task"])
    time_range = property(lambda self: self.ranges["time"])
    loc_range = property(lambda self: self.ranges["loc"])
    code_range = property(lambda self: self.ranges["code"])
    text_range = property(lambda self: self.ranges["text"])

    PAD = property(lambda self: 0)
    BOS = property(lambda self: 1)
    EOS = property(lambda self: 2)
    UNK = property(lambda self: 3)
    SEP = property(lambda self: 4)
    NONE = property(lambda self: 5)
    AUDIO = property(lambda self: 6)
    VISUAL = property(lambda self: 7)

    # ------------------------------------------------------------ value -> id
    def _to_id(self, range_name: str, value):
        start, stop = self.ranges[range_name]
        arr = np.asarray(value)
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{range_name} index must be an integer, got {value!r}")
        if np.any(arr < 0) or np.any(arr >= stop - start):
            raise ValueError(
                f"{range_name} index {arr.tolist()} outside [0, {stop - start}) of this layout"
            )
        out = arr.astype(np.int64) + start
        return int(out) if out.ndim == 0 else out

    def task_token(self, name: str) -> int:
        if name not in self.tasks:
            raise ValueError(f"unknown task {name!r}; this layout has tasks {self.tasks}")
        return self.ranges["task"][0] + self.tasks.index(name)

    def time_token(self, t):
        """Second t in [0, max_time] -> id of `<t_t>`."""
        return self._to_id("time", t)

    def loc_token(self, b):
        """Location bin b in [0, num_loc_bins) -> id of `<loc_b>`."""
        return self._to_id("loc", b)

    def code_token(self, k):
        """Codebook index k in [0, num_mask_codes) -> id of `<code_k>`."""
        return self._to_id("code", k)

    def text_token(self, i):
        """Text tokenizer id i in [0, text_vocab_size) -> global id."""
        return self._to_id("text", i)

    def coord_token(self, c):
        """Coordinate c in [0, 1] -> id of its location bin (see `quantize_coord`)."""
        return self.loc_token(quantize_coord(c, self.num_loc_bins))

    # ------------------------------------------------------------ id -> value
    def _from_id(self, range_name: str, token_id):
        start, stop = self.ranges[range_name]
        arr = np.asarray(token_id)
        if not np.issubdtype(arr.dtype, np.integer) or np.any(arr < start) or np.any(arr >= stop):
            raise ValueError(
                f"token id(s) {arr.tolist()} are not {range_name} tokens (ids [{start}, {stop}))"
            )
        out = arr.astype(np.int64) - start
        return int(out) if out.ndim == 0 else out

    def token_task(self, token_id: int) -> str:
        return self.tasks[self._from_id("task", token_id)]

    def token_time(self, token_id):
        return self._from_id("time", token_id)

    def token_loc(self, token_id):
        return self._from_id("loc", token_id)

    def token_coord(self, token_id):
        """Location token id -> coordinate `bin / (B - 1)` in [0, 1]."""
        return dequantize_loc(self.token_loc(token_id), self.num_loc_bins)

    def token_code(self, token_id):
        return self._from_id("code", token_id)

    def token_text(self, token_id):
        return self._from_id("text", token_id)

    def kind(self, token_id: int) -> str:
        """Range name of one token id: special, task, time, loc, code or text."""
        token_id = int(token_id)
        for name, (start, stop) in self.ranges.items():
            if start <= token_id < stop:
                return name
        raise ValueError(f"token id {token_id} outside the vocabulary [0, {self.vocab_size})")

    def kinds(self, token_ids) -> np.ndarray:
        """Vectorised `kind`: int[...] -> index into RANGE_NAMES, int32[...] (-1 if outside)."""
        ids = np.asarray(token_ids)
        out = np.full(ids.shape, -1, dtype=np.int32)
        for k, name in enumerate(RANGE_NAMES):
            start, stop = self.ranges[name]
            out[(ids >= start) & (ids < stop)] = k
        return out

    def token_name(self, token_id: int) -> str:
        """Readable name of one id: `<eos>`, `<avqa>`, `<t_3>`, `<loc_7>`, `<code_9>`,
        `<text_4>`."""
        kind = self.kind(token_id)
        if kind == "special":
            return SPECIALS[int(token_id)]
        if kind == "task":
            return f"<{self.token_task(token_id)}>"
        prefix = {"time": "t", "loc": "loc", "code": "code", "text": "text"}[kind]
        return f"<{prefix}_{self._from_id(kind, token_id)}>"

    # -------------------------------------------------------------- save/load
    def to_dict(self) -> dict[str, Any]:
        out = {"format": _LAYOUT_FORMAT, **dataclasses.asdict(self)}
        out["tasks"] = list(self.tasks)
        out["ranges"] = {k: list(v) for k, v in self.ranges.items()}
        out["vocab_size"] = self.vocab_size
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VocabLayout:
        if data.get("format") != _LAYOUT_FORMAT:
            raise ValueError(
                f"not a vocabulary layout (format {data.get('format')!r}, "
                f"expected {_LAYOUT_FORMAT!r})"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        layout = cls(**{k: v for k, v in data.items() if k in fields})
        stored = {k: tuple(v) for k, v in data.get("ranges", {}).items()}
        if stored and stored != layout.ranges:
            raise ValueError(
                f"layout JSON ranges {stored} disagree with the ranges its fields give "
                f"{layout.ranges}; the file was edited by hand or written by other code"
            )
        return layout

    @classmethod
    def from_json(cls, text: str) -> VocabLayout:
        return cls.from_dict(json.loads(text))
