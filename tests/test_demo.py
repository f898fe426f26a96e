"""Demo dataset: raw trees, ground truth and asset pack (tiny builds, a few seconds each)."""

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
from data_prep import demo_compose as dc
from data_prep.demo_assets import ASSETS_DIR, load_pack

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
    _check_energy(_mp4_audio(root / "a/raw/ave/AVE" / f"{clip['id']}.mp4"), clip, 1.5)
    event = clip["sources"][0]
    assert event["object"] == 0 and event["class"] == clip["class"]
    seen = clip["objects"][0]["visible"]
    expected = [clip["class"] if h and v else "background"
                for h, v in zip(event["audible"], seen)]
    assert clip["labels"] == expected
    start, end = clip["event"]
    assert [x != "background" for x in clip["labels"]] == [start <= t < end for t in range(10)]
  for clip in metas["llp"]:
    _check_energy(_mp4_audio(root / f"a/raw/llp/LLP_dataset/video/{clip['filename']}.mp4"),
                  clip, 1.5)
  for clip in metas["avsbench_ms3"]:
    wav, _ = sf.read(root / f"a/raw/avsbench/Multi-sources/ms3_data/audio_wav/{clip['split']}"
                     f"/{clip['id']}.wav")
    _check_energy(wav, clip, 0.2)


def _alpha(pack, obj: dict, t: int, size: int) -> np.ndarray:
  """The object's own alpha at segment t, pasted from the pack cut-out: float32[S, S]."""
  out = np.zeros((size, size), np.float32)
  if not obj["visible"][t]:
    return out
  stamp = next(s for s in pack.stamps if s.id == obj["image"])
  h, w = obj["size"]
  rgba = np.asarray(Image.fromarray(stamp.rgba).resize((w, h), Image.Resampling.LANCZOS))
  x, y = obj["pos"][t]
  out[y:y + h, x:x + w] = rgba[..., 3] / 255
  return out


def _visible_alphas(pack, clip: dict, t: int, size: int) -> np.ndarray:
  """float32[L, S, S]: each object's alpha times the transparency of the objects in front."""
  alphas = np.stack([_alpha(pack, o, t, size) for o in clip["objects"]])
  for i in range(len(alphas)):
    alphas[i] *= np.prod(1 - alphas[i + 1:], axis=0)
  return alphas


def test_masks_and_boxes_equal_composited_alpha(built, pack):
  root, metas = built
  base = root / "a/raw/avsbench"
  for name in ("avsbench_s4", "avsbench_ms3"):
    for clip in metas[name]:
      i, s = clip["id"], clip["split"]
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
  clip = metas["avsbench_ms3"][0]
  frame = np.asarray(Image.open(root / "a/raw/avsbench/Multi-sources/ms3_data/visual_frames"
                                f"/{clip['id']}/{clip['id']}.mp4_1.png"))
  alphas = _visible_alphas(pack, clip, 0, SIZE)
  for k, obj in enumerate(clip["objects"]):
    stamp = next(s for s in pack.stamps if s.id == obj["image"])
    h, w = obj["size"]
    rgba = np.asarray(Image.fromarray(stamp.rgba).resize((w, h), Image.Resampling.LANCZOS))
    x, y = obj["pos"][0]
    opaque = alphas[k, y:y + h, x:x + w] >= 1.0
    assert opaque.sum() > 5
    np.testing.assert_array_equal(frame[y:y + h, x:x + w][opaque], rgba[..., :3][opaque])


