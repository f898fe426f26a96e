"""AVSBench-object S4 (single source) and MS3 (multiple sources): 5 PNG frames, wav, masks.

Layout read (split = the csv's `split` column: train, val or test):
  S4:  RAW/Single-source/s4_meta_data.csv   columns by position name, start_time, category,
       then a named `split` column (header line)
       s4_data/visual_frames/<split>/<category>/<name>/<name>_{1..5}.png
       s4_data/audio_wav/<split>/<category>/<name>.wav
       s4_data/gt_masks/<split>/<category>/<name>/<name>_{1..5}.png   (train: only _1)
  MS3: RAW/Multi-sources/ms3_meta_data.csv  name first, a named `split` column
       ms3_data/visual_frames/<name>/<name>.mp4_{1..5}.png
       ms3_data/audio_wav/<split>/<name>.wav
       ms3_data/gt_masks/<split>/<name>/<name>_{1..5}.png
A row whose split is none of these is reported with the train split. Audio shorter than 5 s
is padded by repeating its last second (as AVSBench does) and flagged by num_segments < 5.
"""

from __future__ import annotations

import csv
import os

from av_unified_jax.data import schema
from data_prep.common import Listing, MaskFiles, StillsMedia, Unit, bad_row, require_file

CLIP_SECONDS = 5
SPLITS = ("train", "val", "test")
NUM_FRAMES = 5
S4_META = "Single-source/s4_meta_data.csv"
MS3_META = "Multi-sources/ms3_meta_data.csv"


def _rows(raw_dir: str, rel: str):
  """(line, header, row) of the metadata csv; rows keep their csv positions."""
  with open(os.path.join(raw_dir, rel), newline="", encoding="utf-8-sig") as f:
    reader = csv.reader(f)
    header = [h.strip() for h in next(reader, [])]
    if "split" not in header:
      raise ValueError(f"{rel} has no 'split' column in its header line {header}")
    rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
  return header.index("split"), rows


def _s4_unit(rel: str, line: int, row: list[str], split: str) -> Unit | dict:
  name, category = row[0].strip(), row[2].strip() if len(row) > 2 else ""
  if not name or not category:
    return bad_row(rel, line, "expected name, start_time, category, ..., split", name or None)
  problem = _name_problem(name, category)
  if problem:
    return bad_row(rel, line, problem, name)
  base = f"Single-source/s4_data/{{}}/{split}/{category}/{name}"
  frames = tuple(f"{base.format('visual_frames')}/{name}_{i}.png" for i in range(1, 6))
  masks = tuple(f"{base.format('gt_masks')}/{name}_{i}.png" for i in range(1, 6))
  required = tuple(i == 0 or split != "train" for i in range(NUM_FRAMES))
  return Unit(key=name, media=StillsMedia(frames, f"{base.format('audio_wav')}.wav"),
              fields={"id": name, "video_id": name, "category": category},
              example_ids=(name,), source=f"{rel}:{line}", masks=MaskFiles(masks, required))


def _ms3_unit(rel: str, line: int, row: list[str], split: str) -> Unit | dict:
  name = row[0].strip()
  if not name:
    return bad_row(rel, line, "empty video name")
  problem = _name_problem(name)
  if problem:
    return bad_row(rel, line, problem, name)
  root = "Multi-sources/ms3_data"
  frames = tuple(f"{root}/visual_frames/{name}/{name}.mp4_{i}.png" for i in range(1, 6))
  masks = tuple(f"{root}/gt_masks/{split}/{name}/{name}_{i}.png" for i in range(1, 6))
  return Unit(key=name, media=StillsMedia(frames, f"{root}/audio_wav/{split}/{name}.wav"),
              fields={"id": name, "video_id": name}, example_ids=(name,),
              source=f"{rel}:{line}", masks=MaskFiles(masks, (True,) * NUM_FRAMES))


def _name_problem(name: str, category: str | None = None) -> str | None:
  """Names become paths (the raw files read, the evaluation's `<id>_<frame>.png`): one that
  would leave its directory is rejected."""
  for what, value in (("video name", name), ("category", category)):
    problem = value is not None and schema.file_name_problem(value)
    if problem:
      return f"{what} {problem}; ids must be plain file names"
  return None


def _list(raw_dir: str, split: str, dataset: str, rel: str, make_unit) -> Listing:
  require_file(raw_dir, rel, dataset, "metadata csv")
  split_col, rows = _rows(raw_dir, rel)
  units, skipped = [], []
  for line, row in rows:
    row_split = row[split_col].strip() if len(row) > split_col else ""
    if row_split not in SPLITS:  # Belongs to no split: reported once, with train.
      if split == "train":
        skipped.append(bad_row(rel, line, f"split {row_split!r} is not one of {SPLITS}",
                               row[0].strip() or None))
    elif row_split == split:
      result = make_unit(rel, line, row, split)
      (units if isinstance(result, Unit) else skipped).append(result)
  return Listing(units, skipped, [rel])


def list_s4(raw_dir: str, split: str) -> Listing:
  return _list(raw_dir, split, "avsbench_s4", S4_META, _s4_unit)


def list_ms3(raw_dir: str, split: str) -> Listing:
  return _list(raw_dir, split, "avsbench_ms3", MS3_META, _ms3_unit)
