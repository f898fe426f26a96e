"""Named, seeded per-example transforms of the online input pipeline (plain numpy and PIL).

A *clip* is the working form of one example between transforms: a dict with
  frames        uint8[S, H, W, 3]   decoded frames of the S selected seconds (S <= T)
  log_mel       float32[S, F, M]    their log-mel blocks
  seconds       int32[S]            source second of each selected segment
  focus         int                 position (in [0, S)) of the focus segment
  boxes         float64[B, 4]       normalized [x0, y0, x1, y1] (SSL; B may be 0)
  mask          bool[H, W] | None   ground-truth mask of the focus frame (AVS)
  mask_frame    int                 which stored frame `mask` belongs to (AVS, else -1)
  example       dict                the stored example's annotation fields (see schema.py)
  example_index int                 position of the example in its split (for evaluation)
Every transform is a small class: random ones take `(clip, rng)` and are applied with grain's
`random_map` (the generator is derived from the seed and the element index, so the output
is a pure function of (seed, index)); deterministic ones take `(clip)`.

Geometry: a crop is a rectangle in normalized frame coordinates; frames, boxes and masks
are cut and resized with the same rectangle, and a horizontal flip mirrors all three, so boxes
and masks stay aligned with the pixels they annotate.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import numpy as np
from PIL import Image

Clip = dict[str, Any]


# ----------------------------------------------------------------------------- selection
def frame_index(second: int, num_frames: int, clip_seconds: int) -> int:
  """Stored frame shown at `second`: the middle frame of that second (N = clip * fps frames),
  or frame 0 when only one frame is stored (VGG-SS test: the annotated frame, repeated)."""
  if num_frames == 1:
    return 0
  per_second = max(1, num_frames // clip_seconds)
  return min(num_frames - 1, second * per_second + per_second // 2)


def stratified_seconds(valid: int, count: int, rng: np.random.Generator | None) -> np.ndarray:
  """`count` seconds spread uniformly over [0, valid): one per stratum of `valid / count`
  seconds, at a random position in it (rng given) or at its middle (rng None). int32[count]."""
  stride = valid / count
  offsets = rng.random(count) if rng is not None else np.full(count, 0.5)
  seconds = np.floor((np.arange(count) + offsets) * stride).astype(np.int64)
  return np.clip(seconds, 0, valid - 1).astype(np.int32)


def decode_jpeg(data: bytes) -> np.ndarray:
  """JPEG bytes -> uint8[H, W, 3]."""
  return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def decode_png_mask(data: bytes) -> np.ndarray:
  """PNG mask bytes (0/255) -> bool[H, W]."""
  return np.asarray(Image.open(io.BytesIO(data)).convert("L")) > 127


@dataclasses.dataclass(frozen=True)
class SelectSegments:
  """Stored example -> clip: picks the seconds, decodes their frames (and the AVS mask).

  Seconds: `sample=True` tasks whose valid length exceeds T take T seconds spread uniformly
  (`stratified_seconds`: a random second of each stratum in training, the middle one in
  evaluation); other examples keep seconds 0 .. min(valid, T) - 1 (shorter clips are padded
  later, with `segment_mask` False). AVS (`mask_frame=True`): the focus is a frame with a
  ground-truth mask (training: a random annotated one; evaluation: the example's
  `_frame_index`). Otherwise the focus is the middle selected segment.
  """

  num_segments: int  # T
  sample: bool
  mask_frame: bool
  train: bool

  random = True

  def __call__(self, example: dict, rng: np.random.Generator) -> Clip:
    log_mel = np.asarray(example["log_mel"])
    clip_seconds = log_mel.shape[0]
    valid = int(np.clip(int(example["num_segments"]), 1, clip_seconds))
    if self.sample and valid > self.num_segments:
      seconds = stratified_seconds(valid, self.num_segments, rng if self.train else None)
    else:
      seconds = np.arange(min(valid, self.num_segments), dtype=np.int32)
    focus, mask, mask_frame = len(seconds) // 2, None, -1
    if self.mask_frame:
      mask_frame = self._pick_mask_frame(example, len(seconds), rng)
      focus = mask_frame
      data = example["masks"][mask_frame]
      mask = decode_png_mask(data) if data else None
    stored = example["frames"]
    wanted = [frame_index(int(s), len(stored), clip_seconds) for s in seconds]
    decoded = {i: decode_jpeg(stored[i]) for i in sorted(set(wanted))}
    return {
        "frames": np.stack([decoded[i] for i in wanted]),  # [S, H, W, 3]
        "log_mel": log_mel[seconds].astype(np.float32),  # [S, F, M]
        "seconds": seconds,
        "focus": int(focus),
        "boxes": _boxes(example),
        "mask": mask,
        "mask_frame": int(mask_frame),
        "example": {k: v for k, v in example.items() if k not in ("frames", "log_mel", "masks")},
        "example_index": int(example.get("_example_index", -1)),
    }

  def _pick_mask_frame(self, example: dict, num_selected: int, rng) -> int:
    if "_frame_index" in example:
      return int(example["_frame_index"])
    annotated = np.flatnonzero(np.asarray(example["mask_annotated"], bool)[:num_selected])
    if not annotated.size:
      return 0  # No mask: the target gets zero weight.
    return int(annotated[rng.integers(annotated.size)] if self.train else annotated[0])


def _boxes(example: dict) -> np.ndarray:
  if "boxes" not in example:
    return np.zeros((0, 4), np.float64)
  return np.asarray(example["boxes"], np.float64).reshape(-1, 4)


# ----------------------------------------------------------------------------- geometry
def clean_boxes(boxes: np.ndarray, tol: float = 0.01) -> np.ndarray:
  """Drops corrupt boxes (non-finite, outside [0, 1] by more than `tol`, corners out of order
  or zero area) and clips the rest to [0, 1]. float64[B, 4] -> float64[B', 4]."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  ok = np.all(np.isfinite(boxes), axis=1)
  ok &= np.all((boxes >= -tol) & (boxes <= 1 + tol), axis=1, where=np.isfinite(boxes))
  boxes = np.clip(np.where(np.isfinite(boxes), boxes, 0.0), 0.0, 1.0)
  ok &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
  return boxes[ok]


def union_box(boxes: np.ndarray) -> np.ndarray | None:
  """Smallest box holding every box of float64[B, 4]; None when B = 0."""
  if not len(boxes):
    return None
  return np.concatenate([boxes[:, :2].min(0), boxes[:, 2:].max(0)])


def crop_boxes(boxes: np.ndarray, rect: tuple[float, float, float, float]) -> np.ndarray:
  """Boxes in the coordinates of crop `rect` = (x0, y0, w, h), clipped to [0, 1]."""
  x0, y0, w, h = rect
  out = (boxes - np.array([x0, y0, x0, y0])) / np.array([w, h, w, h])
  return np.clip(out, 0.0, 1.0)


def box_area(boxes: np.ndarray) -> np.ndarray:
  return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1],
                                                                   0, None)


