"""A demo clip under construction: background, visible objects and sound sources.

Layouts add objects (cut-outs with per-second visibility) and sources (recordings placed over
spans, on screen or off screen), then `finish()` renders the frames, mixes the audio and
measures every source's loudness per second. The metadata it returns is the ground truth the
layouts turn into each benchmark's annotation format.

The clip's split decides its material (see `assets`): the stamp pool (test_novel:
`heldout`, else `train`), the part of each long recording and the half of the background
photo it draws from (train or eval). Every cut-out is flipped horizontally at random.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_prep.demo import compose as dc
from data_prep.demo.assets import Pack, Stamp, pool_of_split, region_of_split


@dataclasses.dataclass
class Rendered:
  """`frames` uint8[T, S, S, 3]; `alphas` float32[T, L, S, S] visible alpha per object;
  `audio` float32[T * 16000]; `objects` and `sources` metadata dicts."""
  frames: np.ndarray
  alphas: np.ndarray
  audio: np.ndarray
  objects: list[dict]
  sources: list[dict]

  def masks(self, t: int, objects: list[int]) -> np.ndarray:
    """Union of the binary masks of `objects` at segment t: bool[S, S]."""
    out = np.zeros(self.frames.shape[1:3], bool)
    for i in objects:
      out |= dc.alpha_to_mask(self.alphas[t, i])
    return out


class Scene:
  """Collects objects and sources of one clip; `rng` drives every random choice."""

  def __init__(self, rng: np.random.Generator, pack: Pack, split: str, size: int,
               num_t: int):
    self.rng, self.pack, self.size, self.num_t = rng, pack, size, num_t
    self.pool = pool_of_split(split)
    self.region = region_of_split(split)
    bg = pack.backgrounds[int(rng.integers(len(pack.backgrounds)))]
    self.background_id = bg.id
    self.background, self.background_crop = dc.crop_background(rng, bg.rgb, size,
                                                               bg.region(self.region))
    self.layers: list[dc.Layer] = []
    self.objects: list[dict] = []
    self.waves: list[np.ndarray] = []
    self.sources: list[dict] = []

  def pick(self, cls: str) -> Stamp:
    """A random stamp of `cls` from this clip's pool."""
    stamps = self.pack.stamps_of(cls, self.pool)
    return stamps[int(self.rng.integers(len(stamps)))]

  def pick_classes(self, count: int, exclude: tuple[str, ...] = ()) -> list[str]:
    """`count` distinct random classes, none of them in `exclude`."""
    choices = [c for c in self.pack.classes if c not in exclude]
    idx = self.rng.choice(len(choices), size=count, replace=False)
    return [choices[int(i)] for i in idx]

  def add_object(self, cls: str, frac: float, visible: tuple[int, int] | None = None,
                 x_range: tuple[float, float] = (0.0, 1.0), drift: bool = True,
                 stamp: Stamp | None = None, slot: str | None = None) -> int:
    """Adds a cut-out of `cls` whose longer side is `frac` of the frame, flipped horizontally
    at random, visible in seconds [start, end) (default: always). Returns the object index."""
    stamp = stamp or self.pick(cls)
    flip = bool(self.rng.random() < 0.5)
    rgba = dc.resize_cutout(stamp.rgba[:, ::-1] if flip else stamp.rgba,
                            max(4, round(frac * self.size)))
    pos = dc.drift_positions(self.rng, rgba.shape[:2], self.size, self.num_t, x_range)
    if not drift:
      pos[:] = pos[0]
    start, end = visible or (0, self.num_t)
    shown = np.zeros(self.num_t, bool)
    shown[start:end] = True
    self.layers.append(dc.Layer(rgba, pos, shown))
    self.objects.append({"class": cls, "image": stamp.id, "slot": slot, "flip": flip,
                         "size": list(rgba.shape[:2]), "pos": pos.tolist(),
                         "visible": shown.tolist()})
    return len(self.layers) - 1

  def add_source(self, cls: str, span: tuple[int, int], gain_db: float = 0.0,
                 obj: int | None = None, stamp: Stamp | None = None) -> int:
    """Adds a recording of `cls` over seconds [start, end); `obj` is the object that makes
    the sound (None: off screen); the recording's excerpt is that of the clip's region.
    Returns the source index."""
    stamp = stamp or self.pick(cls)
    self.waves.append(dc.place_sound(self.rng, stamp.excerpt(self.region), span[0], span[1],
                                     self.num_t, gain_db))
    self.sources.append({"class": cls, "sound": stamp.id, "object": obj,
                         "excerpt": list(stamp.excerpt_span(self.region)),
                         "span": list(span), "gain_db": round(float(gain_db), 3)})
    return len(self.sources) - 1

  def restrict_source(self, index: int, keep: np.ndarray) -> None:
    """Silences source `index` in the seconds where bool[T] `keep` is False."""
    self.waves[index] = dc.keep_seconds(self.waves[index], keep)

  def settle(self) -> None:
    """Silences every second where a source's level is unclear (see dc.UNCLEAR_DB) until none
    is left, so that audible and silent seconds are far apart in level."""
    for _ in range(10):
      db, _ = self.measure()
      unclear = (db >= dc.UNCLEAR_DB[0]) & (db < dc.UNCLEAR_DB[1])  # [K, T]
      if not unclear.any():
        return
      for k in np.nonzero(unclear.any(axis=1))[0]:
        self.restrict_source(int(k), db[k] >= dc.UNCLEAR_DB[1])
    raise RuntimeError("demo clip: source levels did not settle")

  def measure(self) -> tuple[np.ndarray, float]:
    """Mixes the sources; returns (per-source loudness float64[K, T] in dBFS, mix scale)."""
    if not self.waves:
      return np.full((0, self.num_t), -120.0), 1.0
    _, scale = dc.mix(self.waves)
    db = np.stack([dc.segment_db(w * np.float32(scale), self.num_t) for w in self.waves])
    return db, scale

  def audible(self) -> np.ndarray:
    """bool[K, T]: whether each source is audible in each second of the final mix."""
    return self.measure()[0] >= dc.AUDIBLE_DB

  def finish(self) -> Rendered:
    """Settles the levels, renders one frame per second and mixes the audio."""
    self.settle()
    frames, alphas = zip(*(dc.render(self.background, self.layers, t)
                           for t in range(self.num_t)))
    if self.waves:
      audio, _ = dc.mix(self.waves)
    else:
      audio = np.zeros(self.num_t * dc.SAMPLE_RATE, np.float32)
    db, _ = self.measure()
    sources = [dict(s, loudness_db=[round(float(v), 2) for v in row],
                    audible=(row >= dc.AUDIBLE_DB).tolist())
               for s, row in zip(self.sources, db)]
    objects = []
    for i, o in enumerate(self.objects):
      boxes = [dc.mask_box(dc.alpha_to_mask(a[i])) for a in alphas]
      objects.append(dict(o, box=boxes))
    return Rendered(np.stack(frames), np.stack(alphas), audio, objects, sources)

  def slot_ranges(self, count: int) -> list[tuple[float, float]]:
    """Left-to-right x ranges (fractions of the width) for `count` side-by-side objects."""
    return [(k / count, (k + 1) / count) for k in range(count)]


def object_frac(rng: np.random.Generator, count: int) -> float:
  """Size (longer side / frame side) of each of `count` objects sharing a frame."""
  low, high = {1: (0.3, 0.7), 2: (0.3, 0.45)}.get(count, (0.28, 0.33))
  return float(rng.uniform(low, high))


def box_fill(stamp: Stamp) -> float:
  """Area of the cut-out's alpha box over the square of its longer side (in (0, 1])."""
  ys, xs = np.nonzero(stamp.rgba[..., 3] >= 128)
  if len(xs) == 0:
    return 1.0
  return float((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
               / max(stamp.rgba.shape[:2]) ** 2)


def frac_for_area(stamp: Stamp, area: float) -> float:
  """Size (longer side / frame side, at most 1) that makes the stamp's box cover `area` of
  the frame (less when even the full frame size cannot)."""
  return float(min(1.0, np.sqrt(area / box_fill(stamp))))
