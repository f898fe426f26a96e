"""The example schema of the converted datasets: the single source of truth for field names.

`data_prep` writes, and `av_unified_jax.data.shards` reads, one example per element with the
fields listed here. The input pipeline is written against these names, dtypes and shapes.

Symbols used in shapes:
  T  number of 1-s segments of the dataset's clip (`DatasetSpec.clip_seconds`: AVE, LLP and
     VGG-SS 10, MUSIC-AVQA 60, AVSBench 5).
  F  log-mel frames per second (`sample_rate / hop_length`, 100 with the default settings).
  M  mel bins (64 by default).
  N  number of frames stored: `T * fps` for datasets read from video; for still-frame layouts
     the frames given by the benchmark (AVSBench: 5, one per second; VGG-SS test: 1, the
     annotated frame).
  W, A, V, B  number of weak labels, dense audio rows, dense visual rows, boxes (variable).
The conversion settings (fps, image size, STFT and mel settings, ...) are in the split's
`dataset_info.json` next to the shards.

Fields common to every dataset (same name, same meaning):
  id            str          unique within the split; the source id (see each dataset).
  video_id      str          the source media id (file name stem of the clip).
  frames        list[bytes]  N JPEG images, RGB, exactly `image_size` x `image_size` (resized
                             without crop, so normalized boxes and masks stay aligned).
  log_mel       float16[T, F, M]  natural-log mel power spectrogram of 16 kHz mono audio, one
                             [F, M] block per second.
  num_segments  int32[]      valid seconds (1..T). Seconds at and after it repeat the last valid
                             second (media shorter than the clip), so `num_segments < T` is the
                             flag for padded media.

A record is stored as msgpack (see `av_unified_jax.data.records`), never pickle.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# dtype names used below: "str", "bytes", "list[str]", "list[bytes]", "list[list[str]]", or a
# numpy dtype name ("int32", "int64", "float16", "float64", "bool") for numpy arrays.


@dataclasses.dataclass(frozen=True)
class Feature:
  """One field of an example: its name, dtype, symbolic shape and meaning."""

  name: str
  dtype: str
  shape: tuple[str | int, ...]
  doc: str

  def to_json(self) -> dict:
    return {"dtype": self.dtype, "shape": list(self.shape), "doc": self.doc}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A converted dataset: its splits, clip length and example fields."""

  name: str
  splits: tuple[str, ...]
  clip_seconds: int
  features: tuple[Feature, ...]
  # Records hold one video with several examples (MUSIC-AVQA: its questions). The reader turns
  # each record into one example per entry of the `questions` field.
  grouped: bool = False

  def feature(self, name: str) -> Feature:
    for f in self.features:
      if f.name == name:
        return f
    raise KeyError(f"dataset {self.name!r} has no field {name!r}; fields: {self.field_names}")

  @property
  def field_names(self) -> tuple[str, ...]:
    return tuple(f.name for f in self.features)


COMMON = (
    Feature("id", "str", (), "unique id within the split"),
    Feature("video_id", "str", (), "source media id"),
    Feature("frames", "list[bytes]", ("N",), "JPEG bytes, RGB, image_size x image_size"),
    Feature("log_mel", "float16", ("T", "F", "M"), "per-second natural-log mel spectrogram"),
    Feature("num_segments", "int32", (), "valid seconds; later seconds repeat the last valid one"),
)

AVE = DatasetSpec(
    name="ave",
    splits=("train", "val", "test"),
    clip_seconds=10,
    features=COMMON + (
        Feature("category", "str", (), "event class name as in Annotations.txt"),
        Feature("start", "int32", (), "first event second (event covers [start, end))"),
        Feature("end", "int32", (), "end second, exclusive; start == end: no event segment"),
        Feature("annotation_row", "int32", (),
                "0-based row in Annotations.txt (index of the h5 label files), -1 if absent"),
    ),
)
AVE_ID = "id = '<VideoID>:<Category>' (a video on two rows gives two examples)"

LLP = DatasetSpec(
    name="llp",
    splits=("train", "val", "test"),
    clip_seconds=10,
    features=COMMON + (
        Feature("weak_labels", "list[str]", ("W",), "video-level event labels"),
        Feature("audio_labels", "list[str]", ("A",), "class of each dense audio row (val/test)"),
        Feature("audio_spans", "int32", ("A", 2), "[onset, offset) seconds of each audio row"),
        Feature("visual_labels", "list[str]", ("V",), "class of each dense visual row"),
        Feature("visual_spans", "int32", ("V", 2), "[onset, offset) seconds of each visual row"),
    ),
)
LLP_ID = "id = filename column ('<YouTubeID>_<start>_<end>'); dense rows empty for train"

MUSIC_AVQA = DatasetSpec(
    name="music_avqa",
    splits=("train", "val", "test"),
    clip_seconds=60,
    grouped=True,
    features=COMMON + (
        Feature("question_id", "int64", (), "question_id of the json"),
        Feature("question", "str", (), "question text with <...> placeholders filled"),
        Feature("question_template", "str", (), "question_content as in the json"),
        Feature("question_type", "list[str]", (2,), "e.g. ['Audio', 'Counting']"),
        Feature("answer", "str", (), "the answer (json key 'anser')"),
    ),
)
MUSIC_AVQA_ID = (
    "id = str(question_id). Stored grouped: one record per video holding the common fields and "
    "'questions' (list of dicts with the question fields); the reader yields one example per "
    "question"
)

