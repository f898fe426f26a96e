"""Demo dataset: raw trees, ground truth, split contract and asset pack (tiny builds, a few
seconds each)."""

import collections
import csv
import io
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from data_prep import demo
from data_prep.demo import avqa as demo_avqa
from data_prep.demo import compose as dc
from data_prep.demo.assets import ASSETS_DIR, EXCERPT_MIN_S, SAMPLE_RATE, load_pack, raw_split

CLIPS, SIZE = 6, 64


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """Seed 0 built twice (1 and 2 workers) and seed 1 once."""
  root = tmp_path_factory.mktemp("demo")
  metas = demo.build_raw(root / "a", CLIPS, SIZE, seed=0, workers=1)
  demo.build_raw(root / "b", CLIPS, SIZE, seed=0, workers=2)
  demo.build_raw(root / "c", CLIPS, SIZE, seed=1, workers=1)
  return root, metas


@pytest.fixture(scope="module")
def pack():
  return load_pack()


def _files(root: Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
          if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(built):
  root, _ = built
  a, b, c = _files(root / "a"), _files(root / "b"), _files(root / "c")
  assert len(a) > 100
  assert any(k.startswith("raw_novel/") for k in a)
  assert sorted(a) == sorted(b)
  assert [k for k in a if a[k] != b[k]] == []
  same = [k for k in a if k in c and a[k] == c[k] and k.endswith((".mp4", ".wav", ".png"))]
  assert same == []
  assert a["raw/ave/Annotations.txt"] != c["raw/ave/Annotations.txt"]


def _mp4_audio(path: Path) -> np.ndarray:
  with av.open(str(path)) as container:
    return np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])


def _check_energy(audio: np.ndarray, clip: dict, tolerance_db: float) -> None:
  """Measured per-second level of the written audio against the metadata."""
  num_t = clip["num_segments"]
  measured = dc.segment_db(audio.astype(np.float32), num_t)
  heard = np.array([s["audible"] for s in clip["sources"]], bool).reshape(-1, num_t)
  for t in range(num_t):
    if heard[:, t].any():
      assert measured[t] >= dc.AUDIBLE_DB, (clip["id"], t, measured[t])
    else:
      assert measured[t] < dc.UNCLEAR_DB[0], (clip["id"], t, measured[t])
    if heard[:, t].sum() == 1:  # One source: its stored loudness is what the file holds.
      level = clip["sources"][int(np.argmax(heard[:, t]))]["loudness_db"][t]
      np.testing.assert_allclose(measured[t], level, atol=tolerance_db)


def test_labels_agree_with_audio_energy(built):
  root, metas = built
  for clip in metas["ave"]:
    raw = demo.raw_root(root / "a", "ave", clip["split"])
    _check_energy(_mp4_audio(raw / "AVE" / f"{clip['id']}.mp4"), clip, 1.5)
    event = clip["sources"][0]
    assert event["object"] == 0 and event["class"] == clip["class"]
    seen = clip["objects"][0]["visible"]
    expected = [clip["class"] if h and v else "background"
                for h, v in zip(event["audible"], seen)]
    assert clip["labels"] == expected
    start, end = clip["event"]
    assert [x != "background" for x in clip["labels"]] == [start <= t < end for t in range(10)]
  for clip in metas["llp"]:
    raw = demo.raw_root(root / "a", "llp", clip["split"])
    _check_energy(_mp4_audio(raw / f"LLP_dataset/video/{clip['filename']}.mp4"), clip, 1.5)
  for clip in metas["avsbench_ms3"]:
    raw = demo.raw_root(root / "a", "avsbench_ms3", clip["split"])
    wav, _ = sf.read(raw / f"Multi-sources/ms3_data/audio_wav/{raw_split(clip['split'])}"
                     f"/{clip['id']}.wav")
    _check_energy(wav, clip, 0.2)


def _alpha(pack, obj: dict, t: int, size: int) -> np.ndarray:
  """The object's own alpha at segment t, pasted from the pack cut-out: float32[S, S]."""
  out = np.zeros((size, size), np.float32)
  if not obj["visible"][t]:
    return out
  rgba = _cutout(pack, obj)
  h, w = obj["size"]
  x, y = obj["pos"][t]
  out[y:y + h, x:x + w] = rgba[..., 3] / 255
  return out


def _cutout(pack, obj: dict) -> np.ndarray:
  """The object's cut-out as pasted: the pack image, flipped if so, resized: uint8[h, w, 4]."""
  stamp = next(s for s in pack.stamps if s.id == obj["image"])
  rgba = np.ascontiguousarray(stamp.rgba[:, ::-1] if obj["flip"] else stamp.rgba)
  h, w = obj["size"]
  return np.asarray(Image.fromarray(rgba).resize((w, h), Image.Resampling.LANCZOS))


