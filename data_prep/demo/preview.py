"""Contact sheet of the demo data: `DIR/preview.png`.

For the first train, test and test_novel clip of every layout it shows the frames as written
in the raw trees (decoded from the mp4, or the png/jpg files), the ground-truth boxes of the metadata (green: the object is
heard in that second, grey: silent), the ground-truth masks read back from the raw mask PNGs
(tinted), and a timeline of the labels: which source is heard and which object is seen in
each second, plus each layout's own label (AVE class per second, MUSIC-AVQA questions).
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from data_prep.demo.assets import raw_split  # noqa: E402
from data_prep.demo.media import VIDEO_FPS  # noqa: E402

SHOWN_SPLITS = ("train", "test", "test_novel")  # One clip of each per layout.
HEARD, SILENT, MASK = (0, 200, 0), (150, 150, 150), np.array([255, 0, 255], np.float32)


def _mp4_frames(path: Path) -> list[np.ndarray]:
  """The first frame of every second of a demo mp4: list of uint8[S, S, 3]."""
  with av.open(str(path)) as container:
    frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
  return frames[::VIDEO_FPS]


def _png(path: Path) -> np.ndarray:
  return np.asarray(Image.open(path).convert("RGB"))


def _media(raw: Path, name: str, clip: dict) -> tuple[list[np.ndarray], list]:
  """Frames and mask arrays (or None) of a clip as stored in its raw tree `raw`."""
  i, s = clip["id"], raw_split(clip["split"])
  if name == "ave":
    return _mp4_frames(raw / "AVE" / f"{i}.mp4"), []
  if name == "llp":
    return _mp4_frames(raw / "LLP_dataset" / "video" / f"{clip['filename']}.mp4"), []
  if name == "music_avqa":
    return _mp4_frames(raw / "MUSIC-AVQA-videos-Real" / f"{i}.mp4"), []
  if name == "vggss":
    if s == "train":
      return _mp4_frames(raw / "video" / f"{i}.mp4"), []
    return [_png(raw / "frames" / f"{i}.jpg")], []
  if name == "avsbench_s4":
    base = raw / "Single-source" / "s4_data"
    rel = Path(s) / clip["class"] / i
    frames = [_png(base / "visual_frames" / rel / f"{i}_{k}.png") for k in range(1, 6)]
    masks = [np.asarray(Image.open(base / "gt_masks" / rel / f"{i}_{k}.png")) > 127
             for k in range(1, clip["annotated_frames"] + 1)]
    return frames, masks
  base = raw / "Multi-sources" / "ms3_data"
  frames = [_png(base / "visual_frames" / i / f"{i}.mp4_{k}.png") for k in range(1, 6)]
  masks = [np.asarray(Image.open(base / "gt_masks" / s / i / f"{i}_{k}.png")) > 127
           for k in range(1, 6)]
  return frames, masks


def _draw_box(img: np.ndarray, box, color) -> None:
  h, w = img.shape[:2]
  x0, y0 = int(box[0] * w), int(box[1] * h)
  x1, y1 = max(x0, int(round(box[2] * w)) - 1), max(y0, int(round(box[3] * h)) - 1)
  for y in (y0, y1):
    img[y, x0:x1 + 1] = color
  for x in (x0, x1):
    img[y0:y1 + 1, x] = color


def _strip(frames, masks, clip: dict) -> np.ndarray:
  """Frames side by side with masks tinted and metadata boxes drawn: uint8[S, n*(S+2), 3]."""
  heard = {s["object"]: s["audible"] for s in clip["sources"] if s["object"] is not None}
  tiles = []
  for t, frame in enumerate(frames):
    img = frame.astype(np.float32)
    if t < len(masks):
      img[masks[t]] = 0.5 * img[masks[t]] + 0.5 * MASK
    img = img.astype(np.uint8)
    for k, obj in enumerate(clip["objects"]):
      box = obj["box"][t] if t < len(obj["box"]) else None
      if box is not None:
        _draw_box(img, box, HEARD if heard.get(k, [False] * 10)[t] else SILENT)
    tiles.append(np.pad(img, ((0, 0), (0, 2), (0, 0)), constant_values=255))
  return np.concatenate(tiles, axis=1)


def _timeline(ax, clip: dict, name: str) -> None:
  """Bars per second: thick = heard (source), thin = seen (object)."""
  rows = []
  for s in clip["sources"]:
    where = "on screen" if s["object"] is not None else "off screen"
    rows.append((f"{s['class']} heard ({where})", s["audible"], 6, "tab:green"))
  for o in clip["objects"]:
    rows.append((f"{o['class']} seen", o["visible"], 3, "tab:blue"))
  if name == "ave":
    rows.append((f"AVE label: {clip['class']}", [x != "background" for x in clip["labels"]],
                 6, "tab:red"))
  for r, (label, flags, lw, color) in enumerate(rows):
    for t, f in enumerate(flags):
      if f:
        ax.plot([t + 0.05, t + 0.95], [r, r], color=color, lw=lw, solid_capstyle="butt")
    ax.text(-0.1, r, label, ha="right", va="center", fontsize=6)
  ax.set_xlim(-0.05, clip["num_segments"] + 0.05)
  ax.set_ylim(-0.7, len(rows) - 0.3)
  ax.set_xticks(range(clip["num_segments"] + 1))
  ax.tick_params(labelsize=5, length=2)
  ax.set_yticks([])
  ax.invert_yaxis()


def _caption(name: str, clip: dict) -> str:
  text = f"{name}  {clip['split']}  {clip['id']}  bg={clip['background']}"
  if name == "music_avqa":
    qs = [f"{q['question_content']} {q['templ_values']} -> {q['anser']}"
          for q in clip["questions"][:4]]
    text += "\n" + "\n".join(qs)
  elif name == "llp":
    text += f"\nweak labels: {', '.join(clip['weak_labels'])}"
  elif name == "vggss":
    text += f"\nclass {clip['class']}; boxes of the sounding objects: {len(clip['bbox'])}"
  elif "avsbench" in name:
    text += "\nmask (magenta) = objects heard in that second"
  return text


def _pick(clips: list[dict]) -> list[dict]:
  """The first clip of each of SHOWN_SPLITS (or the next clips)."""
  firsts = [next((c for c in clips if c["split"] == s), None) for s in SHOWN_SPLITS]
  out = [c for c in firsts if c is not None]
  return (out + [c for c in clips if c not in out])[:len(SHOWN_SPLITS)]


def draw(out_dir: Path, path: Path) -> None:
  """Draws the contact sheet of the demo in `out_dir` (needs raw/ and metadata/)."""
  entries = []
  for meta_path in sorted((out_dir / "metadata").glob("*.json")):
    meta = json.loads(meta_path.read_text())
    for clip in _pick(meta["clips"]):
      raw = out_dir / meta["raw_novel_dir" if clip["split"] == "test_novel" else "raw_dir"]
      frames, masks = _media(raw, meta["dataset"], clip)
      entries.append((meta["dataset"], clip, _strip(frames, masks, clip)))
  fig = plt.figure(figsize=(16, 2.3 * len(entries)), dpi=100)
  grid = fig.add_gridspec(len(entries), 2, width_ratios=[3, 1.1], hspace=0.6, wspace=0.4)
  for r, (name, clip, strip) in enumerate(entries):
    ax = fig.add_subplot(grid[r, 0])
    ax.imshow(strip, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(_caption(name, clip), fontsize=7, loc="left")
    _timeline(fig.add_subplot(grid[r, 1]), clip, name)
  fig.savefig(path, metadata={"Software": None}, bbox_inches="tight")
  plt.close(fig)
