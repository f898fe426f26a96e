"""Demo clips in the AVE, LLP and VGG-SS raw layouts (docs/BENCHMARKS.md 1.1, 2.1, 4.1).

Each layout has `make_clip(ctx, rng, split, clip_id) -> metadata` (composes one clip and
writes its media under `ctx.raw_dir`) and `write_annotations(raw_dir, clips)` (writes the
benchmark's annotation files from the clips' metadata, in the given order). `split` is a demo
split (train, val, test, test_novel); media and annotation rows go where the benchmark puts
its `raw_split(split)` (test_novel clips are written as test clips of their own raw tree).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from data_prep.demo import compose as dc
from data_prep.demo import media as dm
from data_prep.demo.assets import Pack, raw_split
from data_prep.demo.scene import Scene, frac_for_area, object_frac

BACKGROUND = "background"


@dataclasses.dataclass(frozen=True)
class Ctx:
  pack: Pack
  raw_dir: Path
  size: int


def base_meta(clip_id: str, split: str, scene: Scene, rendered) -> dict:
  """The metadata every layout shares. `split` is the demo split (test_novel included)."""
  return {"id": clip_id, "split": split, "background": scene.background_id,
          "background_crop": scene.background_crop, "num_segments": scene.num_t,
          "objects": rendered.objects, "sources": rendered.sources}


# ------------------------------------------------------------------------------------------
# AVE: Category&VideoID&Quality&Start&End, videos RAW/AVE/<VideoID>.mp4.

AVE_T = 10


def _ave_offscreen(scene: Scene, cls: str, event: tuple[int, int]) -> None:
  """An off-screen sound of another class in 1-3 seconds outside the event (background)."""
  gaps = [g for g in ((0, event[0]), (event[1], AVE_T)) if g[1] > g[0]]
  if not gaps:
    return
  lo, hi = gaps[int(scene.rng.integers(len(gaps)))]
  length = int(scene.rng.integers(1, min(3, hi - lo) + 1))
  start = int(scene.rng.integers(lo, hi - length + 1))
  other = scene.pick_classes(1, exclude=(cls,))[0]
  scene.add_source(other, (start, start + length), float(scene.rng.uniform(-6, 0)))


def ave_make_clip(ctx: Ctx, rng: np.random.Generator, split: str, clip_id: str) -> dict:
  """One class per clip: an audible span inside a longer visible span, maybe an off-screen
  sound in a non-event second. Labels come from the measured loudness."""
  scene = Scene(rng, ctx.pack, split, ctx.size, AVE_T)
  cls = scene.pick_classes(1)[0]
  plan = (0, AVE_T) if rng.random() < 0.4 else dc.random_span(rng, AVE_T, 2, 9)
  shown = (plan[0] - int(rng.integers(0, min(2, plan[0]) + 1)),
           plan[1] + int(rng.integers(0, min(2, AVE_T - plan[1]) + 1)))
  obj = scene.add_object(cls, object_frac(rng, 1), visible=shown)
  src = scene.add_source(cls, plan, float(rng.uniform(-6, 0)), obj=obj)
  if rng.random() < 0.35:
    _ave_offscreen(scene, cls, plan)
  scene.settle()
  heard = scene.audible()[src]
  event = dc.longest_run(heard)
  if event == (0, 0):
    raise RuntimeError(f"AVE demo clip {clip_id}: the event is inaudible")
  if heard.sum() != event[1] - event[0]:  # A gap split the audible seconds: keep one run.
    scene.restrict_source(src, dc.span_mask(AVE_T, *event))
  rendered = scene.finish()
  heard = np.array(rendered.sources[src]["audible"])
  event = dc.longest_run(heard)
  if event == (0, 0) or heard.sum() != event[1] - event[0]:
    raise RuntimeError(f"AVE demo clip {clip_id}: the event is not one audible span")
  visible = np.array(rendered.objects[obj]["visible"])
  labels = [cls if (h and v) else BACKGROUND for h, v in zip(heard, visible)]
  meta = base_meta(clip_id, split, scene, rendered)
  meta.update({"class": cls, "event": list(event), "visible_span": list(shown),
               "labels": labels})
  dm.write_mp4(ctx.raw_dir / "AVE" / f"{clip_id}.mp4", rendered.frames, rendered.audio)
  return meta


def ave_write_annotations(raw_dir: Path, clips: list[dict]) -> None:
  rows = {c["id"]: f"{c['class']}&{c['id']}&good&{c['event'][0]}&{c['event'][1]}\n"
          for c in clips}
  dm.write_text(raw_dir / "Annotations.txt", "".join(rows[c["id"]] for c in clips))
  for split, name in (("train", "trainSet"), ("val", "valSet"), ("test", "testSet")):
    dm.write_text(raw_dir / f"{name}.txt",
                  "".join(rows[c["id"]] for c in clips if raw_split(c["split"]) == split))


# ------------------------------------------------------------------------------------------
# LLP: tab-separated weak labels per split, dense audio/visual rows for val and test,
# videos RAW/LLP_dataset/video/<filename>.mp4.

LLP_T = 10
LLP_KINDS = ("audio-visual", "audio", "visual")


def llp_make_clip(ctx: Ctx, rng: np.random.Generator, split: str, clip_id: str) -> dict:
  """One to three events, each audio-visual, audio-only (off screen) or visual-only (silent)."""
  scene = Scene(rng, ctx.pack, split, ctx.size, LLP_T)
  num = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
  classes = scene.pick_classes(num)
  kinds = [LLP_KINDS[int(rng.choice(3, p=[0.5, 0.25, 0.25]))] for _ in classes]
  seen = [i for i, k in enumerate(kinds) if k != "audio"]
  slots = scene.slot_ranges(len(seen))
  order = rng.permutation(len(seen))
  frac = object_frac(rng, len(seen))
  for cls, kind, i in zip(classes, kinds, range(num)):
    obj = None
    if kind != "audio":
      span = dc.random_span(rng, LLP_T, 2, LLP_T)
      obj = scene.add_object(cls, frac, visible=span, x_range=slots[order[seen.index(i)]])
    if kind != "visual":
      scene.add_source(cls, dc.random_span(rng, LLP_T, 1, LLP_T), float(rng.uniform(-6, 0)),
                       obj=obj)
  rendered = scene.finish()
  audio_rows = [[s["class"], a, b] for s in rendered.sources
                for a, b in dc.runs(np.array(s["audible"]))]
  visual_rows = [[o["class"], a, b] for o in rendered.objects
                 for a, b in dc.runs(np.array(o["visible"]))]
  weak = [c for c in classes if any(r[0] == c for r in audio_rows + visual_rows)]
  start = 10 * int(rng.integers(0, 30))
  meta = base_meta(clip_id, split, scene, rendered)
  meta.update({"filename": f"{clip_id}_{start}_{start + LLP_T}",
               "kinds": dict(zip(classes, kinds)), "weak_labels": weak,
               "audio_rows": audio_rows, "visual_rows": visual_rows})
  dm.write_mp4(ctx.raw_dir / "LLP_dataset" / "video" / f"{meta['filename']}.mp4",
               rendered.frames, rendered.audio)
  return meta


def llp_write_annotations(raw_dir: Path, clips: list[dict]) -> None:
  for split, name in (("train", "AVVP_train.csv"), ("val", "AVVP_val_pd.csv"),
                      ("test", "AVVP_test_pd.csv")):
    lines = ["filename\tevent_labels\n"] + [
        f"{c['filename']}\t{','.join(c['weak_labels'])}\n" for c in clips
        if raw_split(c["split"]) == split]
    dm.write_text(raw_dir / name, "".join(lines))
  # The demo's label set is not LLP's 25 classes: name it for the converter (RAW/classes.txt).
  names = sorted({label for c in clips for label in c["weak_labels"]}
                 | {row[0] for c in clips for key in ("audio_rows", "visual_rows")
                    for row in c[key]})
  dm.write_text(raw_dir / "classes.txt", "".join(f"{n}\n" for n in names))
  for key, name in (("audio_rows", "AVVP_eval_audio.csv"),
                    ("visual_rows", "AVVP_eval_visual.csv")):
    lines = ["filename\tonset\toffset\tevent_labels\n"] + [
        f"{c['filename']}\t{a}\t{b}\t{cls}\n"
        for c in clips if raw_split(c["split"]) != "train" for cls, a, b in c[key]]
    dm.write_text(raw_dir / name, "".join(lines))


# ------------------------------------------------------------------------------------------
# VGG-SS: test frames RAW/frames/<id>.jpg + RAW/audio/<id>.wav with boxes in vggss.json and
# ids in vggss_test.csv; training clips RAW/video/<id>.mp4 listed in RAW/train.csv.

VGGSS_T = 10


# Box area (fraction of the frame) of a sounding object: 0.05 + 0.8 * Beta(1.5, 2.6), median
# about 0.3, from about 5 % to 80 % (capped by what the cut-out covers at full frame size), so
# large objects are common, as in the benchmark's boxes. Two sounding objects get 60 % each.
VGGSS_AREA = (0.05, 0.8, 1.5, 2.6)
VGGSS_PAIR_SCALE = 0.6
VGGSS_MIN_VISIBLE = 0.25  # A sounding object must show this fraction of its own pixels.


def vggss_area(rng: np.random.Generator) -> float:
  low, span, a, b = VGGSS_AREA
  return float(low + span * rng.beta(a, b))


def vggss_make_clip(ctx: Ctx, rng: np.random.Generator, split: str, clip_id: str) -> dict:
  """A sounding object (sometimes two of its class) and maybe a silent object of another
  class behind them; boxes are those of the sounding objects, sized like the benchmark's."""
  scene = Scene(rng, ctx.pack, split, ctx.size, VGGSS_T)
  clip_id = f"{clip_id}_{10 * int(rng.integers(0, 30)):06d}"
  cls = scene.pick_classes(1)[0]
  stamps = ctx.pack.stamps_of(cls, scene.pool)
  sounding = 2 if len(stamps) > 1 and rng.random() < 0.15 else 1
  silent = [scene.pick_classes(1, exclude=(cls,))[0]] if rng.random() < 0.4 else []
  slots = scene.slot_ranges(sounding + len(silent))
  order = [int(i) for i in rng.permutation(len(slots))]
  still = raw_split(split) != "train"
  for k, other in enumerate(silent):  # Behind the sounding objects.
    scene.add_object(other, object_frac(rng, 2), x_range=slots[order[sounding + k]],
                     drift=not still)
  picked = [stamps[int(i)] for i in rng.choice(len(stamps), size=sounding, replace=False)]
  objs = []
  for k, stamp in enumerate(picked):
    area = vggss_area(rng) * (VGGSS_PAIR_SCALE if sounding > 1 else 1.0)
    frac = frac_for_area(stamp, area)
    objs.append(scene.add_object(cls, frac, x_range=slots[order[k]], drift=not still,
                                 stamp=stamp))
    scene.add_source(cls, (0, VGGSS_T), float(rng.uniform(-6, 0)), obj=objs[-1], stamp=stamp)
  rendered = scene.finish()
  for i in objs:
    own = (scene.layers[i].rgba[..., 3] >= 128).sum()
    if dc.alpha_to_mask(rendered.alphas[0, i]).sum() < VGGSS_MIN_VISIBLE * own:
      raise RuntimeError(f"VGG-SS demo clip {clip_id}: a sounding object is hidden")
  meta = base_meta(clip_id, split, scene, rendered)
  boxes = [rendered.objects[i]["box"][0] for i in objs]
  meta.update({"class": cls, "sounding_objects": objs, "bbox": boxes})
  if still:
    dm.write_jpg(ctx.raw_dir / "frames" / f"{clip_id}.jpg", rendered.frames[0])
    dm.write_wav(ctx.raw_dir / "audio" / f"{clip_id}.wav", rendered.audio)
  else:
    dm.write_mp4(ctx.raw_dir / "video" / f"{clip_id}.mp4", rendered.frames, rendered.audio)
  return meta


def vggss_write_annotations(raw_dir: Path, clips: list[dict]) -> None:
  test = [c for c in clips if raw_split(c["split"]) == "test"]
  entries = [{"file": c["id"], "class": c["class"], "bbox": c["bbox"]} for c in test]
  dm.write_text(raw_dir / "vggss.json", json.dumps(entries))
  dm.write_text(raw_dir / "vggss_test.csv", "".join(f"{c['id']}\n" for c in test))
  dm.write_text(raw_dir / "train.csv",
                "".join(f"{c['id']}\n" for c in clips if raw_split(c["split"]) == "train"))
