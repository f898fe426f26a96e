"""Per-task rules of the input pipeline: which datasets a task reads, how its seconds are
chosen, its augmentation, and its prompt and target tokens (from `av_unified_jax.tokens`).

    TASKS["ave"].datasets        # ("ave",)
    TaskTokens("ave", tok, lp, lt)(clip)  # adds prompt/target tokens, weights, weak labels
    ModelExample(...)(clip)      # fixed-shape model example (see `ModelExample`)
    label_sets, extra = collect_label_sets(shards_dir)  # for tokens.Tokenizer.build
    tok = load_or_build_tokenizer(config, workdir)      # built once per run, saved in W

Target rules (the target is padded with <pad> to `max_target_len`; `target_weights` is 1 on
every real token including <eos>, 0 on padding and on the whole target when it is unusable):
  ave   category/start/end -> `<class> <t_s> <t_e> <eos>`, or `<none> <eos>` when start == end.
  avvp  dense rows (val/test) -> the dense parse with the dense prompt; without dense rows
        (train) -> the weak class list with the weak prompt. `weak_labels` (multi-hot over the
        tokenizer's avvp label set) and `has_weak` are always filled for LLP. A dense parse
        longer than `max_target_len` keeps its first rows (canonical order) that fit.
        With `class_labels_train_mil` (ave in `config.loss.mil_tasks`), an AVE clip's event
        class, when it is in the avvp label set, is its weak label too, so the MIL head (and
        the features under it) also learn from AVE's labels.
  avqa  prompt = `<avqa>` + question, target = the answer. A question longer than
        `max_prompt_len` is cut (the task token is kept).
  ssl   the union of the frame's clean boxes (corrupt and zero-area boxes dropped) after the
        crop/flip -> 4 location tokens. No box (VGG-SS training clips) -> zero weights: the
        clip still trains the contrastive loss. Where boxes exist, they also give the focus
        frame's map target (`focus_map`: the boxes painted as a mask), as AVS masks do.
  avs   the prompt names the focus second k; target = `mask_codes(example_id, k)` (int[Kh, Kw]
        codes of that frame's stored mask, precomputed with the mask tokenizer). None (or no
        `mask_codes`, or no mask at k) -> zero weights. Tokens of the table's background code
        (`mask_codes.background_code`, the code of most cells) weigh `background_weight`, so
        that the few object cells are not drowned by the many empty ones. Geometric augmentation is off for AVS:
        precomputed codes describe the stored mask, not a cropped or flipped one.
Flip is off for MUSIC-AVQA: questions and answers say "left" and "right".
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping

import jax
import numpy as np
from array_record.python import array_record_data_source
from etils import epath
from PIL import Image

from av_unified_jax import tokens
from av_unified_jax.data import records, shards, transforms
from av_unified_jax.data.transforms import Augment, union_box

TASK_ORDER = tokens.TASKS  # task_id indexes this tuple

MaskCodes = Callable[[str, int], "np.ndarray | None"]
TOKENIZER_DIR = "tokenizer"  # W/tokenizer/: the run's tokenizer files


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """datasets: converted datasets the task may read; sample: whether a clip longer than T is
  subsampled (else it must fit in T); augment: training augmentation."""

  datasets: tuple[str, ...]
  sample: bool
  augment: Augment


TASKS: dict[str, TaskSpec] = {
    "ave": TaskSpec(("ave",), sample=False, augment=Augment(min_area=0.5, flip=True)),
    "avvp": TaskSpec(("llp",), sample=False, augment=Augment(min_area=0.5, flip=True)),
    "avqa": TaskSpec(("music_avqa",), sample=True, augment=Augment(min_area=0.8, flip=False)),
    "ssl": TaskSpec(("vggss",), sample=True, augment=Augment(min_area=0.5, flip=True)),
    "avs": TaskSpec(("avsbench_s4", "avsbench_ms3"), sample=False,
                    augment=Augment(min_area=1.0, flip=False)),
}


def task_id(task: str) -> int:
  return TASK_ORDER.index(task)


def _pad(tokens: np.ndarray, length: int) -> np.ndarray:
  out = np.zeros((length,), np.int32)
  out[:len(tokens)] = tokens
  return out


@dataclasses.dataclass
class TaskTokens:
  """Adds `prompt_tokens` int32[Lp], `target_tokens` int32[Lt], `target_weights`
  float32[Lt], `weak_labels` float32[C] and `has_weak` bool to a clip (rules: module doc).

  `train=False` (evaluation): AVVP always uses the dense prompt; labels unknown to the
  tokenizer give zero-weighted targets instead of an error.
  """

  task: str
  tokenizer: object
  max_prompt_len: int
  max_target_len: int
  train: bool = True
  mask_codes: MaskCodes | None = None
  background_weight: float = 1.0
  class_labels_train_mil: bool = False  # AVE: the event class is a weak label (loss.mil_tasks).

  random = False

  def __post_init__(self):
    self.weak_classes = tuple(self.tokenizer.label_sets.get("avvp", ()))
    self._weak_index = {c: i for i, c in enumerate(self.weak_classes)}
    self._background = self._background_token() if self.task == "avs" else -1

  def __call__(self, clip: dict) -> dict:
    ex = clip["example"]
    prompt, target = getattr(self, f"_{self.task}")(clip, ex)
    if len(prompt) > self.max_prompt_len:
      prompt = prompt[:self.max_prompt_len]
    weights = np.zeros((self.max_target_len,), np.float32)
    if target is not None:
      if len(target) > self.max_target_len:
        raise ValueError(f"{self.task} target of {ex.get('id')!r} has {len(target)} tokens, "
                         f"more than tokens.max_target_len={self.max_target_len}; raise it")
      weights[:len(target)] = 1.0
      if self.task == "avs" and self.background_weight != 1.0:
        weights[:len(target)][np.asarray(target) == self._background] = \
            self.background_weight
    weak, has_weak = self._weak(ex)
    span = (int(ex["start"]), int(ex["end"])) if self.task == "ave" and has_weak else (0, 0)
    return {**clip, "prompt_tokens": _pad(prompt, self.max_prompt_len),
            "target_tokens": _pad(target if target is not None else [], self.max_target_len),
            "target_weights": weights, "weak_labels": weak, "has_weak": has_weak,
            "event_span": np.asarray(span, np.int32)}

  def _background_token(self) -> int:
    """Token id of the mask codes' background code (-1 when unknown); computed once."""
    code = getattr(self.mask_codes, "background_code", None)
    if code is None:
      return -1
    return int(self.tokenizer.encode_target("avs", np.full(self.tokenizer.mask_grid, code,
                                                          np.int32))[0])

  # ------------------------------------------------------------------ tasks
  def _encode(self, task, annotation, weak=False):
    try:
      return self.tokenizer.encode_target(task, annotation, weak=weak)
    except ValueError:
      if self.train:
        raise
      return None  # An evaluation label outside the training label set.

  def _ave(self, clip, ex):
    start, end = int(ex["start"]), int(ex["end"])
    ann = {"label": ex["category"], "start": start, "end": end} if end > start \
        else {"label": None, "start": 0, "end": 0}
    return self.tokenizer.encode_prompt("ave"), self._encode("ave", ann)

  def _avvp(self, clip, ex):
    rows = [("audio", c, int(s), int(e)) for c, (s, e) in
            zip(ex["audio_labels"], np.asarray(ex["audio_spans"]).reshape(-1, 2))]
    rows += [("visual", c, int(s), int(e)) for c, (s, e) in
             zip(ex["visual_labels"], np.asarray(ex["visual_spans"]).reshape(-1, 2))]
    if rows or not self.train:
      return self.tokenizer.encode_prompt("avvp"), self._dense_target(rows, ex)
    return (self.tokenizer.encode_prompt("avvp", weak=True),
            self._encode("avvp", list(ex["weak_labels"]), weak=True))

  def _dense_target(self, rows, ex):
    if not rows and not self.train:
      return None  # No dense annotation to compare with.
    try:
      rows = tokens.canonical_avvp(rows, self.weak_classes)
    except ValueError:
      if self.train:
        raise
      return None
    rows = rows[:self.tokenizer.max_avvp_groups]
    while True:
      target = self.tokenizer.encode_target("avvp", rows)
      if len(target) <= self.max_target_len or len(rows) <= 1:
        return target
      rows = rows[:-1]

  def _avqa(self, clip, ex):
    return (self.tokenizer.encode_prompt("avqa", question=ex["question"]),
            self._encode("avqa", ex["answer"]))

  def _ssl(self, clip, ex):
    box = union_box(clip["boxes"])
    return self.tokenizer.encode_prompt("ssl"), None if box is None else \
        self.tokenizer.encode_target("ssl", box)

  def _avs(self, clip, ex):
    k = int(clip["mask_frame"])
    prompt = self.tokenizer.encode_prompt("avs", second=k)
    annotated = np.asarray(ex["mask_annotated"], bool)
    if self.mask_codes is None or not annotated[k]:
      return prompt, None
    codes = self.mask_codes(ex["id"], k)
    return prompt, None if codes is None else \
        self.tokenizer.encode_target("avs", np.asarray(codes, np.int32))

  def _weak(self, ex):
    weak = np.zeros((len(self.weak_classes),), np.float32)
    if self.task == "ave" and self.class_labels_train_mil:
      # The clip's event class, where it is one of LLP's, as a weak label of the MIL head.
      category = str(ex["category"])
      if int(ex["end"]) > int(ex["start"]) and category in self._weak_index:
        weak[self._weak_index[category]] = 1.0
        return weak, True
      return weak, False
    if self.task != "avvp":
      return weak, False
    for c in ex["weak_labels"]:
      if c in self._weak_index:
        weak[self._weak_index[c]] = 1.0
      elif self.train:
        raise ValueError(f"LLP weak label {c!r} of {ex.get('id')!r} is not in the tokenizer's "
                         "avvp label set; rebuild the tokenizer from this data")
    return weak, bool(len(ex["weak_labels"]))


