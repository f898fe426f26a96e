"""Demo clips in the AVSBench-object raw layouts, S4 and MS3 (docs/BENCHMARKS.md 5.1).

Five one-second segments: five PNG frames, a five-second wav and per-frame binary masks
(0/255 PNG) of the objects that sound in that second, taken from the composited alpha.
S4: one sounding object (sometimes beside a silent one); train annotates only frame 1.
MS3: two or three objects, each sounding over its own span or not at all.
Both layouts live under one root, as AVSBench distributes them:
`RAW/Single-source/...` and `RAW/Multi-sources/...`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_prep.demo import compose as dc
from data_prep.demo import media as dm
from data_prep.demo.assets import raw_split
from data_prep.demo.layouts import base_meta
from data_prep.demo.scene import Rendered, Scene, object_frac

AVS_T = 5


def _sounding_objects(rendered: Rendered, t: int) -> list[int]:
  return [s["object"] for s in rendered.sources if s["object"] is not None and s["audible"][t]]


def _write_frames_masks(rendered: Rendered, frame_path, mask_path, mask_frames: int) -> list:
  """Writes frames 1..5 and masks 1..mask_frames; returns the sounding objects per frame."""
  per_frame = []
  for t in range(AVS_T):
    dm.write_png(frame_path(t + 1), rendered.frames[t])
    objs = _sounding_objects(rendered, t)
    per_frame.append(objs)
    if t < mask_frames:
      dm.write_mask_png(mask_path(t + 1), rendered.masks(t, objs))
  return per_frame


def s4_make_clip(ctx, rng: np.random.Generator, split: str, clip_id: str) -> dict:
  scene = Scene(rng, ctx.pack, split, ctx.size, AVS_T)
  cls = scene.pick_classes(1)[0]
  start_time = int(rng.integers(0, 10))
  name = f"{clip_id}_{start_time * 1000}"
  distractor = rng.random() < 0.4
  slots = scene.slot_ranges(2 if distractor else 1)
  order = [int(i) for i in rng.permutation(len(slots))]
  frac = object_frac(rng, len(slots))
  obj = scene.add_object(cls, frac, x_range=slots[order[0]])
  scene.add_source(cls, (0, AVS_T), float(rng.uniform(-6, 0)), obj=obj)
  if distractor:
    scene.add_object(scene.pick_classes(1, exclude=(cls,))[0], frac, x_range=slots[order[1]])
  rendered = scene.finish()
  root = ctx.raw_dir / "Single-source" / "s4_data"
  raw = raw_split(split)
  rel = Path(raw) / cls / name
  mask_frames = 1 if raw == "train" else AVS_T
  per_frame = _write_frames_masks(
      rendered, lambda k: root / "visual_frames" / rel / f"{name}_{k}.png",
      lambda k: root / "gt_masks" / rel / f"{name}_{k}.png", mask_frames)
  dm.write_wav(root / "audio_wav" / raw / cls / f"{name}.wav", rendered.audio)
  meta = base_meta(name, split, scene, rendered)
  meta.update({"class": cls, "start_time": start_time, "mask_objects": per_frame,
               "annotated_frames": mask_frames})
  return meta


def ms3_make_clip(ctx, rng: np.random.Generator, split: str, clip_id: str) -> dict:
  scene = Scene(rng, ctx.pack, split, ctx.size, AVS_T)
  count = int(rng.choice([2, 3]))
  classes = scene.pick_classes(count)
  frac = object_frac(rng, count)
  sounding = rng.random(count) < 0.7
  sounding[int(rng.integers(count))] = True
  for k, (cls, x_range) in enumerate(zip(classes, scene.slot_ranges(count))):
    obj = scene.add_object(cls, frac, x_range=x_range)
    if sounding[k]:
      span = (0, AVS_T) if rng.random() < 0.4 else dc.random_span(rng, AVS_T, 1, AVS_T)
      scene.add_source(cls, span, float(rng.uniform(-6, 0)), obj=obj)
  rendered = scene.finish()
  root = ctx.raw_dir / "Multi-sources" / "ms3_data"
  raw = raw_split(split)
  per_frame = _write_frames_masks(
      rendered, lambda k: root / "visual_frames" / clip_id / f"{clip_id}.mp4_{k}.png",
      lambda k: root / "gt_masks" / raw / clip_id / f"{clip_id}_{k}.png", AVS_T)
  dm.write_wav(root / "audio_wav" / raw / f"{clip_id}.wav", rendered.audio)
  meta = base_meta(clip_id, split, scene, rendered)
  meta.update({"classes": classes, "mask_objects": per_frame, "annotated_frames": AVS_T})
  return meta


def s4_write_annotations(raw_dir: Path, clips: list[dict]) -> None:
  lines = ["name,start_time,category,split\n"] + [
      f"{c['id']},{c['start_time']},{c['class']},{raw_split(c['split'])}\n" for c in clips]
  dm.write_text(raw_dir / "Single-source" / "s4_meta_data.csv", "".join(lines))


def ms3_write_annotations(raw_dir: Path, clips: list[dict]) -> None:
  lines = ["name,split\n"] + [f"{c['id']},{raw_split(c['split'])}\n" for c in clips]
  dm.write_text(raw_dir / "Multi-sources" / "ms3_meta_data.csv", "".join(lines))
