"""AVE: `Category&VideoID&Quality&Start&End` rows, videos RAW/AVE/<VideoID>.mp4.

Layout read:
  RAW/Annotations.txt                    all rows (row index = index of the h5 label files)
  RAW/trainSet.txt, valSet.txt, testSet.txt   the rows of each split, same format
  RAW/AVE/<VideoID>.mp4
A header line `Category&VideoID&Quality&StartTime&EndTime` is skipped where present. A video
on two rows (two categories) gives two examples, id '<VideoID>:<Category>'.
"""

from __future__ import annotations

from data_prep.common import (Listing, Unit, VideoMedia, bad_row, parse_int, read_rows,
                              require_file)

SPLIT_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
ALL_ROWS = "Annotations.txt"
HEADER = "Category&VideoID&Quality&StartTime&EndTime"
CLIP_SECONDS = 10


def _rows(raw_dir: str, rel: str):
  return [(n, fields) for n, fields in read_rows(raw_dir, rel, "&")
          if "&".join(fields) != HEADER]


def _parse(rel: str, line: int, fields: list[str]) -> tuple[dict | None, dict | None]:
  """(fields of the example, None) or (None, report entry)."""
  if len(fields) != 5:
    return None, bad_row(rel, line, f"expected 5 '&'-separated fields, got {len(fields)}")
  category, video_id, _, start_text, end_text = (f.strip() for f in fields)
  example_id = f"{video_id}:{category}"
  start, end = parse_int(start_text), parse_int(end_text)
  if not category or not video_id:
    return None, bad_row(rel, line, "empty category or video id")
  if start is None or end is None or not 0 <= start <= end <= CLIP_SECONDS:
    return None, bad_row(rel, line, f"start/end {start_text!r}/{end_text!r} are not integers "
                         f"with 0 <= start <= end <= {CLIP_SECONDS}", example_id)
  return {"id": example_id, "video_id": video_id, "category": category, "start": start,
          "end": end}, None


def list_split(raw_dir: str, split: str) -> Listing:
  rel = SPLIT_FILES[split]
  require_file(raw_dir, ALL_ROWS, "ave", "all annotation rows")
  require_file(raw_dir, rel, "ave", f"rows of the {split} split")
  row_index: dict[str, int] = {}
  for index, (_, fields) in enumerate(_rows(raw_dir, ALL_ROWS)):
    row_index.setdefault("&".join(f.strip() for f in fields), index)
  units, skipped = [], []
  for line, fields in _rows(raw_dir, rel):
    example, problem = _parse(rel, line, fields)
    if problem:
      skipped.append(problem)
      continue
    example["annotation_row"] = row_index.get("&".join(f.strip() for f in fields), -1)
    units.append(Unit(key=example["id"], media=VideoMedia((f"AVE/{example['video_id']}.mp4",)),
                      fields=example, example_ids=(example["id"],), source=f"{rel}:{line}"))
  return Listing(units, skipped, [ALL_ROWS, rel])
