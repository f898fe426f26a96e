"""End to end through the real entry point on the tiny config and tiny demo data:
`main.py --config=configs/tiny.py` trains (and evaluates at the end), `--mode=eval` evaluates
the checkpoint again, `--mode=predict` answers on a video. Plus the main job's report."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from av_unified_jax import main_job, metrics

import demo_cache  # noqa: I001  (tests/ helper)

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4


def run_main(*args, timeout=900):
  result = subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
  assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
  return result


def save_random_mask_tokenizer(directory: Path) -> None:
  """An untrained mask tokenizer with the tiny config's token layout (8x8 grid, 512 codes):
  enough to exercise the AVS path of evaluation and prediction."""
  import jax

  from av_unified_jax.models import mask_tokenizer as mt

  cfg = mt.MaskTokenizerConfig(mask_size=32, grid=8, codebook_size=512, code_dim=4,
                               channels=(4, 4), num_res_blocks=1)
  mt.save_tokenizer(directory, cfg, mt.init_variables(cfg, jax.random.key(0)))


def test_train_then_eval_then_predict(tmp_path):
  demo = demo_cache.tiny_demo()
  work = tmp_path / "run"
  save_random_mask_tokenizer(work / "mask_tokenizer")
  config = [f"--config=configs/tiny.py:steps={STEPS}",
            f"--config.data.shards_dir={demo / 'shards'}", "--config.eval.max_examples=0"]

  # ---- Train (evaluates every task at the last step through the evaluation hook); the work
  # directory is given relative to the current directory, as users type it.
  run_main(*config, f"--workdir={os.path.relpath(work, ROOT)}")
  records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
  losses = [r["train/loss"] for r in records if "train/loss" in r]
  assert len(losses) == STEPS // 2 and all(math.isfinite(v) for v in losses)
  hook = json.loads((work / "eval" / str(STEPS) / "results.json").read_text())
  assert set(hook) == {"ave", "avvp", "avqa", "ssl", "avs"}
  assert any("eval/ave/accuracy" in r for r in records)  # logged with the training scalars

  # ---- Evaluate the checkpoint again: same parameters, same data, same numbers.
  run_main("--mode=eval", f"--workdir={work}")
  results = json.loads((work / "eval" / str(STEPS) / "results.json").read_text())
  assert set(results) == set(hook)
  for task, scores in results.items():
    assert set(scores) == set(hook[task])
    for name, value in scores.items():
      assert 0.0 <= value <= 1.0, (task, name, value)
      np.testing.assert_allclose(value, hook[task][name], rtol=0, atol=1e-6)
  assert set(results["ssl"]) == {"ciou_at_0_5", "auc", "mean_ciou"}
  assert set(results["avs"]) == {"miou", "fscore"}
  assert set(results["avqa"]) <= set(metrics.AVQA_RESULT_KEYS)
  avqa = json.loads((work / "eval" / str(STEPS) / "avqa" / "predictions.json").read_text())
  tokenizer = json.loads((work / "tokenizer" / "tokenizer.json").read_text())
  assert all(e["predicted"] in tokenizer["label_sets"]["avqa"] for e in avqa.values())

  # ---- Predict on a video of the demo (AVS: decoded codes -> mask tokenizer -> masks).
  video = next((demo / "raw" / "ave" / "AVE").glob("*.mp4"))
  out = tmp_path / "prediction"
  run_main("--mode=predict", f"--workdir={work}", f"--video={video}", "--task=avs",
           f"--out={out}")
  record = json.loads((out / "prediction.json").read_text())
  assert record["task"] == "avs" and record["step"] == STEPS
  assert [m["second"] for m in record["masks"]] == [0, 1, 2, 3, 4]
  assert (out / "prediction.png").stat().st_size > 1000
  assert all((out / m["mask"]).exists() for m in record["masks"])


def test_main_job_table_uses_the_strongest_baseline():
  results = {"ave": {"accuracy": 0.6}, "ssl": {"ciou_at_0_5": 0.2, "auc": 0.3}}
  base = {"ave": {"all background": {"accuracy": 0.2}, "majority class": {"accuracy": 0.4}},
          "ssl": {"centre box": {"ciou_at_0_5": 0.25, "auc": 0.1},
                  "centre Gaussian": {"ciou_at_0_5": 0.1, "auc": 0.2}}}
  rows = main_job.result_rows(results, base)
  assert [(r["task"], r["metric"], r["baseline_name"]) for r in rows] == [
      ("ave", "accuracy", "majority class"), ("ssl", "ciou_at_0_5", "centre box"),
      ("ssl", "auc", "centre Gaussian")]
  np.testing.assert_allclose([r["baseline"] for r in rows], [0.4, 0.25, 0.2], atol=1e-12)
  table = main_job.format_table(rows).splitlines()
  assert "60.0" in table[2] and "+20.0" in table[2] and "(beats)" in table[2]
  assert "(beats)" not in table[3]  # 20.0 vs 25.0


def test_main_job_baselines_on_the_demo_test_split(tmp_path):
  from configs import tiny

  demo = demo_cache.tiny_demo()
  config = tiny.get_config()
  config.unlock()
  config.data.shards_dir = str(demo / "shards")
  config.lock()
  base = main_job.baseline_scores(config, tmp_path, log=lambda s: None)
  assert set(base) == {"ave", "avvp", "avqa", "ssl", "avs"}
  assert set(base["ave"]) == {"all background", "majority class"}
  # All background on AVE is the fraction of background segments in the test clips.
  meta = json.loads((demo / "metadata" / "ave.json").read_text())
  test = [c for c in meta["clips"] if c["split"] == "test"]
  want = np.mean([s == "background" for c in test for s in c["labels"]])
  np.testing.assert_allclose(base["ave"]["all background"]["accuracy"], want, atol=1e-12)
  for scores in base.values():
    for values in scores.values():
      assert all(0.0 <= v <= 1.0 for v in values.values())
