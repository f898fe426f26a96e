"""Builds the demo dataset: real cut-outs and recordings composed into clips, written in the
raw layouts of the five benchmarks, converted to shards, and drawn in a preview.

  python -m data_prep.demo --out_dir DIR [--train_clips 240] [--val_clips 20]
      [--test_clips 100] [--novel_clips 60] [--image_size 112] [--seed 0] [--workers 2]

Writes
  DIR/raw/<root>/...            raw trees of train, val and test, exactly as the benchmarks
                                distribute them (roots: ave, llp, music_avqa, vggss, avsbench)
  DIR/raw_novel/<root>/...      the test_novel clips, written as the `test` split of a second
                                raw tree in the same layouts
  DIR/metadata/<dataset>.json   the ground truth of every clip of every split as composed
                                (classes, spans, loudness per second, positions, boxes,
                                questions, the material used) with its "split" (train, val,
                                test or test_novel) and the shard ids of its examples
  DIR/shards/<dataset>/...      the converted shards (`data_prep.convert`); the raw_novel
                                tree is converted on its own and its test shards moved in as
                                split `test_novel` (test_novel/test_novel-0000i-of-0000n.*,
                                listed in dataset_info.json and report.json)
  DIR/preview.png               a contact sheet: a train, test and test_novel clip per layout

Splits (`--*_clips` are clips per layout; MUSIC-AVQA makes as many training videos, a quarter
as many val and half as many test and test_novel videos (`Layout.split_per_clip`), training
videos with up to three questions per type, the others one; VGG-SS has train and test only,
as the benchmark):
  train       the pack's `train` stamps (recordings and cut-outs), training excerpts of long
              recordings and the training half of every background photo;
  val, test   the same `train` stamps in scenes training never saw: new spans, timings,
              gains, co-occurring sources, positions, scales and flips, the other excerpt of
              each recording of >= 3 s (shorter ones are reused whole) and crops from the other
              half of each background photo;
  test_novel  the pack's `heldout` stamps, which no other split uses, composed like test.
The same arguments always give byte-identical files (whatever --workers).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from av_unified_jax.data import shards
from data_prep import writer
from data_prep.demo import avqa as demo_avqa
from data_prep.demo import avsbench as demo_avsbench
from data_prep.demo import layouts as demo_layouts
from data_prep.demo import compose as dc
from data_prep.demo import media as dm
from data_prep.demo.assets import ASSETS_DIR, SPLITS, load_pack

DEFAULT_IMAGE_SIZE = 112
NOVEL_RAW = "raw_novel"  # DIR/raw_novel/<root>: the test_novel clips, as a `test` split.


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Clips per layout and split (MUSIC-AVQA scales them by `Layout.split_per_clip`); VGG-SS
  has no val split."""
  train: int = 240
  val: int = 20
  test: int = 100
  test_novel: int = 60

  @classmethod
  def spread(cls, clips: int) -> Sizes:
    """A small build of about `clips` clips per layout over the four splits (at least one
    each): 60 % train, 8 % val, 20 % test, 12 % test_novel."""
    if clips < len(SPLITS):
      raise ValueError(f"clips {clips}: need at least {len(SPLITS)} (one per split)")
    val, test, novel = (max(1, round(clips * f)) for f in (0.08, 0.2, 0.12))
    return cls(max(1, clips - val - test - novel), val, test, novel)

  def of(self, split: str) -> int:
    return getattr(self, split)


@dataclasses.dataclass(frozen=True)
class Layout:
  root: str  # Folder under DIR/raw/ (and DIR/raw_novel/) that is the converter's raw_dir.
  make_clip: Callable
  write_annotations: Callable
  raw_splits: tuple[str, ...] = ("train", "val", "test")  # The benchmark's splits.
  per_clip: float = 1.0  # Clips of this layout per requested clip.
  # Split -> its own `per_clip` (splits not named use `per_clip`).
  split_per_clip: tuple[tuple[str, float], ...] = ()
  id_digits: bool = False  # Ids are 8-digit numbers (MUSIC-AVQA) instead of YouTube-like.
  question_ids: bool = False  # write_annotations numbers questions (MUSIC-AVQA).

  @property
  def splits(self) -> tuple[str, ...]:
    """The demo splits of this layout: the benchmark's, plus test_novel."""
    return (*self.raw_splits, "test_novel")