# The fields of a training example and of a batch (with a leading batch axis).
MODEL_FIELDS = ("frames", "log_mel", "segment_mask", "prompt_tokens", "target_tokens",
                "target_weights", "task_id", "weak_labels", "has_weak", "focus_segment",
                "focus_map", "has_focus_map", "event_segments", "has_event_segments")
# Side of `focus_map`: the annotated mask of the focus frame as cell fractions on this grid
# (the map loss area-averages it onto the model's patch grid).
MAP_GRID = 16
# Extra fields of evaluation examples: where the example comes from, and whether it is real.
EVAL_FIELDS = ("example_index", "frame_index", "valid")


@dataclasses.dataclass(frozen=True)
class ModelExample:
  """Clip -> the fixed-shape model example (T segments, padding has segment_mask False):

    frames uint8[T, S, S, 3], log_mel float32[T, F, M], segment_mask bool[T],
    prompt_tokens int32[Lp], target_tokens int32[Lt], target_weights float32[Lt],
    task_id int32[], weak_labels float32[C], has_weak bool[], focus_segment int32[],
    focus_map float32[G, G] (fraction of each cell covered by the focus frame's mask, AVS, or
    by its boxes, SSL with boxes; zeros elsewhere), has_focus_map bool[], event_segments float32[T] (1 in the seconds of
    the clip's event where its class is a MIL weak label: AVE), has_event_segments bool[]
  and with `eval_fields`: example_index int32[] (position in the split's source, see
  `ShardSource`), frame_index int32[] (AVS: the stored frame of the target mask, else -1),
  valid bool[] (False for padding examples of the last evaluation batch).
  """

  task: str
  num_segments: int
  eval_fields: bool = False

  random = False

  def __call__(self, clip: dict) -> dict[str, np.ndarray]:
    t = self.num_segments
    s = clip["frames"].shape[0]
    frames = np.zeros((t,) + clip["frames"].shape[1:], np.uint8)  # [T, S, S, 3]
    frames[:s] = clip["frames"]
    log_mel = np.zeros((t,) + clip["log_mel"].shape[1:], np.float32)  # [T, F, M]
    log_mel[:s] = clip["log_mel"]
    out = {
        "frames": frames, "log_mel": log_mel, "segment_mask": np.arange(t) < s,
        "prompt_tokens": clip["prompt_tokens"], "target_tokens": clip["target_tokens"],
        "target_weights": clip["target_weights"], "task_id": np.int32(task_id(self.task)),
        "weak_labels": clip["weak_labels"], "has_weak": np.bool_(clip["has_weak"]),
        "focus_segment": np.int32(clip["focus"]),
    }
    mask = clip.get("mask")
    if mask is None and len(clip.get("boxes", ())):
      mask = boxes_mask(clip["boxes"])
    out["focus_map"], out["has_focus_map"] = focus_map(mask)
    start, end = clip.get("event_span", (0, 0))
    out["event_segments"] = ((np.arange(t) >= start) & (np.arange(t) < end)).astype(np.float32)
    out["has_event_segments"] = np.bool_(end > start)
    if self.eval_fields:
      out.update(example_index=np.int32(clip["example_index"]),
                 frame_index=np.int32(clip["mask_frame"]), valid=np.bool_(True))
    return out