def test_vggss_boxes_are_the_sounding_objects(built):
  root, metas = built
  entries = {e["file"]: e for e in json.loads((root / "a/raw/vggss/vggss.json").read_text())}
  test = [c for c in metas["vggss"] if c["split"] == "test"]
  assert sorted(entries) == sorted(c["id"] for c in test)
  for clip in test:
    sounding = [s["object"] for s in clip["sources"] if any(s["audible"])]
    assert entries[clip["id"]]["bbox"] == [clip["objects"][k]["box"][0] for k in sounding]
    assert entries[clip["id"]]["class"] == clip["class"]
    assert (root / f"a/raw/vggss/frames/{clip['id']}.jpg").is_file()
    assert (root / f"a/raw/vggss/audio/{clip['id']}.wav").is_file()
  train_ids = (root / "a/raw/vggss/train.csv").read_text().split()
  assert train_ids == [c["id"] for c in metas["vggss"] if c["split"] == "train"]
  assert all((root / f"a/raw/vggss/video/{i}.mp4").is_file() for i in train_ids)


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
  types = set()
  for split in ("train", "val", "test"):
    rows = json.loads((root / f"a/raw/music_avqa/json_update/avqa-{split}.json").read_text())
    assert rows, split
    for row in rows:
      assert list(row) == ["video_id", "question_id", "type", "question_content",
                           "templ_values", "question_deleted", "anser"]
      clip = clips[row["video_id"]]
      assert clip["split"] == split
      values = json.loads(row["templ_values"])
      assert row["question_content"].count("<") == len(values)
      assert row["anser"] == _answer(clip, row["question_content"], values), row
      types.add(tuple(json.loads(row["type"])))
      assert (root / f"a/raw/music_avqa/MUSIC-AVQA-videos-Real/{row['video_id']}.mp4").is_file()
  assert len(types) >= 8


def test_test_split_never_reuses_train_recordings_images_or_backgrounds(built):
  _, metas = built
  for name, clips in metas.items():
    used = {}
    for clip in clips:
      side = "train" if clip["split"] == "train" else "eval"
      sets = used.setdefault(side, (set(), set(), set()))
      sets[0].update(s["sound"] for s in clip["sources"])
      sets[1].update(o["image"] for o in clip["objects"])
      sets[2].add(clip["background"])
    for k in range(3):
      assert used["train"][k] and used["eval"][k], name
      assert not used["train"][k] & used["eval"][k], name


def test_annotation_files_follow_the_raw_layouts(built):
  root, metas = built
  raw = root / "a/raw"
  rows = (raw / "ave/Annotations.txt").read_text().splitlines()
  assert len(rows) == CLIPS and all(len(r.split("&")) == 5 and r.split("&")[2] == "good"
                                    for r in rows)
  for clip in metas["ave"]:
    assert (raw / f"ave/AVE/{clip['id']}.mp4").is_file()
  split_rows = sum(len((raw / f"ave/{n}.txt").read_text().splitlines())
                   for n in ("trainSet", "valSet", "testSet"))
  assert split_rows == CLIPS
  train = list(csv.reader(io.StringIO((raw / "llp/AVVP_train.csv").read_text()),
                          delimiter="\t"))
  assert train[0] == ["filename", "event_labels"] and len(train) > 1
  for kind, key in (("audio", "audible"), ("visual", "visible")):
    lines = (raw / f"llp/AVVP_eval_{kind}.csv").read_text().splitlines()
    assert lines[0].split("\t") == ["filename", "onset", "offset", "event_labels"]
    got = sorted(tuple(line.split("\t")) for line in lines[1:])
    want = sorted((c["filename"], str(a), str(b), item["class"]) for c in metas["llp"]
                  if c["split"] != "train"
                  for item in c["sources" if kind == "audio" else "objects"]
                  for a, b in dc.runs(np.array(item[key])))
    assert got == want, kind
  s4 = list(csv.reader(io.StringIO((raw / "avsbench/Single-source/s4_meta_data.csv")
                                   .read_text())))
  assert s4[0] == ["name", "start_time", "category", "split"] and len(s4) == CLIPS + 1
  for name, _, cls, split in s4[1:]:
    masks = raw / f"avsbench/Single-source/s4_data/gt_masks/{split}/{cls}/{name}"
    assert len(list(masks.glob("*.png"))) == (1 if split == "train" else 5)
    frames = raw / f"avsbench/Single-source/s4_data/visual_frames/{split}/{cls}/{name}"
    assert len(list(frames.glob("*.png"))) == 5


def test_asset_pack_is_complete_and_small(pack):
  assert len(pack.classes) >= 16
  for cls in pack.classes:
    assert pack.stamps_of(cls, "train") and pack.stamps_of(cls, "heldout"), cls
  for stamp in pack.stamps:
    assert max(stamp.rgba.shape[:2]) <= 256 and stamp.rgba.shape[2] == 4
    assert stamp.sound.ndim == 1 and len(stamp.sound) > 1000
  assert pack.backgrounds_of("train") and pack.backgrounds_of("heldout")
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