LAYOUTS = {
    "ave": Layout("ave", demo_layouts.ave_make_clip, demo_layouts.ave_write_annotations),
    "llp": Layout("llp", demo_layouts.llp_make_clip, demo_layouts.llp_write_annotations),
    "music_avqa": Layout("music_avqa", demo_avqa.make_clip, demo_avqa.write_annotations,
                         per_clip=1 / 4, split_per_clip=(("train", 1.0), ("test", 1 / 2),
                                                         ("test_novel", 1 / 2)),
                         id_digits=True, question_ids=True),
    "vggss": Layout("vggss", demo_layouts.vggss_make_clip, demo_layouts.vggss_write_annotations,
                    raw_splits=("train", "test")),
    "avsbench_s4": Layout("avsbench", demo_avsbench.s4_make_clip,
                          demo_avsbench.s4_write_annotations),
    "avsbench_ms3": Layout("avsbench", demo_avsbench.ms3_make_clip,
                           demo_avsbench.ms3_write_annotations),
}


def split_counts(layout: Layout, sizes: Sizes) -> list[tuple[str, int]]:
  """Clips per split of a layout (at least one in each of its splits)."""
  share = dict(layout.split_per_clip)
  return [(s, max(1, math.ceil(sizes.of(s) * share.get(s, layout.per_clip))))
          for s in layout.splits]


_WORKER = {}  # Per-process pack and settings, set once by `_init_worker`.


def _init_worker(assets_dir: str, out_dir: str, size: int, seed: int) -> None:
  _WORKER.update(pack=load_pack(Path(assets_dir)), out_dir=Path(out_dir), size=size, seed=seed)


def raw_root(out_dir: Path, name: str, split: str) -> Path:
  """The raw tree a clip of `split` is written to: DIR/raw/<root>, test_novel DIR/raw_novel."""
  return out_dir / (NOVEL_RAW if split == "test_novel" else "raw") / LAYOUTS[name].root


def _make_clip(task: tuple[str, int, int, str, str]) -> dict:
  """Composes and writes one clip; the rng depends only on (seed, layout, clip index)."""
  name, layout_index, index, split, clip_id = task
  layout = LAYOUTS[name]
  ctx = demo_layouts.Ctx(_WORKER["pack"], raw_root(_WORKER["out_dir"], name, split),
                         _WORKER["size"])
  for attempt in range(5):
    rng = np.random.default_rng([_WORKER["seed"], layout_index, index + 1, attempt])
    try:
      return layout.make_clip(ctx, rng, split, clip_id)
    except RuntimeError:  # A composition whose event came out inaudible: compose again.
      continue
  raise RuntimeError(f"demo {name} clip {clip_id}: no valid composition in 5 attempts")


def _tasks(name: str, layout_index: int, sizes: Sizes, seed: int) -> list[tuple]:
  layout = LAYOUTS[name]
  counts = split_counts(layout, sizes)
  rng = np.random.default_rng([seed, layout_index, 0])
  total = sum(n for _, n in counts)
  ids = (dm.unique_ids(rng, total, 8, "0123456789") if layout.id_digits
         else dm.unique_ids(rng, total))
  splits = [s for s, n in counts for _ in range(n)]
  return [(name, layout_index, i, s, ids[i]) for i, s in enumerate(splits)]


def example_ids(name: str, clip: dict) -> list[str]:
  """The ids the converted shards give this clip's examples (schema.ID_RULES)."""
  if name == "music_avqa":
    return [str(q["question_id"]) for q in clip["questions"]]
  if name == "ave":
    return [f"{clip['id']}:{clip['class']}"]
  return [clip["filename"] if name == "llp" else clip["id"]]


def write_metadata(path: Path, name: str, clips: list[dict], args: dict, classes) -> None:
  counts = {s: sum(c["split"] == s for c in clips) for s in LAYOUTS[name].splits}
  dm.write_json(path, {
      "dataset": name, "raw_dir": f"raw/{LAYOUTS[name].root}",
      "raw_novel_dir": f"{NOVEL_RAW}/{LAYOUTS[name].root}", **args,
      "sample_rate": dc.SAMPLE_RATE, "segment_seconds": 1, "audible_db": dc.AUDIBLE_DB,
      "classes": list(classes), "splits": counts, "clips": clips})


