"""The evaluator on converted demo data: the input pipeline's evaluation batches, the model
runner's interface, the per-task glue and the files under W/eval/<step>/.

An "oracle" runner answers every row with the row's own target tokens, so every task whose
target is the ground truth must score perfectly; that checks that examples, frames and
predictions stay aligned through batching, padding and the metric inputs.
"""

import json

import numpy as np
import pytest

from av_unified_jax import checkpointing, metrics, runs, sharding, tokens
from av_unified_jax.evaluation import evaluator as evaluator_lib
from av_unified_jax.evaluation import runner as runner_lib
from av_unified_jax.mask_tokenizer.decoder import MaskDecoder
from av_unified_jax.data import decode_masks, shards
from configs import tiny

import demo_cache  # noqa: I001  (tests/ helper)


@pytest.fixture(scope="module")
def demo():
  return demo_cache.tiny_demo()


def make_config(demo_dir, **eval_overrides):
  c = tiny.get_config()
  c.unlock()
  c.data.shards_dir = str(demo_dir / "shards")
  c.eval.batch_size = 8
  c.eval.max_examples = 0
  for key, value in eval_overrides.items():
    c.eval[key] = value
  c.lock()
  return c


def full_tokenizer(demo_dir):
  """Label sets from every split (the tiny demo's test split has classes train lacks)."""
  classes = json.loads((demo_dir / "metadata" / "ave.json").read_text())["classes"]
  answers, questions = [], []
  for split in ("train", "val", "test"):
    source = shards.open_split(demo_dir / "shards" / "music_avqa", split)
    for i in range(len(source)):
      answers.append(source[i]["answer"])
      questions.append(source[i]["question"])
  return tokens.Tokenizer.build({"ave": classes, "avvp": classes,
                                 "avqa": list(dict.fromkeys(answers))}, questions)


class OracleRunner:
  """Answers each row with its target tokens; aux maps are not available."""

  def __call__(self, task, params, batch):
    del params
    return np.asarray(batch["target_tokens"]), {}


def block_codes(mask: np.ndarray) -> np.ndarray:
  """bool[32, 32] -> int32[8, 8] codes: 1 where a 4x4 block is mostly foreground."""
  return (mask.reshape(8, 4, 8, 4).mean(axis=(1, 3)) >= 0.5).astype(np.int32)


def block_decoder(codes):
  """codes int32[B, 8, 8] -> logits float32[B, 32, 32] (code 1 = foreground)."""
  return np.kron(np.where(np.asarray(codes) == 1, 6.0, -6.0), np.ones((4, 4))).astype(np.float32)


class ExactCodes:
  """mask_codes(example_id, frame) from the stored masks, for the oracle's AVS targets."""

  def __init__(self, source):
    self.codes = {}
    for i in range(len(source)):
      ex = source[i]
      for k, m in enumerate(decode_masks(ex)):
        self.codes[(ex["id"], k)] = block_codes(m)

  def __call__(self, example_id, frame):
    return self.codes.get((example_id, int(frame)))


def oracle_evaluator(config, tokenizer, mask_decoder=None, mask_codes=None):
  model = runs.build_model(config, tokenizer.layout.vocab_size,
                            len(tokenizer.label_sets["avvp"]))
  ev = evaluator_lib.Evaluator(config, tokenizer, model, sharding.make_mesh(config.mesh),
                          sharding.logical_rules(config), mask_decoder, log=lambda s: None,
                          mask_codes=mask_codes)
  ev.runner = OracleRunner()
  return ev


def test_oracle_targets_score_perfectly_and_files_are_written(demo, tmp_path):
  config = make_config(demo, avvp_source="decoded", ssl_source="box")
  tok = full_tokenizer(demo)
  test_s4 = shards.open_split(demo / "shards" / "avsbench_s4", "test")
  ev = oracle_evaluator(config, tok, block_decoder, ExactCodes(test_s4))
  results = ev.evaluate(None, tmp_path / "eval" / "7")

  saved = json.loads((tmp_path / "eval" / "7" / "results.json").read_text())
  assert saved == json.loads(json.dumps(results))
  bounds = evaluator_lib.read_intervals(tmp_path / "eval" / "7")
  assert set(bounds) == set(saved)
  for task, scores in saved.items():
    assert set(bounds[task]) <= set(scores)
    for name, (low, high) in bounds[task].items():
      assert low - 1e-9 <= scores[name] <= high + 1e-9, (task, name)
  assert set(saved) == {"ave", "avvp", "avqa", "ssl", "avs"}
  np.testing.assert_allclose(saved["ave"]["accuracy"], 1.0, atol=1e-12)
  assert set(saved["avvp"]) == {f"{lvl}_{m}" for lvl in ("seg", "event")
                                for m in ("audio", "visual", "av", "type_avg", "event_avg")}
  for value in saved["avvp"].values():
    np.testing.assert_allclose(value, 1.0, atol=1e-12)
  np.testing.assert_allclose(saved["avqa"]["overall"], 1.0, atol=1e-12)
  assert set(saved["avqa"]) <= set(metrics.AVQA_RESULT_KEYS)
  assert set(saved["ssl"]) == {"ciou_at_0_5", "auc", "mean_ciou"}
  # Boxes go through 100 location bins: cIoU is near 1, not exactly 1.
  np.testing.assert_allclose(saved["ssl"]["ciou_at_0_5"], 1.0, atol=1e-12)
  assert saved["ssl"]["mean_ciou"] > 0.9

  # AVS: the oracle's codes are the 8x8 block version of each stored mask; the expected mIoU is
  # computed here straight from the stored masks, frame by frame.
  want = []
  for i in range(len(test_s4)):
    ex = test_s4[i]
    for k in np.flatnonzero(ex["mask_annotated"]):
      gt = decode_masks(ex)[k]
      want.append(metrics.avs_frame_iou(block_decoder(block_codes(gt)[None]), gt[None])[0])
  np.testing.assert_allclose(saved["avs"]["miou"], np.mean(want), rtol=1e-9, atol=1e-9)
  assert saved["avs"]["miou"] > 0.6

  out = tmp_path / "eval" / "7"
  ave = json.loads((out / "ave" / "predictions.json").read_text())
  for entry in ave.values():
    assert entry["predicted"] == entry["target"] and len(entry["predicted"]) == 10
  avqa = json.loads((out / "avqa" / "predictions.json").read_text())
  assert all(e["predicted"] == e["answer"] for e in avqa.values())
  assert all(k.isdigit() for k in avqa)  # keyed by question id
  avs = json.loads((out / "avs" / "predictions.json").read_text())
  some_id = next(iter(avs))
  assert (out / "avs" / avs[some_id]["0"]["mask"]).exists()
  ssl = json.loads((out / "ssl" / "predictions.json").read_text())
  assert all((out / "ssl" / e["heatmap"]).exists() for e in ssl.values())


