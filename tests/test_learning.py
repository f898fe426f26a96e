"""Learning smoke test: the tiny model, trained on a few fixed demo clips of every task, drives
the task losses well below their first values and then scores every task far above the
trivial baselines on those same clips (AVE, AVVP, SSL from the decoded box, AVS from the decoded
mask codes; AVQA answers its video's questions). A model or loss that cannot learn fails here
(under a minute on 2 cores, the demo build included).

The clips are the demo's `test` split (dense labels for every task, boxes for VGG-SS), used
for training and scoring both, without augmentation, so that every task's output is trained
directly: AVVP is scored from the decoded parse and SSL from the decoded box.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from av_unified_jax import evaluate, main_job, runs, train
from av_unified_jax.evaluation.evaluator import RESULTS_FILE
from configs import mask_tokenizer as mt_configs
from configs import tiny
import train_helpers

CLIPS = 4  # Test clips per layout (MUSIC-AVQA: one video, up to nine questions).
STEPS = 150
# Mask codes: few, so that a few training masks use each one several times (with 512, each
# object cell of each mask got a code of its own, which 150 steps cannot learn).
CODES = 32


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
  c.data.augment = False  # The clips as scored: a fixed target per clip to learn.
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 10
  c.eval.max_examples = 0
  c.eval.avvp_source = "decoded"
  c.eval.ssl_source = "box"
  # The demo's AVS recipe (configs/demo.py): S4 and MS3, token weight 2, background 0.3.
  c.tasks.avs.extra_train_datasets = ("avsbench_ms3",)
  c.tasks.avs.loss_weight = 2.0
  c.loss.avs_background_weight = 0.3
  c.loss.map_weight = 2.0
  c.eval.avs_foreground_threshold = 0.2
  c.tokens.num_mask_codes = CODES
  c.lock()
  return c


def tokenizer_config():
  c = mt_configs.get_config("tiny")
  c.unlock()
  c.model.grid = 8  # The token layout's 8x8 AVS grid.
  c.model.codebook_size = CODES
  c.model.channels = (8, 16)
  c.total_steps = 60
  c.data.num_synthetic = 64
  c.data.num_synthetic_eval = 16
  c.eval.train_subset = 0
  c.lock()
  return c


def learn(demo: Path, work: Path) -> dict:
  """Trains on the fixed clips and scores them: {"losses": {task: [first, last]}, "rows":
  {task: headline row}} (the last loss is the mean of the last three logged)."""
  config = learning_config(demo)
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
  return {"losses": losses, "rows": rows}


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory):
  """`learn` in a process of its own with one CPU device: on the 8 fake devices of the test
  process every step would be split eight ways on two cores, a third slower."""
  work = tmp_path_factory.mktemp("learn_run")
  env = train_helpers.subprocess_env(devices=1)
  env["PYTHONPATH"] = os.pathsep.join([str(train_helpers.ROOT), env.get("PYTHONPATH", "")])
  done = subprocess.run([sys.executable, __file__, str(demo), str(work)], env=env,
                        cwd=train_helpers.ROOT, capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  out = json.loads((work / "learning.json").read_text())
  return out["losses"], out["rows"]


def margin(row) -> float:
  return 100 * (row["model"] - row["baseline"])


def test_every_task_loss_falls(trained):
  losses, _ = trained
  for task, fraction in (("ave", 0.5), ("avvp", 0.5), ("avqa", 0.5), ("ssl", 0.5),
                         ("avs", 0.6)):
    first, last = losses[task]
    assert last < fraction * first, (task, first, last)
  # The map's cross-entropy cannot fall below the entropy of its target (a mask or box spread
  # over many cells), so it is held to less.
  first, last = losses["map"]
  assert last < 0.75 * first, ("map", first, last)


def test_every_task_beats_the_baselines_on_its_clips(trained):
  _, rows = trained
  # Margins, in points, on the clips the model trained on (four clips per task: SSL moves in
  # steps of 25 points).
  for task, points in (("ave", 30), ("avvp", 15), ("ssl", 50), ("avs", 10)):
    assert margin(rows[task]) >= points, rows[task]
  # AVQA: one video's questions (nine), whose answers the per-type baseline, fitted on these
  # same clips, also knows; the model must answer all of them but at most one.
  avqa = {k: rows["avqa"][k] for k in ("model", "baseline")}
  assert avqa["model"] >= 8 / 9 - 1e-9, avqa


if __name__ == "__main__":  # The `trained` fixture's process: python test_learning.py DEMO WORK
  demo_dir, work_dir = Path(sys.argv[1]), Path(sys.argv[2])
  (work_dir / "learning.json").write_text(json.dumps(learn(demo_dir, work_dir)))
