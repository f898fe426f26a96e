"""Composition primitives of the demo clips: pictures (cut-outs on backgrounds) and sound.

Time is in one-second segments. A visible object is a `Layer` (a scaled cut-out with a
top-left position per segment). A sound source is a recording tiled over a span of seconds;
its per-second loudness, measured on the placed waveform, decides in which seconds it is
audible (`AUDIBLE_DB`), so labels follow the actual audio, gaps included.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

SAMPLE_RATE = 16000
AUDIBLE_DB = -45.0  # A source is audible in a second when its RMS there is at least this (dBFS).
# Seconds whose level falls in [AUDIBLE_DB - 10, AUDIBLE_DB + 6) are silenced, so every second
# is clearly audible (>= -39 dBFS) or clearly not (< -55 dBFS, usually exact silence).
UNCLEAR_DB = (AUDIBLE_DB - 10.0, AUDIBLE_DB + 6.0)
TARGET_DB = -20.0  # Active RMS (dBFS) of a placed recording at gain 0 dB.
END_MARGIN_S = 0.12  # A placed sound stops this long before its span ends (no spill-over).
FADE_S = 0.02  # Fade at the edges of a placed span.
MAX_DRIFT = 0.008  # Largest drift per second, as a fraction of the frame side.


@dataclasses.dataclass(frozen=True)
class Layer:
  """A cut-out in a clip: `rgba` uint8[h, w, 4], `pos` int[T, 2] top-left (x, y) per segment,
  `visible` bool[T]."""
  rgba: np.ndarray
  pos: np.ndarray
  visible: np.ndarray


def resize_cutout(rgba: np.ndarray, side: int) -> np.ndarray:
  """Scales a cut-out so its longer side is `side` px. uint8[h, w, 4] -> uint8[h', w', 4]."""
  h, w = rgba.shape[:2]
  scale = side / max(h, w)
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  return np.asarray(Image.fromarray(rgba, "RGBA").resize(size, Image.Resampling.LANCZOS))


def crop_background(rng: np.random.Generator, rgb: np.ndarray, size: int,
                    region: tuple[int, int, int, int] | None = None
                    ) -> tuple[np.ndarray, list[int]]:
  """A random square crop inside `region` (x0, y0, x1, y1; default: the whole photo), its
  side 75-100 % of the region's short side, resized to uint8[size, size, 3].

  Returns (crop, [x0, y0, x1, y1] of the crop in photo pixels).
  """
  x0, y0, x1, y1 = region or (0, 0, rgb.shape[1], rgb.shape[0])
  h, w = y1 - y0, x1 - x0
  side = int(min(h, w) * rng.uniform(0.75, 1.0))
  y, x = y0 + int(rng.integers(0, h - side + 1)), x0 + int(rng.integers(0, w - side + 1))
  crop = Image.fromarray(rgb[y:y + side, x:x + side])
  return (np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR)),
          [x, y, x + side, y + side])


def drift_positions(rng: np.random.Generator, hw: tuple[int, int], size: int, num_t: int,
                    x_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
  """Top-left positions int[T, 2] of an object of shape `hw` drifting slowly.

  The object stays fully inside the frame, and its centre stays inside `x_range` (fractions of
  the frame width) where the frame allows it, so objects given disjoint ranges keep their
  left-to-right order.
  """
  h, w = hw
  lo = min(max(0.0, x_range[0] * size - w / 2), size - w)
  hi = min(size - w, x_range[1] * size - w / 2)
  hi = max(hi, lo)
  start = np.array([rng.uniform(lo, hi), rng.uniform(0, size - h)])
  step = rng.uniform(-MAX_DRIFT, MAX_DRIFT, size=2) * size
  path = start[None] + step[None] * np.arange(num_t)[:, None]  # [T, 2]
  path[:, 0] = np.clip(path[:, 0], lo, hi)
  path[:, 1] = np.clip(path[:, 1], 0, size - h)
  return np.round(path).astype(np.int32)


def render(background: np.ndarray, layers: list[Layer], t: int
           ) -> tuple[np.ndarray, np.ndarray]:
  """Composites the layers visible at segment `t` (later layers in front).

  Returns the frame uint8[S, S, 3] and each layer's visible alpha float32[L, S, S] (its own
  alpha times the transparency of every layer in front; zero when the layer is hidden).
  """
  size = background.shape[0]
  out = background.astype(np.float32)
  alphas = np.zeros((len(layers), size, size), np.float32)
  for i, layer in enumerate(layers):
    if not layer.visible[t]:
      continue
    x, y = (int(v) for v in layer.pos[t])
    h, w = layer.rgba.shape[:2]
    alphas[i, y:y + h, x:x + w] = layer.rgba[..., 3] / np.float32(255)
    rgb = np.zeros((size, size, 3), np.float32)
    rgb[y:y + h, x:x + w] = layer.rgba[..., :3]
    a = alphas[i][..., None]
    out = out * (1 - a) + rgb * a
    alphas[:i] *= 1 - alphas[i][None]
  return np.clip(np.round(out), 0, 255).astype(np.uint8), alphas


def alpha_to_mask(alpha: np.ndarray) -> np.ndarray:
  """Binary mask of a visible alpha: float32[S, S] -> bool[S, S] (alpha >= 0.5)."""
  return alpha >= 0.5


def mask_box(mask: np.ndarray) -> list[float] | None:
  """Normalised box [xmin, ymin, xmax, ymax] in [0, 1] of a bool[S, S] mask (None if empty).

  Pixel i covers [i, i + 1) / S, so a one-pixel mask at column 0 has xmin 0 and xmax 1/S.
  """
  ys, xs = np.nonzero(mask)
  if len(xs) == 0:
    return None
  h, w = mask.shape
  return [round(xs.min() / w, 6), round(ys.min() / h, 6),
          round((xs.max() + 1) / w, 6), round((ys.max() + 1) / h, 6)]


def active_rms(sound: np.ndarray) -> float:
  """RMS over the 20-ms frames within 30 dB of the loudest frame."""
  n = len(sound) // 320
  if n == 0:
    return float(np.sqrt(np.mean(sound ** 2)) + 1e-9)
  energy = np.mean(sound[:n * 320].reshape(n, 320) ** 2, axis=1)  # [n]
  return float(np.sqrt(energy[energy >= energy.max() * 1e-3].mean()) + 1e-9)


def span_envelope(start_s: float, end_s: float, num_samples: int) -> np.ndarray:
  """float32[N]: 1 inside [start, end - END_MARGIN_S), short fades, 0 outside."""
  env = np.zeros(num_samples, np.float32)
  a = int(round(start_s * SAMPLE_RATE))
  b = int(round((end_s - END_MARGIN_S) * SAMPLE_RATE))
  if b <= a:
    return env
  env[a:b] = 1
  fade = min(int(FADE_S * SAMPLE_RATE), (b - a) // 2)
  if fade > 0:
    ramp = np.linspace(0, 1, fade, dtype=np.float32)
    env[a:a + fade] *= ramp
    env[b - fade:b] *= ramp[::-1]
  return env


def place_sound(rng: np.random.Generator, sound: np.ndarray, start_s: int, end_s: int,
                num_t: int, gain_db: float = 0.0) -> np.ndarray:
  """Tiles a recording over seconds [start_s, end_s) of a `num_t`-second track.

  Copies follow each other with random gaps of 0.05-0.35 s; a long recording may start at a
  random point inside it. The result (float32[num_t * 16000]) is zero outside the span and
  ends END_MARGIN_S before `end_s`.
  """
  n = num_t * SAMPLE_RATE
  out = np.zeros(n, np.float32)
  gain = 10 ** ((TARGET_DB + gain_db) / 20) / active_rms(sound)
  pos = int((start_s + rng.uniform(0, 0.1)) * SAMPLE_RATE)
  stop = int(end_s * SAMPLE_RATE)
  offset = 0
  if len(sound) > 1.5 * SAMPLE_RATE and rng.random() < 0.5:
    offset = int(rng.integers(0, len(sound) - SAMPLE_RATE))
  while pos < stop:
    piece = sound[offset:offset + stop - pos]
    out[pos:pos + len(piece)] += piece * gain
    pos += len(piece) + int(rng.uniform(0.05, 0.35) * SAMPLE_RATE)
    offset = 0
  return out * span_envelope(start_s, end_s, n)


def segment_db(wave: np.ndarray, num_t: int) -> np.ndarray:
  """Per-second RMS level in dBFS: float32[num_t * 16000] -> float64[num_t] (floor -120)."""
  x = np.zeros(num_t * SAMPLE_RATE, np.float64)
  x[:min(len(wave), len(x))] = wave[:len(x)]
  power = np.mean(x.reshape(num_t, SAMPLE_RATE) ** 2, axis=1)  # [T]
  return np.maximum(10 * np.log10(power + 1e-12), -120.0)


def keep_seconds(wave: np.ndarray, keep: np.ndarray) -> np.ndarray:
  """Silences a placed sound in the seconds where bool[T] `keep` is False. Each kept run
  [a, b) fades in at a and out END_MARGIN_S before b; dropped seconds become exact zeros."""
  env = np.zeros(len(wave), np.float32)
  for a, b in runs(keep):
    env = np.maximum(env, span_envelope(a, b, len(wave)))
  return wave * env


def span_mask(num_t: int, start: int, end: int) -> np.ndarray:
  """bool[num_t], True in [start, end)."""
  out = np.zeros(num_t, bool)
  out[start:end] = True
  return out


def longest_run(flags: np.ndarray) -> tuple[int, int]:
  """[start, end) of the longest run of True in bool[T] ((0, 0) when there is none)."""
  best, start = (0, 0), None
  for t, f in enumerate(list(flags) + [False]):
    if f and start is None:
      start = t
    elif not f and start is not None:
      if t - start > best[1] - best[0]:
        best = (start, t)
      start = None
  return best


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
  """All runs [start, end) of True in bool[T], in time order."""
  out, start = [], None
  for t, f in enumerate(list(flags) + [False]):
    if f and start is None:
      start = t
    elif not f and start is not None:
      out.append((start, t))
      start = None
  return out


def mix(waves: list[np.ndarray]) -> tuple[np.ndarray, float]:
  """Sums sources; scales down when the peak would exceed 0.95. Returns (mix, scale)."""
  total = np.sum(waves, axis=0).astype(np.float32)
  peak = float(np.abs(total).max()) if total.size else 0.0
  scale = 0.95 / peak if peak > 0.95 else 1.0
  return total * np.float32(scale), scale


def random_span(rng: np.random.Generator, num_t: int, min_len: int, max_len: int
                ) -> tuple[int, int]:
  """A random [start, end) of `min_len`..`max_len` seconds inside [0, num_t)."""
  length = int(rng.integers(min_len, max_len + 1))
  start = int(rng.integers(0, num_t - length + 1))
  return start, start + length
