"""Converts a benchmark, as distributed, to ArrayRecord shards plus dataset info and a report.

  python -m data_prep.convert --dataset NAME --raw_dir RAW --out_dir OUT [--split S ...]
      [--workers N] [--strict] [--limit K] [--image_size 224] [--fps 1]

NAME is one of ave, llp, music_avqa, vggss, avsbench_s4, avsbench_ms3 (the raw layouts are in
each module's docstring: data_prep/ave.py, llp.py, music_avqa.py, vggss.py, avsbench.py).
Writes OUT/NAME/<split>/*.array_record, OUT/NAME/dataset_info.json (features, counts, every
conversion parameter, sha256 of each annotation file) and OUT/NAME/report.json
({"<split>": {"written": int, "skipped": [{"id": str, "reason": str}]}}).

Bad inputs (missing, undecodable or truncated media, no audio stream, malformed annotation
rows, duplicate ids) are skipped and listed in report.json with their reason; media shorter
than the clip is padded by repeating its last second and counted as padded in dataset_info.
`--strict` stops at the first of these instead. Each shard is written under a temporary name
and renamed when complete, so an interrupted run keeps every finished shard, and running the
same command again only does the missing work (unchanged inputs give identical files).

Splitting one conversion across machines (e.g. VGGSound): shards are fixed by the annotation
order, so give every machine the same arguments plus `--num_parts P --part I` (I = 0..P-1);
each writes the shards i with i % P == I into its own OUT. Then gather every machine's
OUT/NAME/<split>/ files into one OUT/NAME/<split>/ (rsync or a shared file system) and run the
command once more without --part (it needs the annotation files only): every shard is found
finished, and it writes dataset_info.json and report.json.

Python: `convert(dataset, raw_dir, out_dir, ...)` does exactly what the command does and
returns the report.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import sys

from tqdm import tqdm

from av_unified_jax.data import records, schema, shards
from av_unified_jax.data.params import ConvertParams
from data_prep import ave, avsbench, build, llp, music_avqa, vggss, writer
from data_prep.common import AnnotationFileError, Listing, Unit, sha256_file

LISTERS = {
    "ave": ave.list_split,
    "llp": llp.list_split,
    "music_avqa": music_avqa.list_split,
    "vggss": vggss.list_split,
    "avsbench_s4": avsbench.list_s4,
    "avsbench_ms3": avsbench.list_ms3,
}


class ConversionError(RuntimeError):
  """A problem that stops the conversion (any bad input under --strict)."""


@dataclasses.dataclass
class SplitWork:
  """A split's plan: its units cut into shards, and the rows skipped while listing it."""

  split: str
  listing: Listing
  skipped: list[dict[str, str]]
  plans: list[writer.ShardPlan]


def _dedupe(units: list[Unit]) -> tuple[list[Unit], list[dict[str, str]]]:
  first: dict[str, str] = {}
  kept, skipped = [], []
  for unit in units:
    if unit.key in first:
      skipped.extend({"id": i, "reason": f"duplicate id at {unit.source} (first at "
                      f"{first[unit.key]})"} for i in unit.example_ids)
    else:
      first[unit.key] = unit.source
      kept.append(unit)
  return kept, skipped


def _plan(dataset, raw_dir, split, params, limit, strict) -> SplitWork:
  try:
    listing = LISTERS[dataset](raw_dir, split)
  except ValueError as e:
    raise ConversionError(f"{dataset}/{split}: cannot read the annotations: {e}") from e
  units, duplicates = _dedupe(listing.units)
  skipped = listing.skipped + duplicates
  if strict and skipped:
    raise ConversionError(f"{dataset}/{split}: {skipped[0]['id']}: {skipped[0]['reason']} "
                          "(--strict)")
  units = units[:limit] if limit is not None else units
  return SplitWork(split, listing, skipped, writer.plan_split(dataset, split, units, params))


def _ordered_results(tasks, raw_dir, dataset, params, workers):
  """Yields build.build(unit, ...) for each unit of `tasks`, in order, using `workers` procs."""
  if workers <= 1:
    for unit in tasks:
      yield build.build(unit, raw_dir, dataset, params)
    return
  context = multiprocessing.get_context("forkserver")
  context.set_forkserver_preload(["data_prep._preload"])
  pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
  try:
    pending = collections.deque()
    for unit in tasks:
      pending.append(pool.submit(build.build, unit, raw_dir, dataset, params))
      if len(pending) >= 3 * workers:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


