"""Conversion throughput next to a decode-only baseline, on the same synthetic AVE clips.

  python -m data_prep.bench_convert [--clips 24] [--size 320x240] [--video_fps 25]

Writes `--clips` 10-s clips (h264 at --video_fps, AAC 44.1 kHz stereo, moving textured frames)
in the AVE layout under a temporary directory, then in one run measures, in clips per second:
  decode-only, 1 and 2 processes: PyAV decodes every video and audio frame, nothing else;
  convert, 1 and 2 workers: `data_prep.convert.convert('ave', ...)` end to end (decode, frame
      selection, resize, JPEG, resampling, log-mel, encoding, ArrayRecord writing), worker
      processes started within the timing, after a warm-up conversion of two other clips
      (which starts the forkserver that loads the decoders once per program; its time is
      printed as start-up).
Single-process rows also give CPU seconds per clip, which a busy machine disturbs less.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time

import av
import numpy as np


def write_clip(path: str, size: tuple[int, int], fps: int, seed: int) -> None:
  """A 10-s h264 + AAC stereo 44.1 kHz clip of moving texture and a noisy tone."""
  rng = np.random.default_rng(seed)
  w, h = size
  texture = rng.integers(0, 256, (h, 2 * w, 3), dtype=np.uint8)
  with av.open(path, "w") as out:
    video = out.add_stream("h264", rate=fps)
    video.width, video.height, video.pix_fmt = w, h, "yuv420p"
    audio = out.add_stream("aac", rate=44100, layout="stereo")
    for k in range(10 * fps):
      shift = (k * 4) % w
      out.mux(video.encode(av.VideoFrame.from_ndarray(
          np.ascontiguousarray(texture[:, shift:shift + w]), format="rgb24")))
    out.mux(video.encode())
    t = np.arange(10 * 44100) / 44100
    wave = (0.2 * np.sin(2 * np.pi * (220 + 40 * seed % 400) * t)
            + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)
    for start in range(0, len(wave), 1024):
      chunk = np.stack([wave[start:start + 1024]] * 2)
      frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
      frame.sample_rate, frame.pts = 44100, start
      out.mux(audio.encode(frame))
    out.mux(audio.encode())


def write_tree(raw: str, clips: int, size, fps) -> list[str]:
  os.makedirs(os.path.join(raw, "AVE"), exist_ok=True)
  rows = [f"Bark&bench{i:06d}&good&0&10" for i in range(clips)]
  for name in ("Annotations.txt", "trainSet.txt"):
    with open(os.path.join(raw, name), "w") as f:
      f.write("\n".join(rows) + "\n")
  for name in ("valSet.txt", "testSet.txt"):
    open(os.path.join(raw, name), "w").close()
  paths = [os.path.join(raw, "AVE", f"bench{i:06d}.mp4") for i in range(clips)]
  for i, path in enumerate(paths):
    write_clip(path, size, fps, i)
  return paths


def decode_only(path: str) -> int:
  """Decodes every video and audio frame of `path`; returns the number of frames."""
  n = 0
  with av.open(path) as container:
    for packet in container.demux(container.streams.video[0], container.streams.audio[0]):
      n += len(packet.decode())
  return n


def time_decode(paths: list[str], processes: int) -> tuple[float, float]:
  """(wall seconds, CPU seconds of this process) to decode every file."""
  start, cpu = time.perf_counter(), time.process_time()
  if processes == 1:
    for path in paths:
      decode_only(path)
  else:
    with multiprocessing.get_context("forkserver").Pool(processes) as pool:
      pool.map(decode_only, paths, chunksize=1)
  return time.perf_counter() - start, time.process_time() - cpu


def time_convert(raw: str, out: str, workers: int) -> tuple[float, float]:
  """(wall seconds, CPU seconds of this process) to convert the AVE train split."""
  from data_prep import convert  # Late: the forkserver decode workers import this module.

  start, cpu = time.perf_counter(), time.process_time()
  report = convert.convert("ave", raw, out, splits=["train"], workers=workers, progress=False)
  elapsed = time.perf_counter() - start, time.process_time() - cpu
  if report["train"]["skipped"]:
    raise RuntimeError(f"benchmark clips were skipped: {report['train']['skipped'][:3]}")
  return elapsed


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--clips", type=int, default=24)
  parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT of the source video")
  parser.add_argument("--video_fps", type=int, default=25)
  args = parser.parse_args(argv)
  size = tuple(int(v) for v in args.size.split("x"))
  with tempfile.TemporaryDirectory() as tmp:
    raw, warm = os.path.join(tmp, "raw"), os.path.join(tmp, "warm")
    paths = write_tree(raw, args.clips, size, args.video_fps)
    write_tree(warm, 2, size, args.video_fps)
    startup = {w: time_convert(warm, os.path.join(tmp, f"warm{w}"), w)[0] for w in (1, 2)}
    rows = {
        "decode-only, 1 process": time_decode(paths, 1),
        "decode-only, 2 processes": time_decode(paths, 2),
        "convert, 1 worker": time_convert(raw, os.path.join(tmp, "w1"), 1),
        "convert, 2 workers": time_convert(raw, os.path.join(tmp, "w2"), 2),
    }
  print(f"{args.clips} clips of 10 s, {args.size} h264 at {args.video_fps} fps + AAC 44.1 kHz "
        f"stereo; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
  print(f"  warm-up (2 clips, imports and forkserver start): 1 worker {startup[1]:.1f} s, "
        f"2 workers {startup[2]:.1f} s")
  for name, (seconds, cpu) in rows.items():
    cpu_text = f", {cpu / args.clips:.3f} CPU s/clip" if "1 " in name else ""
    print(f"  {name:26s} {args.clips / seconds:7.2f} clips/s  ({seconds:.2f} s{cpu_text})")
  print(json.dumps({k: round(args.clips / v[0], 3) for k, v in rows.items()}))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
