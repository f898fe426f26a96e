"""Conversion parameters: every setting that changes what is written to the shards."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ConvertParams:
  """All settings that shape the stored examples (recorded in dataset_info.json).

  Frames: one every 1/fps seconds, the decoded frame shown at the middle of each interval
  (time (k + 0.5) / fps), resized to image_size x image_size (bicubic, no crop), JPEG.
  Audio: decoded, averaged to mono, resampled to `sample_rate` (soxr_hq, as librosa.load),
  then one log-mel spectrogram of the clip's first T seconds with
  `librosa.feature.melspectrogram(center=True, pad_mode='constant', window='hann')`,
  `log(mel + log_offset)`, the first T * F frames kept and reshaped to [T, F, M]
  (F = sample_rate / hop_length frames per second, frame f centred at sample f * hop_length).
  """

  image_size: int = 224
  fps: int = 1
  jpeg_quality: int = 90
  sample_rate: int = 16000
  n_fft: int = 400  # 25 ms
  win_length: int = 400
  hop_length: int = 160  # 10 ms: F = 100 frames per second
  n_mels: int = 64
  fmin: float = 20.0
  fmax: float = 8000.0
  mel_power: float = 2.0
  log_offset: float = 1e-6
  # Media at most this much shorter than a whole second still counts as that second (container
  # durations and audio codec framing are not exact); the missing tail is zero-padded.
  duration_tolerance_s: float = 0.1
  # Decoded media ending this much before the duration its header declares is "truncated".
  truncation_tolerance_s: float = 1.0
  clips_per_shard: int = 128
  array_record_options: str = "group_size:1"

  def __post_init__(self):
    checks = {
        "image_size": self.image_size >= 8,
        "fps": self.fps >= 1,
        "jpeg_quality": 1 <= self.jpeg_quality <= 100,
        "sample_rate": self.sample_rate % self.hop_length == 0,
        "win_length": self.win_length <= self.n_fft,
        "fmax": 0 <= self.fmin < self.fmax <= self.sample_rate / 2,
        "clips_per_shard": self.clips_per_shard >= 1,
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
      raise ValueError(f"invalid conversion parameters {bad}: {self}")

  @property
  def mel_frames_per_second(self) -> int:
    """F: log-mel frames per 1-s segment."""
    return self.sample_rate // self.hop_length

  def to_json(self) -> dict:
    out = dataclasses.asdict(self)
    out["mel_frames_per_second"] = self.mel_frames_per_second
    out["mel_scale"] = "slaney (librosa default, htk=False, norm='slaney')"
    out["window"] = "hann"
    out["log"] = "natural log of (mel power + log_offset)"
    out["resampler"] = "soxr_hq"
    out["frame_resize"] = "PIL bicubic, no crop"
    return out
