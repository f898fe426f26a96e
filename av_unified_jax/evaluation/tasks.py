"""Per-task evaluation: from one test example and the model's outputs to the official metric.

Each task is a class (`TASKS` maps a task name to it) that owns four steps:

  ground_truth(example) -> dict        the annotation fields of a converted example (schema.py
                                       names), frames and audio dropped
  interpret(tokens, aux, queries) -> list[dict]
                                       decoded tokens int32[B, L] (or None when the task's
                                       source needs no decoding), auxiliary outputs
                                       ({name: float32[B, ...]}) and one `row_query` per row
                                       (which frame, how many valid seconds) -> one output
                                       per row (AVS: one row per annotated frame)
  score(gts, outputs) -> {metric: value}
                                       `outputs[i]` is the list of outputs of example i's
                                       queries; the metric names are those returned by
                                       `av_unified_jax.metrics`

The output of each task (`interpret`'s) is also what `baselines` produce, so a trivial
predictor is scored by exactly the same code:
  ave  {"segments": int32[T]}           class index per segment, background = 28
  avvp {"SO_a": int64[25, T], "SO_v": int64[25, T]}    0/1 predictions, rows in class order
  avqa {"answer": str | None}
  ssl  {"heatmap": float32[224, 224], "box": [x0, y0, x1, y1] | None}
  avs  {"logits": float32[H, W]}        mask logits at the ground-truth mask size

Class indices follow the tokenizer's label sets (the converted dataset's class order); a label
set smaller than the benchmark's (e.g. the demo's) fills the first rows of the official
29-way (AVE) and 25-row (LLP) arrays, and the unused rows never count.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from av_unified_jax import atomic, metrics
from av_unified_jax.data import decode_masks, schema
from av_unified_jax.mask_tokenizer.coding import upsample_logits
from av_unified_jax.tokens import InvalidSequenceError

AVE_OUTPUTS = metrics.AVE_BACKGROUND_INDEX + 1  # 29
LLP_ROWS = len(metrics.LLP_CLASSES)  # 25
SSL_MAP_SIZE = 224
AVS_VIDEOS_PER_BATCH = 4  # The official AVSBench test batch (20 frames).
AVS_EMPTY_LOGIT = -10.0  # Mask logit of an undecodable AVS answer (all background).


def _decode(tokenizer, task: str, tokens, weak: bool = False):
  """tokens int32[L] -> the task's annotation, or None if they break the grammar."""
  try:
    return tokenizer.decode_target(task, np.asarray(tokens), weak=weak)
  except InvalidSequenceError:
    return None


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
  """Maximal runs of 1s of a 0/1 row int[T], as [start, end) pairs."""
  padded = np.concatenate([[0], np.asarray(row, np.int64), [0]])
  edges = np.flatnonzero(np.diff(padded))  # starts at even, ends at odd positions
  return [(int(s), int(e)) for s, e in zip(edges[::2], edges[1::2], strict=True)]


def _write_json(path: Path, value) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  atomic.write_text(path, json.dumps(value, indent=1, sort_keys=True) + "\n")


def _png(array_uint8: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array_uint8).save(buf, format="PNG")
  return buf.getvalue()


def _video_id(example) -> str:
  """The video an example comes from (bootstrap intervals resample videos)."""
  return str(example.get("video_id", example["id"]))


def _check_classes(task: str, classes: Sequence[str], limit: int) -> tuple[str, ...]:
  if len(classes) > limit:
    raise ValueError(f"{task}: the label set has {len(classes)} classes, more than the "
                     f"official metric's {limit}; evaluate a dataset with at most {limit} classes")
  return tuple(classes)


def row_query(gt: Mapping[str, Any], focus_segment: int, frame_index: int,
              valid_segments: int) -> dict:
  """What `interpret` needs to know about one model row besides its outputs: the focus and
  the number of valid segments (SSL maps), the stored frame and mask size (AVS), the segment
  count of the ground truth (AVVP)."""
  query = {"focus_segment": int(focus_segment), "frame": int(frame_index),
           "valid_segments": int(valid_segments)}
  if "masks" in gt:
    query["size"] = int(gt["masks"].shape[-1])
  if "GT_a" in gt:
    query["num_segments"] = int(gt["GT_a"].shape[1])
  return query


