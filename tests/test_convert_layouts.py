"""End-to-end conversion of tiny raw trees in the six layouts: outcomes, fields, media."""

import hashlib
import io
import json
from pathlib import Path

import librosa
import numpy as np
import pytest
from PIL import Image

from av_unified_jax.data import decode_frames, decode_masks, open_split, schema
from data_prep import avsbench, convert
from data_prep.common import reason_kind
from av_unified_jax.data.params import ConvertParams
from fixtures import convert_raw as cr

IMAGE = 32
PARAMS = ConvertParams(clips_per_shard=2)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """{dataset: (raw dir, converted dataset dir, expected outcomes, report)}."""
  root = tmp_path_factory.mktemp("layouts")
  out = {}
  for name, builder in cr.BUILDERS.items():
    raw = root / "raw" / name
    expected = builder(raw)
    splits = [s for s in expected if not s.startswith("_")]
    report = convert.convert(name, raw, root / "out", splits=splits, image_size=IMAGE,
                             progress=False, params=PARAMS)
    out[name] = (raw, root / "out" / name, expected, report)
  return out


def _examples(dataset_dir, split):
  source = open_split(dataset_dir, split)
  return {example["id"]: example for example in (source[i] for i in range(len(source)))}


def _resized(image: np.ndarray, resample=Image.Resampling.BICUBIC) -> np.ndarray:
  return np.asarray(Image.fromarray(image).resize((IMAGE, IMAGE), resample)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(cr.BUILDERS))
def test_each_input_gets_its_outcome_and_examples_follow_the_schema(converted, name):
  _, dataset_dir, expected, report = converted[name]
  spec = schema.get_spec(name)
  for split, outcomes in expected.items():
    if split.startswith("_"):
      continue
    outcomes = {i: (k,) if isinstance(k, str) else k for i, k in outcomes.items()}
    kept = {i: next(k for k in ks if k == "ok" or k.startswith("padded"))
            for i, ks in outcomes.items() if any(k == "ok" or k.startswith("padded") for k in ks)}
    want = {i: sorted(k for k in ks if k != "ok" and not k.startswith("padded"))
            for i, ks in outcomes.items()}
    got = {}
    for item in report[split]["skipped"]:
      got.setdefault(item["id"], []).append(reason_kind(item["reason"]))
    assert {i: sorted(k) for i, k in got.items()} == {i: k for i, k in want.items() if k}
    examples = _examples(dataset_dir, split)
    assert sorted(examples) == sorted(kept)
    assert report[split]["written"] == len(kept)
    for example_id, example in examples.items():
      assert set(example) == set(spec.field_names)
      for f in spec.features:
        if f.dtype not in ("str", "bytes") and not f.dtype.startswith("list"):
          assert example[f.name].dtype == np.dtype(f.dtype), (example_id, f.name)
          assert example[f.name].ndim == len(f.shape), (example_id, f.name)
      T = spec.clip_seconds
      assert example["log_mel"].shape == (T, 100, 64)
      valid = int(kept[example_id].split(":")[1]) if ":" in kept[example_id] else T
      assert int(example["num_segments"]) == valid
      np.testing.assert_array_equal(example["log_mel"][valid:],
                                    np.repeat(example["log_mel"][valid - 1:valid], T - valid, 0))
      frames = decode_frames(example)
      assert frames.shape[1:] == (IMAGE, IMAGE, 3) and frames.dtype == np.uint8


def test_ave_fields_and_padding(converted):
  _, dataset_dir, _, _ = converted["ave"]
  train = _examples(dataset_dir, "train")
  church = train["RUhOCu3LNXM:Church bell"]
  assert (church["category"], int(church["start"]), int(church["end"])) == ("Church bell", 0, 10)
  assert int(church["annotation_row"]) == 0
  bark = train["RUhOCu3LNXM:Bark"]  # the same video on a second row: a second example
  assert (int(bark["start"]), int(bark["end"]), int(bark["annotation_row"])) == (2, 5, 57)
  padded = next(e for e in train.values() if int(e["num_segments"]) == 6)
  assert padded["frames"][6:] == [padded["frames"][5]] * 4
  zero = _examples(dataset_dir, "test")["VWi2ENBuTbw:Church bell"]
  assert (int(zero["start"]), int(zero["end"]), int(zero["annotation_row"])) == (0, 0, 56)


def test_video_frames_match_the_source_frames(converted):
  _, dataset_dir, _, _ = converted["ave"]
  frames = decode_frames(_examples(dataset_dir, "train")["RUhOCu3LNXM:Church bell"])
  for t in range(10):
    # At 4 fps the frame shown at t + 0.5 s is frame 2 of second t.
    err = np.abs(frames[t].astype(np.float32) - _resized(cr.frame_image(t, 2))).mean()
    assert err < 4.0, (t, err)
    other = np.abs(frames[t].astype(np.float32) - _resized(cr.frame_image(t + 1, 2))).mean()
    assert other > 10.0


