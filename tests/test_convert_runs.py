"""Conversion runs: idempotent reruns, interrupted runs, workers, parts, --strict, the CLIs."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from av_unified_jax.data import open_split, records
from data_prep import build, convert
from data_prep import inspect as inspect_cli
from data_prep.common import AnnotationFileError
from av_unified_jax.data.params import ConvertParams
from fixtures import convert_raw as cr

PARAMS = ConvertParams(clips_per_shard=2)
KW = dict(image_size=32, progress=False, params=PARAMS)


@pytest.fixture(scope="module")
def ave_raw(tmp_path_factory):
  raw = tmp_path_factory.mktemp("ave_raw")
  cr.build_ave(raw)
  return raw


def _files(dataset_dir) -> dict[str, tuple[int, bytes]]:
  """{relative path: (mtime_ns, content)} of every file of a converted dataset."""
  out = {}
  for path in sorted(Path(dataset_dir).rglob("*")):
    if path.is_file():
      out[str(path.relative_to(dataset_dir))] = (path.stat().st_mtime_ns, path.read_bytes())
  return out


def test_rerun_is_idempotent(ave_raw, tmp_path):
  report = convert.convert("ave", ave_raw, tmp_path, **KW)
  before = _files(tmp_path / "ave")
  again = convert.convert("ave", ave_raw, tmp_path, **KW)
  assert again == report
  assert _files(tmp_path / "ave") == before  # same bytes; shards not even rewritten
  assert json.loads((tmp_path / "ave" / "report.json").read_text()) == report
  assert not [p for p in (tmp_path / "ave").rglob("*.tmp-*")]


def test_interrupted_run_keeps_finished_shards_and_resumes(ave_raw, tmp_path, monkeypatch):
  real_build, calls = build.build, []

  def crash_on_third(unit, *args):
    calls.append(unit.key)
    if len(calls) == 3:
      raise RuntimeError("worker died")
    return real_build(unit, *args)

  monkeypatch.setattr(build, "build", crash_on_third)
  with pytest.raises(convert.ConversionError,
                     match="converting 0giAfYq9oVM:.* failed .*worker died"):
    convert.convert("ave", ave_raw, tmp_path, splits=["train"], **KW)
  split_dir = tmp_path / "ave" / "train"
  assert sorted(p.name for p in split_dir.iterdir()) == [
      "train-00000-of-00004.array_record", "train-00000-of-00004.json"]
  assert not (tmp_path / "ave" / "report.json").exists()
  finished = _files(split_dir)
  monkeypatch.setattr(build, "build", real_build)
  report = convert.convert("ave", ave_raw, tmp_path, splits=["train"], **KW)
  assert report["train"]["written"] == 3
  assert {k: v for k, v in _files(split_dir).items() if k in finished} == finished


def test_two_workers_write_the_same_shards(ave_raw, tmp_path):
  one = convert.convert("ave", ave_raw, tmp_path / "one", splits=["train"], workers=1, **KW)
  two = convert.convert("ave", ave_raw, tmp_path / "two", splits=["train"], workers=2, **KW)
  assert one == two
  strip = lambda files: {k: v[1] for k, v in files.items()}
  assert strip(_files(tmp_path / "one" / "ave")) == strip(_files(tmp_path / "two" / "ave"))


def test_parts_then_final_step_equal_one_run(ave_raw, tmp_path):
  whole = convert.convert("ave", ave_raw, tmp_path / "whole", splits=["train"], **KW)
  parts = tmp_path / "parts"
  for part in range(2):
    convert.convert("ave", ave_raw, parts / f"m{part}", splits=["train"], num_parts=2,
                    part=part, **KW)
    assert not (parts / f"m{part}" / "ave" / "dataset_info.json").exists()
  merged = tmp_path / "merged"
  for part in range(2):  # gather the machines' files
    shutil.copytree(parts / f"m{part}", merged, dirs_exist_ok=True)
  final = convert.convert("ave", ave_raw, merged, splits=["train"], **KW)
  assert final == whole
  strip = lambda d: {k: v[1] for k, v in _files(d).items()}
  assert strip(merged / "ave") == strip(tmp_path / "whole" / "ave")


def test_limit_and_reader_order(ave_raw, tmp_path):
  convert.convert("ave", ave_raw, tmp_path, splits=["train"], limit=1, **KW)
  source = open_split(tmp_path / "ave", "train")
  assert source.ids == ["RUhOCu3LNXM:Church bell"] and len(source) == 1
  with pytest.raises(IndexError):
    source[1]
  raw = (tmp_path / "ave" / "train" / "train-00000-of-00001.array_record")
  assert raw.exists()


def test_strict_stops_at_the_first_problem(ave_raw, tmp_path):
  with pytest.raises(convert.ConversionError, match=r"trainSet.txt:7"):
    convert.convert("ave", ave_raw, tmp_path, splits=["train"], strict=True, **KW)
  raw = tmp_path / "raw"
  shutil.copytree(ave_raw, raw)
  rows = (raw / "Annotations.txt").read_text().splitlines()
  (raw / "testSet.txt").write_text(rows[1] + "\n")  # its video is 6.2 s long
  with pytest.raises(convert.ConversionError, match="shorter than the clip"):
    convert.convert("ave", raw, tmp_path / "out", splits=["test"], strict=True, **KW)
  (raw / "testSet.txt").write_text(rows[5] + "\n")  # its video is missing
  with pytest.raises(convert.ConversionError, match="missing file AVE/"):
    convert.convert("ave", raw, tmp_path / "out", splits=["test"], strict=True, **KW)
  assert not list((tmp_path / "out").rglob("*.array_record*"))


def test_bad_arguments_name_the_problem(ave_raw, tmp_path):
  with pytest.raises(ValueError, match="unknown dataset 'avee'"):
    convert.convert("avee", ave_raw, tmp_path)
  with pytest.raises(ValueError, match=r"splits \['dev'\]"):
    convert.convert("ave", ave_raw, tmp_path, splits=["dev"])
  with pytest.raises(AnnotationFileError, match="AVVP_train.csv not found"):
    convert.convert("llp", ave_raw, tmp_path, splits=["train"])


def test_command_lines(ave_raw, tmp_path, capsys):
  args = ["--dataset", "ave", "--raw_dir", str(ave_raw), "--out_dir", str(tmp_path),
          "--split", "val", "--split", "test", "--image_size", "24", "--no_progress"]
  assert convert.main(args) == 0
  report = json.loads((tmp_path / "ave" / "report.json").read_text())
  assert report == {"val": {"written": 1, "skipped": []}, "test": {"written": 1, "skipped": []}}
  example = open_split(tmp_path / "ave", "val")[0]
  assert inspect_cli.main([str(tmp_path / "ave"), "--examples", "1"]) == 0
  out = capsys.readouterr().out
  assert "split val: 1 examples" in out and "frames decode to uint8[10, 24, 24, 3]" in out
  assert example["log_mel"].dtype == np.float16
  assert convert.main(["--dataset", "llp", "--raw_dir", str(ave_raw), "--out_dir",
                       str(tmp_path)]) == 1
  assert "AVVP_train.csv not found" in capsys.readouterr().err


def test_record_encoding_round_trip():
  record = {"id": "x", "frames": [b"\xff\xd8", b""], "n": np.array(3, np.int32),
            "mel": np.arange(24, dtype=np.float16).reshape(2, 3, 4), "q": [{"a": "b"}],
            "spans": np.zeros((0, 2), np.int32), "flags": np.array([True, False])}
  back = records.decode(records.encode(record))
  assert back.keys() == record.keys()
  for key, value in record.items():
    if isinstance(value, np.ndarray):
      assert back[key].dtype == value.dtype and back[key].shape == value.shape
      np.testing.assert_array_equal(back[key], value)
    else:
      assert back[key] == value
  with pytest.raises(TypeError, match="object array"):
    records.encode({"bad": np.array([object()])})
  assert os.path.basename(records.__file__) == "records.py"
