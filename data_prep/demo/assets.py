"""The demo asset pack (`data_prep/assets/`): photo cut-outs, their recordings, backgrounds.

`load_pack()` reads `manifest.json`, checks every file's sha256 and decodes the media once.
A stamp is one photographed object with the recording of its sound. The manifest puts every
stamp in a pool, `train` or `heldout`:

- train, val and test clips use the `train` stamps; test_novel clips use the `heldout` stamps,
  which no other split ever uses (`pool_of_split`).
- Train clips and the other splits still never share material: each recording of at least
  `EXCERPT_MIN_S` seconds is cut in time, training excerpts come from one part (60 %) and
  val/test/test_novel excerpts from the other (40 %); shorter recordings are used whole by
  every split. Each background photo (all eight serve every split) is cut in two halves along
  its longer side; training crops lie in one half and the other splits' crops in the other
  (`region_of_split`, `Background.region`). Which part is the training part alternates from
  one recording (photo) to the next, in manifest order.
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

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"  # data_prep/assets/
SAMPLE_RATE = 16000
SPLITS = ("train", "val", "test", "test_novel")  # The demo's splits.
EXCERPT_MIN_S = 3.0  # Recordings at least this long are cut into train / eval excerpts.
TRAIN_SOUND_PART = 0.6  # Fraction of such a recording that training excerpts come from.
EXCERPT_FADE_S = 0.005  # Fade at a cut inside a recording (no click).


@dataclasses.dataclass(frozen=True)
class Stamp:
  """One object: `rgba` uint8[H, W, 4] cut-out and `sound` float32[N] at 16 kHz mono."""
  id: str
  cls: str
  pool: str
  rgba: np.ndarray
  sound: np.ndarray
  train_first: bool = True  # The training excerpt is the start (else the end) of the sound.

  def excerpt_span(self, region: str) -> tuple[int, int]:
    """[start, end) in samples of the part of `sound` that clips of `region` ("train" or
    "eval") use: all of it when it is shorter than EXCERPT_MIN_S."""
    n = len(self.sound)
    if n < EXCERPT_MIN_S * SAMPLE_RATE:
      return 0, n
    cut = round(n * (TRAIN_SOUND_PART if self.train_first else 1 - TRAIN_SOUND_PART))
    first = (region == "train") == self.train_first
    return (0, cut) if first else (cut, n)

  def excerpt(self, region: str) -> np.ndarray:
    """float32[N]: the part of the recording for `region`, faded in/out at a cut."""
    a, b = self.excerpt_span(region)
    if (a, b) == (0, len(self.sound)):
      return self.sound
    out = self.sound[a:b].copy()
    fade = np.linspace(0, 1, int(EXCERPT_FADE_S * SAMPLE_RATE), dtype=np.float32)
    out[:len(fade)] *= fade
    out[len(out) - len(fade):] *= fade[::-1]
    return out


@dataclasses.dataclass(frozen=True)
class Background:
  """A background photo, `rgb` uint8[H, W, 3]."""
  id: str
  pool: str  # The manifest's pool; unused since every photo serves every split by region.
  rgb: np.ndarray
  train_first: bool = True  # The training half is the left (top) one, else the right (bottom).

  def region(self, region: str) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) in pixels of the half of the photo that crops of `region` ("train" or
    "eval") come from: the photo is cut in two along its longer side (width when square)."""
    h, w = self.rgb.shape[:2]
    first = (region == "train") == self.train_first
    if w >= h:
      return (0, 0, w // 2, h) if first else (w // 2, 0, w, h)
    return (0, 0, w, h // 2) if first else (0, h // 2, w, h)


@dataclasses.dataclass(frozen=True)
class Pack:
  classes: tuple[str, ...]
  stamps: tuple[Stamp, ...]
  backgrounds: tuple[Background, ...]

  def stamps_of(self, cls: str, pool: str) -> list[Stamp]:
    """Stamps of class `cls` in `pool` ("train" or "heldout"), in manifest order."""
    return [s for s in self.stamps if s.cls == cls and s.pool == pool]


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"unknown demo split {split!r}; choose from {SPLITS}")


def pool_of_split(split: str) -> str:
  """Stamp pool of a demo split: test_novel uses `heldout`, every other split `train`."""
  _check_split(split)
  return "heldout" if split == "test_novel" else "train"


def region_of_split(split: str) -> str:
  """Part of each recording and background a split uses: train `train`, the others `eval`."""
  _check_split(split)
  return "train" if split == "train" else "eval"


def raw_split(split: str) -> str:
  """Benchmark split a demo split is written as: test_novel is written as the `test` split
  of a second raw tree (the converters know train/val/test only)."""
  _check_split(split)
  return "test" if split == "test_novel" else split


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
    stamps.append(Stamp(row["id"], row["class"], row["split"], rgba, sound,
                        train_first=len(stamps) % 2 == 0))
  backgrounds = []
  for row in manifest["backgrounds"]:
    rgb = np.asarray(Image.open(io.BytesIO(_read_checked(root, row["image"]))).convert("RGB"))
    backgrounds.append(Background(row["id"], row["split"], rgb,
                                  train_first=len(backgrounds) % 2 == 0))
  return Pack(tuple(manifest["classes"]), tuple(stamps), tuple(backgrounds))