VGGSS = DatasetSpec(
    name="vggss",
    splits=("train", "test"),
    clip_seconds=10,
    features=COMMON + (
        Feature("class_name", "str", (), "VGGSound class (test); '' for train clips"),
        Feature("boxes", "float64", ("B", 4),
                "[xmin, ymin, xmax, ymax] normalized, exactly as in vggss.json (corrupt "
                "values such as -2.88e16 kept); B = 0 for train clips"),
    ),
)
VGGSS_ID = "id = '<ytid>_<start 6 digits>'; test: N = 1 frame (frames/<id>.jpg)"

_AVS_MASKS = (
    Feature("masks", "list[bytes]", (5,),
            "PNG, mode L, 0 or 255, image_size x image_size; b'' where not annotated"),
    Feature("mask_annotated", "bool", (5,), "whether masks[i] holds a ground-truth mask"),
)
AVSBENCH_S4 = DatasetSpec(
    name="avsbench_s4",
    splits=("train", "val", "test"),
    clip_seconds=5,
    features=COMMON + (Feature("category", "str", (), "sounding object category"),) + _AVS_MASKS,
)
AVSBENCH_MS3 = DatasetSpec(
    name="avsbench_ms3",
    splits=("train", "val", "test"),
    clip_seconds=5,
    features=COMMON + _AVS_MASKS,
)
AVSBENCH_ID = "id = video name; N = 5 frames; S4 train annotates only the first mask"

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec for spec in (AVE, LLP, MUSIC_AVQA, VGGSS, AVSBENCH_S4, AVSBENCH_MS3)
}

ID_RULES = {
    "ave": AVE_ID,
    "llp": LLP_ID,
    "music_avqa": MUSIC_AVQA_ID,
    "vggss": VGGSS_ID,
    "avsbench_s4": AVSBENCH_ID,
    "avsbench_ms3": AVSBENCH_ID,
}


def file_name_problem(value: str) -> str | None:
  """Why `value` (an example id, a category) cannot be a single file or directory name, or
  None when it can. Ids become file names (evaluation writes `<id>.png`; conversion reads
  paths built from names), so a name holding a separator or `..` would leave its directory."""
  if value in ("", ".", ".."):
    return f"{value!r} is not a file name"
  seps = [c for c in ("/", "\\", "\0") if c in value]
  if seps:
    return f"{value!r} contains {' '.join(map(repr, seps))}, so it would leave its directory"
  return None


def file_name(example_id: str, suffix: str = "") -> str:
  """`<example_id><suffix>` as a file name; raises ValueError for an id that would leave its
  directory (see `file_name_problem`)."""
  problem = file_name_problem(str(example_id))
  if problem:
    raise ValueError(f"example id {problem}: it cannot name a file; convert the dataset again "
                     "(the converters reject such ids)")
  return f"{example_id}{suffix}"


def get_spec(name: str) -> DatasetSpec:
  """Returns the spec of dataset `name`, or raises naming the known datasets."""
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
  return DATASETS[name]


def features_json(spec: DatasetSpec) -> dict:
  """The feature spec as written to dataset_info.json."""
  return {f.name: f.to_json() for f in spec.features}


_PY_TYPES = {"str": str, "bytes": bytes}


def conform(spec: DatasetSpec, example: dict) -> dict:
  """Checks an example against `spec` and casts numeric fields to numpy arrays of their dtype.

  Raises ValueError naming the field when a field is missing, unknown, of the wrong kind or
  of the wrong rank. Returns a new dict (the stored form of the example).
  """
  missing = set(spec.field_names) - set(example)
  extra = set(example) - set(spec.field_names)
  if missing or extra:
    raise ValueError(f"{spec.name} example {example.get('id')!r}: missing fields "
                     f"{sorted(missing)}, unknown fields {sorted(extra)}")
  out = {}
  for f in spec.features:
    value = example[f.name]
    if f.dtype in _PY_TYPES:
      ok = isinstance(value, _PY_TYPES[f.dtype])
    elif f.dtype.startswith("list["):
      ok = isinstance(value, list | tuple)
      value = list(value)
    else:
      value = np.asarray(value, dtype=f.dtype)
      if value.size == 0:  # e.g. no rows: [] -> shape (0, 2)
        value = value.reshape([0 if isinstance(d, str) else d for d in f.shape])
      ok = value.ndim == len(f.shape)
    if not ok:
      raise ValueError(f"{spec.name} example {example.get('id')!r}: field {f.name!r} should "
                       f"be {f.dtype}{list(f.shape)}, got {type(value).__name__} "
                       f"{getattr(value, 'shape', '')}")
    out[f.name] = value
  return out


def conform_grouped(spec: DatasetSpec, shared: dict, questions: list[dict]) -> dict:
  """The stored record of a grouped dataset (MUSIC-AVQA): one video, several examples.

  `shared` holds the fields common to the video's examples (its `id` is the video id);
  each entry of `questions` holds one example's own fields, `id` included. Every joined
  example is checked with `conform`. Returns {shared fields..., "questions": [own fields]}.
  """
  if not spec.grouped or not questions:
    raise ValueError(f"{spec.name}: conform_grouped needs a grouped dataset and >= 1 question")
  stored = [conform(spec, {**shared, **q}) for q in questions]
  record = {k: v for k, v in stored[0].items() if k not in questions[0]}
  record["id"] = shared["id"]
  record["questions"] = [{k: s[k] for k in q} for s, q in zip(stored, questions)]
  return record
