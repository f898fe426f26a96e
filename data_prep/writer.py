"""Shard planning and writing: fixed shards, temp names, atomic renames, reuse of finished shards.

A split's units are cut, in annotation order, into shards of `clips_per_shard` units; shard
`i of n` always holds the same units, so a shard is a unit of work that any process or machine
can write. Each shard's ArrayRecord file is written under a temporary name and renamed when
complete, then its index file (`<stem>.json`: example ids of each record, skipped clips,
padded clips, fingerprint) is renamed into place. A shard whose index exists with the same
fingerprint (conversion parameters + the units' annotations) is finished and never rewritten.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import re

from array_record.python import array_record_module

from av_unified_jax.data import shards
from av_unified_jax.data.params import ConvertParams
from data_prep.common import Unit


@dataclasses.dataclass(frozen=True)
class ShardPlan:
  """Shard `index` of `count` of a split, the units it holds and their fingerprint."""

  split: str
  index: int
  count: int
  units: tuple[Unit, ...]
  fingerprint: str

  @property
  def stem(self) -> str:
    return shards.shard_stem(self.split, self.index, self.count)

  @property
  def file(self) -> str:
    """ArrayRecord path relative to the dataset directory."""
    return f"{self.split}/{self.stem}.array_record"


def plan_split(dataset: str, split: str, units: list[Unit],
               params: ConvertParams) -> list[ShardPlan]:
  size = params.clips_per_shard
  chunks = [tuple(units[i:i + size]) for i in range(0, len(units), size)]
  head = json.dumps({"dataset": dataset, "params": dataclasses.asdict(params),
                     "format_version": shards.FORMAT_VERSION}, sort_keys=True)
  plans = []
  for index, chunk in enumerate(chunks):
    body = json.dumps([u.describe() for u in chunk], sort_keys=True)
    digest = hashlib.sha256((head + body).encode()).hexdigest()
    plans.append(ShardPlan(split, index, len(chunks), chunk, digest))
  return plans


def index_path(dataset_dir: str, plan: ShardPlan) -> str:
  return os.path.join(dataset_dir, plan.split, plan.stem + ".json")


def load_finished(dataset_dir: str, plan: ShardPlan) -> dict | None:
  """The shard's index if the shard is finished with the same fingerprint, else None."""
  path = index_path(dataset_dir, plan)
  if not (os.path.exists(path) and os.path.exists(os.path.join(dataset_dir, plan.file))):
    return None
  with open(path) as f:
    index = json.load(f)
  return index if index.get("fingerprint") == plan.fingerprint else None


def write_json(path: str, value) -> None:
  """Writes JSON atomically (temp file + rename); an identical existing file is left as is."""
  text = json.dumps(value, indent=1) + "\n"
  if os.path.exists(path):
    with open(path) as f:
      if f.read() == text:
        return
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


class ShardWriter:
  """Writes one shard; `commit()` publishes it, leaving the block without commit deletes it."""

  def __init__(self, dataset_dir: str, plan: ShardPlan, params: ConvertParams):
    self.plan = plan
    self.final = os.path.join(dataset_dir, plan.file)
    self.index_file = index_path(dataset_dir, plan)
    os.makedirs(os.path.dirname(self.final), exist_ok=True)
    for leftover in glob.glob(glob.escape(self.final) + ".tmp-*"):
      os.remove(leftover)  # From a run of this shard that was killed.
    self.tmp = f"{self.final}.tmp-{os.getpid()}"
    self._writer = array_record_module.ArrayRecordWriter(self.tmp, params.array_record_options)
    self.records: list[list[str]] = []
    self.skipped: list[dict[str, str]] = []
    self.padded: list[str] = []
    self.committed = False

  def write(self, data: bytes, example_ids: tuple[str, ...], padded: bool) -> None:
    self._writer.write(data)
    self.records.append(list(example_ids))
    if padded:
      self.padded.extend(example_ids)

  def skip(self, example_ids: tuple[str, ...], reason: str) -> None:
    self.skipped.extend({"id": i, "reason": reason} for i in example_ids)

  def commit(self) -> dict:
    self._writer.close()
    os.replace(self.tmp, self.final)
    index = {"fingerprint": self.plan.fingerprint, "num_records": len(self.records),
             "records": self.records, "skipped": self.skipped, "padded": self.padded}
    write_json(self.index_file, index)
    self.committed = True
    return index

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if not self.committed:
      self._writer.close()
      os.remove(self.tmp)
    return False


_SHARD_FILE = re.compile(r"^(?P<split>.+)-\d{5}-of-\d{5}\.(array_record|json)(\.tmp-\d+)?$")


def remove_stale(dataset_dir: str, split: str, plans: list[ShardPlan]) -> list[str]:
  """Deletes shard files of `split` that are not in `plans` (an earlier, different run)."""
  keep = {os.path.basename(p.file) for p in plans} | {p.stem + ".json" for p in plans}
  removed = []
  split_dir = os.path.join(dataset_dir, split)
  for name in sorted(os.listdir(split_dir)) if os.path.isdir(split_dir) else []:
    match = _SHARD_FILE.match(name)
    if match and match["split"] == split and name not in keep:
      os.remove(os.path.join(split_dir, name))
      removed.append(name)
  return removed