def _class_index(task: str, classes: Sequence[str], label: str, rows: int) -> int:
  """Index of a ground-truth label; a label outside the label set gets the spare index
  `len(classes)` (never predicted), or raises when the official rows are all in use."""
  if label in classes:
    return classes.index(label)
  if len(classes) < rows:
    return len(classes)
  raise ValueError(f"{task}: test label {label!r} is not in the tokenizer's label set of "
                   f"{len(classes)} classes; build the tokenizer from data that has it")


class EvalTask:
  """Shared defaults. Subclasses set `name`, `aux_keys` and `decodes`."""

  name = ""
  aux_keys: tuple[str, ...] = ()  # Auxiliary model outputs `interpret` reads.
  decodes = True  # Whether `interpret` needs decoded tokens.

  def __init__(self, tokenizer, eval_config=None, mask_decoder=None):
    self.tokenizer = tokenizer
    self.eval_config = eval_config
    self.mask_decoder = mask_decoder

  def write(self, out_dir: Path, gts: list[dict], outputs: list[list[dict]]) -> None:
    _write_json(out_dir / "predictions.json", self.readable(gts, outputs))

  def readable(self, gts, outputs) -> dict:
    raise NotImplementedError


# ----------------------------------------------------------------------------- AVE
class AveTask(EvalTask):
  """AVE: the decoded span -> per-segment 29-way one-hot scores -> `ave_accuracy`."""

  name = "ave"

  def __init__(self, tokenizer, eval_config=None, mask_decoder=None):
    super().__init__(tokenizer, eval_config, mask_decoder)
    self.classes = _check_classes("ave", tokenizer.label_sets["ave"], AVE_OUTPUTS - 1)

  def ground_truth(self, example) -> dict:
    """Segment labels int32[T] from the example's (category, start, end); background = 28."""
    t = int(np.shape(example["log_mel"])[0])
    ann = {"label": str(example["category"]), "start": int(example["start"]),
           "end": int(example["end"])}
    return {"id": str(example["id"]), "video_id": _video_id(example),
            "segments": self.segment_labels(ann, t)}

  def segment_labels(self, ann, num_segments: int) -> np.ndarray:
    """int32[T] class index per segment, background 28; the event covers [start, end).

    A test label missing from the tokenizer's label set (a class absent from the training
    data) gets a spare index that no prediction uses, so its segments always count as wrong.
    """
    label = ann.get("label")
    index = metrics.AVE_BACKGROUND_INDEX if label is None else _class_index(
        "ave", self.classes, label, AVE_OUTPUTS - 1)
    seg = np.full((num_segments,), metrics.AVE_BACKGROUND_INDEX, np.int32)
    seg[int(ann["start"]):int(ann["end"])] = index
    return seg

  def interpret(self, tokens, aux, queries) -> list[dict]:
    del aux, queries
    out = []
    for row in np.asarray(tokens):
      ann = _decode(self.tokenizer, "ave", row)
      valid = ann is not None
      ann = ann if valid else {"label": None, "start": 0, "end": 0}
      out.append({"annotation": ann, "valid": valid})
    return out

  def _segments(self, gt, out) -> np.ndarray:
    if "segments" in out:
      return np.asarray(out["segments"], np.int32)
    return self.segment_labels(out["annotation"], len(gt["segments"]))

  def score(self, gts, outputs) -> dict:
    labels = np.eye(AVE_OUTPUTS, dtype=np.float32)[np.stack([g["segments"] for g in gts])]
    pred = np.stack([self._segments(g, o[0]) for g, o in zip(gts, outputs, strict=True)])
    scores = np.eye(AVE_OUTPUTS, dtype=np.float32)[pred]  # [N, T, 29]
    return {"accuracy": metrics.ave_accuracy(scores, labels)}

  def segment_names(self, seg) -> list[str]:
    return ["background" if i == metrics.AVE_BACKGROUND_INDEX else
            self.classes[i] if i < len(self.classes) else "(class outside the label set)"
            for i in seg]

  def readable(self, gts, outputs) -> dict:
    return {g["id"]: {"predicted": self.segment_names(self._segments(g, o[0])),
                      "target": self.segment_names(g["segments"])}
            for g, o in zip(gts, outputs, strict=True)}


