"""Configs: every config loads, is locked, overrides work and misspelt keys fail."""

import importlib
import subprocess
import sys

import pytest

from conftest import ROOT

CONFIGS = ["tiny", "demo", "base"]


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


def _main(*args):
  return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=120)


def test_misspelt_override_fails_naming_the_key():
  proc = _main("--config=configs/tiny.py", "--config.total_stepz=3", "--mode=summary")
  assert proc.returncode == 2
  assert "total_stepz" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_help_lists_modes():
  proc = _main("--help")
  assert "Traceback" not in proc.stderr  # absl exits with code 1 after printing help.
  for mode in ("train", "eval", "predict", "export", "summary"):
    assert mode in proc.stdout
