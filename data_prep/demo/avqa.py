"""Demo clips in the MUSIC-AVQA raw layout (docs/BENCHMARKS.md 3.1).

Two or three objects (animals, instruments, tools) stand at left / middle / right; some make
their sound over a span, at clearly different loudness; sometimes an off-screen sound plays
(the "voiceover"). Each video gets one templated question of each of the nine types whose
premise holds, with the answer computed from the clip's measured metadata.
Files: `RAW/json_update/avqa-{train,val,test}.json`, `RAW/MUSIC-AVQA-videos-Real/<id>.mp4`
(test_novel videos: the test split of a second raw tree, question ids continuing after the
first tree's, so every question id is unique across all splits).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data_prep.demo import compose as dc
from data_prep.demo import media as dm
from data_prep.demo.assets import raw_split
from data_prep.demo.layouts import base_meta
from data_prep.demo.scene import Scene, object_frac

AVQA_T = 10
POSITIONS = {2: ("left", "right"), 3: ("left", "middle", "right")}
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
           "ten")
ORDINALS = ("first", "second", "third")
MARGIN_DB = 3.0  # Loudness comparisons are asked only when the levels differ by this much.
# Training videos ask up to this many distinct questions of each type (val and test one).
TRAIN_QUESTIONS_PER_TYPE = 3
TYPES = (("Audio", "Counting"), ("Audio", "Comparative"), ("Visual", "Counting"),
         ("Visual", "Location"), ("Audio-Visual", "Existential"), ("Audio-Visual", "Counting"),
         ("Audio-Visual", "Location"), ("Audio-Visual", "Comparative"),
         ("Audio-Visual", "Temporal"))


def facts(meta: dict, classes: list[str]) -> dict:
  """Plain facts of a clip from its metadata: visible objects (class, position, audible
  seconds, loudness) and audible sources (on or off screen)."""
  sources = meta["sources"]
  objects = []
  for i, o in enumerate(meta["objects"]):
    src = next((s for s in sources if s["object"] == i), None)
    heard = src["audible"] if src else [False] * AVQA_T
    level = (float(np.mean([d for d, h in zip(src["loudness_db"], heard) if h]))
             if any(heard) else None)
    objects.append({"class": o["class"], "position": o["slot"], "heard": heard,
                    "level": level, "onset": heard.index(True) if any(heard) else None})
  heard_classes = [s["class"] for s in sources if any(s["audible"])]
  offscreen = [s["class"] for s in sources if s["object"] is None and any(s["audible"])]
  return {"objects": objects, "heard": heard_classes, "offscreen": offscreen,
          "classes": list(classes)}


def _q(qtype, content, values, answer):
  return {"type": list(qtype), "question_content": content, "templ_values": list(values),
          "anser": answer}


def _yes_no(flag: bool) -> str:
  return "yes" if flag else "no"


def _sample(rng, items: list, count: int) -> list:
  return [items[int(i)] for i in rng.permutation(len(items))[:count]]


def _audio_counting(f, rng):
  absent = _sample(rng, [c for c in f["classes"] if c not in f["heard"]], 2)
  out = [_q(TYPES[0], "How many sounds were heard in the video?", [], NUMBERS[len(f["heard"])])]
  out += [_q(TYPES[0], "Is there a <Object> sound?", [c], _yes_no(c in f["heard"]))
          for c in f["heard"] + absent]
  return out


def _audio_comparative(f, rng):
  out = []
  sounding = [o for o in f["objects"] if o["level"] is not None]
  for a in sounding:
    for b in sounding:
      if a is not b and abs(a["level"] - b["level"]) >= MARGIN_DB:
        out.append(_q(TYPES[1], "Is the <Object> louder than the <Object>?",
                      [a["class"], b["class"]], _yes_no(a["level"] > b["level"])))
      if a is not b and sum(a["heard"]) != sum(b["heard"]):
        out.append(_q(TYPES[1], "Is the <Object> playing longer than the <Object>?",
                      [a["class"], b["class"]], _yes_no(sum(a["heard"]) > sum(b["heard"]))))
  return out


def _visual_counting(f, rng):
  seen = [o["class"] for o in f["objects"]]
  absent = _sample(rng, [c for c in f["classes"] if c not in seen], 2)
  out = [_q(TYPES[2], "How many objects are in the video?", [], NUMBERS[len(seen)])]
  out += [_q(TYPES[2], "Is there a <Object> in the entire video?", [c], _yes_no(c in seen))
          for c in seen + absent]
  return out


def _visual_location(f, rng):
  objs = f["objects"]
  out = [_q(TYPES[3], "Where is the <Object>?", [o["class"]], o["position"]) for o in objs]
  for k in range(len(objs) - 1):  # objects are stored left to right
    out.append(_q(TYPES[3], "What is the object on the <LR> of the <Object>?",
                  ["left", objs[k + 1]["class"]], objs[k]["class"]))
    out.append(_q(TYPES[3], "What is the object on the <LR> of the <Object>?",
                  ["right", objs[k]["class"]], objs[k + 1]["class"]))
  return out


def _av_existential(f, rng):
  out = [_q(TYPES[4], "Is there a voiceover?", [], _yes_no(bool(f["offscreen"])))]
  out += [_q(TYPES[4], "Is the <Object> in the video always playing?", [o["class"]],
             _yes_no(all(o["heard"]))) for o in f["objects"]]
  return out


def _av_counting(f, rng):
  sounding = [o for o in f["objects"] if o["level"] is not None]
  out = [_q(TYPES[5], "How many objects are sounding in the video?", [],
            NUMBERS[len(sounding)])]
  out += [_q(TYPES[5], "How many sounding <Object> in the video?", [o["class"]],
             NUMBERS[int(o["level"] is not None)]) for o in f["objects"]]
  return out


def _av_location(f, rng):
  sounding = sorted((o for o in f["objects"] if o["level"] is not None),
                    key=lambda o: -o["level"])
  out = []
  if len(sounding) == 1 or (len(sounding) > 1 and
                            sounding[0]["level"] - sounding[1]["level"] >= MARGIN_DB):
    out.append(_q(TYPES[6], "Where is the <LL> object?", ["loudest"], sounding[0]["position"]))
  for a in sounding:
    overlap = [b for b in sounding if b is not a and
               any(x and y for x, y in zip(a["heard"], b["heard"]))]
    if len(overlap) == 1:
      out.append(_q(TYPES[6], "Which is the object that sounds at the same time as the "
                    "<Object>?", [a["class"]], overlap[0]["class"]))
  return out


def _av_comparative(f, rng):
  out = []
  sounding = [o for o in f["objects"] if o["level"] is not None]
  for a in sounding:
    for b in sounding:
      if a is not b and abs(a["level"] - b["level"]) >= MARGIN_DB:
        out.append(_q(TYPES[7], "Is the object on the <LR> louder than the object on the <LR>?",
                      [a["position"], b["position"]], _yes_no(a["level"] > b["level"])))
  return out


def _av_temporal(f, rng):
  sounding = sorted((o for o in f["objects"] if o["onset"] is not None),
                    key=lambda o: o["onset"])
  onsets = [o["onset"] for o in sounding]
  if not sounding or len(set(onsets)) != len(onsets):
    return []
  out = [_q(TYPES[8], "What is the <TH> object that comes in?", [ORDINALS[k]], o["class"])
         for k, o in enumerate(sounding)]
  out.append(_q(TYPES[8], "Where is the <FL> sounding object?", ["first"],
                sounding[0]["position"]))
  if len(sounding) > 1:
    out.append(_q(TYPES[8], "Where is the <FL> sounding object?", ["last"],
                  sounding[-1]["position"]))
  return out


GENERATORS = (_audio_counting, _audio_comparative, _visual_counting, _visual_location,
              _av_existential, _av_counting, _av_location, _av_comparative, _av_temporal)


def make_questions(rng: np.random.Generator, meta: dict, classes: list[str],
                   per_type: int = 1) -> list[dict]:
  """Up to `per_type` questions of each type whose premise holds (distinct ones). Each is
  drawn as follows: yes/no and open questions equally often where a type has both, and yes
  and no equally often."""
  f = facts(meta, classes)
  out = []
  for gen in GENERATORS:
    cands = gen(f, rng)
    for _ in range(per_type):
      if not cands:
        break
      closed = [q for q in cands if q["anser"] in ("yes", "no")]
      if closed and (len(closed) == len(cands) or rng.random() < 0.5):
        want = "yes" if rng.random() < 0.5 else "no"
        preferred = [q for q in closed if q["anser"] == want] or closed
      else:
        preferred = [q for q in cands if q not in closed]
      pick = preferred[int(rng.integers(len(preferred)))]
      out.append(pick)
      cands = [q for q in cands if q is not pick]
  return out


def make_clip(ctx, rng: np.random.Generator, split: str, clip_id: str) -> dict:
  scene = Scene(rng, ctx.pack, split, ctx.size, AVQA_T)
  count = int(rng.choice([2, 3]))
  classes = scene.pick_classes(count + 1)
  frac = object_frac(rng, count)
  levels = [0.0, -7.0, -14.0]
  rng.shuffle(levels)
  sounding = rng.random(count) < 0.75
  sounding[int(rng.integers(count))] = True
  for k, (cls, pos, x_range) in enumerate(zip(classes, POSITIONS[count],
                                              scene.slot_ranges(count))):
    obj = scene.add_object(cls, frac, x_range=x_range, slot=pos)
    if sounding[k]:
      span = (0, AVQA_T) if rng.random() < 0.3 else dc.random_span(rng, AVQA_T, 2, 9)
      scene.add_source(cls, span, levels[k], obj=obj)
  if rng.random() < 0.3:
    scene.add_source(classes[-1], dc.random_span(rng, AVQA_T, 2, 6), float(rng.uniform(-6, 0)))
  rendered = scene.finish()
  meta = base_meta(clip_id, split, scene, rendered)
  per_type = TRAIN_QUESTIONS_PER_TYPE if split == "train" else 1
  meta["questions"] = make_questions(rng, meta, ctx.pack.classes, per_type)
  dm.write_mp4(ctx.raw_dir / "MUSIC-AVQA-videos-Real" / f"{clip_id}.mp4", rendered.frames,
               rendered.audio)
  return meta


def write_annotations(raw_dir: Path, clips: list[dict], first_question_id: int = 0) -> int:
  """Writes the three json files; question ids are assigned in split, then clip order,
  from `first_question_id` on (stored in each question as "question_id"). Returns the next
  free question id."""
  qid = first_question_id
  for split in ("train", "val", "test"):
    rows = []
    for c in clips:
      if raw_split(c["split"]) != split:
        continue
      for q in c["questions"]:
        q["question_id"] = qid
        rows.append({"video_id": c["id"], "question_id": qid, "type": json.dumps(q["type"]),
                     "question_content": q["question_content"],
                     "templ_values": json.dumps(q["templ_values"]), "question_deleted": 0,
                     "anser": q["anser"]})
        qid += 1
    dm.write_text(raw_dir / "json_update" / f"avqa-{split}.json", json.dumps(rows, indent=2))
  return qid