# ----------------------------------------------------------------------------- AVVP
class AvvpTask(EvalTask):
  """AVVP: SO_a / SO_v from the MIL head (`avvp_predictions`) or from the decoded parse ->
  `avvp_dataset_scores`. `eval_config.avvp_source` picks "mil" or "decoded"."""

  name = "avvp"

  def __init__(self, tokenizer, eval_config=None, mask_decoder=None):
    super().__init__(tokenizer, eval_config, mask_decoder)
    self.classes = _check_classes("avvp", tokenizer.label_sets["avvp"], LLP_ROWS)
    self.source = getattr(eval_config, "avvp_source", "mil") if eval_config else "mil"
    if self.source not in ("mil", "decoded"):
      raise ValueError(f"eval.avvp_source={self.source!r}: use 'mil' or 'decoded'")
    self.decodes = self.source == "decoded"
    self.aux_keys = ("mil_frame_probs", "mil_video_probs") if self.source == "mil" else ()

  def _matrix(self, labels, spans, num_segments: int) -> np.ndarray:
    """GT[class, int(onset):int(offset)] = 1 per row (`avvp_ground_truth`'s rule)."""
    out = np.zeros((LLP_ROWS, num_segments), np.int64)
    for label, (onset, offset) in zip(labels, np.reshape(spans, (-1, 2)), strict=True):
      out[_class_index("avvp", self.classes, label, LLP_ROWS), int(onset):int(offset)] = 1
    return out

  def ground_truth(self, example) -> dict:
    t = int(np.shape(example["log_mel"])[0])
    return {"id": str(example["id"]), "video_id": _video_id(example),
            "GT_a": self._matrix(example["audio_labels"], example["audio_spans"], t),
            "GT_v": self._matrix(example["visual_labels"], example["visual_spans"], t)}

  def ground_truth_from_rows(self, example, audio_rows, visual_rows) -> dict:
    """The ground truth of `example` from (class, start, end) rows given separately (e.g. a
    demo's composed annotation for a split that stores only weak labels)."""
    t = int(np.shape(example["log_mel"])[0])

    def matrix(rows):
      rows = [tuple(r) for r in rows]
      return self._matrix([r[0] for r in rows], [r[1:] for r in rows], t)

    return {"id": str(example["id"]), "video_id": _video_id(example),
            "GT_a": matrix(audio_rows), "GT_v": matrix(visual_rows)}

  def interpret(self, tokens, aux, queries) -> list[dict]:
    if self.source == "mil":
      return [self._from_mil(f, v) for f, v in
              zip(np.asarray(aux["mil_frame_probs"]), np.asarray(aux["mil_video_probs"]),
                  strict=True)]
    return [self._from_parse(_decode(self.tokenizer, "avvp", row), q["num_segments"])
            for row, q in zip(np.asarray(tokens), queries, strict=True)]

  def _from_mil(self, frame_probs, video_probs) -> dict:
    """frame_probs float32[T, 2, C] (audio, visual), video_probs float32[C] -> SO matrices."""
    c = len(self.classes)
    so_a, so_v, _ = metrics.avvp_predictions(video_probs[:c], frame_probs[:, 0, :c],
                                             frame_probs[:, 1, :c])  # [C, T] each
    pad = ((0, LLP_ROWS - c), (0, 0))
    return {"SO_a": np.pad(so_a, pad), "SO_v": np.pad(so_v, pad)}

  def _from_parse(self, rows, num_segments: int) -> dict:
    rows = rows or []
    mats = {"audio": np.zeros((LLP_ROWS, num_segments), np.int64),
            "visual": np.zeros((LLP_ROWS, num_segments), np.int64)}
    for modality, label, start, end in rows:
      mats[modality][self.classes.index(label), start:end] = 1
    return {"SO_a": mats["audio"], "SO_v": mats["visual"], "valid": rows is not None}

  def score(self, gts, outputs) -> dict:
    videos = [{"SO_a": o[0]["SO_a"], "SO_v": o[0]["SO_v"], "GT_a": g["GT_a"], "GT_v": g["GT_v"]}
              for g, o in zip(gts, outputs, strict=True)]
    return metrics.avvp_dataset_scores(videos)

  def events(self, mat) -> list[dict]:
    return [{"class": self.classes[c], "start": s, "end": e}
            for c in range(len(self.classes)) for s, e in _runs(mat[c])]

  def readable(self, gts, outputs) -> dict:
    return {g["id"]: {"audio": self.events(o[0]["SO_a"]), "visual": self.events(o[0]["SO_v"]),
                      "target_audio": self.events(g["GT_a"]),
                      "target_visual": self.events(g["GT_v"])}
            for g, o in zip(gts, outputs, strict=True)}