def _progress(total, desc, enabled):
  return tqdm(total=total, desc=desc, unit="clip", disable=not enabled, dynamic_ncols=True)


def _write_shards(dataset, dataset_dir, raw_dir, todo, params, workers, strict, bar):
  """Converts the units of the shards `todo`, writing each shard as it completes."""
  seconds = schema.get_spec(dataset).clip_seconds
  results = _ordered_results((u for p in todo for u in p.units), raw_dir, dataset, params,
                             workers)
  counts = collections.Counter()
  try:
    for plan in todo:
      with writer.ShardWriter(dataset_dir, plan, params) as shard:
        for unit in plan.units:
          try:
            built = next(results)
          except Exception as e:  # A bug or a crashed worker: name the clip, keep the shards.
            raise ConversionError(
                f"{dataset}/{plan.split}: converting {unit.key} failed ({type(e).__name__}: "
                f"{e}); finished shards are kept, run the command again to resume") from e
          _add_outcome(shard, unit, built, seconds, strict, counts)
          bar.update(1)
          bar.set_postfix(written=counts["written"], skipped=counts["skipped"], refresh=False)
        shard.commit()
  finally:
    results.close()


def _add_outcome(shard, unit, built, seconds, strict, counts):
  """Writes or skips one built unit (or stops, under --strict)."""
  padded = built.reason is None and built.num_segments < seconds
  if strict and (built.reason or padded):
    reason = built.reason or f"media shorter than the clip ({built.num_segments} of {seconds} s)"
    raise ConversionError(f"{shard.plan.split}: {unit.key}: {reason} (--strict)")
  if built.reason:
    shard.skip(unit.example_ids, built.reason)
    counts["skipped"] += len(unit.example_ids)
  else:
    shard.write(built.data, unit.example_ids, padded)
    counts["written"] += len(unit.example_ids)


def _split_summary(work: SplitWork, indexes: list[dict | None]) -> tuple[dict, dict]:
  """(dataset_info entry, report entry) of a split from its finished shards' indexes."""
  done = [(plan, index) for plan, index in zip(work.plans, indexes) if index is not None]
  skipped = work.skipped + [s for _, index in done for s in index["skipped"]]
  written = sum(len(ids) for _, index in done for ids in index["records"])
  info = {
      "num_examples": written,
      "num_records": sum(index["num_records"] for _, index in done),
      "num_skipped": len(skipped),
      "num_padded": sum(len(index["padded"]) for _, index in done),
      "shards": [{"file": plan.file, "num_records": index["num_records"]}
                 for plan, index in done],
      "notes": work.listing.notes,
  }
  return info, {"written": written, "skipped": skipped}


