"""Converted datasets on disk, and the random-access source that reads one split for grain.

Layout written by `data_prep.convert` (names fixed here, shared by writer and reader):

  OUT/<dataset>/dataset_info.json    features, conversion parameters, annotation sha256, splits
  OUT/<dataset>/report.json          {"<split>": {"written": int, "skipped": [{id, reason}]}}
  OUT/<dataset>/<split>/<split>-00003-of-00017.array_record   records (one msgpack each)
  OUT/<dataset>/<split>/<split>-00003-of-00017.json           the shard's index: the example ids
                                                              of each record, skips, fingerprint

A shard's index file is renamed into place only after its ArrayRecord file, so a shard is
complete exactly when both exist.

    source = open_split("OUT/ave", "train")      # grain.MapDataset.source(source) works
    example = source[0]                          # dict of fields, see schema.py
    frames = decode_frames(example)              # uint8[N, H, W, 3]
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np
from etils import epath

from av_unified_jax.data import records, schema

INFO_FILE = "dataset_info.json"
REPORT_FILE = "report.json"
FORMAT_VERSION = 1


def shard_stem(split: str, index: int, count: int) -> str:
  """File stem of shard `index` of `count` of a split, e.g. 'train-00003-of-00017'."""
  return f"{split}-{index:05d}-of-{count:05d}"


def load_info(dataset_dir: str | os.PathLike) -> dict:
  """Reads OUT/<dataset>/dataset_info.json, with a clear error when it is absent."""
  path = epath.Path(dataset_dir) / INFO_FILE  # Local or a URL (gs://...).
  if not path.exists():
    raise FileNotFoundError(
        f"{path} not found: {dataset_dir} is not a converted dataset (or its conversion has "
        "not finished). Run `python -m data_prep.convert --dataset NAME --raw_dir RAW "
        "--out_dir OUT` and open OUT/NAME.")
  info = json.loads(path.read_text())
  if info.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{path} has format_version {info.get('format_version')}, this reader "
                     f"reads {FORMAT_VERSION}; convert the dataset again")
  return info


class ShardSource:
  """Random access to the examples of one converted split (grain `RandomAccessDataSource`).

  `source[i]` returns one example: a dict with the fields of `schema.DATASETS[name]`
  (numpy arrays for numeric fields with the schema's dtype, str, bytes and lists otherwise).
  For grouped datasets (MUSIC-AVQA) an example is one question joined with its video's media.
  Picklable: grain workers reopen the files lazily.
  """

  def __init__(self, dataset_dir: str | os.PathLike, split: str):
    self.dataset_dir = os.fspath(dataset_dir)
    self.info = load_info(self.dataset_dir)
    self.spec = schema.get_spec(self.info["name"])
    splits = self.info["splits"]
    if split not in splits:
      raise ValueError(f"split {split!r} is not converted in {self.dataset_dir}; "
                       f"converted splits: {sorted(splits)}")
    self.split = split
    self._shards = [s for s in splits[split]["shards"] if s["num_records"] > 0]
    self._ids: list[str] | None = None
    self._index = None  # Grouped only: (record of example, position in record).
    self._source = None
    if self.spec.grouped:
      record_ids = self._record_ids()
      self._index = np.array([(r, q) for r, ids in enumerate(record_ids)
                              for q in range(len(ids))], np.int64).reshape(-1, 2)
    self._len = (len(self._index) if self._index is not None
                 else sum(s["num_records"] for s in self._shards))

  def _record_ids(self) -> list[list[str]]:
    out = []
    for shard in self._shards:
      index_path = epath.Path(self.dataset_dir) / (shard["file"][:-len(".array_record")] + ".json")
      out.extend(json.loads(index_path.read_text())["records"])
    return out

  @property
  def ids(self) -> list[str]:
    """Example ids in source order (reads the shards' index files once)."""
    if self._ids is None:
      self._ids = [i for ids in self._record_ids() for i in ids]
    return self._ids

  def _open(self):
    if self._source is None:
      from array_record.python import array_record_data_source  # Late: keeps the package light.

      paths = [f"{os.path.join(self.dataset_dir, s['file'])}[0:{s['num_records']}]"
               for s in self._shards]
      self._source = array_record_data_source.ArrayRecordDataSource(paths)
    return self._source

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not -self._len <= index < self._len:
      raise IndexError(f"index {index} out of range for {self._len} examples")
    index %= self._len
    if self._index is None:
      return records.decode(self._open()[index])
    record_pos, question_pos = self._index[index]
    record = records.decode(self._open()[int(record_pos)])
    questions = record.pop("questions")
    record.update(questions[int(question_pos)])
    return record

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_source"] = None
    return state

  def __repr__(self) -> str:
    return f"ShardSource({self.dataset_dir!r}, split={self.split!r}, len={self._len})"


class ConcatSource:
  """Random access over several sources, one after the other (picklable for grain)."""

  def __init__(self, sources):
    self.sources = list(sources)
    self.offsets = np.cumsum([0] + [len(s) for s in self.sources])

  def __len__(self) -> int:
    return int(self.offsets[-1])

  def __getitem__(self, index: int):
    k = int(np.searchsorted(self.offsets, index, side="right") - 1)
    return self.sources[k][int(index - self.offsets[k])]

  def __repr__(self) -> str:
    return f"ConcatSource({self.sources!r})"


def open_split(dataset_dir: str | os.PathLike, split: str) -> ShardSource:
  """Opens split `split` of the converted dataset at `dataset_dir` (OUT/<dataset>)."""
  return ShardSource(dataset_dir, split)


def decode_frames(example: dict[str, Any]) -> np.ndarray:
  """Decodes `example['frames']` to uint8[N, H, W, 3]."""
  from PIL import Image  # Late: `import av_unified_jax.data` stays numpy-only.

  return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
                   for b in example["frames"]])


def decode_masks(example: dict[str, Any]) -> np.ndarray:
  """Decodes AVSBench `example['masks']` to bool[5, H, W]; unannotated frames are all False."""
  from PIL import Image  # Late: `import av_unified_jax.data` stays numpy-only.

  decoded = [np.asarray(Image.open(io.BytesIO(b))) > 127 if b else None
             for b in example["masks"]]
  shape = next(m.shape for m in decoded if m is not None)
  return np.stack([m if m is not None else np.zeros(shape, bool) for m in decoded])