def boxes_mask(boxes: np.ndarray, size: int = 8 * MAP_GRID) -> np.ndarray | None:
  """Normalized boxes float[B, 4] (x0, y0, x1, y1) -> bool[size, size], True inside any box
  (None when no box is left after cleaning)."""
  boxes = transforms.clean_boxes(boxes)
  if not len(boxes):
    return None
  centres = (np.arange(size) + 0.5) / size  # [size] pixel centres
  inside_x = (centres >= boxes[:, None, 0]) & (centres < boxes[:, None, 2])  # [B, size]
  inside_y = (centres >= boxes[:, None, 1]) & (centres < boxes[:, None, 3])  # [B, size]
  return np.any(inside_y[:, :, None] & inside_x[:, None, :], axis=0)  # [size, size]


def focus_map(mask: np.ndarray | None, grid: int = MAP_GRID) -> tuple[np.ndarray, np.bool_]:
  """bool[H, W] mask (or None) -> (float32[grid, grid] covered fraction per cell, has_map).

  An empty or missing mask gives zeros and False (no supervision of the map)."""
  if mask is None or not np.any(mask):
    return np.zeros((grid, grid), np.float32), np.bool_(False)
  image = Image.fromarray(np.asarray(mask, np.float32), mode="F")
  cells = np.asarray(image.resize((grid, grid), resample=Image.BOX), np.float32)
  return np.clip(cells, 0.0, 1.0), np.bool_(True)


