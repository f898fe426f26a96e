"""Deterministic media writers of the demo: mp4 (h264 + aac), wav, png, jpg, text, ids.

The same arrays always give the same bytes: single-threaded encoders, no time stamps or
creation dates in the containers, and no ancillary PNG chunks.
"""

from __future__ import annotations

import io
import json
import string
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from PIL import Image

from data_prep.demo.compose import SAMPLE_RATE

VIDEO_FPS = 2  # Frames per second of the demo videos; content changes once per second.
_ID_CHARS = string.ascii_letters + string.digits + "-_"


def write_bytes(path: Path, data: bytes) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)


def write_text(path: Path, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj, indent: int | None = 1) -> None:
  write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def write_mp4(path: Path, frames: np.ndarray, audio: np.ndarray) -> None:
  """Writes uint8[T, S, S, 3] (one picture per second, shown for the whole second) and
  float32[N] 16-kHz mono audio as h264 + aac in mp4."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with av.open(str(path), "w", format="mp4") as container:
    video = container.add_stream("libx264", rate=VIDEO_FPS)
    video.width, video.height = frames.shape[2], frames.shape[1]
    video.pix_fmt = "yuv420p"
    video.options = {"crf": "20", "preset": "veryfast", "threads": "1"}
    video.codec_context.thread_count = 1
    sound = container.add_stream("aac", rate=SAMPLE_RATE)
    sound.layout = "mono"
    sound.options = {"b": "48k", "aac_coder": "fast"}
    for i in range(len(frames) * VIDEO_FPS):
      frame = av.VideoFrame.from_ndarray(frames[i // VIDEO_FPS], format="rgb24")
      frame.pts = i
      container.mux(video.encode(frame))
    container.mux(video.encode())
    chunk = 1024
    for start in range(0, len(audio), chunk):
      part = np.ascontiguousarray(audio[start:start + chunk], np.float32)[None]  # [1, n]
      frame = av.AudioFrame.from_ndarray(part, format="fltp", layout="mono")
      frame.sample_rate = SAMPLE_RATE
      frame.pts = start
      container.mux(sound.encode(frame))
    container.mux(sound.encode())


def write_wav(path: Path, audio: np.ndarray) -> None:
  """16-bit PCM wav, 16 kHz mono, from float32[N] in [-1, 1]."""
  buf = io.BytesIO()
  sf.write(buf, np.clip(audio, -1, 1), SAMPLE_RATE, format="WAV", subtype="PCM_16")
  write_bytes(path, buf.getvalue())


def png_bytes(image: np.ndarray) -> bytes:
  """PNG of uint8[H, W, 3] or uint8[H, W] (grey) without metadata chunks (fast zlib level:
  lossless all the same)."""
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG", compress_level=1)
  return buf.getvalue()


def write_png(path: Path, image: np.ndarray) -> None:
  write_bytes(path, png_bytes(image))


def write_mask_png(path: Path, mask: np.ndarray) -> None:
  """A binary mask bool[H, W] as a greyscale PNG with values 0 and 255."""
  write_png(path, np.where(mask, 255, 0).astype(np.uint8))


def write_jpg(path: Path, image: np.ndarray) -> None:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="JPEG", quality=95)
  write_bytes(path, buf.getvalue())


def unique_ids(rng: np.random.Generator, count: int, length: int = 11,
               chars: str = _ID_CHARS) -> list[str]:
  """`count` distinct ids of `length` characters from `chars` (default: YouTube-like)."""
  out, seen = [], set()
  while len(out) < count:
    ident = "".join(chars[i] for i in rng.integers(0, len(chars), size=length))
    if ident not in seen:
      seen.add(ident)
      out.append(ident)
  return out
