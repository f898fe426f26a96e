"""URL work directories: a `gs://` path reaches orbax, the metric writers, the tokenizer and
the export unmangled (never `/cwd/gs:/...`). The bucket is faked: epath's `gs` backend and
tensorboardX's `gs` writer map `gs://bucket/x` to a temporary directory, and orbax's
`CheckpointManager` records the directory it was given before writing to that mapping."""

from __future__ import annotations

import os
import types

import orbax.checkpoint as ocp
import pytest
import train_helpers as th
from etils.epath import backend as epath_backend
from etils.epath import gpath
from tensorboardX import record_writer

from av_unified_jax import cli, paths, runs, tokens
from av_unified_jax import train as train_lib
from av_unified_jax.data import pipeline
from av_unified_jax.export import exporter

URL = "gs://bucket/run"


class FakeGcs:
  """epath backend for `gs://`: every call goes to the local filesystem under `root`."""

  def __init__(self, root):
    self.root, self.os = str(root), epath_backend.os_backend

  def local(self, path) -> str:
    path = os.fspath(path)
    assert path.startswith("gs://"), f"a mangled bucket path reached the backend: {path}"
    return os.path.join(self.root, path[len("gs://"):])

  def url(self, local: str) -> str:
    return "gs://" + os.path.relpath(local, self.root)

  def open(self, path, mode):
    if "w" in mode or "a" in mode:
      os.makedirs(os.path.dirname(self.local(path)), exist_ok=True)  # Buckets have no dirs.
    return self.os.open(self.local(path), mode)

  def exists(self, path):
    return self.os.exists(self.local(path))

  def isdir(self, path):
    return self.os.isdir(self.local(path))

  def listdir(self, path):
    return self.os.listdir(self.local(path))

  def glob(self, path):
    return [self.url(p) for p in self.os.glob(self.local(path))]

  def walk(self, top, *, top_down=True, on_error=None):
    for root, dirs, files in self.os.walk(self.local(top), top_down=top_down, on_error=on_error):
      yield self.url(root), dirs, files

  def makedirs(self, path, *, exist_ok=False, mode=None):
    return self.os.makedirs(self.local(path), exist_ok=exist_ok, mode=mode)

  def mkdir(self, path, *, exist_ok=False, mode=None):
    return self.os.mkdir(self.local(path), exist_ok=exist_ok, mode=mode)

  def rmtree(self, path):
    return self.os.rmtree(self.local(path))

  def remove(self, path):
    return self.os.remove(self.local(path))

  def rename(self, path, dst):
    return self.os.rename(self.local(path), self.local(dst))

  def replace(self, path, dst):
    return self.os.replace(self.local(path), self.local(dst))

  def copy(self, path, dst, overwrite):
    return self.os.copy(self.local(path), self.local(dst), overwrite=overwrite)

  def stat(self, path):
    return self.os.stat(self.local(path))


class FakeEventFiles:
  """tensorboardX writer factory for `gs://`: event files under the same local root."""

  def __init__(self, gcs: FakeGcs):
    self.gcs = gcs

  def directory_check(self, path):
    os.makedirs(self.gcs.local(path), exist_ok=True)

  def open(self, path):
    return open(self.gcs.local(path), "wb")  # noqa: SIM115 (tensorboardX closes it)


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  """The fake bucket: (local root of gs://, directories given to orbax's CheckpointManager)."""
  gcs = FakeGcs(tmp_path / "gcs")
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "gs", gcs)
  monkeypatch.setitem(record_writer.REGISTERED_FACTORIES, "gs", FakeEventFiles(gcs))
  orbax_dirs = []
  real_manager = ocp.CheckpointManager

  def manager(directory, *args, **kwargs):  # Orbax's arrays go through tensorstore, not epath.
    orbax_dirs.append(str(directory))
    return real_manager(gcs.local(directory), *args, **kwargs)

  monkeypatch.setattr(ocp, "CheckpointManager", manager)
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)  # A mangled path would appear here as cwd/gs:/bucket/...
  return types.SimpleNamespace(root=tmp_path / "gcs", orbax_dirs=orbax_dirs, cwd=cwd)


