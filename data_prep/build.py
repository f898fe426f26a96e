"""Unit -> stored record: decode its media, join its annotation fields, check the schema.

`build(unit, ...)` runs in the conversion workers; it returns a `Built` whose `reason` is set
when the clip is skipped (the reason written to report.json).
"""

from __future__ import annotations

import dataclasses
import os

from av_unified_jax.data import media, records, schema
from av_unified_jax.data.params import ConvertParams
from data_prep.common import MaskFiles, StillsMedia, Unit, VideoMedia


@dataclasses.dataclass(frozen=True)
class Built:
  """Outcome of one unit: the encoded record, or the reason it was skipped."""

  data: bytes | None
  num_segments: int
  reason: str | None = None


def load_clip(unit_media: VideoMedia | StillsMedia, raw_dir: str, seconds: int,
              params: ConvertParams) -> media.Clip:
  if isinstance(unit_media, StillsMedia):
    return media.load_stills_clip(raw_dir, list(unit_media.frames), unit_media.audio, seconds,
                                  params)
  found = [rel for rel in unit_media.candidates if os.path.isfile(os.path.join(raw_dir, rel))]
  if not found:
    others = "".join(f" (nor {rel})" for rel in unit_media.candidates[1:])
    raise media.BadMedia(f"missing file {unit_media.candidates[0]}{others}")
  return media.load_video_clip(raw_dir, found[0], seconds, params)


def load_masks(masks: MaskFiles, raw_dir: str, params: ConvertParams) -> dict:
  """{'masks': list of PNG bytes (b'' where absent), 'mask_annotated': list of bool}."""
  encoded, annotated = [], []
  for rel, required in zip(masks.paths, masks.required):
    if not required and not os.path.isfile(os.path.join(raw_dir, rel)):
      encoded.append(b"")
      annotated.append(False)
      continue
    encoded.append(media.encode_mask(media.binary_mask(media.load_image(raw_dir, rel)), params))
    annotated.append(True)
  return {"masks": encoded, "mask_annotated": annotated}


def make_record(spec: schema.DatasetSpec, unit: Unit, clip: media.Clip,
                mask_fields: dict) -> dict:
  """The stored record: one example, or for grouped datasets the video with its questions."""
  fields = {**unit.fields, "frames": clip.frames, "log_mel": clip.log_mel,
            "num_segments": clip.num_segments, **mask_fields}
  if not spec.grouped:
    return schema.conform(spec, fields)
  questions = fields.pop("questions")
  return schema.conform_grouped(spec, fields, questions)


def build(unit: Unit, raw_dir: str, dataset: str, params: ConvertParams) -> Built:
  """Decodes and encodes one unit; bad media gives Built(None, 0, reason)."""
  spec = schema.get_spec(dataset)
  try:
    clip = load_clip(unit.media, raw_dir, spec.clip_seconds, params)
    mask_fields = load_masks(unit.masks, raw_dir, params) if unit.masks else {}
  except media.BadMedia as e:
    return Built(None, 0, str(e))
  return Built(records.encode(make_record(spec, unit, clip, mask_fields)), clip.num_segments)
