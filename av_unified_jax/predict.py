"""Prediction on one video with a trained run, and a picture of the answer.

    python main.py --mode=predict --workdir=W --video=clip.mp4 --task=ave --out=DIR
    python main.py --mode=predict --workdir=W --video=clip.mp4 --task=avqa \
        --question="How many instruments are sounding?" --out=DIR

The video is decoded by the same media code as the dataset conversion (`data.media`, with
the conversion settings of the run's training data), turned into model inputs by the input
pipeline's evaluation transforms, run through the model like an evaluation batch, and
interpreted by `evaluation.tasks`. Writes:

  DIR/prediction.json   the answer: AVE segment labels and the event span; AVVP audio and
                        visual events; AVQA question and answer; SSL box and heatmap peak;
                        AVS foreground fraction per second (the masks are DIR/mask_<k>.png)
  DIR/prediction.png    an event timeline (AVE, AVVP), the heatmap or the masks over the frames
                        (SSL, AVS), or the question and answer under the frames (AVQA)
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from etils import epath
from PIL import Image

from av_unified_jax import atomic, paths, plots, runs, sharding
from av_unified_jax.data import media as media_lib
from av_unified_jax.data import pipeline, schema, shards
from av_unified_jax.data.params import ConvertParams
from av_unified_jax.evaluation import tasks as eval_tasks
from av_unified_jax.evaluation.evaluator import avs_token_groups
from av_unified_jax.evaluation.runner import ModelRunner, to_global
from av_unified_jax.tokens import TASKS
AVS_SECONDS = 5  # AVSBench clips: one mask per second of the first 5 s.


class PredictError(ValueError):
  """Bad input for prediction (missing video, no audio, too short, ...); one-line message."""


@dataclasses.dataclass
class Media:
  """A decoded video: frames uint8[S, H, W, 3] (one per second), log-mel float16[T, F, M],
  and the number of valid seconds."""

  frames: np.ndarray
  log_mel: np.ndarray
  num_segments: int
  jpeg_frames: list[bytes]


# ----------------------------------------------------------------------------- media
def conversion_params(config, task: str):
  """The conversion settings of the run's training data for `task` (`ConvertParams`); the
  defaults with the config's image size when the converted data is not at hand."""
  path = epath.Path(config.data.shards_dir or ".") / config.tasks[task].dataset
  fields = {f.name for f in dataclasses.fields(ConvertParams)}
  try:
    stored = shards.load_info(path).get("params", {})
  except (FileNotFoundError, ValueError):
    stored = {}
  values = {k: v for k, v in stored.items() if k in fields}
  values.setdefault("image_size", int(config.data.image_size))
  values["fps"] = 1  # One frame per second is what the model reads.
  return ConvertParams(**values)


def load_media(video: str | Path, seconds: int, params) -> Media:
  """Decodes the first `seconds` of `video` (frames and log-mel), or raises PredictError."""
  video = Path(video)
  if not video.is_file():
    raise PredictError(f"--video={video}: file not found; give the path of a video file")
  try:
    clip = media_lib.load_video_clip(str(video.parent), video.name, seconds, params)
  except media_lib.BadMedia as e:
    reason = str(e)
    hint = {"no audio stream": "give a video with a sound track",
            "no video stream": "give a video, not an audio file",
            "too short": "give a clip of at least one second",
            "truncated": "the file is cut short; re-download or re-encode it",
            "undecodable": "the file is not a video PyAV can decode"}
    what = next((h for k, h in hint.items() if reason.startswith(k)), "check the file")
    raise PredictError(f"--video={video}: {reason}; {what}") from None
  frames = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in clip.frames])
  return Media(frames, clip.log_mel, int(clip.num_segments), list(clip.frames))


def make_examples(task: str, media: Media, video_id: str, question: str | None) -> list[dict]:
  """Stored-example dicts (schema fields, empty annotations) for the pipeline's evaluation
  transforms: one per decode (AVS: one per second of the first five)."""
  base = {"id": video_id, "video_id": video_id, "frames": media.jpeg_frames,
          "log_mel": media.log_mel, "num_segments": np.int32(media.num_segments)}
  none2 = np.zeros((0, 2), np.int32)
  if task == "ave":
    return [{**base, "category": "", "start": 0, "end": 0, "annotation_row": -1}]
  if task == "avvp":
    return [{**base, "weak_labels": [], "audio_labels": [], "audio_spans": none2,
             "visual_labels": [], "visual_spans": none2}]
  if task == "avqa":
    return [{**base, "question_id": 0, "question": question, "question_template": question,
             "question_type": ["Audio-Visual", "Existential"], "answer": ""}]
  if task == "ssl":
    return [{**base, "class_name": "", "boxes": np.zeros((0, 4))}]
  seconds = min(AVS_SECONDS, media.num_segments)
  return [{**base, "category": "", "masks": [b""] * AVS_SECONDS,
           "mask_annotated": np.zeros(AVS_SECONDS, bool), "_frame_index": k}
          for k in range(seconds)]