# ----------------------------------------------------------------------------- AVQA
class AvqaTask(EvalTask):
  """MUSIC-AVQA: decoded answer string -> answer index -> `avqa_accuracy` (pooled counts)."""

  name = "avqa"

  def __init__(self, tokenizer, eval_config=None, mask_decoder=None):
    super().__init__(tokenizer, eval_config, mask_decoder)
    self.answers = tuple(tokenizer.label_sets["avqa"])

  def ground_truth(self, example) -> dict:
    return {"id": str(example["id"]), "video_id": _video_id(example),
            "question_id": int(example["question_id"]),
            "question": str(example["question"]), "answer": str(example["answer"]),
            "type": tuple(str(t) for t in example["question_type"])}

  def interpret(self, tokens, aux, queries) -> list[dict]:
    del aux, queries
    return [{"answer": _decode(self.tokenizer, "avqa", row)} for row in np.asarray(tokens)]

  def _index(self, answer, missing: int) -> int:
    """Answer string -> index in the answer set; `missing` for None or an answer outside it."""
    return self.answers.index(answer) if answer in self.answers else missing

  def score(self, gts, outputs) -> dict:
    # A broken prediction is -1; a test answer outside the training answers is -2 (so it is
    # never matched: the model cannot produce it).
    predicted = np.array([self._index(o[0]["answer"], -1) for o in outputs], np.int64)
    target = np.array([self._index(g["answer"], -2) for g in gts], np.int64)
    result = metrics.avqa_accuracy([g["type"] for g in gts], predicted, target)
    return {k: v for k, v in result.items() if v is not None}  # Groups with no questions.

  def readable(self, gts, outputs) -> dict:
    return {str(g["question_id"]): {"question": g["question"], "type": list(g["type"]),
                                    "predicted": o[0]["answer"], "answer": g["answer"]}
            for g, o in zip(gts, outputs, strict=True)}


