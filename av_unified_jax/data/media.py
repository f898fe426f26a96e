"""Media decoding: video and audio with PyAV, still frames and masks with Pillow, log-mel.

Every problem with an input file raises `BadMedia` whose message is the reason written to
report.json. Reasons start with one of these fixed prefixes:
  'missing file'       the file does not exist
  'undecodable'        the file cannot be opened or decoded
  'truncated'          decoding ends well before the duration its header declares
  'no audio stream'    a video without an audio track (also 'no video stream')
  'too short'          less than one whole second of video or audio
Paths in reasons are relative to the raw directory.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os

import av
import librosa
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from av_unified_jax.data.params import ConvertParams

# One converter to RGB for every decoded frame: `VideoFrame.to_image()` builds a new swscale
# context per frame, which costs about as much as decoding it. Same pixels either way.
_TO_RGB = VideoReformatter()


class BadMedia(Exception):
  """An input file that cannot be converted; `str(error)` is the reason for report.json."""


def _describe(error: Exception, path: str = "") -> str:
  """Error text without absolute paths (reasons must not depend on where RAW is)."""
  text = getattr(error, "strerror", None) or str(error) or type(error).__name__
  return text.replace(path, os.path.basename(path)) if path else text


@dataclasses.dataclass
class Clip:
  """Decoded media of one clip.

  frames: N JPEG images. log_mel: float16[T, F, M]. num_segments: valid seconds (<= T); seconds
  after it repeat the last valid second.
  """

  frames: list[bytes]
  log_mel: np.ndarray
  num_segments: int


def _check_exists(raw_dir: str, rel: str) -> str:
  path = os.path.join(raw_dir, rel)
  if not os.path.isfile(path):
    raise BadMedia(f"missing file {rel}")
  return path


def _open(raw_dir: str, rel: str):
  path = _check_exists(raw_dir, rel)
  try:
    return av.open(path)
  except (av.FFmpegError, OSError, ValueError) as e:
    raise BadMedia(f"undecodable {rel}: {_describe(e)}") from e


def encode_jpeg(image: Image.Image, params: ConvertParams) -> bytes:
  """RGB image -> JPEG bytes of exactly image_size x image_size (bicubic resize, no crop)."""
  size = (params.image_size, params.image_size)
  buf = io.BytesIO()
  image.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(
      buf, format="JPEG", quality=params.jpeg_quality)
  return buf.getvalue()


def _audio_to_float(frame: av.AudioFrame) -> np.ndarray:
  """float32[C, n] samples in [-1, 1] of any PyAV audio frame format."""
  arr = frame.to_ndarray()
  channels = len(frame.layout.channels)
  if not frame.format.is_planar:
    arr = arr.reshape(-1, channels).T  # interleaved [1, n * C] -> [C, n]
  if arr.dtype == np.uint8:
    return (arr.astype(np.float32) - 128.0) / 128.0
  if np.issubdtype(arr.dtype, np.integer):
    return arr.astype(np.float32) / float(np.iinfo(arr.dtype).max + 1)
  return arr.astype(np.float32)


def _declared_seconds(container, stream) -> float | None:
  if stream.duration is not None and stream.time_base is not None:
    return float(stream.duration * stream.time_base)
  if container.duration is not None:
    return container.duration / av.time_base
  return None


class _FramePicker:
  """Keeps the frame shown at each target time (k + 0.5) / fps, k < T * fps, while decoding."""

  def __init__(self, seconds: int, params: ConvertParams):
    self.targets = [(k + 0.5) / params.fps for k in range(seconds * params.fps)]
    self.params = params
    self.images: list[bytes] = []
    self.prev = None  # the last decoded av.VideoFrame
    self.t0 = None
    self.end = 0.0
    self._last = None

  def add(self, frame: av.VideoFrame, frame_seconds: float):
    t = float(frame.time) if frame.time is not None else 0.0
    self.t0 = t if self.t0 is None else self.t0
    t -= self.t0
    while self.prev is not None and len(self.images) < len(self.targets) and \
        self.targets[len(self.images)] < t:
      self._take(self.prev)
    self.prev = frame
    self.end = t + frame_seconds

  def _take(self, frame):
    if self.images and frame is self._last:
      self.images.append(self.images[-1])
    else:
      self.images.append(encode_jpeg(_TO_RGB.reformat(frame, format="rgb24").to_image(),
                                     self.params))
    self._last = frame

  def done(self, seconds: int) -> bool:
    return len(self.images) == len(self.targets) and self.end >= seconds

  def finish(self) -> list[bytes]:
    while self.prev is not None and len(self.images) < len(self.targets) and \
        self.targets[len(self.images)] < self.end:
      self._take(self.prev)
    return self.images


def _valid_seconds(duration: float, seconds: int, params: ConvertParams) -> int:
  return min(seconds, int(math.floor(duration + params.duration_tolerance_s)))


def _decode_failed(rel: str, error: Exception, decoded: float, declared: float | None):
  """A decoding error after some content: 'truncated' when the header declared more."""
  if decoded > 0 and declared is not None and decoded < declared:
    return BadMedia(f"truncated {rel}: decoding failed at {decoded:.2f} s of the {declared:.2f} s "
                    f"declared ({_describe(error)})")
  return BadMedia(f"undecodable {rel}: {_describe(error)}")


def _check_truncated(rel, decoded, declared, seconds, params):
  if declared is not None and decoded < min(declared, seconds) - params.truncation_tolerance_s:
    raise BadMedia(f"truncated {rel}: decoded {decoded:.2f} s of the {declared:.2f} s declared")


def _pad_frames(images: list[bytes], valid: int, seconds: int, fps: int) -> list[bytes]:
  """Repeats the frames of the last valid second up to `seconds`."""
  images = images[:valid * fps]
  images += images[-1:] * (valid * fps - len(images))  # within the duration tolerance
  last = images[(valid - 1) * fps:]
  return images + last * (seconds - valid)


def decode_video(raw_dir: str, rel: str, seconds: int, params: ConvertParams):
  """Decodes the first `seconds` of a video file with its audio track.

  Returns (frames: list of T * fps JPEG bytes, padded; video_seconds: int; audio: float32[n]
  mono at the file's rate; audio_rate: int).
  """
  container = _open(raw_dir, rel)
  with container:
    if not container.streams.video:
      raise BadMedia(f"no video stream in {rel}")
    if not container.streams.audio:
      raise BadMedia(f"no audio stream in {rel}")
    vstream, astream = container.streams.video[0], container.streams.audio[0]
    rate = float(vstream.average_rate or vstream.guessed_rate or 25)
    picker = _FramePicker(seconds, params)
    chunks, audio_rate, num_samples = [], astream.rate, 0
    try:
      for packet in container.demux(vstream, astream):
        for frame in packet.decode():
          if packet.stream is vstream:
            picker.add(frame, 1.0 / rate)
          else:
            chunks.append(_audio_to_float(frame))
            num_samples += frame.samples
        if picker.done(seconds) and num_samples >= (seconds + 1) * audio_rate:
          break
      else:
        _check_truncated(rel, picker.end, _declared_seconds(container, vstream), seconds, params)
        _check_truncated(rel, num_samples / audio_rate, _declared_seconds(container, astream),
                         seconds, params)
    except av.FFmpegError as e:
      raise _decode_failed(rel, e, picker.end, _declared_seconds(container, vstream)) from e
  images = picker.finish()
  video_seconds = _valid_seconds(picker.end, seconds, params)
  if video_seconds < 1 or not images:
    raise BadMedia(f"too short {rel}: {picker.end:.2f} s of video")
  audio = np.concatenate(chunks, axis=1).mean(axis=0) if chunks else np.zeros(0, np.float32)
  return _pad_frames(images, video_seconds, seconds, params.fps), video_seconds, audio, audio_rate


def decode_audio(raw_dir: str, rel: str, seconds: int,
                 params: ConvertParams) -> tuple[np.ndarray, int]:
  """Decodes the first `seconds` (+1) of an audio file: (float32[n] mono, sample rate)."""
  container = _open(raw_dir, rel)
  with container:
    if not container.streams.audio:
      raise BadMedia(f"no audio stream in {rel}")
    stream = container.streams.audio[0]
    chunks, num_samples = [], 0
    try:
      for frame in container.decode(stream):
        chunks.append(_audio_to_float(frame))
        num_samples += frame.samples
        if num_samples >= (seconds + 1) * stream.rate:
          break
      else:
        _check_truncated(rel, num_samples / stream.rate, _declared_seconds(container, stream),
                         seconds, params)
    except av.FFmpegError as e:
      raise _decode_failed(rel, e, num_samples / stream.rate,
                           _declared_seconds(container, stream)) from e
  audio = np.concatenate(chunks, axis=1).mean(axis=0) if chunks else np.zeros(0, np.float32)
  return audio, stream.rate


def log_mel(wave: np.ndarray, seconds: int, params: ConvertParams) -> np.ndarray:
  """float32[n] mono at params.sample_rate -> float16[seconds, F, M] (see ConvertParams)."""
  sr, F = params.sample_rate, params.mel_frames_per_second
  wave = np.pad(wave[:seconds * sr], (0, max(0, seconds * sr - len(wave))))
  mel = librosa.feature.melspectrogram(
      y=wave, sr=sr, n_fft=params.n_fft, hop_length=params.hop_length,
      win_length=params.win_length, window="hann", center=True, pad_mode="constant",
      power=params.mel_power, n_mels=params.n_mels, fmin=params.fmin, fmax=params.fmax)
  mel = np.log(mel[:, :seconds * F] + params.log_offset)  # [M, T * F]
  return mel.reshape(params.n_mels, seconds, F).transpose(1, 2, 0).astype(np.float16)  # [T, F, M]


def audio_log_mel(audio: np.ndarray, rate: int, rel: str, seconds: int,
                  params: ConvertParams) -> tuple[np.ndarray, int]:
  """Mono audio at `rate` -> (float16[seconds, F, M] padded by repeating the last valid second,
  valid seconds)."""
  if rate != params.sample_rate and len(audio):
    audio = librosa.resample(audio, orig_sr=rate, target_sr=params.sample_rate,
                             res_type="soxr_hq")
  valid = _valid_seconds(len(audio) / params.sample_rate, seconds, params)
  if valid < 1:
    raise BadMedia(f"too short {rel}: {len(audio) / params.sample_rate:.2f} s of audio")
  mel = log_mel(audio, valid, params)
  pad = np.repeat(mel[-1:], seconds - valid, axis=0)
  return np.concatenate([mel, pad]), valid


def load_video_clip(raw_dir: str, rel: str, seconds: int, params: ConvertParams) -> Clip:
  """Frames and log-mel of the first `seconds` of a video file with audio."""
  frames, video_seconds, audio, rate = decode_video(raw_dir, rel, seconds, params)
  mel, audio_seconds = audio_log_mel(audio, rate, rel, seconds, params)
  return Clip(frames, mel, min(video_seconds, audio_seconds))


def load_stills_clip(raw_dir: str, frame_rels: list[str], audio_rel: str, seconds: int,
                     params: ConvertParams) -> Clip:
  """Still frames (one image file each, any format Pillow reads) plus an audio file."""
  frames = [encode_jpeg(load_image(raw_dir, rel, "RGB"), params) for rel in frame_rels]
  audio, rate = decode_audio(raw_dir, audio_rel, seconds, params)
  mel, audio_seconds = audio_log_mel(audio, rate, audio_rel, seconds, params)
  return Clip(frames, mel, audio_seconds)


def load_image(raw_dir: str, rel: str, mode: str | None = None) -> Image.Image:
  """Opens and fully decodes an image file (converted to `mode` when given)."""
  path = _check_exists(raw_dir, rel)
  try:
    with Image.open(path) as image:
      image.load()
      return image.convert(mode) if mode else image.copy()
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise BadMedia(f"undecodable {rel}: {_describe(e, path)}") from e


def binary_mask(image: Image.Image) -> np.ndarray:
  """bool[H, W] object mask of a ground-truth PNG.

  Palette ('P') masks: palette index != 0 (AVSBench MS3 stores indices 0/1); '1' masks as is;
  any other mode: grey level > 127 (0/255 masks, as Image.convert('1') reads them).
  """
  if image.mode == "P":
    return np.asarray(image) != 0
  if image.mode == "1":
    return np.asarray(image).astype(bool)
  return np.asarray(image.convert("L")) > 127


def encode_mask(mask: np.ndarray, params: ConvertParams) -> bytes:
  """bool[H, W] -> PNG bytes, mode L with values 0/255, image_size x image_size (nearest)."""
  size = (params.image_size, params.image_size)
  image = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
  buf = io.BytesIO()
  image.resize(size, Image.Resampling.NEAREST).save(buf, format="PNG")
  return buf.getvalue()
