"""Builds the demo dataset: real cut-outs and recordings composed into clips, written in the
raw layouts of the five benchmarks, converted to shards, and drawn in a preview.

  python -m data_prep.demo --out_dir DIR [--clips N] [--image_size S] [--seed K]

Writes
  DIR/raw/<root>/...            raw trees, exactly as the benchmarks distribute them
                                (roots: ave, llp, music_avqa, vggss, avsbench)
  DIR/metadata/<dataset>.json   the ground truth as composed (classes, spans, loudness per
                                second, positions, boxes, questions) for tests and baselines
  DIR/shards/<dataset>/...      the converted shards (`data_prep.convert`)
  DIR/preview.png               a contact sheet of a few clips per layout

`--clips N` is the number of clips per layout (MUSIC-AVQA: N // 6 videos with up to nine
questions each). Train clips use the pack's `train` stamps and backgrounds; val and test clips
use the held-out ones. The same arguments always give byte-identical files.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from data_prep import demo_avqa, demo_avsbench, demo_layouts
from data_prep import demo_compose as dc
from data_prep import demo_media as dm
from data_prep.demo_assets import ASSETS_DIR, load_pack

DEFAULT_CLIPS = 240
DEFAULT_IMAGE_SIZE = 112


@dataclasses.dataclass(frozen=True)
class Layout:
  root: str  # Folder under DIR/raw/ that is the converter's raw_dir.
  make_clip: Callable
  write_annotations: Callable
  splits: tuple[tuple[str, float], ...]  # (split, fraction of the clips)
  per_clip: float = 1.0  # Clips of this layout per requested clip.
  id_digits: bool = False  # Ids are 8-digit numbers (MUSIC-AVQA) instead of YouTube-like.


_TVT = (("train", 0.7), ("val", 0.15), ("test", 0.15))
LAYOUTS = {
    "ave": Layout("ave", demo_layouts.ave_make_clip, demo_layouts.ave_write_annotations, _TVT),
    "llp": Layout("llp", demo_layouts.llp_make_clip, demo_layouts.llp_write_annotations, _TVT),
    "music_avqa": Layout("music_avqa", demo_avqa.make_clip, demo_avqa.write_annotations, _TVT,
                         per_clip=1 / 6, id_digits=True),
    "vggss": Layout("vggss", demo_layouts.vggss_make_clip, demo_layouts.vggss_write_annotations,
                    (("train", 0.8), ("test", 0.2))),
    "avsbench_s4": Layout("avsbench", demo_avsbench.s4_make_clip,
                          demo_avsbench.s4_write_annotations, _TVT),
    "avsbench_ms3": Layout("avsbench", demo_avsbench.ms3_make_clip,
                           demo_avsbench.ms3_write_annotations, _TVT),
}


def split_counts(layout: Layout, clips: int) -> list[tuple[str, int]]:
  """Clips per split: at least one in every split, the rest in train."""
  total = max(len(layout.splits), round(clips * layout.per_clip))
  others = [(s, max(1, round(total * f))) for s, f in layout.splits[1:]]
  return [(layout.splits[0][0], total - sum(n for _, n in others))] + others


_WORKER = {}  # Per-process pack and settings, set once by `_init_worker`.


def _init_worker(assets_dir: str, raw_root: str, size: int, seed: int) -> None:
  _WORKER.update(pack=load_pack(Path(assets_dir)), raw_root=Path(raw_root), size=size, seed=seed)


def _make_clip(task: tuple[str, int, int, str, str]) -> dict:
  """Composes and writes one clip; the rng depends only on (seed, layout, clip index)."""
  name, layout_index, index, split, clip_id = task
  layout = LAYOUTS[name]
  ctx = demo_layouts.Ctx(_WORKER["pack"], _WORKER["raw_root"] / layout.root, _WORKER["size"])
  for attempt in range(5):
    rng = np.random.default_rng([_WORKER["seed"], layout_index, index + 1, attempt])
    try:
      return layout.make_clip(ctx, rng, split, clip_id)
    except RuntimeError:  # A composition whose event came out inaudible: compose again.
      continue
  raise RuntimeError(f"demo {name} clip {clip_id}: no valid composition in 5 attempts")


def _tasks(name: str, layout_index: int, clips: int, seed: int) -> list[tuple]:
  layout = LAYOUTS[name]
  counts = split_counts(layout, clips)
  rng = np.random.default_rng([seed, layout_index, 0])
  total = sum(n for _, n in counts)
  ids = (dm.unique_ids(rng, total, 8, "0123456789") if layout.id_digits
         else dm.unique_ids(rng, total))
  splits = [s for s, n in counts for _ in range(n)]
  return [(name, layout_index, i, s, ids[i]) for i, s in enumerate(splits)]


def write_metadata(path: Path, name: str, clips: list[dict], args: dict, classes) -> None:
  counts = {s: sum(c["split"] == s for c in clips) for s, _ in LAYOUTS[name].splits}
  dm.write_json(path, {
      "dataset": name, "raw_dir": f"raw/{LAYOUTS[name].root}", **args,
      "sample_rate": dc.SAMPLE_RATE, "segment_seconds": 1, "audible_db": dc.AUDIBLE_DB,
      "classes": list(classes), "splits": counts, "clips": clips})


def build_raw(out_dir: Path, clips: int = DEFAULT_CLIPS, image_size: int = DEFAULT_IMAGE_SIZE,
              seed: int = 0, workers: int = 1, datasets=None, assets_dir: Path = ASSETS_DIR
              ) -> dict[str, list[dict]]:
  """Writes the raw trees and metadata of `datasets` (default: all); returns the metadata."""
  if image_size < 32 or image_size % 2:
    raise ValueError(f"--image_size {image_size}: use an even number of pixels >= 32")
  if clips < 3:
    raise ValueError(f"--clips {clips}: need at least 3 clips (one per split)")
  names = list(datasets or LAYOUTS)
  unknown = [n for n in names if n not in LAYOUTS]
  if unknown:
    raise ValueError(f"unknown demo dataset(s) {unknown}; choose from {list(LAYOUTS)}")
  raw_root = out_dir / "raw"
  for root in sorted({LAYOUTS[n].root for n in names}):
    shutil.rmtree(raw_root / root, ignore_errors=True)
  init = (str(assets_dir), str(raw_root), image_size, seed)
  tasks = {n: _tasks(n, list(LAYOUTS).index(n), clips, seed) for n in names}
  flat = [t for n in names for t in tasks[n]]
  if workers > 1:
    with multiprocessing.get_context("spawn").Pool(workers, _init_worker, init) as pool:
      metas = pool.map(_make_clip, flat, chunksize=4)
  else:
    _init_worker(*init)
    metas = [_make_clip(t) for t in flat]
  classes = load_pack(assets_dir).classes
  args = {"seed": seed, "clips_per_layout": clips, "image_size": image_size}
  out, k = {}, 0
  for n in names:
    out[n], k = metas[k:k + len(tasks[n])], k + len(tasks[n])
    LAYOUTS[n].write_annotations(raw_root / LAYOUTS[n].root, out[n])
    write_metadata(out_dir / "metadata" / f"{n}.json", n, out[n], args, classes)
  return out


def convert_all(out_dir: Path, image_size: int, workers: int = 1, datasets=None,
                progress: bool = False) -> tuple[dict, dict[str, str]]:
  """Converts every raw tree with `data_prep.convert` into DIR/shards.

  Returns (reports, problems): a dataset whose conversion raised or skipped clips is listed
  in `problems` with the reason, and the other datasets are still converted.
  """
  from data_prep import convert  # Imported late: the raw trees do not need it.

  reports, problems = {}, {}
  for n in list(datasets or LAYOUTS):
    shutil.rmtree(out_dir / "shards" / n, ignore_errors=True)
    try:
      reports[n] = convert.convert(n, out_dir / "raw" / LAYOUTS[n].root, out_dir / "shards",
                                   workers=workers, image_size=image_size, fps=1,
                                   progress=progress)
    except Exception as e:  # noqa: BLE001 -- reported with the dataset name, run continues.
      problems[n] = f"conversion failed: {type(e).__name__}: {e}"
      continue
    skipped = {s: r["skipped"] for s, r in reports[n].items() if r.get("skipped")}
    if skipped:
      problems[n] = f"the converter skipped clips: {skipped}"
  return reports, problems


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out_dir", type=Path, required=True, help="output folder")
  parser.add_argument("--clips", type=int, default=DEFAULT_CLIPS, help="clips per layout")
  parser.add_argument("--image_size", type=int, default=DEFAULT_IMAGE_SIZE,
                      help="frame side in pixels")
  parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
  parser.add_argument("--workers", type=int, default=min(2, multiprocessing.cpu_count()),
                      help="processes (the output does not depend on it)")
  parser.add_argument("--no_convert", action="store_true", help="write the raw trees only")
  args = parser.parse_args(argv)
  try:
    t0 = time.perf_counter()
    metas = build_raw(args.out_dir, args.clips, args.image_size, args.seed, args.workers)
    t1 = time.perf_counter()
    counts = ", ".join(f"{n} {len(m)}" for n, m in metas.items())
    print(f"raw trees: {counts} clips in {t1 - t0:.1f} s -> {args.out_dir / 'raw'}")
    problems = {}
    if not args.no_convert:
      _, problems = convert_all(args.out_dir, args.image_size, args.workers, progress=True)
      t2 = time.perf_counter()
      print(f"conversion: {t2 - t1:.1f} s -> {args.out_dir / 'shards'}")
    from data_prep import demo_preview

    t3 = time.perf_counter()
    demo_preview.draw(args.out_dir, args.out_dir / "preview.png")
    print(f"preview: {time.perf_counter() - t3:.1f} s -> {args.out_dir / 'preview.png'}")
    if problems:
      raise RuntimeError("; ".join(f"demo dataset {n}: {p}" for n, p in problems.items()))
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