class Flags(types.SimpleNamespace):
  def __contains__(self, name):  # absl FlagValues answers `"verbosity" in flags`.
    return False


def test_as_path_keeps_urls_and_makes_local_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert str(paths.as_path("gs://bucket/run")) == "gs://bucket/run"
  assert str(paths.as_path("gs://bucket/run") / "checkpoints") == "gs://bucket/run/checkpoints"
  assert str(paths.as_path("runs/a")) == str(tmp_path / "runs" / "a")
  assert paths.is_url("s3://b/x") and not paths.is_url("/data/gs:/x")
  with pytest.raises(ValueError, match="foo://b/x: epath has no filesystem"):
    paths.as_path("foo://b/x")


def test_gs_workdir_reaches_orbax_writers_and_tokenizer_unmangled(bucket, monkeypatch):
  received = []

  def train_and_evaluate(config, workdir, **_):  # The real loop, with the stand-in model.
    received.append(str(workdir))
    data, model = th.stand_in_data_and_model(config)
    train_lib.train(config, workdir, data=data, model=model, progress=False)
    return 0

  monkeypatch.setattr(train_lib, "train_and_evaluate", train_and_evaluate)
  for total in (2, 4):  # Train, then resume from the checkpoint in the bucket.
    config = th.tiny_config(total_steps=total, log_every_steps=1, checkpoint_every_steps=2)
    assert cli.train(config, Flags(workdir=URL)) == 0

  assert received == [URL, URL]
  assert bucket.orbax_dirs == [f"{URL}/checkpoints"] * 2
  run = bucket.root / "bucket" / "run"
  assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["2", "4"]
  assert sorted(th.losses_by_step(run)) == [1, 2, 3, 4]  # metrics.jsonl, rewritten whole
  assert any((run / "tensorboard").iterdir())
  assert runs.load_run_config(URL).total_steps == 4  # config.json read back from the bucket
  assert not any(bucket.cwd.iterdir()), "a path was mangled into the working directory"

  tok = tokens.Tokenizer.build({"ave": ["dog", "cat"], "avvp": ["dog"], "avqa": ["yes"]})
  tok.save(f"{URL}/{runs.TOKENIZER_DIR}")
  assert (run / runs.TOKENIZER_DIR / "tokenizer.json").is_file()
  loaded = pipeline.load_or_build_tokenizer(config, URL)  # Loaded, not built from the data.
  assert loaded.config_dict() == tok.config_dict()
  assert loaded.layout.vocab_size == tok.layout.vocab_size


def test_export_to_gs_is_staged_locally_then_copied(bucket, monkeypatch):
  staged = []

  def export_workdir(workdir, export_dir, step, dtype, overrides=None):
    assert not paths.is_url(export_dir)  # safetensors and torch get a local directory.
    assert overrides == {"mesh.fsdp": 1}  # Passed on to the staged export.
    staged.append(export_dir)
    (paths.as_path(export_dir) / "model.safetensors").write_bytes(b"weights")
    (paths.as_path(export_dir) / "config.json").write_text("{}")
    source = types.SimpleNamespace(mask_config=object())
    return source, {"step": 3, "n_params": 1}

  monkeypatch.setattr(exporter, "export_workdir", export_workdir)
  assert exporter.run("W", "gs://bucket/export", dtype="float32",
                      overrides={"mesh.fsdp": 1}) == 0
  exported = bucket.root / "bucket" / "export"
  assert (exported / "model.safetensors").read_bytes() == b"weights"
  # config.json (what marks an export whole) is copied last.
  assert (exported / "config.json").stat().st_mtime_ns >= \
      (exported / "model.safetensors").stat().st_mtime_ns
  assert not os.path.exists(staged[0])  # The staging directory is removed.