def _write_annotations(out_dir: Path, name: str, clips: list[dict]) -> None:
  """Annotation files of both raw trees (MUSIC-AVQA question ids run on into test_novel)."""
  layout = LAYOUTS[name]
  main = [c for c in clips if c["split"] != "test_novel"]
  novel = [c for c in clips if c["split"] == "test_novel"]
  next_id = layout.write_annotations(raw_root(out_dir, name, "train"), main)
  extra = (next_id,) if layout.question_ids else ()
  layout.write_annotations(raw_root(out_dir, name, "test_novel"), novel, *extra)


def build_raw(out_dir: Path, sizes: Sizes | int = Sizes(),
              image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 0, workers: int = 1,
              datasets=None, assets_dir: Path = ASSETS_DIR) -> dict[str, list[dict]]:
  """Writes the raw trees and metadata of `datasets` (default: all); returns the metadata.

  `sizes`: clips per split, or an int N for a small build of about N clips per layout
  (`Sizes.spread`).
  """
  if image_size < 32 or image_size % 2:
    raise ValueError(f"--image_size {image_size}: use an even number of pixels >= 32")
  if isinstance(sizes, int):
    sizes = Sizes.spread(sizes)
  bad = [s for s in SPLITS if sizes.of(s) < 1]
  if bad:
    raise ValueError(f"clips per split must be >= 1, not {dataclasses.asdict(sizes)}")
  names = list(datasets or LAYOUTS)
  unknown = [n for n in names if n not in LAYOUTS]
  if unknown:
    raise ValueError(f"unknown demo dataset(s) {unknown}; choose from {list(LAYOUTS)}")
  for n in names:
    for split in ("train", "test_novel"):
      shutil.rmtree(raw_root(out_dir, n, split), ignore_errors=True)
  init = (str(assets_dir), str(out_dir), image_size, seed)
  tasks = {n: _tasks(n, list(LAYOUTS).index(n), sizes, seed) for n in names}
  flat = [t for n in names for t in tasks[n]]
  if workers > 1:
    with multiprocessing.get_context("spawn").Pool(workers, _init_worker, init) as pool:
      metas = pool.map(_make_clip, flat, chunksize=4)
  else:
    _init_worker(*init)
    metas = [_make_clip(t) for t in flat]
  classes = load_pack(assets_dir).classes
  args = {"seed": seed, "clips_per_split": dataclasses.asdict(sizes), "image_size": image_size}
  out, k = {}, 0
  for n in names:
    out[n], k = metas[k:k + len(tasks[n])], k + len(tasks[n])
    _write_annotations(out_dir, n, out[n])
    for clip in out[n]:
      clip["example_ids"] = example_ids(n, clip)
    write_metadata(out_dir / "metadata" / f"{n}.json", n, out[n], args, classes)
  return out


def _merge_novel(dataset_dir: Path, novel_dir: Path, report: dict) -> dict:
  """Moves the `test` shards of the test_novel conversion (`novel_dir`) into
  `dataset_dir`/test_novel/ as test_novel-*-of-* and adds the split to dataset_info.json
  and report.json. Returns the split's report entry."""
  info = shards.load_info(novel_dir)["splits"]["test"]
  (dataset_dir / "test_novel").mkdir(parents=True, exist_ok=True)
  entries = []
  for shard in info["shards"]:
    old = Path(shard["file"]).name[:-len(".array_record")]
    _, index, _, count = old.rsplit("-", 3)
    stem = shards.shard_stem("test_novel", int(index), int(count))
    for ext in (".array_record", ".json"):
      (novel_dir / "test" / f"{old}{ext}").replace(dataset_dir / "test_novel" / f"{stem}{ext}")
    entries.append(dict(shard, file=f"test_novel/{stem}.array_record"))
  full = shards.load_info(dataset_dir)
  full["splits"]["test_novel"] = dict(info, shards=entries)
  writer.write_json(str(dataset_dir / shards.INFO_FILE), full)
  entry = report["test"]
  main_report = json.loads((dataset_dir / shards.REPORT_FILE).read_text())
  main_report["test_novel"] = entry
  writer.write_json(str(dataset_dir / shards.REPORT_FILE), main_report)
  return entry