def resize_crop(image: np.ndarray, rect, size: int, resample) -> np.ndarray:
  """Cuts `rect` (normalized x0, y0, w, h) out of uint8[H, W(, C)] and resizes it to size^2."""
  h, w = image.shape[:2]
  x0, y0, cw, ch = rect
  box = (x0 * w, y0 * h, (x0 + cw) * w, (y0 + ch) * h)
  return np.asarray(Image.fromarray(image).resize((size, size), resample=resample, box=box))


@dataclasses.dataclass(frozen=True)
class RandomResizedCrop:
  """One crop for the whole clip (area fraction in [min_area, 1], aspect ratio in [3/4, 4/3]),
  resized to `size`; `min_area=1` is a plain resize. Boxes are mapped into the crop; a crop that
  keeps less than `min_box_kept` of the (union) box area is redrawn (10 tries, then the whole
  frame). Masks are resized bilinearly and thresholded at 0.5."""

  size: int
  min_area: float = 1.0
  min_box_kept: float = 0.5
  max_tries: int = 10

  random = True

  def draw(self, rng: np.random.Generator, boxes: np.ndarray) -> tuple[float, ...]:
    if self.min_area >= 1.0:
      return (0.0, 0.0, 1.0, 1.0)
    target = union_box(clean_boxes(boxes))
    for _ in range(self.max_tries):
      area = rng.uniform(self.min_area, 1.0)
      ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
      w, h = min(1.0, math.sqrt(area * ratio)), min(1.0, math.sqrt(area / ratio))
      rect = (float(rng.uniform(0, 1 - w)), float(rng.uniform(0, 1 - h)), w, h)
      if target is None:
        return rect
      kept = box_area(crop_boxes(target[None], rect))[0] * w * h
      if kept >= self.min_box_kept * box_area(target):
        return rect
    return (0.0, 0.0, 1.0, 1.0)

  def __call__(self, clip: Clip, rng: np.random.Generator) -> Clip:
    rect = self.draw(rng, clip["boxes"])
    frames = np.stack([resize_crop(f, rect, self.size, Image.BILINEAR) for f in clip["frames"]])
    mask = clip["mask"]
    if mask is not None:
      mask = resize_crop(mask.astype(np.uint8) * 255, rect, self.size, Image.BILINEAR) > 127
    boxes = clean_boxes(clip["boxes"])
    return {**clip, "frames": frames, "mask": mask, "boxes": crop_boxes(boxes, rect),
            "crop": np.asarray(rect, np.float64)}