def _visible_alphas(pack, clip: dict, t: int, size: int) -> np.ndarray:
  """float32[L, S, S]: each object's alpha times the transparency of the objects in front."""
  alphas = np.stack([_alpha(pack, o, t, size) for o in clip["objects"]])
  for i in range(len(alphas)):
    alphas[i] *= np.prod(1 - alphas[i + 1:], axis=0)
  return alphas


def test_masks_and_boxes_equal_composited_alpha(built, pack):
  root, metas = built
  for name in ("avsbench_s4", "avsbench_ms3"):
    for clip in metas[name]:
      i, s = clip["id"], raw_split(clip["split"])
      base = demo.raw_root(root / "a", name, clip["split"])
      for t in range(clip["annotated_frames"]):
        if name == "avsbench_s4":
          d = base / f"Single-source/s4_data/gt_masks/{s}/{clip['class']}/{i}"
        else:
          d = base / f"Multi-sources/ms3_data/gt_masks/{s}/{i}"
        mask = np.asarray(Image.open(d / f"{i}_{t + 1}.png"))
        assert set(np.unique(mask)) <= {0, 255}
        alphas = _visible_alphas(pack, clip, t, SIZE)
        heard = [src["object"] for src in clip["sources"] if src["audible"][t]]
        expected = np.zeros((SIZE, SIZE), bool)
        for k in heard:
          expected |= alphas[k] >= 0.5
        np.testing.assert_array_equal(mask == 255, expected)
        for k, obj in enumerate(clip["objects"]):
          ys, xs = np.nonzero(alphas[k] >= 0.5)
          box = [xs.min() / SIZE, ys.min() / SIZE, (xs.max() + 1) / SIZE, (ys.max() + 1) / SIZE]
          np.testing.assert_allclose(obj["box"][t], box, atol=1e-6)


def test_frames_show_the_cutouts_where_they_are_opaque(built, pack):
  root, metas = built
  clip = next(c for c in metas["avsbench_ms3"] if any(o["flip"] for o in c["objects"]))
  frame = np.asarray(Image.open(demo.raw_root(root / "a", "avsbench_ms3", clip["split"])
                                / f"Multi-sources/ms3_data/visual_frames/{clip['id']}"
                                f"/{clip['id']}.mp4_1.png"))
  alphas = _visible_alphas(pack, clip, 0, SIZE)
  for k, obj in enumerate(clip["objects"]):
    rgba = _cutout(pack, obj)
    h, w = obj["size"]
    x, y = obj["pos"][0]
    opaque = alphas[k, y:y + h, x:x + w] >= 1.0
    assert opaque.sum() > 5
    np.testing.assert_array_equal(frame[y:y + h, x:x + w][opaque], rgba[..., :3][opaque])


def test_vggss_boxes_are_the_sounding_objects(built):
  root, metas = built
  for split in ("test", "test_novel"):
    raw = demo.raw_root(root / "a", "vggss", split)
    entries = {e["file"]: e for e in json.loads((raw / "vggss.json").read_text())}
    test = [c for c in metas["vggss"] if c["split"] == split]
    assert test and sorted(entries) == sorted(c["id"] for c in test)
    assert (raw / "vggss_test.csv").read_text().split() == [c["id"] for c in test]
    for clip in test:
      sounding = [s["object"] for s in clip["sources"] if any(s["audible"])]
      assert sounding == clip["sounding_objects"]
      assert entries[clip["id"]]["bbox"] == [clip["objects"][k]["box"][0] for k in sounding]
      assert entries[clip["id"]]["class"] == clip["class"]
      assert (raw / f"frames/{clip['id']}.jpg").is_file()
      assert (raw / f"audio/{clip['id']}.wav").is_file()
  raw = root / "a/raw/vggss"
  train_ids = (raw / "train.csv").read_text().split()
  assert train_ids == [c["id"] for c in metas["vggss"] if c["split"] == "train"]
  assert all((raw / f"video/{i}.mp4").is_file() for i in train_ids)
  assert (demo.raw_root(root / "a", "vggss", "test_novel") / "train.csv").read_text() == ""


