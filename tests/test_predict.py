"""Prediction: video decoding with the conversion code, the inputs built by the pipeline's
evaluation transforms, clear one-line errors (exit code 2) for bad input, and the pictures."""

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from av_unified_jax import metric_writers, plots, predict, tokens
from configs import tiny

import demo_cache  # noqa: I001  (tests/ helper)

ROOT = Path(__file__).resolve().parents[1]


def write_clip(path: Path, seconds: float, audio: bool = True, fps: int = 10) -> Path:
  """A small mpeg4 (+ aac) file of `seconds` with moving colour and a tone."""
  with av.open(str(path), "w", format="mp4") as out:
    video = out.add_stream("mpeg4", rate=fps)
    video.width = video.height = 32
    video.pix_fmt = "yuv420p"
    sound = None
    if audio:
      sound = out.add_stream("aac", rate=16000)
      sound.layout = "mono"
    for i in range(int(round(seconds * fps))):
      img = np.full((32, 32, 3), (i * 20) % 255, np.uint8)
      frame = av.VideoFrame.from_ndarray(img, format="rgb24")
      frame.pts = i
      out.mux(video.encode(frame))
    out.mux(video.encode())
    if sound is not None:
      n = int(seconds * 16000)
      wave = (0.3 * np.sin(np.arange(n) * 2 * np.pi * 440 / 16000)).astype(np.float32)
      for start in range(0, n, 1024):
        frame = av.AudioFrame.from_ndarray(wave[None, start:start + 1024], format="fltp",
                                           layout="mono")
        frame.sample_rate, frame.pts = 16000, start
        out.mux(sound.encode(frame))
      out.mux(sound.encode())
  return path


def params():
  return predict.conversion_params(tiny.get_config(), "ave")


def test_media_decoding_and_its_errors(tmp_path):
  media = predict.load_media(write_clip(tmp_path / "ok.mp4", 3.0), 10, params())
  assert media.num_segments == 3 and media.frames.shape == (10, 32, 32, 3)
  assert media.log_mel.shape == (10, 100, 64)
  with pytest.raises(predict.PredictError, match="file not found"):
    predict.load_media(tmp_path / "absent.mp4", 10, params())
  with pytest.raises(predict.PredictError, match="no audio stream.*sound track"):
    predict.load_media(write_clip(tmp_path / "mute.mp4", 2.0, audio=False), 10, params())
  with pytest.raises(predict.PredictError, match="too short.*at least one second"):
    predict.load_media(write_clip(tmp_path / "short.mp4", 0.5), 10, params())
  (tmp_path / "text.mp4").write_text("not a video")
  with pytest.raises(predict.PredictError, match="undecodable"):
    predict.load_media(tmp_path / "text.mp4", 10, params())


def test_model_inputs_come_from_the_evaluation_transforms(tmp_path):
  demo = demo_cache.tiny_demo()
  config = tiny.get_config()
  config.unlock()
  config.data.shards_dir = str(demo / "shards")
  config.lock()
  tok = tokens.Tokenizer.build(tokens.OFFICIAL_LABEL_SETS, ["How many sounding instruments?"])
  video = next((demo / "raw" / "ave" / "AVE").glob("*.mp4"))
  media = predict.load_media(video, 10, predict.conversion_params(config, "ave"))
  assert media.frames.shape[1] == 32  # the demo data's conversion size, from dataset_info
  batch = predict.model_batch(config, "avqa", tok, predict.make_examples(
      "avqa", media, "v", "How many sounding instruments?"), 8)
  assert batch["frames"].shape == (8, 10, 32, 32, 3) and batch["frames"].dtype == np.uint8
  want = tok.encode_prompt("avqa", question="How many sounding instruments?")
  np.testing.assert_array_equal(batch["prompt_tokens"][0, :len(want)], want)
  assert batch["task_id"][0] == tokens.TASKS.index("avqa")
  avs = predict.make_examples("avs", media, "v", None)
  batch = predict.model_batch(config, "avs", tok, avs, 8)
  np.testing.assert_array_equal(batch["focus_segment"][:5], np.arange(5))
  np.testing.assert_array_equal(batch["prompt_tokens"][:5, 0], tok.layout.task_token("avs"))


def run_main(*args):
  return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=120)


def one_line_error(result, *words):
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1, result.stderr[-2000:]
  for word in words:
    assert word in lines[0], lines[0]


def test_command_line_errors_are_one_line_with_exit_code_2(tmp_path):
  run_dir = tmp_path / "run"  # A run with its config only: enough for the input checks.
  writer = metric_writers.MetricWriter(run_dir, total_steps=1, start_step=0, tensorboard=False)
  writer.write_config(tiny.get_config())
  writer.close()
  mute = write_clip(tmp_path / "mute.mp4", 2.0, audio=False)
  short = write_clip(tmp_path / "short.mp4", 0.4)
  good = write_clip(tmp_path / "good.mp4", 2.0)
  base = ["--mode=predict", f"--workdir={run_dir}", f"--out={tmp_path / 'out'}"]
  one_line_error(run_main(*base, f"--video={tmp_path / 'nope.mp4'}", "--task=ave"),
                 "nope.mp4", "file not found")
  one_line_error(run_main(*base, f"--video={mute}", "--task=ssl"), "no audio stream")
  one_line_error(run_main(*base, f"--video={short}", "--task=avvp"), "too short")
  one_line_error(run_main(*base, f"--video={good}", "--task=segment"), "task")
  one_line_error(run_main(*base, f"--video={good}", "--task=avqa"), "--question")
  one_line_error(run_main("--mode=predict", f"--workdir={tmp_path / 'empty'}",
                          f"--video={good}", "--task=ave", f"--out={tmp_path}"),
                 "config.json not found", "train first")
  one_line_error(run_main(*base, f"--video={good}", "--task=ave"), "tokenizer", "train first")
  one_line_error(run_main("--mode=eval", f"--workdir={tmp_path / 'empty'}"), "train first")
  one_line_error(run_main("--mode=predict", f"--video={good}"), "--workdir", "--task")


def test_pictures_of_every_task(tmp_path):
  frames = np.zeros((10, 32, 32, 3), np.uint8)
  frames[:, 8:24, 8:24] = 200
  cases = {
      "ave": ({"event": {"label": "dog", "start": 2, "end": 6}}, [{}]),
      "avvp": ({"audio": [{"class": "dog", "start": 0, "end": 3}],
                "visual": [{"class": "cat", "start": 4, "end": 10}]}, [{}]),
      "avqa": ({"question": "Is the dog barking?", "answer": "yes"}, [{}]),
      "ssl": ({"focus_second": 5, "box": [0.25, 0.25, 0.75, 0.75]},
              [{"heatmap": np.random.default_rng(0).random((224, 224)).astype(np.float32)}]),
      "avs": ({}, [{"frame": k, "logits": np.where(np.arange(32)[None, :] < 16, 3.0, -3.0)
                    * np.ones((32, 1))} for k in range(5)]),
  }
  for task, (record, outputs) in cases.items():
    out = tmp_path / task
    path = plots.draw_prediction(task, {"video": "clip.mp4", **record}, frames, outputs, out)
    with Image.open(path) as img:
      assert img.size[0] > 300 and img.size[1] > 150
  mask = np.asarray(Image.open(tmp_path / "avs" / "mask_3.png")) > 127
  np.testing.assert_array_equal(mask[:, :16], True)
  np.testing.assert_array_equal(mask[:, 16:], False)
  assert json.dumps(cases["avvp"][0])  # the records are plain JSON