def test_still_frames_and_masks_match_the_source(converted):
  _, dataset_dir, _, _ = converted["avsbench_s4"]
  s4 = _examples(dataset_dir, "train")["s4train1"]
  frames = decode_frames(s4)
  for t in range(5):
    np.testing.assert_allclose(frames[t], _resized(cr.frame_image(t)), atol=12)
    assert np.abs(frames[t] - _resized(cr.frame_image(t))).mean() < 2.5
  assert s4["mask_annotated"].tolist() == [True, False, False, False, False]
  assert s4["masks"][1:] == [b""] * 4
  masks = decode_masks(s4)
  want = _resized(cr.mask_image(0).astype(np.uint8) * 255, Image.Resampling.NEAREST) > 127
  np.testing.assert_array_equal(masks[0], want)
  assert not masks[1:].any()
  _, ms3_dir, _, _ = converted["avsbench_ms3"]
  ms3 = _examples(ms3_dir, "train")["ms3a"]  # palette masks holding indices 0/1
  assert ms3["mask_annotated"].all()
  for t, mask in enumerate(decode_masks(ms3)):
    want = _resized(cr.mask_image(t).astype(np.uint8) * 255, Image.Resampling.NEAREST) > 127
    np.testing.assert_array_equal(mask, want)
  assert set(np.unique(np.asarray(Image.open(io.BytesIO(ms3["masks"][0]))))) == {0, 255}


def _librosa_log_mel(path, seconds):
  y, _ = librosa.load(path, sr=16000, mono=True)
  y = np.pad(y[:seconds * 16000], (0, max(0, seconds * 16000 - len(y))))
  mel = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=400, hop_length=160,
                                       win_length=400, n_mels=64, fmin=20.0, fmax=8000.0)
  return np.log(mel[:, :seconds * 100] + 1e-6).reshape(64, seconds, 100).transpose(1, 2, 0)


@pytest.mark.parametrize("key", ["_plain", "_stereo_44k"])
def test_log_mel_equals_librosa_on_the_same_audio(converted, key):
  raw, dataset_dir, expected, _ = converted["vggss"]
  example = _examples(dataset_dir, "test")[expected[key]]
  want = _librosa_log_mel(raw / "audio" / f"{expected[key]}.wav", 10)
  np.testing.assert_allclose(example["log_mel"].astype(np.float32), want, rtol=2e-3, atol=2e-2)


def test_log_mel_of_resampled_padded_audio_equals_librosa(converted):
  raw, dataset_dir, _, _ = converted["avsbench_ms3"]
  example = _examples(dataset_dir, "train")["ms3a"]  # 22.05 kHz wav
  want = _librosa_log_mel(raw / "Multi-sources/ms3_data/audio_wav/train/ms3a.wav", 5)
  np.testing.assert_allclose(example["log_mel"].astype(np.float32), want, rtol=2e-3, atol=2e-2)


def test_malformed_rows_are_reported_with_file_and_line(converted):
  _, _, expected, report = converted["llp"]
  bad_dense = next(i for i, k in expected["val"].items() if k == "malformed annotation row")
  reasons = {s["id"]: s["reason"] for s in report["val"]["skipped"]}
  assert reasons[bad_dense].startswith("malformed annotation row AVVP_eval_audio.csv:109: ")
  reasons = {s["id"]: s["reason"] for s in report["train"]["skipped"]}
  assert reasons["onlyonefield"].startswith("malformed annotation row AVVP_train.csv:42: ")
  assert "Not_a_class" in reasons[next(i for i in reasons if i.endswith("_x"))]
  _, _, _, avqa_report = converted["music_avqa"]
  reasons = {s["id"]: s["reason"] for s in avqa_report["test"]["skipped"]}
  assert reasons["999001"].startswith("malformed annotation row json_update/avqa-test.json:")


def test_llp_weak_and_dense_labels(converted):
  raw, dataset_dir, expected, _ = converted["llp"]
  val_id = next(i for i, k in expected["val"].items() if k == "ok")
  example = _examples(dataset_dir, "val")[val_id]
  for modality in ("audio", "visual"):
    rows = [line.split("\t") for line in (raw / f"AVVP_eval_{modality}.csv").read_text()
            .splitlines() if line.startswith(val_id)]
    assert example[f"{modality}_labels"] == [r[3] for r in rows]
    np.testing.assert_array_equal(example[f"{modality}_spans"],
                                  np.array([[int(r[1]), int(r[2])] for r in rows]).reshape(-1, 2))
  weak = next(line.split("\t")[1] for line in (raw / "AVVP_val_pd.csv").read_text().splitlines()
              if line.startswith(val_id))
  assert example["weak_labels"] == weak.split(",")
  train = next(iter(_examples(dataset_dir, "train").values()))
  assert train["audio_spans"].shape == (0, 2) and train["visual_labels"] == []