def model_batch(config, task: str, tokenizer, examples: list[dict], batch_size: int) -> dict:
  """The pipeline's evaluation transforms on each example, stacked and padded (by repeating
  the first row) to `batch_size` rows."""
  ops = pipeline.example_transforms(config, task, tokenizer, train=False)
  rows = []
  for example in examples:
    x = example
    for op in ops:
      x = op(x, np.random.default_rng(0)) if op.random else op(x)
    rows.append(x)
  rows += [rows[0]] * (batch_size - len(rows))
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


# ----------------------------------------------------------------------------- prediction
def predict(workdir: str | Path, video: str | Path, task: str, out_dir: str | Path,
            question: str | None = None, step: int | None = None,
            overrides: dict[str, Any] | None = None) -> dict:
  """Runs the prediction and writes DIR/prediction.json and DIR/prediction.png. `overrides`
  ({dotted key: value}) may change the keys of `runs.OVERRIDES["predict"]` (eval.*,
  data.shards_dir, mesh.*) over the run's config; the model runs on whatever devices are
  present (`runs.inference_mesh`)."""
  overrides = dict(overrides or {})
  if task not in TASKS:
    raise PredictError(f"--task={task!r} is not one of {list(TASKS)}")
  if task == "avqa" and not (question and question.strip()):
    raise PredictError("--task=avqa needs --question=\"...\" (the question to answer)")
  if task != "avqa" and question:
    raise PredictError(f"--question is only for --task=avqa, not --task={task}")
  try:  # The cheap checks first: the run's config, then the video, then the checkpoint.
    config = runs.apply_overrides(runs.load_run_config(workdir), overrides, "predict")
    seconds = schema.get_spec(config.tasks[task].dataset).clip_seconds
    media = load_media(video, seconds, conversion_params(config, task))
    run = runs.load_run(workdir, step, overrides, mode="predict")
  except runs.RunError as e:
    raise PredictError(str(e)) from None
  if task == "avs" and run.mask_decoder is None:
    raise PredictError(f"--task=avs needs the run's mask tokenizer in "
                       f"{paths.as_path(workdir) / runs.MASK_TOKENIZER_DIR}; train it first")
  examples = make_examples(task, media, Path(video).stem, question)
  batch_size = max(int(run.config.eval.batch_size), len(examples))
  batch = model_batch(run.config, task, run.tokenizer, examples, batch_size)
  spec = eval_tasks.TASKS[task](run.tokenizer, run.config.eval, run.mask_decoder)
  runner = ModelRunner(run.model, run.tokenizer, run.config.eval.beam_size,
                       avs_token_groups(run.config, run.tokenizer, run.mask_decoder),
                       float(run.config.eval.avs_foreground_threshold))
  with sharding.activate(run.mesh, run.rules):
    tokens, aux = runner(spec, run.params, to_global(batch, run.mesh, run.rules))
  n = len(examples)
  queries = [{"focus_segment": int(batch["focus_segment"][i]),
              "frame": int(examples[i].get("_frame_index", -1)),
              "valid_segments": int(batch["segment_mask"][i].sum()),
              "size": int(media.frames.shape[1]), "num_segments": int(media.log_mel.shape[0])}
             for i in range(n)]
  outputs = spec.interpret(None if tokens is None else tokens[:n],
                           {k: v[:n] for k, v in aux.items()}, queries)
  answer = describe(task, spec, outputs, media, question)
  if task == "ssl":
    answer["focus_second"] = queries[0]["focus_segment"]
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  record = {"task": task, "video": str(video), "workdir": str(workdir), "step": run.step,
            "valid_seconds": media.num_segments, **answer}
  atomic.write_text(out_dir / "prediction.json", json.dumps(record, indent=1) + "\n")
  plots.draw_prediction(task, record, media.frames, outputs, out_dir)
  return record


def describe(task: str, spec, outputs: list[dict], media: Media, question) -> dict[str, Any]:
  """The JSON-able answer of `outputs` (see the module docstring)."""
  out = outputs[0]
  t = media.num_segments
  if task == "ave":
    seg = spec.segment_labels(out["annotation"], t)
    ann = out["annotation"]
    return {"event": None if ann["label"] is None else ann,
            "segments": spec.segment_names(seg)}
  if task == "avvp":
    mats = {k: out[k][:, :t] for k in ("SO_a", "SO_v")}
    return {"audio": spec.events(mats["SO_a"]), "visual": spec.events(mats["SO_v"])}
  if task == "avqa":
    return {"question": question, "answer": out["answer"]}
  if task == "ssl":
    heat = out["heatmap"]
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return {"box": out["box"], "heatmap_peak": [(x + 0.5) / heat.shape[1],
                                                (y + 0.5) / heat.shape[0]],
            "heatmap": "prediction.png"}
  masks = [{"second": o["frame"], "foreground_fraction": float(np.mean(o["logits"] > 0)),
            "mask": f"mask_{o['frame']}.png"} for o in outputs]
  return {"masks": masks}
