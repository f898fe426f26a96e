"""Learning smoke test: the tiny model, trained on a few fixed demo clips of every task, drives
the task losses well below their first values and then scores AVE and AVVP far above the
trivial baselines on those same clips, and answers their AVQA questions. A model or loss that
cannot learn fails here (about 80 s on 2 cores, the demo build included). SSL boxes and AVS
masks do not beat their baselines yet even here: a strict xfail records that gap.

The clips are the demo's `test` split (dense labels for every task, boxes for VGG-SS), used
for training and scoring both, so that every task's output is trained directly: AVVP is
scored from the decoded parse and SSL from the decoded box.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from av_unified_jax import evaluate, main_job, runs, train
from av_unified_jax.evaluation.evaluator import RESULTS_FILE
from configs import mask_tokenizer as mt_configs
from configs import tiny

CLIPS = 4  # Test clips per layout (MUSIC-AVQA: one video, up to nine questions).
STEPS = 150


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  from data_prep import demo as demo_lib

  out = tmp_path_factory.mktemp("learn_demo")
  sizes = demo_lib.Sizes(train=1, val=1, test=CLIPS, test_novel=1)
  # One MUSIC-AVQA video among the test clips (the default layout makes half as many videos
  # as clips, two here): its questions are few enough for the tiny model to learn them all.
  one_video = dataclasses.replace(demo_lib.LAYOUTS["music_avqa"], split_per_clip=())
  with pytest.MonkeyPatch.context() as patch:
    patch.setitem(demo_lib.LAYOUTS, "music_avqa", one_video)
    demo_lib.build_raw(out, sizes, image_size=32, seed=0, workers=2)
  demo_lib.convert_all(out, 32, workers=2)
  return out


def learning_config(demo: Path):
  c = tiny.get_config(f"steps={STEPS}")
  c.unlock()
  c.data.shards_dir = str(demo / "shards")
  c.data.train_split = c.data.eval_split = "test"
  c.data.mel_shift = 0
  c.log_every_steps = 10
  c.eval_every_steps = STEPS
  c.checkpoint_every_steps = STEPS
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 10
  c.eval.max_examples = 0
  c.eval.avvp_source = "decoded"
  c.eval.ssl_source = "box"
  c.tasks.avs.extra_train_datasets = ("avsbench_ms3",)
  c.lock()
  return c


def tokenizer_config():
  c = mt_configs.get_config("tiny")
  c.unlock()
  c.model.grid = 8  # The token layout's 8x8 AVS grid, 512 codes.
  c.model.codebook_size = 512
  c.model.channels = (8, 16)
  c.total_steps = 40
  c.data.num_synthetic = 64
  c.data.num_synthetic_eval = 16
  c.eval.train_subset = 0
  c.lock()
  return c


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory):
  """Trains on the fixed clips and scores them: (per-task losses [(first, last)], rows)."""
  config = learning_config(demo)
  work = tmp_path_factory.mktemp("learn_run")
  main_job.train_mask_tokenizer(config, work, tokenizer_config(), log=lambda s: None)
  assert train.train_and_evaluate(config, work, make_evaluate_fn=evaluate.make_evaluate_fn,
                                  progress=False) == 0
  logs = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
  losses = {}
  for key in ("ave", "avvp", "avqa", "ssl", "avs", "map"):
    name = f"train/loss/{key}" if key != "map" else "train/map"
    seen = [r[name] for r in logs if name in r]
    losses[key] = (seen[0], float(np.mean(seen[-3:])))
  results = json.loads((runs.eval_dir(work, STEPS) / RESULTS_FILE).read_text())
  base = main_job.baseline_scores(config, work, log=lambda s: None)
  rows = {r["task"]: r for r in main_job.result_rows(results, base) if r["primary"]}
  return losses, rows


def margin(row) -> float:
  return 100 * (row["model"] - row["baseline"])


def test_losses_fall_and_ave_avvp_avqa_beat_the_baselines_on_their_clips(trained):
  losses, rows = trained
  for task, fraction in (("ave", 0.5), ("avvp", 0.6), ("avqa", 0.5), ("map", 0.6),
                         ("avs", 0.75)):
    first, last = losses[task]
    assert last < fraction * first, (task, first, last)
  # Margins, in points, on the clips the model trained on.
  for task, points in (("ave", 30), ("avvp", 15)):
    assert margin(rows[task]) >= points, rows[task]
  # AVQA: one video's questions, whose answers the per-type baseline, fitted on these same
  # clips, also knows; the model must answer (nearly) all of them.
  avqa = {k: rows["avqa"][k] for k in ("model", "baseline")}
  assert avqa["model"] >= 0.9, avqa


@pytest.mark.xfail(strict=True, reason="known gap (README Status): in this budget the SSL box "
                   "tokens and the AVS mask codes are not learned yet, even on four clips; "
                   "strict, so that the day they are, this test says so")
def test_ssl_boxes_and_avs_masks_beat_the_baselines_on_their_clips(trained):
  losses, rows = trained
  assert losses["ssl"][1] < 0.6 * losses["ssl"][0], losses["ssl"]
  assert margin(rows["ssl"]) >= 15 and margin(rows["avs"]) >= 10, (rows["ssl"], rows["avs"])