def test_padding_rows_and_max_examples_do_not_leak_into_the_scores(demo, tmp_path):
  """Eight-row batches over a split of a few examples: the invalid padding rows repeat
  example 0 and must be dropped, otherwise example 0 would be scored several times."""
  config = make_config(demo, max_examples=1)
  tok = full_tokenizer(demo)
  ev = oracle_evaluator(config, tok)
  seen = []

  class Counting(OracleRunner):
    def __call__(self, task, params, batch):
      seen.append(int(np.asarray(batch["task_id"]).shape[0]))
      return super().__call__(task, params, batch)

  ev.runner = Counting()
  result, count = ev.evaluate_task("avqa", None, tmp_path / "avqa")
  assert count == 1 and seen == [8]
  np.testing.assert_allclose(result["overall"], 1.0, atol=1e-12)
  assert len(json.loads((tmp_path / "avqa" / "predictions.json").read_text())) == 1


def test_check_stop_ends_the_evaluation_before_the_next_batch(demo, tmp_path, monkeypatch):
  """The model runner calls `check_stop` before every batch; when it raises (the training
  loop's SIGTERM watcher), the evaluation stops there and writes no results."""
  config = make_config(demo)
  tok = full_tokenizer(demo)
  calls = []

  def check_stop():
    calls.append(len(calls))
    if len(calls) == 2:
      raise checkpointing.Preempted("SIGTERM received")

  model = runs.build_model(config, tok.layout.vocab_size, len(tok.label_sets["avvp"]))
  ev = evaluator_lib.Evaluator(config, tok, model, sharding.make_mesh(config.mesh),
                               sharding.logical_rules(config), None, log=lambda s: None,
                               check_stop=check_stop)
  # The decoder answers with the targets (no compilation); the runner is the real one.
  monkeypatch.setattr(runner_lib.decoding, "greedy_decode",
                      lambda model, params, batch, *a, **k: (batch["target_tokens"], {}))
  with pytest.raises(checkpointing.Preempted):
    ev.evaluate_split(None, tmp_path / "eval", tasks=["ave", "avqa"])
  assert len(calls) == 2  # One batch ran, the second was not started.
  assert not (tmp_path / "eval" / evaluator_lib.RESULTS_FILE).exists()


def test_run_config_round_trip_and_clear_errors(tmp_path):
  from av_unified_jax import metric_writers

  config = tiny.get_config()
  writer = metric_writers.MetricWriter(tmp_path, total_steps=1, start_step=0, tensorboard=False)
  writer.write_config(config)
  writer.close()
  loaded = runs.load_run_config(tmp_path)
  assert loaded.to_dict() == config.to_dict()
  assert loaded.model.temporal_scales is None and isinstance(loaded.logical_axis_rules, tuple)
  with pytest.raises(runs.RunError, match="config.json not found"):
    runs.load_run_config(tmp_path / "nothing")
  with pytest.raises(runs.RunError, match="no saved tokenizer|saved no tokenizer"):
    runs.load_run(tmp_path)


def test_mask_decoder_checks_the_token_layout(tmp_path):
  import jax

  from av_unified_jax import mask_tokenizer as mt

  cfg = mt.MaskTokenizerConfig(mask_size=16, grid=4, codebook_size=8, code_dim=4,
                               channels=(4, 4), num_res_blocks=1)
  mt.save_tokenizer(tmp_path, cfg, mt.init_variables(cfg, jax.random.key(0)))
  with pytest.raises(ValueError, match="4x4 grid of 8 codes"):
    MaskDecoder.load(tmp_path, (8, 8), 8)
  with pytest.raises(ValueError, match="4x4 grid of 8 codes"):
    MaskDecoder.load(tmp_path, (4, 4), 512)
  assert runs.load_mask_decoder(tmp_path / "no_run", None) is None