# ----------------------------------------------------------------------------- SSL
def box_heatmap(box, size: int = SSL_MAP_SIZE) -> np.ndarray:
  """float32[size, size] indicator of a normalised box (the GT map's pixel rule)."""
  heat = np.zeros((size, size), np.float32)
  x0, y0, x1, y1 = (int(size * min(max(float(v), 0.0), 1.0)) for v in box)
  heat[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = 1.0
  return heat


def upsample_maps(maps, size: int) -> np.ndarray:
  """Bilinear (half-pixel centres, like cv2 INTER_LINEAR) resize float[B, h, w] ->
  float32[B, size, size]."""
  return np.asarray(upsample_logits(np.asarray(maps, np.float32), size))


def sharpen_heatmaps(heat, cut: float = 1.0) -> np.ndarray:
  """float32[B, S, S] -> the part of each map above `cut` times its own mean (zero elsewhere).

  The map is a softmax over a coarse patch grid, smooth after upsampling; binarised at its
  median (the official cIoU rule) it would always mark half the frame. Cut near its mean, the
  cells the map prefers keep their values and the rest become ties at zero, which the
  median rule leaves out, so the marked area follows what the map knows. `cut` <= 0 leaves
  the map as it is."""
  heat = np.asarray(heat, np.float32)
  if cut <= 0:
    return heat
  return np.maximum(heat - cut * heat.mean(axis=(1, 2), keepdims=True), 0.0)


class SslTask(EvalTask):
  """VGG-SS: heatmap (the spatial perception maps averaged over the clip's valid seconds,
  bilinear to 224 and cut at `eval_config.ssl_heatmap_cut` times its mean by
  `sharpen_heatmaps`, or the decoded box) -> `ciou`
  against `vggss_gt_map` -> `localization_summary`. `eval_config.ssl_source` picks "map" or
  "box"; `eval_config.ciou_protocol` the binarisation ("lvs" or "ezvsl")."""

  name = "ssl"

  def __init__(self, tokenizer, eval_config=None, mask_decoder=None):
    super().__init__(tokenizer, eval_config, mask_decoder)
    cfg = eval_config
    self.source = getattr(cfg, "ssl_source", "map") if cfg else "map"
    self.protocol = getattr(cfg, "ciou_protocol", "lvs") if cfg else "lvs"
    self.cut = float(getattr(cfg, "ssl_heatmap_cut", 1.0)) if cfg else 1.0
    if self.source not in ("map", "box"):
      raise ValueError(f"eval.ssl_source={self.source!r}: use 'map' or 'box'")
    self.decodes = self.source == "box"
    self.aux_keys = ("loc_maps",) if self.source == "map" else ()

  def ground_truth(self, example) -> dict:
    return self.ground_truth_from_boxes(example, example["boxes"])

  def ground_truth_from_boxes(self, example, boxes) -> dict:
    """The ground truth of `example` with the normalised [x0, y0, x1, y1] `boxes` (the stored
    ones, or given separately for a split that stores none)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return {"id": str(example["id"]), "video_id": _video_id(example), "boxes": boxes.tolist(),
            "gt_map": metrics.vggss_gt_map(boxes.tolist())}

  def interpret(self, tokens, aux, queries) -> list[dict]:
    if self.source == "map":
      maps = np.asarray(aux["loc_maps"])  # [B, T, h, w]
      # The clip's map: the mean over its valid seconds, as the official tests localise with
      # the whole clip's audio (LVS: 10 s) against the annotated frame.
      mean = np.stack([m[:max(1, q["valid_segments"])].mean(axis=0)
                       for m, q in zip(maps, queries, strict=True)])  # [B, h, w]
      heat = sharpen_heatmaps(upsample_maps(mean, SSL_MAP_SIZE), self.cut)
      return [{"heatmap": h, "box": None} for h in heat]
    out = []
    for row in np.asarray(tokens):
      box = self._box(row)
      out.append({"heatmap": box_heatmap(box), "box": list(box)})
    return out

  def _box(self, row) -> tuple[float, ...]:
    """Decoded box; corners out of order are sorted, a broken sequence gives the full frame."""
    box = _decode(self.tokenizer, "ssl", row)
    if box is not None:
      return box
    layout = self.tokenizer.layout
    if all(layout.kind(int(t)) == "loc" for t in row[:4]):
      x0, y0, x1, y1 = (float(layout.token_coord(int(t))) for t in row[:4])
      return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    return (0.0, 0.0, 1.0, 1.0)

  def cious(self, gts, outputs) -> np.ndarray:
    return np.array([metrics.ciou(o[0]["heatmap"], g["gt_map"], self.protocol)
                     for g, o in zip(gts, outputs, strict=True)])

  def score(self, gts, outputs) -> dict:
    summary = metrics.localization_summary(self.cious(gts, outputs))
    return {k: v for k, v in summary.items() if np.isfinite(v)}

  def write(self, out_dir: Path, gts, outputs) -> None:
    cious = self.cious(gts, outputs)
    readable = {}
    for g, o, c in zip(gts, outputs, cious, strict=True):
      heat = o[0]["heatmap"]
      span = float(heat.max() - heat.min())
      gray = ((heat - heat.min()) / (span if span > 0 else 1.0) * 255).astype(np.uint8)
      name = schema.file_name(g["id"], ".png")
      (out_dir / "heatmaps").mkdir(parents=True, exist_ok=True)
      (out_dir / "heatmaps" / name).write_bytes(_png(gray))
      readable[g["id"]] = {"heatmap": f"heatmaps/{name}", "box": o[0]["box"],
                           "target_boxes": g["boxes"], "ciou": float(c)}
    _write_json(out_dir / "predictions.json", readable)


# ----------------------------------------------------------------------------- AVS
class AvsTask(EvalTask):
  """AVSBench: per annotated frame, decoded mask codes -> mask tokenizer decoder -> logits,
  bilinear to the ground-truth mask size -> `avs_test_scores` over batches of 4 videos.

  `mask_decoder(codes int32[B, Kh, Kw]) -> float32[B, S, S]` mask logits is required.
  """

  name = "avs"

  def ground_truth(self, example) -> dict:
    masks = decode_masks(example)  # bool[5, H, W]
    annotated = np.asarray(example["mask_annotated"], bool)
    return {"id": str(example["id"]), "video_id": _video_id(example), "masks": masks,
            "annotated": annotated}

  def interpret(self, tokens, aux, queries) -> list[dict]:
    del aux
    if self.mask_decoder is None:
      raise ValueError("avs evaluation needs the mask tokenizer (mask_decoder) to turn codes "
                       "into masks")
    grid = self.tokenizer.mask_grid
    codes, valid = [], []
    for row in np.asarray(tokens):
      c = _decode(self.tokenizer, "avs", row)
      valid.append(c is not None)
      codes.append(c if c is not None else np.zeros(grid, np.int32))
    logits = np.asarray(self.mask_decoder(np.stack(codes)))  # [B, S, S]
    out = []
    for q, lg, ok in zip(queries, logits, valid, strict=True):
      full = upsample_maps(lg[None], q["size"])[0] if ok else np.full(
          (q["size"], q["size"]), AVS_EMPTY_LOGIT, np.float32)
      out.append({"logits": full, "frame": q["frame"]})
    return out

  def batches(self, gts, outputs) -> list[tuple[np.ndarray, np.ndarray]]:
    """(logits float32[N, H, W], target bool[N, H, W]) per group of 4 videos."""
    frames = [(np.stack([o["logits"] for o in outs]),
               np.stack([g["masks"][o["frame"]] for o in outs]))
              for g, outs in zip(gts, outputs, strict=True) if outs]
    out = []
    for i in range(0, len(frames), AVS_VIDEOS_PER_BATCH):
      group = frames[i:i + AVS_VIDEOS_PER_BATCH]
      out.append((np.concatenate([f[0] for f in group]), np.concatenate([f[1] for f in group])))
    return out

  def score(self, gts, outputs) -> dict:
    return metrics.avs_test_scores(self.batches(gts, outputs))

  def write(self, out_dir: Path, gts, outputs) -> None:
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    readable = {}
    for g, outs in zip(gts, outputs, strict=True):
      entry = {}
      for o in outs:
        name = schema.file_name(g["id"], f"_{o['frame']}.png")
        mask = (o["logits"] > 0).astype(np.uint8) * 255  # sigmoid > 0.5
        (out_dir / "masks" / name).write_bytes(_png(mask))
        iou = metrics.avs_frame_iou(o["logits"][None], g["masks"][o["frame"]][None])[0]
        entry[str(o["frame"])] = {"mask": f"masks/{name}", "iou": float(iou)}
      readable[g["id"]] = entry
    _write_json(out_dir / "predictions.json", readable)


TASKS: dict[str, type[EvalTask]] = {
    "ave": AveTask,
    "avvp": AvvpTask,
    "avqa": AvqaTask,
    "ssl": SslTask,
    "avs": AvsTask,
}