def test_music_avqa_questions_share_their_video(converted):
  raw, dataset_dir, _, _ = converted["music_avqa"]
  examples = _examples(dataset_dir, "test")
  shared = [e for e in examples.values() if e["video_id"] == "00000153"]
  assert len(shared) == 2 and shared[0]["frames"] == shared[1]["frames"]
  info = json.loads((dataset_dir / "dataset_info.json").read_text())
  assert info["splits"]["test"]["num_records"] == 2
  assert info["splits"]["test"]["num_examples"] == 3
  items = {str(i["question_id"]): i for i in json.loads(
      (raw / "json_update/avqa-test.json").read_text())}
  for qid, example in examples.items():
    item = items[qid]
    assert example["answer"] == item["anser"]
    assert example["question_type"] == json.loads(item["type"])
    assert example["question_template"] == item["question_content"]
    assert "<" not in example["question"]
    assert all(v in example["question"] for v in json.loads(item["templ_values"]))


def test_vggss_boxes_exactly_as_annotated(converted):
  raw, dataset_dir, expected, _ = converted["vggss"]
  entries = {e["file"]: e for e in json.loads((raw / "vggss.json").read_text())}
  test = _examples(dataset_dir, "test")
  for example_id in ("Db6Hjt0x28k_000056", expected["_multi"]):
    example = test[example_id]
    np.testing.assert_array_equal(example["boxes"], np.array(entries[example_id]["bbox"]))
    assert example["class_name"] == entries[example_id]["class"]
    assert len(example["frames"]) == 1
  assert test["Db6Hjt0x28k_000056"]["boxes"].min() == -2.8823037615171176e+16
  train = next(iter(_examples(dataset_dir, "train").values()))
  assert train["boxes"].shape == (0, 4) and len(train["frames"]) == 10


def test_dataset_info_records_parameters_and_annotation_hashes(converted):
  raw, dataset_dir, _, _ = converted["ave"]
  info = json.loads((Path(dataset_dir) / "dataset_info.json").read_text())
  assert info["params"]["image_size"] == IMAGE and info["params"]["n_mels"] == 64
  assert info["params"]["mel_frames_per_second"] == 100
  assert info["features"] == schema.features_json(schema.get_spec("ave"))
  for rel, entry in info["annotation_files"].items():
    assert entry["sha256"] == hashlib.sha256((Path(raw) / rel).read_bytes()).hexdigest()
  assert set(info["annotation_files"]) == {"Annotations.txt", "trainSet.txt", "valSet.txt",
                                           "testSet.txt"}
  assert info["splits"]["train"]["num_padded"] == 1


def test_avsbench_ids_that_would_leave_their_directory_are_rejected(tmp_path):
  """Video names become paths (raw files read, `W/eval/.../<id>_<frame>.png` written): a name
  or category with a separator or `..` is reported as a bad row, never converted."""
  s4 = tmp_path / avsbench.S4_META
  s4.parent.mkdir(parents=True)
  s4.write_text("name,start_time,category,split\n"
                "good,0,dog,train\n"
                "../../etc/x,0,dog,train\n"
                "fine,0,../cat,train\n"
                "..,0,dog,train\n")
  listing = avsbench.list_s4(str(tmp_path), "train")
  assert [u.key for u in listing.units] == ["good"]
  reasons = {s["id"]: s["reason"] for s in listing.skipped}
  assert sorted(reasons) == ["..", "../../etc/x", "fine"]
  assert "video name '../../etc/x' contains '/'" in reasons["../../etc/x"]
  assert "category '../cat' contains '/'" in reasons["fine"]
  assert all(r.startswith(f"malformed annotation row {avsbench.S4_META}:") for r in
             reasons.values())
  ms3 = tmp_path / avsbench.MS3_META
  ms3.parent.mkdir(parents=True)
  ms3.write_text("name,split\nok3,test\na\\b,test\n")
  listing = avsbench.list_ms3(str(tmp_path), "test")
  assert [u.key for u in listing.units] == ["ok3"]
  assert "contains '\\\\'" in listing.skipped[0]["reason"]
  # Shards converted before this check: the evaluation refuses to write such a file name.
  assert schema.file_name("ok3", "_0.png") == "ok3_0.png"
  with pytest.raises(ValueError, match="example id '../x' contains '/'"):
    schema.file_name("../x", ".png")