@dataclasses.dataclass(frozen=True)
class RandomHorizontalFlip:
  """Mirrors frames, boxes (x -> 1 - x, corners swapped) and mask with probability `p`."""

  p: float = 0.5

  random = True

  def __call__(self, clip: Clip, rng: np.random.Generator) -> Clip:
    if not rng.random() < self.p:
      return {**clip, "flipped": False}
    boxes = clip["boxes"]
    flipped_boxes = np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], -1)
    mask = clip["mask"]
    return {**clip, "frames": clip["frames"][:, :, ::-1].copy(),  # [S, H, W, 3], W reversed
            "boxes": flipped_boxes.reshape(-1, 4),
            "mask": None if mask is None else mask[:, ::-1].copy(), "flipped": True}


# ----------------------------------------------------------------------------- audio
@dataclasses.dataclass(frozen=True)
class SpecAugment:
  """SpecAugment on the log-mel of the selected seconds (float32[S, F, M]).

  `freq_masks` bands of up to `max_freq` mel bins, the same bands in every second, and
  `time_masks` spans of up to `max_time` frames inside each second; masked values are set to
  that second's mean (so the model's per-second normalization maps them to 0).
  """

  freq_masks: int = 2
  max_freq: int = 8
  time_masks: int = 1
  max_time: int = 12

  random = True

  def __call__(self, clip: Clip, rng: np.random.Generator) -> Clip:
    log_mel = np.array(clip["log_mel"], np.float32)  # [S, F, M], a copy
    s, f, m = log_mel.shape
    fill = log_mel.mean(axis=(1, 2))  # [S]
    for _ in range(self.freq_masks):
      width = int(rng.integers(0, min(self.max_freq, m) + 1))
      start = int(rng.integers(0, m - width + 1))
      log_mel[:, :, start:start + width] = fill[:, None, None]
    for _ in range(self.time_masks):
      widths = rng.integers(0, min(self.max_time, f) + 1, size=s)  # [S]
      starts = rng.integers(0, f - widths + 1)  # [S]
      frames = np.arange(f)[None, :]  # [1, F]
      hit = (frames >= starts[:, None]) & (frames < (starts + widths)[:, None])  # [S, F]
      log_mel = np.where(hit[:, :, None], fill[:, None, None], log_mel)
    return {**clip, "log_mel": log_mel}


@dataclasses.dataclass(frozen=True)
class MelShift:
  """Shifts the log-mel of the whole clip along the mel axis by k bins, k uniform in
  [-max_shift, max_shift] (a rough pitch shift: another recording of the same kind of
  sound); the bins shifted in repeat the edge bin."""

  max_shift: int = 4

  random = True

  def __call__(self, clip: Clip, rng: np.random.Generator) -> Clip:
    k = int(rng.integers(-self.max_shift, self.max_shift + 1))
    if k == 0:
      return clip
    m = clip["log_mel"].shape[-1]
    source = np.clip(np.arange(m) - k, 0, m - 1)  # output bin j reads bin j - k
    return {**clip, "log_mel": np.asarray(clip["log_mel"], np.float32)[..., source]}


# ----------------------------------------------------------------------------- augmentation
@dataclasses.dataclass(frozen=True)
class Augment:
  """Training augmentation of one task: crop area range, flip, SpecAugment."""

  min_area: float = 0.5
  flip: bool = True
  spec_augment: bool = True


def clip_transforms(size: int, augment: Augment | None, mel_shift: int = 0) -> list:
  """The geometric and audio transforms after `SelectSegments` (augment None: evaluation,
  a plain resize of the whole frame). `mel_shift` > 0 adds `MelShift(mel_shift)`."""
  if augment is None:
    return [RandomResizedCrop(size, min_area=1.0)]
  out: list = [RandomResizedCrop(size, min_area=augment.min_area)]
  if augment.flip:
    out.append(RandomHorizontalFlip())
  if mel_shift > 0:
    out.append(MelShift(int(mel_shift)))
  if augment.spec_augment:
    out.append(SpecAugment())
  return out
