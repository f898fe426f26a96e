"""The ablation study (`benchmarks.ablations`): each switch changes what the model computes, a
single-task run samples only its task, every finished run is recorded at once and the same
command again runs only what is missing, and the report states the verdicts."""

import dataclasses
import json

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import traverse_util

import model_helpers as mh
from av_unified_jax import models
from av_unified_jax.data import pipeline, tasks
from benchmarks import ablations, ablations_report
from configs import demo
from test_pipeline_shards import write_tiny_datasets


def _shared_params(full, other):
  """`other` with every leaf that `full` has at the same path and shape taken from `full`."""
  flat_full = traverse_util.flatten_dict(full)
  flat = traverse_util.flatten_dict(other)
  shared = 0
  for path, leaf in flat.items():
    if path in flat_full and flat_full[path].shape == leaf.shape:
      flat[path], shared = flat_full[path], shared + 1
  return traverse_util.unflatten_dict(flat), shared


@pytest.mark.parametrize("switch", ablations.SWITCHES)
def test_each_switch_changes_the_outputs(switch):
  """With every parameter the two models share set equal, the switched-off model still
  computes other logits and maps on the same batch."""
  batch = mh.batch()
  full_out = mh.forward(mh.params(), batch)
  cfg = dataclasses.replace(mh.CFG, **{switch: False})
  model = models.AVUnified(cfg)
  own = nn.meta.unbox(jax.jit(model.init)(mh.init_key(), batch))["params"]
  params, shared = _shared_params(mh.params(), own)
  assert shared > 10
  out = jax.jit(lambda p, b: model.apply({"params": p}, b))(params, batch)
  logits_diff = float(np.max(np.abs(np.asarray(out["logits"]) - np.asarray(full_out["logits"]))))
  assert logits_diff > 1e-3, switch
  if switch == "use_spatial_guidance":  # Uniform maps instead of audio-guided ones.
    maps = np.asarray(out["loc_maps"])
    np.testing.assert_allclose(maps, np.broadcast_to(maps.mean(axis=(2, 3), keepdims=True),
                                                     maps.shape), rtol=1e-5, atol=0)
    assert np.ptp(np.asarray(full_out["loc_maps"]), axis=(2, 3)).max() > 1e-4


def test_runs_change_only_their_keys():
  base = demo.get_config("steps=40").to_dict()
  for name, overrides in ablations.RUNS.items():
    c = ablations.run_config(name, seed=2, steps=40).to_dict()
    assert c["seed"] == 2 and c["total_steps"] == 40 and c["checkpoint_every_steps"] == 10
    diff = {}
    for section in ("model", "tasks"):
      flat_a = traverse_util.flatten_dict(base[section], sep=".")
      flat_b = traverse_util.flatten_dict(c[section], sep=".")
      diff.update({f"{section}.{k}": v for k, v in flat_b.items() if flat_a[k] != v})
    assert diff == overrides, name
  assert set(ablations.RUNS) == {"full", "no_temporal_multiscale", "no_spatial_guidance",
                                 "no_task_prompts"} | {f"only_{t}" for t in tasks.TASK_ORDER}
  with pytest.raises(ValueError, match="not one of"):
    ablations.run_config("only_music", 0, 40)


@pytest.mark.parametrize("task", ["ave", "avqa", "ssl"])
def test_single_task_run_samples_only_its_task(tmp_path, task):
  write_tiny_datasets(tmp_path)
  c = ablations.run_config(f"only_{task}", seed=0, steps=40)
  c.data.shards_dir = str(tmp_path)
  c.data.image_size = 32
  c.data.batch_size = 8
  tok = pipeline.build_tokenizer(c)
  assert pipeline.active_tasks(c) == [task]
  data = pipeline.train_batches(c, tok, process_index=0, process_count=1)
  ids = np.concatenate([data[k]["task_id"] for k in range(6)])
  assert ids.tolist() == [tasks.TASK_ORDER.index(task)] * 48


@pytest.fixture
def fake_study(tmp_path, monkeypatch):
  """A study whose runs are not trained: each 'training' returns metrics from its name and
  seed, and is counted."""
  study = ablations.Study("quick", 40, 2, tmp_path / "abl.json", tmp_path / "ABL.md",
                          tmp_path / "abl.png")
  calls = []
  score = {"full": 0.6, "no_task_prompts": 0.5, "only_ave": 0.58}

  def train_one(config, workdir, demo_dir, log):
    calls.append((workdir.parent.name, config.seed))
    value = score[workdir.parent.name] + 0.01 * config.seed
    tasks_on = pipeline.active_tasks(config)
    metrics = {t: value for t in tasks_on}
    return {"results": {}, "metrics": {"test": metrics, "test_novel": metrics}}

  mask_dir = tmp_path / "mask_tokenizer"
  mask_dir.mkdir()
  monkeypatch.setattr(ablations, "train_one", train_one)
  monkeypatch.setattr(ablations.main_job, "ensure_demo_data", lambda *a: None)
  monkeypatch.setattr(ablations.main_job, "train_mask_tokenizer", lambda *a: mask_dir)
  monkeypatch.setattr(ablations, "baselines",
                      lambda *a: {"test": {"ave": ["all background", 0.25]}})
  return study, calls


