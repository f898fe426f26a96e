"""MUSIC-AVQA: question lists per split, 60-s videos shared by several questions.

Layout read:
  RAW/json_update/avqa-{train,val,test}.json   list of {video_id, question_id, type (a JSON
      string), question_content (with <...> placeholders), templ_values (a JSON string list
      filling them in order), question_deleted, anser}
  RAW/MUSIC-AVQA-videos-Real/<video_id>.mp4, else RAW/MUSIC-AVQA-videos-Synthetic/<video_id>.mp4
One record per video holds the video's media once and its questions (grouped); the reader
yields one example per question, id str(question_id).
"""

from __future__ import annotations

import json
import re

from data_prep.common import Listing, Unit, VideoMedia, bad_row, read_json_array, require_file

CLIP_SECONDS = 60
VIDEO_DIRS = ("MUSIC-AVQA-videos-Real", "MUSIC-AVQA-videos-Synthetic")
PLACEHOLDER = re.compile(r"<[^<>]+>")


def split_file(split: str) -> str:
  return f"json_update/avqa-{split}.json"


def _json_list(text) -> list | None:
  try:
    value = json.loads(text) if isinstance(text, str) else None
  except json.JSONDecodeError:
    return None
  return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def parse_question(item) -> tuple[dict | None, str | None]:
  """(question fields, None) or (None, what is wrong) for one json item."""
  if not isinstance(item, dict):
    return None, "not a JSON object"
  video_id, qid = item.get("video_id"), item.get("question_id")
  template, answer = item.get("question_content"), item.get("anser")
  if not isinstance(video_id, str) or not video_id or isinstance(qid, bool) or \
      not isinstance(qid, int) or not isinstance(template, str) or not isinstance(answer, str):
    return None, "needs string video_id, question_content, anser and integer question_id"
  qtype, values = _json_list(item.get("type")), _json_list(item.get("templ_values"))
  if qtype is None or len(qtype) != 2:
    return None, f"type {item.get('type')!r} is not a JSON list of two strings"
  holes = PLACEHOLDER.findall(template)
  if values is None or len(values) != len(holes):
    return None, f"templ_values {item.get('templ_values')!r} do not fill the {len(holes)} " \
                 "placeholders"
  filled = iter(values)
  question = PLACEHOLDER.sub(lambda _: next(filled), template)
  return {"id": str(qid), "question_id": qid, "question": question,
          "question_template": template, "question_type": qtype, "answer": answer}, None


def list_split(raw_dir: str, split: str) -> Listing:
  rel = split_file(split)
  require_file(raw_dir, rel, "music_avqa", f"questions of the {split} split")
  videos: dict[str, list] = {}  # video_id -> [first line, questions]
  seen: dict[str, int] = {}
  skipped = []
  for line, item in read_json_array(raw_dir, rel):
    question, problem = parse_question(item)
    qid = str(item.get("question_id")) if isinstance(item, dict) else None
    if problem:
      skipped.append(bad_row(rel, line, problem, qid))
    elif question["id"] in seen:
      skipped.append({"id": question["id"], "reason": f"duplicate id at {rel}:{line} (first at "
                      f"{rel}:{seen[question['id']]})"})
    else:
      seen[question["id"]] = line
      videos.setdefault(item["video_id"], [line, []])[1].append(question)
  units = []
  for video_id, (line, questions) in videos.items():
    media = VideoMedia(tuple(f"{d}/{video_id}.mp4" for d in VIDEO_DIRS))
    units.append(Unit(key=video_id, media=media,
                      fields={"id": video_id, "video_id": video_id, "questions": questions},
                      example_ids=tuple(q["id"] for q in questions), source=f"{rel}:{line}"))
  return Listing(units, skipped, [rel])
