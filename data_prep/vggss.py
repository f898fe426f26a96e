"""VGG-SS: annotated test frames with boxes, plus VGGSound training clips without boxes.

Layout read:
  RAW/vggss.json       [{"file": "<ytid>_<start 6 digits>", "class": str, "bbox": [[x0, y0,
                        x1, y1], ...]}, ...], coordinates normalized to [0, 1]
  RAW/vggss_test.csv   test ids, one per line
  RAW/frames/<id>.jpg + RAW/audio/<id>.wav   test media (one frame, the clip's audio)
  RAW/train.csv        training ids, one per line;  RAW/video/<id>.mp4   training clips
Boxes are stored exactly as annotated, including the corrupt -2.88e16 values of a few entries.
"""

from __future__ import annotations

import numbers
import re

from data_prep.common import (Listing, StillsMedia, Unit, VideoMedia, bad_row,
                              read_json_array, read_rows, require_file)

CLIP_SECONDS = 10
BOXES = "vggss.json"
ID_FILES = {"train": "train.csv", "test": "vggss_test.csv"}
ID_PATTERN = re.compile(r"^[\w-]+_\d{6}$")
HEADER_WORDS = {"file", "id", "video", "filename", "ytid"}


def _ids(raw_dir: str, rel: str) -> tuple[list[tuple[int, str]], list[dict]]:
  ids, skipped = [], []
  for index, (line, fields) in enumerate(read_rows(raw_dir, rel, ",")):
    name = fields[0].strip()
    if index == 0 and name.lower() in HEADER_WORDS:
      continue
    if len(fields) != 1 or not ID_PATTERN.match(name):
      skipped.append(bad_row(rel, line, "expected one id '<ytid>_<start, 6 digits>' per line"))
    else:
      ids.append((line, name))
  return ids, skipped


def _is_box(box) -> bool:
  return isinstance(box, list) and len(box) == 4 and all(
      isinstance(v, numbers.Real) and not isinstance(v, bool) for v in box)


def _boxes(raw_dir: str) -> dict[str, tuple[int, dict | None, str | None]]:
  """{file: (line, fields or None, problem or None)} from vggss.json (first entry wins)."""
  out = {}
  for entry_index, (line, entry) in enumerate(read_json_array(raw_dir, BOXES)):
    name = entry.get("file") if isinstance(entry, dict) else None
    if not isinstance(name, str) or name in out:
      continue
    boxes, cls = entry.get("bbox"), entry.get("class")
    if not isinstance(cls, str) or not isinstance(boxes, list) or not boxes or \
        not all(_is_box(b) for b in boxes):
      out[name] = (line, None, f"entry {entry_index}: needs a class and a list of "
                               "[x0, y0, x1, y1] boxes")
    else:
      out[name] = (line, {"class_name": cls, "boxes": [[float(v) for v in b] for b in boxes]},
                   None)
  return out


def list_split(raw_dir: str, split: str) -> Listing:
  rel = ID_FILES[split]
  require_file(raw_dir, rel, "vggss", f"ids of the {split} split")
  ids, skipped = _ids(raw_dir, rel)
  files = [rel]
  boxes = {}
  if split == "test":
    require_file(raw_dir, BOXES, "vggss", "test boxes")
    boxes = _boxes(raw_dir)
    files.append(BOXES)
  units = []
  for line, name in ids:
    fields = {"id": name, "video_id": name, "class_name": "", "boxes": []}
    if split == "test":
      box_line, annotation, problem = boxes.get(name, (None, None, None))
      if box_line is None:
        skipped.append({"id": name, "reason": f"no entry for {name} in {BOXES} ({rel}:{line})"})
        continue
      if problem:
        skipped.append(bad_row(BOXES, box_line, problem, name))
        continue
      fields.update(annotation)
      media = StillsMedia(frames=(f"frames/{name}.jpg",), audio=f"audio/{name}.wav")
    else:
      media = VideoMedia((f"video/{name}.mp4",))
    units.append(Unit(key=name, media=media, fields=fields, example_ids=(name,),
                      source=f"{rel}:{line}"))
  return Listing(units, skipped, files)
