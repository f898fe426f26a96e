"""Configs: every config loads, is locked from creation (a typo inside a config file raises),
overrides work, and a misspelt key is one line and exit code 2 in every mode."""

import importlib
import subprocess
import sys

import pytest

from conftest import ROOT
from configs import common, mask_tokenizer

CONFIGS = ["tiny", "demo", "base", "mask_tokenizer"]
MODES = ("train", "eval", "predict", "export", "summary")


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_is_locked(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  assert config.is_locked
  assert config.total_steps > 0
  with pytest.raises(AttributeError):
    config.total_stepz = 3  # A new key cannot be added to a locked config.
  config.total_steps = 3  # An existing key can be changed.
  assert config.total_steps == 3


def test_config_arg_parsing():
  from configs import base, tiny

  assert tiny.get_config("steps=5").total_steps == 5
  assert base.get_config("fsdp=4").mesh.fsdp == 4
  with pytest.raises(ValueError, match="nosuch"):
    tiny.get_config("nosuch=1")


def test_base_configs_are_locked_when_built():
  for c in (common.base_config(), mask_tokenizer.base_config()):
    assert c.is_locked and c.optim.is_locked
    with pytest.raises(AttributeError, match="warmup_steps"):
      c.optim.warmup_step = 3  # The typo names the key it meant.
    with c.unlocked():  # Where a config deliberately adds a key.
      c.optim.extra = 1
    assert c.optim.extra == 1 and c.is_locked


TYPO_CONFIG = """
from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.optim.warmup_step = 3
  return c
"""


def test_a_typo_inside_a_config_file_is_an_error(tmp_path):
  path = tmp_path / "typo.py"
  path.write_text(TYPO_CONFIG)
  spec = importlib.util.spec_from_file_location("typo_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  with pytest.raises(AttributeError, match="warmup_step"):
    module.get_config()
  _one_line_error(_main(f"--config={path}", "--mode=summary"), "warmup_step")


def _main(*args):
  return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=120)


def _one_line_error(proc, *words):
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
  for word in words:
    assert word in lines[0], lines[0]


@pytest.mark.parametrize("mode", MODES)
def test_misspelt_key_is_one_line_in_every_mode(mode, tmp_path):
  """Without --config (the default file is then loaded as main.py defines its flags); with
  --config, see test_misspelt_override_fails_naming_the_key."""
  _one_line_error(_main(f"--mode={mode}", f"--workdir={tmp_path}",
                        "--config.optim.warmup_step=3"), "warmup_step")


def test_overrides_that_cannot_apply_to_a_mode_are_errors(tmp_path):
  """export honours mesh.* only; predict eval.*, data.shards_dir and mesh.* (eval: see
  test_main_e2e); checked before anything is loaded."""
  work = f"--workdir={tmp_path / 'none'}"
  _one_line_error(_main("--mode=export", work, f"--export_dir={tmp_path / 'E'}",
                        "--config.mesh.fsdp=1", "--config.eval.beam_size=2",
                        "--config.optim.learning_rate=0.1"),
                  "--config.eval.beam_size, --config.optim.learning_rate cannot apply to export")
  _one_line_error(_main("--mode=predict", work, "--video=v.mp4", "--task=ave", "--out=o",
                        "--config.eval.beam_size=2", "--config.data.image_size=64"),
                  "--config.data.image_size cannot apply to predict")


def test_misspelt_override_fails_naming_the_key():
  _one_line_error(_main("--config=configs/tiny.py", "--config.total_stepz=3", "--mode=eval"),
                  "total_stepz")


def test_help_lists_modes():
  proc = _main("--help")
  assert "Traceback" not in proc.stderr  # absl exits with code 1 after printing help.
  for mode in ("train", "eval", "predict", "export", "summary"):
    assert mode in proc.stdout