def test_vggss_boxes_are_sized_like_the_benchmark(tmp_path):
  """Median box ~25-35 % of the frame, from ~5 % to ~80 %, large objects common."""
  metas = demo.build_raw(tmp_path, demo.Sizes(40, 1, 60, 20), SIZE, seed=0, workers=1,
                         datasets=["vggss"])
  areas = np.array([(b[2] - b[0]) * (b[3] - b[1]) for c in metas["vggss"] for b in c["bbox"]])
  assert len(areas) >= 120
  assert 0.22 <= np.median(areas) <= 0.38, np.median(areas)
  assert areas.min() >= 0.025 and areas.max() <= 0.85
  assert (areas >= 0.4).mean() >= 0.15 and (areas <= 0.12).mean() >= 0.08


def _level(clip: dict, k: int) -> float | None:
  src = next((s for s in clip["sources"] if s["object"] == k), None)
  if src is None or not any(src["audible"]):
    return None
  return float(np.mean([d for d, a in zip(src["loudness_db"], src["audible"]) if a]))


def _answer(clip: dict, content: str, values: list[str]) -> str:
  """Each template's answer recomputed from the clip metadata."""
  objs = clip["objects"]
  names = [o["class"] for o in objs]
  heard = {s["object"]: s["audible"] for s in clip["sources"] if s["object"] is not None}
  on = [k for k in range(len(objs)) if any(heard.get(k, []))]
  audible = [s["class"] for s in clip["sources"] if any(s["audible"])]
  by = {o["class"]: k for k, o in enumerate(objs)}
  words = ["zero", "one", "two", "three", "four", "five"]
  yes = {True: "yes", False: "no"}
  if content == "How many sounds were heard in the video?":
    return words[len(audible)]
  if content == "Is there a <Object> sound?":
    return yes[values[0] in audible]
  if content == "How many objects are in the video?":
    return words[len(objs)]
  if content == "Is there a <Object> in the entire video?":
    return yes[values[0] in names]
  if content == "Where is the <Object>?":
    return objs[by[values[0]]]["slot"]
  if content == "What is the object on the <LR> of the <Object>?":
    return names[by[values[1]] + (-1 if values[0] == "left" else 1)]
  if content == "Is there a voiceover?":
    return yes[any(any(s["audible"]) for s in clip["sources"] if s["object"] is None)]
  if content == "Is the <Object> in the video always playing?":
    return yes[all(heard.get(by[values[0]], [False]))]
  if content == "How many objects are sounding in the video?":
    return words[len(on)]
  if content == "How many sounding <Object> in the video?":
    return words[int(by[values[0]] in on)]
  if content == "Where is the <LL> object?":
    return objs[max(on, key=lambda k: _level(clip, k))]["slot"]
  if content == "Which is the object that sounds at the same time as the <Object>?":
    k = by[values[0]]
    return [names[j] for j in on if j != k and any(np.logical_and(heard[j], heard[k]))][0]
  if content == "Where is the <FL> sounding object?":
    onsets = {k: heard[k].index(True) for k in on}
    pick = min if values[0] == "first" else max
    return objs[pick(onsets, key=onsets.get)]["slot"]
  if content == "What is the <TH> object that comes in?":
    order = sorted(on, key=lambda k: heard[k].index(True))
    return names[order[["first", "second", "third"].index(values[0])]]
  if content in ("Is the <Object> louder than the <Object>?",
                 "Is the object on the <LR> louder than the object on the <LR>?"):
    key = "class" if "<Object>" in content else "slot"
    a, b = ([k for k, o in enumerate(objs) if o[key] == v][0] for v in values)
    assert abs(_level(clip, a) - _level(clip, b)) >= 3.0  # never a close call
    return yes[_level(clip, a) > _level(clip, b)]
  if content == "Is the <Object> playing longer than the <Object>?":
    a, b = (sum(heard[by[v]]) for v in values)
    assert a != b
    return yes[a > b]
  raise AssertionError(f"unknown template {content!r}")


