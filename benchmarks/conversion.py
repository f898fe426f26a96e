"""Conversion clips/s of `data_prep.convert` next to decode-only PyAV on the same files.

The clips are `data_prep.bench_convert`'s synthetic AVE clips (10 s of h264 + AAC stereo
44.1 kHz). Decode-only decodes every video and audio frame and nothing else; convert runs the
AVE converter end to end (decode, frame selection, resize, JPEG, resampling, log-mel,
ArrayRecord writing) into a fresh folder each repeat. A warm-up conversion of two other clips
first starts the converter's worker machinery, as in `bench_convert`.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile

from benchmarks import timing
from data_prep import bench_convert, convert


def _decode_all(paths: list[str], processes: int) -> None:
  if processes == 1:
    for path in paths:
      bench_convert.decode_only(path)
    return
  with multiprocessing.get_context("forkserver").Pool(processes) as pool:
    pool.map(bench_convert.decode_only, paths, chunksize=1)


def _convert(raw: str, out: str, workers: int) -> None:
  report = convert.convert("ave", raw, out, splits=["train"], workers=workers, progress=False)
  if report["train"]["skipped"]:
    raise RuntimeError(f"benchmark clips were skipped: {report['train']['skipped'][:3]}")


def measure(clips: int, repeats: int, processes=(1, 2), size=(320, 240), fps: int = 25
            ) -> dict:
  """clips/s stats of decode-only and convert for each process/worker count."""
  with tempfile.TemporaryDirectory() as tmp:
    raw, warm = os.path.join(tmp, "raw"), os.path.join(tmp, "warm")
    paths = bench_convert.write_tree(raw, clips, size, fps)
    bench_convert.write_tree(warm, 2, size, fps)
    startup = {str(w): timing.timed(lambda w=w: _convert(warm, os.path.join(tmp, f"s{w}"), w))
               for w in processes}
    fns = {}
    for n in processes:
      fns[f"decode_only_{n}"] = lambda n=n: _decode_all(paths, n)
      fns[f"convert_{n}"] = _fresh_convert(raw, tmp, n)
    seconds = timing.interleaved(fns, repeats)
  rates = {name: timing.rate_stats(s, clips, "clips/s") for name, s in seconds.items()}
  return {
      "clips": clips, "clip_seconds": 10, "source": f"{size[0]}x{size[1]} h264 {fps} fps + "
      "AAC 44.1 kHz stereo", "warmup_s": startup, **rates,
      "convert_over_decode": {str(n): timing.paired_ratio(rates[f"convert_{n}"],
                                                          rates[f"decode_only_{n}"])
                              for n in processes},
  }


def _fresh_convert(raw: str, tmp: str, workers: int):
  """A callable converting `raw` into a new folder on every call."""
  count = [0]

  def run():
    count[0] += 1
    _convert(raw, os.path.join(tmp, f"w{workers}_{count[0]}"), workers)
  return run
