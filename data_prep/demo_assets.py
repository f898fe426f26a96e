"""The demo asset pack (`data_prep/assets/`): photo cut-outs, their recordings, backgrounds.

`load_pack()` reads `manifest.json`, checks every file's sha256 and decodes the media once.
A stamp is one photographed object with the recording of its sound. Stamps and backgrounds
are split into `train` and `heldout` pools: train clips draw from `train`, val and test clips
from `heldout`, so the test split never reuses a recording (or an image) seen in training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
SAMPLE_RATE = 16000


@dataclasses.dataclass(frozen=True)
class Stamp:
  """One object: `rgba` uint8[H, W, 4] cut-out and `sound` float32[N] at 16 kHz mono."""
  id: str
  cls: str
  pool: str
  rgba: np.ndarray
  sound: np.ndarray


@dataclasses.dataclass(frozen=True)
class Background:
  """A background photo, `rgb` uint8[H, W, 3]."""
  id: str
  pool: str
  rgb: np.ndarray


@dataclasses.dataclass(frozen=True)
class Pack:
  classes: tuple[str, ...]
  stamps: tuple[Stamp, ...]
  backgrounds: tuple[Background, ...]

  def stamps_of(self, cls: str, pool: str) -> list[Stamp]:
    """Stamps of class `cls` in `pool` ("train" or "heldout"), in manifest order."""
    return [s for s in self.stamps if s.cls == cls and s.pool == pool]

  def backgrounds_of(self, pool: str) -> list[Background]:
    return [b for b in self.backgrounds if b.pool == pool]


def pool_of_split(split: str) -> str:
  """Asset pool of a dataset split: train uses `train`; val and test use `heldout`."""
  return "train" if split == "train" else "heldout"


def _read_checked(root: Path, entry: dict) -> bytes:
  path = root / entry["file"]
  if not path.is_file():
    raise FileNotFoundError(f"demo asset {path} is missing; rebuild the pack with "
                            "`python -m data_prep.build_assets`")
  data = path.read_bytes()
  if hashlib.sha256(data).hexdigest() != entry["sha256"]:
    raise ValueError(f"demo asset {path} does not match the sha256 in manifest.json; rebuild "
                     "the pack with `python -m data_prep.build_assets`")
  return data


def load_pack(root: Path = ASSETS_DIR) -> Pack:
  """Loads and verifies the pack. Raises a clear error if a file is missing or altered."""
  manifest_path = Path(root) / "manifest.json"
  if not manifest_path.is_file():
    raise FileNotFoundError(f"{manifest_path} not found; build the demo asset pack with "
                            "`python -m data_prep.build_assets`")
  manifest = json.loads(manifest_path.read_text())
  stamps = []
  for row in manifest["stamps"]:
    rgba = np.asarray(Image.open(io.BytesIO(_read_checked(root, row["image"]))).convert("RGBA"))
    sound, rate = sf.read(io.BytesIO(_read_checked(root, row["sound"])), dtype="float32")
    if rate != SAMPLE_RATE or sound.ndim != 1:
      raise ValueError(f"demo asset {row['sound']['file']} must be {SAMPLE_RATE} Hz mono")
    stamps.append(Stamp(row["id"], row["class"], row["split"], rgba, sound))
  backgrounds = []
  for row in manifest["backgrounds"]:
    rgb = np.asarray(Image.open(io.BytesIO(_read_checked(root, row["image"]))).convert("RGB"))
    backgrounds.append(Background(row["id"], row["split"], rgb))
  return Pack(tuple(manifest["classes"]), tuple(stamps), tuple(backgrounds))