def test_avqa_answers_agree_with_metadata(built):
  root, metas = built
  clips = {c["id"]: c for c in metas["music_avqa"]}
  types, qids = set(), []
  for split in demo.LAYOUTS["music_avqa"].splits:
    raw = demo.raw_root(root / "a", "music_avqa", split)
    rows = json.loads((raw / f"json_update/avqa-{raw_split(split)}.json").read_text())
    rows = [r for r in rows if clips[r["video_id"]]["split"] == split]
    assert rows, split
    for row in rows:
      assert list(row) == ["video_id", "question_id", "type", "question_content",
                           "templ_values", "question_deleted", "anser"]
      clip = clips[row["video_id"]]
      values = json.loads(row["templ_values"])
      assert row["question_content"].count("<") == len(values)
      assert row["anser"] == _answer(clip, row["question_content"], values), row
      types.add(tuple(json.loads(row["type"])))
      assert (raw / f"MUSIC-AVQA-videos-Real/{row['video_id']}.mp4").is_file()
      qids.append(row["question_id"])
  assert len(types) >= 8
  assert sorted(qids) == list(range(len(qids)))  # unique across both raw trees
  for clip in metas["music_avqa"]:  # Training videos ask up to three of a type, others one.
    per_type = collections.Counter(tuple(q["type"]) for q in clip["questions"])
    asked = [(q["question_content"], tuple(q["templ_values"])) for q in clip["questions"]]
    assert len(set(asked)) == len(asked), clip["id"]
    limit = demo_avqa.TRAIN_QUESTIONS_PER_TYPE if clip["split"] == "train" else 1
    assert max(per_type.values()) <= limit, (clip["split"], per_type)
  train = [c for c in metas["music_avqa"] if c["split"] == "train"]
  assert max(len(c["questions"]) for c in train) > 9  # more than one of some type
  stored = [q["question_id"] for c in metas["music_avqa"] for q in c["questions"]]
  assert sorted(stored) == sorted(qids)


def test_stamp_pools_of_the_splits(built, pack):
  """train, val and test use the training pool's stamps; test_novel only the held-out ones."""
  _, metas = built
  pool = {s.id: s.pool for s in pack.stamps}
  for name, clips in metas.items():
    seen = {}
    for clip in clips:
      used = [s["sound"] for s in clip["sources"]] + [o["image"] for o in clip["objects"]]
      want = "heldout" if clip["split"] == "test_novel" else "train"
      assert {pool[i] for i in used} == {want}, (name, clip["id"], clip["split"])
      seen.setdefault(clip["split"], set()).update(used)
    assert set(seen) == set(demo.LAYOUTS[name].splits), name


def _overlap(a, b) -> bool:
  return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_eval_clips_use_other_excerpts_and_background_regions(built, pack):
  """Val/test/test_novel never share a background pixel or a second of a long recording
  with training; short recordings are reused whole; cut-outs are flipped at random."""
  _, metas = built
  stamps = {s.id: s for s in pack.stamps}
  backgrounds = {b.id: b for b in pack.backgrounds}
  crops, excerpts, flips = {}, {}, set()
  for clips in metas.values():
    for clip in clips:
      side = "train" if clip["split"] == "train" else "eval"
      bg = backgrounds[clip["background"]]
      x0, y0, x1, y1 = box = clip["background_crop"]
      r = bg.region(side)
      assert r[0] <= x0 < x1 <= r[2] and r[1] <= y0 < y1 <= r[3], clip["id"]
      assert x1 - x0 == y1 - y0 >= 0.75 * min(r[2] - r[0], r[3] - r[1]) - 1
      crops.setdefault((bg.id, side), []).append(box)
      for src in clip["sources"]:
        stamp = stamps[src["sound"]]
        assert tuple(src["excerpt"]) == stamp.excerpt_span(side)
        excerpts.setdefault((stamp.id, side), set()).add(tuple(src["excerpt"]))
      flips.update(o["flip"] for o in clip["objects"])
  assert flips == {True, False}
  for (bg_id, side), boxes in crops.items():
    if side == "train":
      for a in boxes:
        assert not any(_overlap(a, b) for b in crops.get((bg_id, "eval"), [])), bg_id
  for bg in pack.backgrounds:  # The halves are disjoint and large.
    a, b = bg.region("train"), bg.region("eval")
    assert not _overlap(a, b)
    assert min(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]) >= 0.45 * min(bg.rgb.shape[:2])
  for stamp in pack.stamps:
    a, b = stamp.excerpt_span("train"), stamp.excerpt_span("eval")
    if len(stamp.sound) >= EXCERPT_MIN_S * SAMPLE_RATE:
      assert a[1] <= b[0] or b[1] <= a[0], stamp.id
      assert min(a[1] - a[0], b[1] - b[0]) >= 1.2 * SAMPLE_RATE
      assert not np.array_equal(stamp.excerpt("train")[:100], stamp.excerpt("eval")[:100])
    else:
      assert a == b == (0, len(stamp.sound))
  assert any(side == "eval" and span != (0, len(stamps[i].sound))
             for (i, side), spans in excerpts.items() for span in spans)


