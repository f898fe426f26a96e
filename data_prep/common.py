"""What the per-benchmark modules produce: units of work, and annotation-file helpers.

A benchmark module reads its annotation files and returns a `Listing`: the `Unit`s to convert
(one per record: one clip, and the annotation fields of the example(s) it holds) and the
annotation rows it had to skip, each with a reason naming the file and line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any


@dataclasses.dataclass(frozen=True)
class VideoMedia:
  """A video file with an audio track; the first existing candidate path is read."""

  candidates: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class StillsMedia:
  """Still frames (one image file each) plus an audio file."""

  frames: tuple[str, ...]
  audio: str


@dataclasses.dataclass(frozen=True)
class MaskFiles:
  """Ground-truth mask PNGs, one per frame; `required[i]`: a missing file skips the clip."""

  paths: tuple[str, ...]
  required: tuple[bool, ...]


@dataclasses.dataclass(frozen=True)
class Unit:
  """One record to write: its media and annotation fields.

  key: the record id (the example id; the video id for grouped datasets).
  fields: annotation fields of the record (all schema fields but the media ones; grouped
    datasets hold their examples in fields['questions']).
  example_ids: ids of the examples the record yields (reported when the clip is skipped).
  source: 'file:line' of the annotation that defines it.
  """

  key: str
  media: VideoMedia | StillsMedia
  fields: dict[str, Any]
  example_ids: tuple[str, ...]
  source: str
  masks: MaskFiles | None = None

  def describe(self) -> dict:
    """JSON-able content of the unit (part of the shard fingerprint)."""
    return {"key": self.key, "media": dataclasses.asdict(self.media), "fields": self.fields,
            "masks": dataclasses.asdict(self.masks) if self.masks else None}


@dataclasses.dataclass
class Listing:
  """Result of reading a split's annotations."""

  units: list[Unit]
  skipped: list[dict[str, str]]  # {"id": ..., "reason": ...} for bad annotation rows
  annotation_files: list[str]  # paths relative to the raw directory
  notes: dict[str, Any] = dataclasses.field(default_factory=dict)


# Every skip reason in report.json starts with one of these.
REASON_KINDS = ("missing file", "undecodable", "truncated", "no audio stream", "no video stream",
                "too short", "malformed annotation row", "duplicate id", "no entry")


def reason_kind(reason: str) -> str:
  """The fixed prefix of a skip reason (see REASON_KINDS), or 'other'."""
  return next((kind for kind in REASON_KINDS if reason.startswith(kind)), "other")


class AnnotationFileError(FileNotFoundError):
  """A required annotation file is missing (the whole split cannot be converted)."""


def require_file(raw_dir: str, rel: str, dataset: str, what: str) -> str:
  """Absolute path of an annotation file, or a clear error naming it and the layout."""
  path = os.path.join(raw_dir, rel)
  if not os.path.isfile(path):
    raise AnnotationFileError(
        f"{dataset}: annotation file {path} not found ({what}). Check that --raw_dir holds the "
        "benchmark as distributed (layouts: `python -m data_prep.convert --help`), or choose "
        "other splits with --split.")
  return path


def bad_row(rel: str, line: int, what: str, example_id: str | None = None) -> dict[str, str]:
  """A report entry for a malformed annotation row."""
  return {"id": example_id or f"{rel}:{line}",
          "reason": f"malformed annotation row {rel}:{line}: {what}"}


def read_rows(raw_dir: str, rel: str, sep: str) -> list[tuple[int, list[str]]]:
  """(1-based line number, fields) of each non-blank line of a text annotation file."""
  with open(os.path.join(raw_dir, rel), encoding="utf-8-sig") as f:
    return [(n, line.rstrip("\r\n").split(sep)) for n, line in enumerate(f, 1) if line.strip()]


def read_json_array(raw_dir: str, rel: str) -> list[tuple[int, Any]]:
  """(1-based line where it starts, item) of each item of a JSON file holding one array."""
  with open(os.path.join(raw_dir, rel), encoding="utf-8") as f:
    text = f.read()
  decoder = json.JSONDecoder()
  pos = _skip_space(text, 0)
  if text[pos:pos + 1] != "[":
    raise ValueError(f"{rel} does not hold a JSON array")
  items, pos = [], _skip_space(text, pos + 1)
  while text[pos:pos + 1] != "]":
    item, end = decoder.raw_decode(text, pos)
    items.append((text.count("\n", 0, pos) + 1, item))
    pos = _skip_space(text, end)
    if text[pos:pos + 1] == ",":
      pos = _skip_space(text, pos + 1)
    elif text[pos:pos + 1] != "]":
      raise ValueError(f"{rel}: expected ',' or ']' at line {text.count(chr(10), 0, pos) + 1}")
  return items


def _skip_space(text: str, pos: int) -> int:
  while pos < len(text) and text[pos] in " \t\r\n":
    pos += 1
  return pos


def sha256_file(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def parse_int(text: str) -> int | None:
  """int of a decimal field, or None."""
  text = text.strip()
  return int(text) if text.lstrip("-").isdigit() else None
