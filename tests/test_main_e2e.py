"""End to end through the real entry point on the tiny config and tiny demo data:
`main.py --config=configs/tiny.py` trains (and evaluates at the end), `--mode=eval` evaluates
the checkpoint again, `--mode=predict` answers on a video. Plus the main job's report."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from av_unified_jax import evaluate, main_job, metrics, runs
from av_unified_jax.data import shards

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

  from av_unified_jax import mask_tokenizer as mt

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
  saved = json.loads((work / "eval" / str(STEPS) / "intervals.json").read_text())
  for task, scores in results.items():
    for name in ("accuracy", "overall", "ciou_at_0_5", "miou"):
      if name in scores:
        low, high = saved["intervals"][task][name]
        assert low - 1e-9 <= scores[name] <= high + 1e-9, (task, name)

  # ---- Evaluate on another converted copy of the data, whose AVE "test" split is the
  # training split of the original: the predictions must be of the training clips.
  copy = tmp_path / "copy" / "shards"
  shutil.copytree(demo / "shards", copy)
  info_path = copy / "ave" / "dataset_info.json"
  info = json.loads(info_path.read_text())
  info["splits"]["test"] = info["splits"]["train"]
  info_path.write_text(json.dumps(info))
  run_main("--mode=eval", f"--workdir={work}", f"--config.data.shards_dir={copy}",
           "--config.tasks.avs.weight=0", "--config.eval.beam_size=1")
  other = evaluate.evaluation_dir(work, STEPS, runs.load_run_config(work),
                                  _with(runs.load_run_config(work), copy))
  assert other.parent.parent == work / "eval" / str(STEPS) and other.name == "test"
  moved = json.loads((other / "results.json").read_text())
  assert set(moved) == {"ave", "avvp", "avqa", "ssl"}  # avs left out by its weight
  ave_ids = set(json.loads((other / "ave" / "predictions.json").read_text()))
  train_ids = set(shards.open_split(demo / "shards" / "ave", "train").ids)
  assert ave_ids == train_ids
  assert json.loads((work / "eval" / str(STEPS) / "results.json").read_text()) == results

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


def _with(config, shards_dir):
  config = config.copy_and_resolve_references()
  config.unlock()
  config.data.shards_dir = str(shards_dir)
  return config


def test_eval_overrides_that_cannot_apply_are_errors(tmp_path):
  result = subprocess.run(
      [sys.executable, "main.py", "--mode=eval", f"--workdir={tmp_path / 'none'}",
       "--config.data.shards_dir=/elsewhere", "--config.model.embed_dim=8",
       "--config.optim.learning_rate=0.1"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr
  line = result.stderr.strip().splitlines()[-1]
  assert "--config.model.embed_dim" in line and "--config.optim.learning_rate" in line
  assert "cannot apply to eval" in line and "data.shards_dir," not in line.split("cannot")[0]
  # Keys that apply pass the check, and land in the run's config.
  runs.check_eval_overrides({"data.shards_dir": "x", "data.eval_split": "test_novel",
                                 "eval.beam_size": 2, "tasks.avs.weight": 0.0})
  for bad in ("total_steps", "tasks.ave.loss_weight", "data.image_size", "seed"):
    try:
      runs.check_eval_overrides({bad: 1})
    except runs.RunError as e:
      assert f"--config.{bad} " in str(e)
    else:
      raise AssertionError(f"{bad} was accepted")
  from configs import tiny

  config = runs.apply_overrides(tiny.get_config(), {"data.eval_split": "test_novel",
                                                        "eval.max_examples": 3})
  assert config.data.eval_split == "test_novel" and config.eval.max_examples == 3
  assert evaluate.evaluation_dir(tmp_path, 5, tiny.get_config(), config) == (
      tmp_path / "eval" / "5" / "test_novel")
  assert evaluate.evaluation_dir(tmp_path, 5, tiny.get_config(), tiny.get_config()) == (
      tmp_path / "eval" / "5")


def test_main_job_table_uses_the_strongest_baseline():
  results = {"ave": {"accuracy": 0.6}, "ssl": {"ciou_at_0_5": 0.2, "auc": 0.3}}
  base = {"ave": {"all background": {"accuracy": 0.2}, "majority class": {"accuracy": 0.4}},
          "ssl": {"centre box": {"ciou_at_0_5": 0.25, "auc": 0.1},
                  "centre Gaussian": {"ciou_at_0_5": 0.1, "auc": 0.2}}}
  rows = main_job.result_rows(results, base, {"ave": {"accuracy": (0.5, 0.7)}})
  assert (rows[0]["ci_low"], rows[0]["ci_high"]) == (0.5, 0.7)
  assert rows[1]["ci_low"] is None and rows[1]["ci_high"] is None
  assert [(r["task"], r["metric"], r["baseline_name"]) for r in rows] == [
      ("ave", "accuracy", "majority class"), ("ssl", "ciou_at_0_5", "centre box"),
      ("ssl", "auc", "centre Gaussian")]
  np.testing.assert_allclose([r["baseline"] for r in rows], [0.4, 0.25, 0.2], atol=1e-12)
  table = main_job.format_table(rows).splitlines()
  assert "60.0" in table[2] and "+20.0" in table[2] and "(beats)" in table[2]
  assert "[50.0, 70.0]" in table[2]
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


def test_main_job_summary_has_test_novel_and_train_tables(tmp_path):
  """score_tables + report with an oracle evaluator (no training) on a copy of the tiny demo
  whose `test_novel` split is made an alias of `test`: three tables with intervals;
  the train table samples the first training videos and scores LLP and VGG-SS against the
  demo's composed ground truth; without `test_novel` the novel table is skipped."""
  import test_evaluate as te

  demo = demo_cache.tiny_demo()
  root = tmp_path / "demo"
  shutil.copytree(demo / "shards", root / "shards")
  shutil.copytree(demo / "metadata", root / "metadata")
  for info_path in (root / "shards").glob("*/dataset_info.json"):
    info = json.loads(info_path.read_text())
    info["splits"]["test_novel"] = info["splits"]["test"]
    info_path.write_text(json.dumps(info))
  config = te.make_config(root, avvp_source="decoded", ssl_source="box")
  codes = te.ExactCodes(shards.open_split(root / "shards" / "avsbench_s4", "test"))
  codes.codes.update(te.ExactCodes(shards.open_split(root / "shards" / "avsbench_s4",
                                                     "train")).codes)
  evaluator = te.oracle_evaluator(config, te.full_tokenizer(root), te.block_decoder, codes)
  work = tmp_path / "run"
  work.mkdir()
  (work / "metrics.jsonl").write_text(json.dumps({"step": 1, "train/loss": 1.0}) + "\n")
  lines = []
  tables = main_job.score_tables(config, work, root, evaluator, None,
                                 log=lines.append)
  main_job.report(config, work, tables, main_job.Stopwatch(lines.append), log=lines.append)
  summary = json.loads((work / "main_job" / "summary.json").read_text())
  for key in ("rows", "rows_novel", "rows_train"):
    rows = summary[key]
    assert {r["task"] for r in rows} == {"ave", "avvp", "avqa", "ssl", "avs"}, key
    for r in rows:
      assert r["ci_low"] is not None and r["ci_low"] <= r["ci_high"], (key, r)
      assert r["ci_low"] - 1e-9 <= r["model"] <= r["ci_high"] + 1e-9, (key, r)
      assert "baseline" in r and "baseline_name" in r and "primary" in r
  # test_novel aliases test here: the same numbers, each table with its own baselines.
  assert [r["model"] for r in summary["rows"]] == [r["model"] for r in summary["rows_novel"]]
  assert [r["baseline"] for r in summary["rows"]] == [
      r["baseline"] for r in summary["rows_novel"]]
  # The oracle answers with the stored targets: perfect where they are the ground truth.
  train = {(r["task"], r["metric"]): r["model"] for r in summary["rows_train"]}
  assert train[("ave", "accuracy")] == 1.0 and train[("avqa", "overall")] == 1.0
  clips = json.loads((root / "metadata" / "vggss.json").read_text())["clips"]
  assert summary["splits"]["train"]["videos"]["ssl"] == sum(
      c["split"] == "train" for c in clips)
  assert any("composed ground truth" in n and "llp.json" in n
             for n in summary["splits"]["train"]["notes"])
  assert (work / "main_job" / "train" / "intervals.json").exists()
  assert (work / "main_job" / "test_novel" / "results.json").exists()
  text = "\n".join(lines)
  assert "test_novel" in text and "training clips" in text and "95%" in text

  # Composed ground truth = the metadata rows, in the task's matrix format.
  truth = main_job.composed_ground_truth(config, "avvp", root)
  task = evaluator.make_task("avvp")
  example = shards.open_split(root / "shards" / "llp", "train")[0]
  clip = next(c for c in json.loads((root / "metadata" / "llp.json").read_text())["clips"]
              if c["filename"] == example["id"])
  gt = truth(task, example)
  for name, rows in (("GT_a", clip["audio_rows"]), ("GT_v", clip["visual_rows"])):
    want = np.zeros_like(gt[name])
    for label, start, end in rows:
      want[task.classes.index(label), start:end] = 1
    np.testing.assert_array_equal(gt[name], want)

  # Without test_novel (data converted before it existed): the table is skipped with a note.
  for info_path in (root / "shards").glob("*/dataset_info.json"):
    info = json.loads(info_path.read_text())
    del info["splits"]["test_novel"]
    info_path.write_text(json.dumps(info))
  plans = main_job.plan_splits(config, root)
  novel = next(p for p in plans if p.label == "test_novel")
  assert novel.tasks == [] and "test_novel" in novel.notes[0]