def test_default_split_sizes():
  sizes = demo.Sizes()
  for name, layout in demo.LAYOUTS.items():
    counts = dict(demo.split_counts(layout, sizes))
    assert list(counts) == list(layout.splits)
    if name == "music_avqa":  # ~8 questions per video: >= 150 test, ~90+ test_novel.
      assert counts["test"] >= 25 and counts["test_novel"] >= 15
      assert counts["train"] >= 200  # Each with up to 27 questions.
    else:
      assert counts["test"] >= 100 and counts["test_novel"] >= 60
      assert counts["train"] >= 200
    assert name == "vggss" or counts["val"] >= 5
  assert "val" not in demo.LAYOUTS["vggss"].splits
  assert demo.Sizes.spread(6) == demo.Sizes(3, 1, 1, 1)
  with pytest.raises(ValueError):
    demo.Sizes.spread(3)


def test_annotation_files_follow_the_raw_layouts(built):
  root, metas = built
  raw = root / "a/raw"
  for tree, splits in ((raw, ("train", "val", "test")), (root / "a/raw_novel", ("test_novel",))):
    clips = [c for c in metas["ave"] if c["split"] in splits]
    rows = (tree / "ave/Annotations.txt").read_text().splitlines()
    assert len(rows) == len(clips) and all(len(r.split("&")) == 5 and r.split("&")[2] == "good"
                                           for r in rows)
    for clip in clips:
      assert (tree / f"ave/AVE/{clip['id']}.mp4").is_file()
    split_rows = [len((tree / f"ave/{n}.txt").read_text().splitlines())
                  for n in ("trainSet", "valSet", "testSet")]
    assert split_rows == [sum(raw_split(c["split"]) == s for c in clips)
                          for s in ("train", "val", "test")]
  train = list(csv.reader(io.StringIO((raw / "llp/AVVP_train.csv").read_text()),
                          delimiter="\t"))
  assert train[0] == ["filename", "event_labels"] and len(train) > 1
  for kind, key in (("audio", "audible"), ("visual", "visible")):
    lines = (raw / f"llp/AVVP_eval_{kind}.csv").read_text().splitlines()
    assert lines[0].split("\t") == ["filename", "onset", "offset", "event_labels"]
    got = sorted(tuple(line.split("\t")) for line in lines[1:])
    want = sorted((c["filename"], str(a), str(b), item["class"]) for c in metas["llp"]
                  if c["split"] in ("val", "test")
                  for item in c["sources" if kind == "audio" else "objects"]
                  for a, b in dc.runs(np.array(item[key])))
    assert got == want, kind
  for tree in (raw, root / "a/raw_novel"):
    s4 = list(csv.reader(io.StringIO((tree / "avsbench/Single-source/s4_meta_data.csv")
                                     .read_text())))
    assert s4[0] == ["name", "start_time", "category", "split"] and len(s4) > 1
    for name, _, cls, split in s4[1:]:
      assert split in (("test",) if tree != raw else ("train", "val", "test"))
      masks = tree / f"avsbench/Single-source/s4_data/gt_masks/{split}/{cls}/{name}"
      assert len(list(masks.glob("*.png"))) == (1 if split == "train" else 5)
      frames = tree / f"avsbench/Single-source/s4_data/visual_frames/{split}/{cls}/{name}"
      assert len(list(frames.glob("*.png"))) == 5
  s4_rows = sum(len((t / "avsbench/Single-source/s4_meta_data.csv").read_text().splitlines()) - 1
                for t in (raw, root / "a/raw_novel"))
  assert s4_rows == len(metas["avsbench_s4"]) == CLIPS


def test_asset_pack_is_complete_and_small(pack):
  assert len(pack.classes) >= 16
  for cls in pack.classes:
    assert pack.stamps_of(cls, "train") and pack.stamps_of(cls, "heldout"), cls
  for stamp in pack.stamps:
    assert max(stamp.rgba.shape[:2]) <= 256 and stamp.rgba.shape[2] == 4
    assert stamp.sound.ndim == 1 and len(stamp.sound) > 1000
  assert len(pack.backgrounds) == 8
  total = sum(p.stat().st_size for p in ASSETS_DIR.rglob("*") if p.is_file())
  assert total < 10.5e6
  assert "GNU GENERAL PUBLIC LICENSE" in (ASSETS_DIR / "LICENSE-GPL-2.txt").read_text()
  assert "tuxpaint-stamps-default" in (ASSETS_DIR / "ATTRIBUTION.md").read_text()


def test_altered_asset_is_reported(tmp_path):
  copy = tmp_path / "assets"
  shutil.copytree(ASSETS_DIR, copy)
  victim = next((copy / "backgrounds").glob("*.jpg"))
  victim.write_bytes(victim.read_bytes()[:-10])
  with pytest.raises(ValueError, match=victim.name):
    load_pack(copy)


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
  assert demo.main(["--out_dir", str(tmp_path), "--image_size", "63"]) == 2
  assert "--image_size 63" in capsys.readouterr().err