def _load_json(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _finalize(dataset, raw_dir, dataset_dir, works, indexes, params) -> tuple[dict, dict]:
  """Writes (and returns) dataset_info.json and report.json, keeping the entries of other
  splits converted earlier with the same parameters."""
  spec = schema.get_spec(dataset)
  info_path = os.path.join(dataset_dir, shards.INFO_FILE)
  report_path = os.path.join(dataset_dir, shards.REPORT_FILE)
  old = _load_json(info_path)
  same = old.get("params") == params.to_json() and \
      old.get("format_version") == shards.FORMAT_VERSION
  old_report = _load_json(report_path) if same else {}
  split_info = {s: v for s, v in old.get("splits", {}).items() if same and s in old_report}
  files = dict(old.get("annotation_files", {})) if same else {}
  report = {s: v for s, v in old_report.items() if s in split_info}
  for work in works:
    split_info[work.split], report[work.split] = _split_summary(work, indexes[work.split])
    writer.remove_stale(dataset_dir, work.split, work.plans)
    for rel in work.listing.annotation_files:
      files[rel] = {"sha256": sha256_file(os.path.join(raw_dir, rel))}
  order = [s for s in spec.splits if s in split_info]
  info = {
      "format_version": shards.FORMAT_VERSION,
      "name": dataset,
      "clip_seconds": spec.clip_seconds,
      "grouped": spec.grouped,
      "id_rule": schema.ID_RULES[dataset],
      "record_encoding": records.ENCODING_NAME,
      "features": schema.features_json(spec),
      "params": params.to_json(),
      "annotation_files": dict(sorted(files.items())),
      "splits": {s: split_info[s] for s in order},
  }
  report = {s: report[s] for s in order}
  writer.write_json(info_path, info)
  writer.write_json(report_path, report)
  return info, report


def convert(dataset: str, raw_dir: str, out_dir: str, splits=None, workers: int = 1,
            strict: bool = False, limit: int | None = None, image_size: int = 224,
            fps: int = 1, progress: bool = True, *, num_parts: int = 1, part: int = 0,
            params: ConvertParams | None = None) -> dict:
  """Converts `splits` (default: all) of `dataset` from raw_dir to out_dir/dataset.

  Returns the report ({split: {"written": int, "skipped": [{"id", "reason"}]}}) of the
  converted splits; report.json and dataset_info.json are written once every shard of these
  splits is finished. `params` gives the other conversion settings (image_size and fps
  always come from the arguments); `limit` keeps the first `limit` clips of each split;
  `num_parts`/`part` convert only shards i with i % num_parts == part (see module docstring).
  """
  spec = schema.get_spec(dataset)
  splits = list(splits or spec.splits)
  unknown = [s for s in splits if s not in spec.splits]
  if unknown or not 0 <= part < num_parts or workers < 1 or (limit is not None and limit < 0):
    raise ValueError(f"{dataset}: bad arguments: splits {unknown} not in {spec.splits}, or "
                     f"part {part} not in [0, {num_parts}), workers {workers} < 1, limit {limit}")
  if not os.path.isdir(raw_dir):
    raise AnnotationFileError(f"--raw_dir {raw_dir} is not a directory")
  raw_dir, out_dir = os.fspath(raw_dir), os.fspath(out_dir)
  params = dataclasses.replace(params or ConvertParams(), image_size=image_size, fps=fps)
  dataset_dir = os.path.join(out_dir, dataset)
  works = [_plan(dataset, raw_dir, s, params, limit, strict) for s in splits]
  for work in works:
    todo = [p for p in work.plans if p.index % num_parts == part
            and writer.load_finished(dataset_dir, p) is None]
    total = sum(len(p.units) for p in todo)
    with _progress(total, f"{dataset}/{work.split}", progress and total > 0) as bar:
      _write_shards(dataset, dataset_dir, raw_dir, todo, params, workers, strict, bar)
  indexes = {w.split: [writer.load_finished(dataset_dir, p) for p in w.plans] for w in works}
  missing = sum(index is None for split_indexes in indexes.values() for index in split_indexes)
  if missing:
    print(f"{dataset}: part {part} of {num_parts} done; {missing} shards belong to other parts. "
          "Gather all parts' files into one OUT and run the command again without --part to "
          "write dataset_info.json and report.json.")
    return {w.split: _split_summary(w, indexes[w.split])[1] for w in works}
  info, report = _finalize(dataset, raw_dir, dataset_dir, works, indexes, params)
  for split, entry in report.items():
    print(f"{dataset}/{split}: written {entry['written']}, skipped {len(entry['skipped'])}, "
          f"padded {info['splits'][split]['num_padded']} -> {os.path.join(dataset_dir, split)}")
  print(f"report: {os.path.join(dataset_dir, shards.REPORT_FILE)}")
  return report


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m data_prep.convert", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="\n\n".join(__doc__.split("\n\n")[2:] + ["Raw layouts read:"] + [
          m.__doc__.strip() for m in (ave, llp, music_avqa, vggss, avsbench)]))
  parser.add_argument("--dataset", required=True, choices=sorted(LISTERS))
  parser.add_argument("--raw_dir", required=True, help="the benchmark's files as distributed")
  parser.add_argument("--out_dir", required=True, help="writes OUT/<dataset>/")
  parser.add_argument("--split", action="append", dest="splits", metavar="S",
                      help="split to convert (repeatable); default: all")
  parser.add_argument("--workers", type=int, default=1, help="decoding processes")
  parser.add_argument("--strict", action="store_true", help="stop at the first bad input")
  parser.add_argument("--limit", type=int, default=None, metavar="K",
                      help="first K clips of each split")
  parser.add_argument("--image_size", type=int, default=224, help="frame side, pixels")
  parser.add_argument("--fps", type=int, default=1, help="frames per second of video")
  parser.add_argument("--num_parts", type=int, default=1, help="split across P machines")
  parser.add_argument("--part", type=int, default=0, help="this machine's part, 0..P-1")
  parser.add_argument("--no_progress", action="store_true", help="no progress bar")
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    convert(args.dataset, args.raw_dir, args.out_dir, splits=args.splits, workers=args.workers,
            strict=args.strict, limit=args.limit, image_size=args.image_size, fps=args.fps,
            progress=not args.no_progress, num_parts=args.num_parts, part=args.part)
  except (ConversionError, AnnotationFileError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