# ----------------------------------------------------------------------------- label sets
def _iter_records(dataset_path: str, split: str) -> Iterator[dict]:
  """Decoded stored records of a split, in order (grouped datasets: one per video)."""
  info = shards.load_info(dataset_path)
  if split not in info["splits"]:
    raise ValueError(f"split {split!r} is not converted in {dataset_path}; converted splits: "
                     f"{sorted(info['splits'])}")
  files = [f"{os.path.join(dataset_path, s['file'])}[0:{s['num_records']}]"
           for s in info["splits"][split]["shards"] if s["num_records"] > 0]
  if not files:
    return
  source = array_record_data_source.ArrayRecordDataSource(files)
  for i in range(len(source)):
    yield records.decode(source[i])


def _ordered(seen: list[str], official: tuple[str, ...]) -> tuple[str, ...]:
  """The official list when it holds every seen label (keeps the official index order);
  otherwise the seen labels sorted."""
  unique = set(seen)
  return tuple(official) if unique <= set(official) else tuple(sorted(unique))


def collect_label_sets(shards_dir: str, datasets: Mapping[str, str] | None = None,
                       split: str = "train") -> tuple[dict[str, tuple[str, ...]], list[str]]:
  """Label sets and extra text for `tokens.Tokenizer.build`, from converted training data.

  Args:
    shards_dir: root of the converted datasets.
    datasets: task -> dataset for the labelled tasks (default ave/llp/music_avqa); a task
      whose dataset is not converted gets the official label set.
  Returns:
    ({"ave": AVE categories, "avvp": LLP classes (weak and dense labels), "avqa": answers},
     extra_text = the question texts). AVE and LLP classes come in the official order when
    the data only uses official names (else sorted); answers in first-appearance order, as
    the official MUSIC-AVQA answer list is built.
  """
  datasets = dict(datasets or {"ave": "ave", "avvp": "llp", "avqa": "music_avqa"})
  label_sets = dict(tokens.OFFICIAL_LABEL_SETS)
  extra: list[str] = []
  for task, name in datasets.items():
    path = os.path.join(shards_dir, name)
    if not (epath.Path(path) / shards.INFO_FILE).exists():
      continue
    seen: list[str] = []
    for record in _iter_records(path, split):
      if task == "ave":
        seen.append(record["category"])
      elif task == "avvp":
        seen += list(record["weak_labels"]) + list(record["audio_labels"]) + \
            list(record["visual_labels"])
      else:
        for q in record["questions"]:
          seen.append(q["answer"])
          extra.append(q["question"])
    if task == "avqa":
      label_sets[task] = tuple(dict.fromkeys(seen))
    else:
      label_sets[task] = _ordered(seen, tokens.OFFICIAL_LABEL_SETS[task])
    if not label_sets[task]:
      raise ValueError(f"{path}/{split} holds no {task} labels; convert its training split")
  return label_sets, extra


def build_tokenizer(config):
  """A tokenizer from the converted training data of config.data.shards_dir (deterministic)."""
  datasets = {t: config.tasks[t].dataset for t in ("ave", "avvp", "avqa")}
  label_sets, extra = collect_label_sets(config.data.shards_dir, datasets,
                                         config.data.train_split)
  return tokens.Tokenizer.build(label_sets, extra, max_time=int(config.tokens.max_time),
                                num_loc_bins=int(config.tokens.num_loc_bins),
                                num_mask_codes=int(config.tokens.num_mask_codes))


def load_or_build_tokenizer(config, workdir: str | os.PathLike | None = None):
  """The run's tokenizer: loaded from W/tokenizer/ when present, else built from the data and
  (by process 0) saved there, so a resumed run and evaluation use the same vocabulary."""
  path = epath.Path(workdir) / TOKENIZER_DIR if workdir is not None else None
  if path and (path / "tokenizer.json").exists():
    return tokens.Tokenizer.load(path)
  tok = build_tokenizer(config)
  if path:
    if jax.process_index() == 0:
      tok.save(path)
  return tok
