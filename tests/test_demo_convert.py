"""Demo dataset through the converters: zero skips, identical shards, labels kept, the
test_novel split merged into each dataset, preview."""

import json

import numpy as np
import pytest
from PIL import Image

from av_unified_jax.data import shards
from data_prep import demo
from data_prep.demo import preview as demo_preview

CLIPS, SIZE = 6, 64


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """Seed 0 built and converted twice: {run: (metadata, reports, problems)}."""
  root = tmp_path_factory.mktemp("demo_convert")
  out = {}
  for run in ("a", "b"):
    metas = demo.build_raw(root / run, CLIPS, SIZE, seed=0)
    out[run] = (metas, *demo.convert_all(root / run, SIZE))
  return root, out


def _examples(metas: dict, name: str, split: str) -> int:
  clips = [c for c in metas[name] if c["split"] == split]
  return sum(len(c["questions"]) for c in clips) if name == "music_avqa" else len(clips)


def assert_vggss_boxes(dataset_dir, split, clips):
  """The converted boxes of every clip of `split` equal the composed ones."""
  boxes = {c["id"]: c["bbox"] for c in clips}
  source = shards.open_split(dataset_dir, split)
  for k in range(len(source)):
    ex = source[k]
    np.testing.assert_allclose(np.asarray(ex["boxes"], np.float64).reshape(-1, 4),
                               np.asarray(boxes[ex["id"]]), atol=1e-6)


@pytest.mark.parametrize("name", list(demo.LAYOUTS))
def test_every_layout_converts_with_zero_skips(converted, name):
  _, out = converted
  metas, reports, problems = out["a"]
  assert name not in problems, problems[name]
  report = reports[name]
  assert sorted(report) == sorted(demo.LAYOUTS[name].splits)
  for split, entry in report.items():
    assert entry["skipped"] == [], (name, split)
    assert entry["written"] == _examples(metas, name, split), (name, split)


@pytest.mark.parametrize("name", list(demo.LAYOUTS))
def test_every_split_opens_with_the_metadata_ids(converted, name):
  """Each split, test_novel included, opens with `open_split` and holds exactly the ids of
  its clips in DIR/metadata (MUSIC-AVQA: question ids)."""
  root, out = converted
  metas = out["a"][0]
  info = json.loads((root / f"a/shards/{name}/dataset_info.json").read_text())
  report = json.loads((root / f"a/shards/{name}/report.json").read_text())
  assert list(info["splits"]) == list(demo.LAYOUTS[name].splits) == list(report)
  assert not (root / "a/shards_novel.tmp").exists()
  for split in demo.LAYOUTS[name].splits:
    source = shards.open_split(root / f"a/shards/{name}", split)
    want = [i for c in metas[name] if c["split"] == split for i in c["example_ids"]]
    assert sorted(source.ids) == sorted(want), (name, split)
    assert len(source) == len(want) == info["splits"][split]["num_examples"]
  novel = info["splits"]["test_novel"]["shards"]
  assert all(s["file"].startswith("test_novel/test_novel-") for s in novel)
  for s in novel:
    assert (root / f"a/shards/{name}" / s["file"]).is_file()
    assert (root / f"a/shards/{name}" / s["file"].replace(".array_record", ".json")).is_file()


def test_novel_examples_keep_their_ground_truth(converted):
  root, out = converted
  metas = out["a"][0]
  by_id = {c["id"]: c for c in metas["ave"]}
  source = shards.open_split(root / "a/shards/ave", "test_novel")
  for k in range(len(source)):
    ex = source[k]
    clip = by_id[ex["video_id"]]
    assert clip["split"] == "test_novel"
    assert ex["category"] == clip["class"]
    assert [int(ex["start"]), int(ex["end"])] == clip["event"]
  assert_vggss_boxes(root / "a/shards/vggss", "test_novel", metas["vggss"])


def test_same_seed_gives_identical_shards(converted):
  root, _ = converted
  a = {p.relative_to(root / "a"): p.read_bytes() for p in (root / "a/shards").rglob("*")
       if p.is_file()}
  b = {p.relative_to(root / "b"): p.read_bytes() for p in (root / "b/shards").rglob("*")
       if p.is_file()}
  assert sum(str(p).endswith(".array_record") for p in a) >= 10
  assert sorted(a) == sorted(b)
  assert [p for p in a if a[p] != b[p]] == []


def test_converted_ave_and_vggss_keep_the_ground_truth(converted):
  root, out = converted
  metas = out["a"][0]
  by_id = {c["id"]: c for c in metas["ave"]}
  source = shards.open_split(root / "a/shards/ave", "test")
  assert len(source) >= 1
  for k in range(len(source)):
    ex = source[k]
    clip = by_id[ex["video_id"]]
    assert ex["category"] == clip["class"]
    assert [int(ex["start"]), int(ex["end"])] == clip["event"]
    frames = shards.decode_frames(ex)
    assert frames.shape[1:] == (SIZE, SIZE, 3)
  assert_vggss_boxes(root / "a/shards/vggss", "test", metas["vggss"])


def test_preview_is_drawn(converted, tmp_path):
  root, _ = converted
  path = tmp_path / "preview.png"
  demo_preview.draw(root / "a", path)
  img = Image.open(path)
  assert img.size[0] > 800 and img.size[1] > 1000
  pixels = np.asarray(img.convert("RGB"))
  assert pixels.std() > 20  # frames, not a blank canvas
  meta = json.loads((root / "a/metadata/ave.json").read_text())
  assert meta["classes"] and meta["splits"]["train"] >= 1
  assert meta["splits"]["test_novel"] >= 1 and meta["raw_novel_dir"] == "raw_novel/ave"
