"""Atomic writes: a crash in the middle of a write leaves the old file whole (or no file), and
files that mark a directory complete are written last: the metrics.jsonl cut-back on resume,
the tokenizer, the mask tokenizer and the mask-code cache."""

import json
import os

import jax
import numpy as np
import pytest

from av_unified_jax import atomic, metric_writers, tokens
from av_unified_jax.mask_tokenizer import coding
from av_unified_jax.mask_tokenizer.mask_codes import MaskCodeTable
from test_mask_tokenizer import TINY


class Crash(Exception):
  """Stands for the process dying at that moment."""


def crash_on_replace(monkeypatch, after: int = 0):
  """Lets `after` renames through, then the next one raises Crash (the data was written to
  the temporary file, the process dies before the rename)."""
  calls = []
  real = os.replace

  def replace(src, dst):
    calls.append(dst)
    if len(calls) > after:
      raise Crash(dst)
    real(src, dst)

  monkeypatch.setattr(atomic.os, "replace", replace)
  return calls


def test_write_replaces_whole_and_leaves_no_temporary_file(tmp_path, monkeypatch):
  path = tmp_path / "a.json"
  atomic.write_text(path, "old\n")
  atomic.write_text(path, "new\n")
  assert path.read_text() == "new\n"
  assert os.listdir(tmp_path) == ["a.json"]
  crash_on_replace(monkeypatch)
  with pytest.raises(Crash):
    atomic.write_bytes(path, b"half")
  assert path.read_text() == "new\n"  # The old content, whole.
  assert os.listdir(tmp_path) == ["a.json"]  # The temporary file is removed.


def test_metrics_cut_back_on_resume_is_atomic(tmp_path, monkeypatch):
  lines = [json.dumps({"step": s, "train/loss": 1.0 / s}) for s in range(1, 6)]
  path = tmp_path / "metrics.jsonl"
  path.write_text("\n".join(lines) + "\n" + '{"step": 6, "train/lo')  # a line cut short
  before = path.read_text()
  crash_on_replace(monkeypatch)
  with pytest.raises(Crash):
    metric_writers.JsonlWriter(path, resume_step=3)
  assert path.read_text() == before  # A crash during the cut-back loses nothing.
  monkeypatch.undo()
  writer = metric_writers.JsonlWriter(path, resume_step=3)
  writer.write(4, {"train/loss": 0.5})
  writer.close()
  assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3, 4]


def test_tokenizer_json_is_written_last(tmp_path, monkeypatch):
  tok = tokens.Tokenizer.build(tokens.OFFICIAL_LABEL_SETS)
  calls = crash_on_replace(monkeypatch, after=2)
  with pytest.raises(Crash):
    tok.save(tmp_path / "tok")
  assert [os.path.basename(c) for c in calls] == [tokens.tokenizer.LAYOUT_FILE,
                                                  tokens.tokenizer.TEXT_FILE,
                                                  tokens.tokenizer.CONFIG_FILE]
  # Killed before the last rename: no tokenizer.json, so the run builds the tokenizer again.
  assert sorted(p for p in os.listdir(tmp_path / "tok") if not p.startswith(".")) == [
      "layout.json", "text_tokenizer.json"]
  monkeypatch.undo()
  tok.save(tmp_path / "tok")
  assert tokens.Tokenizer.load(tmp_path / "tok").layout == tok.layout


def test_mask_tokenizer_msgpack_is_written_last(tmp_path, monkeypatch):
  variables = coding.init_variables(TINY, jax.random.key(0))
  calls = crash_on_replace(monkeypatch, after=1)
  with pytest.raises(Crash):
    coding.save_tokenizer(tmp_path, TINY, variables)
  assert [os.path.basename(c) for c in calls] == [coding.CONFIG_FILE, coding.VARIABLES_FILE]
  assert not (tmp_path / coding.VARIABLES_FILE).exists()  # Not done: trained again.
  monkeypatch.undo()
  coding.save_tokenizer(tmp_path, TINY, variables)
  cfg, _ = coding.load_tokenizer(tmp_path)
  assert cfg == TINY


def test_mask_code_cache_is_atomic(tmp_path, monkeypatch):
  table = MaskCodeTable({"a/0": np.ones((2, 2), np.int32), "b/1": np.zeros((2, 2), np.int32)})
  path = tmp_path / "codes_x_train.npz"
  crash_on_replace(monkeypatch)
  with pytest.raises(Crash):
    table.save(path)
  assert not path.exists()  # No partial cache that a later run would load.
  monkeypatch.undo()
  table.save(path)
  back = MaskCodeTable.load(path)
  np.testing.assert_array_equal(back.codes["a/0"], table.codes["a/0"])
  assert sorted(back.codes) == ["a/0", "b/1"]