def test_study_records_each_run_and_resumes(fake_study, tmp_path):
  study, calls = fake_study
  runs = ["full", "no_task_prompts", "only_ave"]
  kwargs = dict(only=runs, work_root=tmp_path / "runs", log=lambda _: None)
  assert ablations.run_study(study, 1, **kwargs) == 0
  assert calls == [("full", 0), ("no_task_prompts", 0), ("only_ave", 0)]
  record = json.loads(study.json.read_text())
  assert sorted(record["runs"]) == ["full/seed0", "no_task_prompts/seed0", "only_ave/seed0"]
  assert record["runs"]["no_task_prompts/seed0"]["overrides"] == {
      "model.use_task_prompts": False}
  assert record["runs"]["only_ave/seed0"]["metrics"]["test"] == {"ave": 0.58}
  assert record["baselines"]["test"]["ave"] == ["all background", 0.25]
  # Again with a second seed: only the three seed-1 runs train.
  calls.clear()
  ablations.run_study(study, 2, **kwargs)
  assert calls == [("full", 1), ("no_task_prompts", 1), ("only_ave", 1)]
  calls.clear()
  ablations.run_study(study, 2, **kwargs)
  assert calls == []
  text = study.markdown.read_text()
  assert "| full | 60.5 [60.0, 61.0] (2)" in text
  # AVE: full 60.5 vs alone 58.5 with ranges [60, 61] and [58, 59]: beyond the spread.
  assert "- ave: full vs alone: 60.5 vs 58.5 (+2.0): **holds**, beyond the seed spread" in text
  assert "- avqa: full vs `no_task_prompts`: 60.5 vs 50.5 (+10.0): **holds**" in text
  assert "| strongest trivial baseline | 25.0 (all background) |" in text
  summary = text.split("## In plain words: test ")[1].split("\n## ")[0]
  assert ("- **Training on all five tasks jointly beats training each task alone**: holds, "
          "beyond the seed spread, for AVE (+2.0); is not measured yet for AVVP, AVQA, SSL, "
          "AVS.") in summary
  assert ("- **Task-specific prompts help**: holds, beyond the seed spread, for AVE (+10.0), "
          "AVVP (+10.0), AVQA (+10.0), SSL (+10.0), AVS (+10.0).") in summary
  assert "- `no_task_prompts`: `model.use_task_prompts=False`: the prompt enters" in text
  assert study.chart.stat().st_size > 1000


def test_study_of_other_steps_is_refused(fake_study, tmp_path):
  study, _ = fake_study
  study.json.write_text(json.dumps({"study": {"name": "quick", "steps": 800}, "runs": {},
                                    "baselines": {}}))
  with pytest.raises(ValueError, match="800 steps per run, not 40"):
    ablations.run_study(study, 1, only=["full"], work_root=tmp_path / "runs")


def test_plain_words_sort_tasks_by_outcome():
  def run(name, seed, **values):
    return {"run": name, "seed": seed, "metrics": {"test": values}}
  record = {"runs": {
      "a": run("full", 0, ave=0.5, avvp=0.3), "b": run("full", 1, ave=0.6, avvp=0.4),
      "c": run("no_task_prompts", 0, ave=0.7, avvp=0.35),
      "d": run("no_task_prompts", 1, ave=0.8, avvp=0.45)}}
  line = ablations_report.plain_words(record, "test")[3]
  assert line.startswith("- **Task-specific prompts help**: is reversed")
  assert "for AVE (-20.0); cannot be told from the seed spread for AVVP (-5.0); is not " \
      "measured yet for AVQA, SSL, AVS." in line


def test_chart_takes_seeds_with_equal_values(tmp_path):
  """Three seeds of 0.1 have a float mean just above 0.1; the error bars must not go negative."""
  runs = {f"full/seed{k}": {"run": "full", "seed": k, "wall_seconds": 60.0,
                            "metrics": {"test": {"ssl": 0.1}, "test_novel": {"ssl": 0.2}}}
          for k in range(3)}
  assert np.mean([0.1] * 3) > 0.1
  out = ablations_report.chart({"runs": runs}, tmp_path / "chart.png")
  assert out.stat().st_size > 1000


def test_verdict_words():
  assert "within the seed spread" in ablations_report.compare([0.5, 0.6], [0.55, 0.7])
  assert "**reversed**" in ablations_report.compare([0.4, 0.45], [0.5, 0.6])
  assert "one seed" in ablations_report.compare([0.5], [0.4])
  assert ablations_report.compare([], [0.4]) == "not measured yet"