def convert_all(out_dir: Path, image_size: int, workers: int = 1, datasets=None,
                progress: bool = False) -> tuple[dict, dict[str, str]]:
  """Converts every raw tree with `data_prep.convert` into DIR/shards; the test_novel tree is
  converted as a `test` split in a scratch folder, then merged as split `test_novel`.

  Returns (reports, problems): a dataset whose conversion raised or skipped clips is listed
  in `problems` with the reason, and the other datasets are still converted.
  """
  from data_prep import convert  # Late: PyAV and librosa stay out of the spawned clip workers.

  reports, problems = {}, {}
  scratch = out_dir / "shards_novel.tmp"
  for n in list(datasets or LAYOUTS):
    shutil.rmtree(out_dir / "shards" / n, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)
    try:
      reports[n] = convert.convert(n, raw_root(out_dir, n, "train"), out_dir / "shards",
                                   workers=workers, image_size=image_size, fps=1,
                                   progress=progress)
      novel = convert.convert(n, raw_root(out_dir, n, "test_novel"), scratch, splits=["test"],
                              workers=workers, image_size=image_size, fps=1,
                              progress=progress)
      reports[n]["test_novel"] = _merge_novel(out_dir / "shards" / n, scratch / n, novel)
    except Exception as e:  # noqa: BLE001 -- reported with the dataset name, run continues.
      problems[n] = f"conversion failed: {type(e).__name__}: {e}"
      continue
    finally:
      shutil.rmtree(scratch, ignore_errors=True)
    skipped = {s: r["skipped"] for s, r in reports[n].items() if r.get("skipped")}
    if skipped:
      problems[n] = f"the converter skipped clips: {skipped}"
  return reports, problems


def build(out_dir: Path, sizes: Sizes = Sizes(), image_size: int = DEFAULT_IMAGE_SIZE,
          seed: int = 0, workers: int = 1, convert: bool = True, log=print) -> dict:
  """Builds the demo dataset in `out_dir` (raw trees, metadata, shards unless not `convert`,
  preview); returns the metadata {dataset: clips}. Raises RuntimeError naming each dataset
  whose conversion failed or skipped clips (after drawing the preview)."""
  from data_prep.demo import preview  # Late: matplotlib stays out of the spawned clip workers.

  out_dir = Path(out_dir)
  t0 = time.perf_counter()
  metas = build_raw(out_dir, sizes, image_size, seed, workers)
  t1 = time.perf_counter()
  counts = "; ".join(f"{n} " + " ".join(f"{s} {sum(c['split'] == s for c in m)}"
                                         for s in LAYOUTS[n].splits)
                     for n, m in metas.items())
  log(f"raw trees in {t1 - t0:.1f} s -> {out_dir / 'raw'}, {out_dir / NOVEL_RAW}: {counts}")
  problems = {}
  if convert:
    _, problems = convert_all(out_dir, image_size, workers, progress=True)
    log(f"conversion: {time.perf_counter() - t1:.1f} s -> {out_dir / 'shards'}")
  t3 = time.perf_counter()
  preview.draw(out_dir, out_dir / "preview.png")
  log(f"preview: {time.perf_counter() - t3:.1f} s -> {out_dir / 'preview.png'}")
  if problems:
    raise RuntimeError("; ".join(f"demo dataset {n}: {p}" for n, p in problems.items()))
  return metas


def main(argv=None) -> int:
  """python -m data_prep.demo: `build` with the flags; exit code 2 on an error."""
  parser = argparse.ArgumentParser(prog="python -m data_prep.demo",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--out_dir", type=Path, required=True, help="output folder")
  default = Sizes()
  for split in SPLITS:
    flag = "novel" if split == "test_novel" else split
    parser.add_argument(f"--{flag}_clips", type=int, default=default.of(split),
                        help=f"{split} clips per layout (MUSIC-AVQA: a quarter as many videos)")
  parser.add_argument("--image_size", type=int, default=DEFAULT_IMAGE_SIZE,
                      help="frame side in pixels")
  parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
  parser.add_argument("--workers", type=int, default=default_workers(),
                      help="processes (the output does not depend on it)")
  parser.add_argument("--no_convert", action="store_true", help="write the raw trees only")
  args = parser.parse_args(argv)
  try:
    sizes = Sizes(args.train_clips, args.val_clips, args.test_clips, args.novel_clips)
    build(args.out_dir, sizes, args.image_size, args.seed, args.workers,
          convert=not args.no_convert)
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


def default_workers() -> int:
  """The default number of processes: two, or one on a one-core machine."""
  return min(2, multiprocessing.cpu_count())
