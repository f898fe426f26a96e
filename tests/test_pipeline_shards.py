"""Tiny converted datasets of all six layouts, written directly as shards (records encoded by
`av_unified_jax.data.records`, checked by `schema.conform`), for the input-pipeline tests.

Every example carries its identity in its audio: `log_mel` is the constant `uid` (unique over
all datasets and splits), so a batch row can be traced back to its example even after
SpecAugment (which fills with the per-second mean). `UIDS[(dataset, split)]` lists them.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
from array_record.python import array_record_module
from PIL import Image

from av_unified_jax.data import records, schema, shards

F, M = 100, 64  # log-mel frames per second and mel bins (the tiny model's)
IMAGE = 32  # stored frame side
AVE_CATS = ("Bark", "Cat", "Horse", "Flute")
LLP_CATS = ("Dog", "Speech", "Cat", "Violin_fiddle")
ANSWERS = ("two", "yes", "left", "no")


def jpeg(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="JPEG", quality=95)
  return buf.getvalue()


def png(mask: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buf, format="PNG")
  return buf.getvalue()


def scene(rng, n: int, size: int = IMAGE):
  """n frames: grey background with one bright rectangle; returns (jpegs, box, masks)."""
  x0, y0 = rng.integers(0, size // 2, size=2)
  x1, y1 = x0 + rng.integers(size // 4, size // 2), y0 + rng.integers(size // 4, size // 2)
  image = np.full((size, size, 3), 60, np.uint8)
  image[y0:y1, x0:x1] = (250, 200, 40)
  mask = np.zeros((size, size), bool)
  mask[y0:y1, x0:x1] = True
  box = [x0 / size, y0 / size, x1 / size, y1 / size]
  return [jpeg(image)] * n, box, mask


class Uids:
  def __init__(self):
    self.next = 1
    self.by_split: dict = {}

  def take(self, dataset, split):
    uid = self.next
    self.next += 1
    self.by_split.setdefault((dataset, split), []).append(uid)
    return uid


def common(rng, uid, example_id, seconds, n_frames=None, valid=None):
  frames, box, mask = scene(rng, seconds if n_frames is None else n_frames)
  return {"id": example_id, "video_id": example_id.split(":")[0], "frames": frames,
          "log_mel": np.full((seconds, F, M), uid, np.float16),
          "num_segments": seconds if valid is None else valid}, box, mask


def ave_examples(rng, uids, split, count):
  out = []
  for i in range(count):
    ex, _, _ = common(rng, uids.take("ave", split), f"ave{split}{i}:x", 10)
    start = int(rng.integers(0, 9))
    end = start if i % 4 == 3 else int(rng.integers(start + 1, 11))  # some without an event
    out.append({**ex, "category": AVE_CATS[i % len(AVE_CATS)], "start": start, "end": end,
                "annotation_row": i})
  return out


def llp_examples(rng, uids, split, count):
  out = []
  for i in range(count):
    ex, _, _ = common(rng, uids.take("llp", split), f"llp{split}{i}", 10,
                      valid=8 if i == 0 else None)
    weak = [LLP_CATS[i % 4], LLP_CATS[(i + 1) % 4]] if i % 2 else [LLP_CATS[i % 4]]
    dense = split != "train"
    out.append({**ex, "weak_labels": weak,
                "audio_labels": weak[:1] if dense else [],
                "audio_spans": [[0, 4]] if dense else [],
                "visual_labels": weak if dense else [],
                "visual_spans": [[2, 6]] * len(weak) if dense else []})
  return out


def avqa_records(rng, uids, split, videos, questions):
  spec = schema.get_spec("music_avqa")
  out = []
  for v in range(videos):
    uid = uids.take("music_avqa", split)
    media, _, _ = common(rng, uid, f"{split}{v:07d}", 60)
    qs = []
    for q in range(questions):
      qid = 1000 * uid + q
      qs.append({"id": str(qid), "question_id": qid,
                 "question": f"Is the instrument {uid}-{q} on the left louder?",
                 "question_template": "Is the <Object> on the <LR> louder?",
                 "question_type": ["Audio-Visual", "Location"],
                 "answer": ANSWERS[(v + q) % len(ANSWERS)]})
    stored = [schema.conform(spec, {**media, **q}) for q in qs]
    record = {k: val for k, val in stored[0].items() if k not in qs[0]}
    record["id"] = media["video_id"]
    record["questions"] = [{k: s[k] for k in q} for s, q in zip(stored, qs)]
    out.append((record, [q["id"] for q in qs]))
  return out


def vggss_examples(rng, uids, split, count):
  out = []
  for i in range(count):
    test = split == "test"
    ex, box, _ = common(rng, uids.take("vggss", split), f"vid{split}{i:03d}_000010", 10,
                        n_frames=1 if test else None)
    boxes = [box] if test else []
    if test and i == 0:
      boxes.append([-2.8823037615171176e16, 0.1, 0.2, 0.3])  # corrupt, as in vggss.json
    out.append({**ex, "class_name": "dog barking" if test else "", "boxes": boxes})
  return out


def avs_examples(rng, uids, split, count, dataset="avsbench_s4"):
  out = []
  for i in range(count):
    ex, _, mask = common(rng, uids.take(dataset, split), f"avs{split}{i}", 5)
    # S4 training clips annotate only the first frame; MS3 annotates all five in every split.
    annotated = [True] * 5 if split != "train" or dataset == "avsbench_ms3" \
        else [True, False, False, False, False]
    masks = [png(mask) if a else b"" for a in annotated]
    extra = {"category": "dog_barking"} if dataset == "avsbench_s4" else {}
    out.append({**ex, **extra, "masks": masks, "mask_annotated": annotated})
  return out


def write_split(root, name, split, items, per_shard=4):
  """items: list of (record dict, example ids). Writes shards + index files; returns info."""
  os.makedirs(os.path.join(root, name, split), exist_ok=True)
  chunks = [items[i:i + per_shard] for i in range(0, len(items), per_shard)]
  entries = []
  for k, chunk in enumerate(chunks):
    stem = shards.shard_stem(split, k, len(chunks))
    rel = f"{split}/{stem}.array_record"
    writer = array_record_module.ArrayRecordWriter(os.path.join(root, name, rel), "group_size:1")
    for record, _ in chunk:
      writer.write(records.encode(record))
    writer.close()
    with open(os.path.join(root, name, split, stem + ".json"), "w") as f:
      json.dump({"num_records": len(chunk), "records": [ids for _, ids in chunk],
                 "skipped": [], "padded": []}, f)
    entries.append({"file": rel, "num_records": len(chunk)})
  return {"num_examples": sum(len(ids) for _, ids in items), "shards": entries}


def write_dataset(root, name, splits: dict) -> str:
  """splits: {split: list of examples (non-grouped) or (record, ids) pairs (grouped)}."""
  spec = schema.get_spec(name)
  info = {"format_version": shards.FORMAT_VERSION, "name": name,
          "clip_seconds": spec.clip_seconds, "grouped": spec.grouped,
          "params": {"image_size": IMAGE, "mel_frames_per_second": F, "n_mels": M},
          "splits": {}}
  for split, examples in splits.items():
    items = examples if spec.grouped else [
        (schema.conform(spec, ex), [ex["id"]]) for ex in examples]
    info["splits"][split] = write_split(root, name, split, items)
  with open(os.path.join(root, name, shards.INFO_FILE), "w") as f:
    json.dump(info, f)
  return os.path.join(root, name)


def write_tiny_datasets(root, seed: int = 0) -> dict:
  """All six datasets under `root`; returns {(dataset, split): [uid, ...]} in source order."""
  rng = np.random.default_rng(seed)
  uids = Uids()
  write_dataset(root, "ave", {"train": ave_examples(rng, uids, "train", 12),
                              "test": ave_examples(rng, uids, "test", 5)})
  write_dataset(root, "llp", {"train": llp_examples(rng, uids, "train", 10),
                              "test": llp_examples(rng, uids, "test", 4)})
  write_dataset(root, "music_avqa", {"train": avqa_records(rng, uids, "train", 3, 3),
                                     "test": avqa_records(rng, uids, "test", 2, 2)})
  write_dataset(root, "vggss", {"train": vggss_examples(rng, uids, "train", 8),
                                "test": vggss_examples(rng, uids, "test", 4)})
  write_dataset(root, "avsbench_s4", {"train": avs_examples(rng, uids, "train", 6),
                                      "test": avs_examples(rng, uids, "test", 3)})
  write_dataset(root, "avsbench_ms3", {"train": avs_examples(rng, uids, "train", 3,
                                                             "avsbench_ms3")})
  return uids.by_split


def test_tiny_datasets_read_back(tmp_path):
  uids = write_tiny_datasets(tmp_path)
  ave = shards.open_split(tmp_path / "ave", "train")
  assert len(ave) == 12 and ave[3]["end"] == ave[3]["start"]
  avqa = shards.open_split(tmp_path / "music_avqa", "train")
  assert len(avqa) == 9 and avqa[4]["question"].startswith("Is the instrument")
  assert float(avqa[4]["log_mel"][0, 0, 0]) == uids[("music_avqa", "train")][1]
  vggss = shards.open_split(tmp_path / "vggss", "test")
  assert len(vggss[0]["frames"]) == 1 and vggss[0]["boxes"].shape == (2, 4)
  masks = shards.decode_masks(shards.open_split(tmp_path / "avsbench_s4", "train")[0])
  assert masks.shape == (5, IMAGE, IMAGE) and masks[0].any() and not masks[1:].any()
