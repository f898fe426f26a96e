"""LLP (AVVP): tab-separated weak labels per split, dense audio/visual rows for val and test.

Layout read:
  RAW/AVVP_train.csv, AVVP_val_pd.csv, AVVP_test_pd.csv   `filename<TAB>event_labels` (header)
  RAW/AVVP_eval_audio.csv, AVVP_eval_visual.csv           `filename onset offset event_labels`
  RAW/LLP_dataset/video/<filename>.mp4
Dense rows are attached to the val/test videos they name; rows naming no video of the split
are ignored (their count is recorded in dataset_info). A malformed dense row skips its video.

Class names are checked against the 25 official classes, unless the raw tree has an optional
`RAW/classes.txt` (one class name per line) naming another label set, as the demo dataset does.
"""

from __future__ import annotations

import os

from data_prep.common import (Listing, Unit, VideoMedia, bad_row, parse_int, read_rows,
                              require_file)

SPLIT_FILES = {"train": "AVVP_train.csv", "val": "AVVP_val_pd.csv", "test": "AVVP_test_pd.csv"}
DENSE_FILES = {"audio": "AVVP_eval_audio.csv", "visual": "AVVP_eval_visual.csv"}
WEAK_HEADER = ["filename", "event_labels"]
DENSE_HEADER = ["filename", "onset", "offset", "event_labels"]
CLIP_SECONDS = 10
CLASSES = (
    "Speech", "Car", "Cheering", "Dog", "Cat", "Frying_(food)", "Basketball_bounce",
    "Fire_alarm", "Chainsaw", "Cello", "Banjo", "Singing", "Chicken_rooster", "Violin_fiddle",
    "Vacuum_cleaner", "Baby_laughter", "Accordion", "Lawn_mower", "Motorcycle", "Helicopter",
    "Acoustic_guitar", "Telephone_bell_ringing", "Baby_cry_infant_cry", "Blender", "Clapping")


CLASSES_FILE = "classes.txt"


def class_names(raw_dir: str) -> tuple[str, ...]:
  """The label set rows are checked against: RAW/classes.txt when present, else the official."""
  path = os.path.join(raw_dir, CLASSES_FILE)
  if not os.path.exists(path):
    return CLASSES
  with open(path, encoding="utf-8") as f:
    names = tuple(line.strip() for line in f if line.strip())
  if not names:
    raise ValueError(f"llp: {path} is empty; list one class name per line or remove it")
  return names


def _table(raw_dir: str, rel: str, header: list[str]) -> list[tuple[int, list[str]]]:
  rows = read_rows(raw_dir, rel, "\t")
  if not rows or [f.strip() for f in rows[0][1]] != header:
    raise ValueError(f"llp: {rel} should start with the tab-separated header {header}")
  return rows[1:]


def _dense_rows(raw_dir: str, rel: str, wanted: set[str], classes: tuple[str, ...]):
  """{filename: [(label, onset, offset)]}, {filename: problem} and the unmatched-row count."""
  rows, problems, unmatched = {}, {}, 0
  for line, fields in _table(raw_dir, rel, DENSE_HEADER):
    name = fields[0].strip()
    if name not in wanted:
      unmatched += 1
      continue
    onset = parse_int(fields[1]) if len(fields) == 4 else None
    offset = parse_int(fields[2]) if len(fields) == 4 else None
    label = fields[3].strip() if len(fields) == 4 else ""
    if onset is None or offset is None or not 0 <= onset <= offset <= CLIP_SECONDS:
      problems.setdefault(name, bad_row(rel, line, "expected filename, integer onset <= offset "
                                        f"in [0, {CLIP_SECONDS}], label", name))
    elif label not in classes:
      problems.setdefault(name, bad_row(rel, line, f"unknown class {label!r}", name))
    else:
      rows.setdefault(name, []).append((label, onset, offset))
  return rows, problems, unmatched


def _weak(rel: str, line: int, fields: list[str],
          classes: tuple[str, ...]) -> tuple[dict | None, dict | None]:
  name = fields[0].strip() if fields else ""
  if len(fields) != 2 or not name or " " in name:
    return None, bad_row(rel, line, "expected 'filename<TAB>event_labels'", name or None)
  labels = [label.strip() for label in fields[1].split(",") if label.strip()]
  unknown = [label for label in labels if label not in classes]
  if not labels or unknown:
    return None, bad_row(rel, line, f"no labels or unknown classes {unknown}", name)
  return {"id": name, "video_id": name, "weak_labels": labels}, None


def list_split(raw_dir: str, split: str) -> Listing:
  rel = SPLIT_FILES[split]
  require_file(raw_dir, rel, "llp", f"weak labels of the {split} split")
  units, skipped = [], []
  classes = class_names(raw_dir)
  for line, fields in _table(raw_dir, rel, WEAK_HEADER):
    example, problem = _weak(rel, line, fields, classes)
    if problem:
      skipped.append(problem)
    else:
      units.append(Unit(key=example["id"],
                        media=VideoMedia((f"LLP_dataset/video/{example['id']}.mp4",)),
                        fields=example, example_ids=(example["id"],), source=f"{rel}:{line}"))
  files, notes = [rel], {}
  names = {u.key for u in units}
  dense = {}
  if split != "train":
    for modality, dense_rel in DENSE_FILES.items():
      require_file(raw_dir, dense_rel, "llp", f"dense {modality} labels")
      rows, problems, unmatched = _dense_rows(raw_dir, dense_rel, names, classes)
      dense[modality] = (rows, problems)
      files.append(dense_rel)
      notes[f"{modality}_rows_of_other_videos"] = unmatched
  kept = []
  for unit in units:
    problem = next((p[unit.key] for _, p in dense.values() if unit.key in p), None)
    if problem:
      skipped.append(problem)
      continue
    for modality in DENSE_FILES:
      events = dense[modality][0].get(unit.key, []) if dense else []
      unit.fields[f"{modality}_labels"] = [label for label, _, _ in events]
      unit.fields[f"{modality}_spans"] = [[onset, offset] for _, onset, offset in events]
    kept.append(unit)
  return Listing(kept, skipped, files, notes)
