"""Evaluation glue per task: hand-made model outputs -> metric inputs -> official metrics, the
readable predictions, and the trivial baselines scored by the same code."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from av_unified_jax import metrics, tokens
from av_unified_jax.evaluation import baselines
from av_unified_jax.evaluation import tasks as eval_tasks

AVE = ("dog", "cat", "violin")
LLP = ("speech", "dog", "violin", "car")
ANSWERS = ("yes", "no", "two", "three", "left", "right")
TOK = tokens.Tokenizer.build({"ave": AVE, "avvp": LLP, "avqa": ANSWERS},
                             extra_text=["Is the dog left?", "How many violins?"],
                             num_mask_codes=8, mask_grid=(2, 2), num_loc_bins=11)
T = 10


class EvalCfg:
  avvp_source = "mil"
  ssl_source = "map"
  ciou_protocol = "lvs"


def pad(seq, length=24):
  out = np.zeros(length, np.int32)
  out[:len(seq)] = seq
  return out


def log_mel(t=T):
  return np.zeros((t, 4, 4), np.float16)


# ----------------------------------------------------------------------------- AVE
def ave_example(i, cat, start, end):
  return {"id": f"v{i}", "category": cat, "start": start, "end": end, "log_mel": log_mel()}


def test_ave_decoded_spans_to_accuracy_and_predictions(tmp_path):
  task = eval_tasks.AveTask(TOK)
  examples = [ave_example(0, "dog", 2, 6), ave_example(1, "violin", 0, 10)]
  gts = [task.ground_truth(e) for e in examples]
  np.testing.assert_array_equal(gts[0]["segments"], [28, 28, 0, 0, 0, 0, 28, 28, 28, 28])
  tokens_ = np.stack([
      pad(TOK.encode_target("ave", {"label": "dog", "start": 3, "end": 6})),  # 9 of 10 right
      pad(TOK.encode_target("ave", {"label": "cat", "start": 0, "end": 10})),  # 0 of 10
  ])
  queries = [eval_tasks.row_query(g, 5, -1, T) for g in gts]
  outputs = [[o] for o in task.interpret(tokens_, {}, queries)]
  result = task.score(gts, outputs)
  assert list(result) == ["accuracy"]
  np.testing.assert_allclose(result["accuracy"], 9 / 20, rtol=0, atol=1e-12)
  task.write(tmp_path, gts, outputs)
  readable = json.loads((tmp_path / "predictions.json").read_text())
  assert readable["v0"]["predicted"][2:7] == ["background", "dog", "dog", "dog", "background"]
  assert readable["v1"]["target"] == ["violin"] * 10


def test_ave_broken_sequence_counts_as_background():
  task = eval_tasks.AveTask(TOK)
  gts = [task.ground_truth(ave_example(0, "dog", 0, 4))]
  broken = pad([TOK.layout.time_token(3), TOK.layout.EOS])  # a time token cannot start AVE
  out = task.interpret(broken[None], {}, None)
  assert out[0]["valid"] is False
  np.testing.assert_allclose(task.score(gts, [out])["accuracy"], 6 / 10, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- AVVP
def avvp_example(i, audio, visual):
  return {"id": f"l{i}", "log_mel": log_mel(), "weak_labels": sorted({r[0] for r in audio}),
          "audio_labels": [r[0] for r in audio], "audio_spans": [r[1:] for r in audio],
          "visual_labels": [r[0] for r in visual], "visual_spans": [r[1:] for r in visual]}


def test_avvp_mil_probabilities_to_official_scores():
  task = eval_tasks.AvvpTask(TOK, EvalCfg())
  assert task.aux_keys == ("mil_frame_probs", "mil_video_probs") and not task.decodes
  ex = avvp_example(0, [("dog", 2, 5)], [("dog", 3, 5)])
  gts = [task.ground_truth(ex)]
  assert gts[0]["GT_a"].shape == (25, T) and gts[0]["GT_a"][1, 2:5].all()
  frame = np.zeros((1, T, 2, len(LLP)), np.float32)
  frame[0, 2:5, 0, 1] = 0.9  # audio dog at 2..4: exact
  frame[0, 3:5, 1, 1] = 0.7  # visual dog at 3..4: exact
  frame[0, :, 0, 3] = 0.8  # car heard everywhere, but filtered by the video probability
  video = np.array([[0.1, 0.6, 0.2, 0.3]], np.float32)
  outs = task.interpret(None, {"mil_frame_probs": frame, "mil_video_probs": video},
                        [eval_tasks.row_query(gts[0], 5, -1, T)])
  assert outs[0]["SO_a"].shape == (25, T) and outs[0]["SO_a"].sum() == 3
  result = task.score(gts, [outs])
  assert set(result) == {"seg_audio", "seg_visual", "seg_av", "seg_type_avg", "seg_event_avg",
                         "event_audio", "event_visual", "event_av", "event_type_avg",
                         "event_event_avg"}
  for value in result.values():
    np.testing.assert_allclose(value, 1.0, rtol=0, atol=1e-12)


def test_avvp_decoded_parse_matches_the_metric_on_hand_counts(tmp_path):
  cfg = EvalCfg()
  cfg.avvp_source = "decoded"
  task = eval_tasks.AvvpTask(TOK, cfg)
  ex = avvp_example(0, [("speech", 0, 10)], [])
  gts = [task.ground_truth(ex)]
  parse = [("audio", "speech", 0, 5), ("visual", "car", 1, 2)]
  seq = pad(TOK.encode_target("avvp", parse), 40)
  query = eval_tasks.row_query(gts[0], 5, -1, T)
  assert query["num_segments"] == T
  outs = task.interpret(seq[None], {}, [query])
  result = task.score(gts, [outs])
  # Audio: TP 5, FN 5 -> F = 10 / 15. Visual: car FP only -> kept class with F = 0.
  np.testing.assert_allclose(result["seg_audio"], 10 / 15, rtol=0, atol=1e-12)
  np.testing.assert_allclose(result["seg_visual"], 0.0, rtol=0, atol=1e-12)
  # Event level: predicted run [0,5) vs GT [0,10): IoU 0.5 counts (inclusive).
  np.testing.assert_allclose(result["event_audio"], 1.0, rtol=0, atol=1e-12)
  task.write(tmp_path, gts, [outs])
  readable = json.loads((tmp_path / "predictions.json").read_text())
  assert readable["l0"]["audio"] == [{"class": "speech", "start": 0, "end": 5}]
  assert readable["l0"]["visual"] == [{"class": "car", "start": 1, "end": 2}]


# ----------------------------------------------------------------------------- AVQA
def avqa_example(qid, question, answer, qtype):
  return {"id": str(qid), "question_id": qid, "question": question, "answer": answer,
          "question_type": list(qtype)}


def test_avqa_answers_to_pooled_accuracies(tmp_path):
  task = eval_tasks.AvqaTask(TOK)
  exs = [avqa_example(1, "Is the dog left?", "yes", ("Audio-Visual", "Existential")),
         avqa_example(2, "How many violins?", "two", ("Visual", "Counting")),
         avqa_example(3, "How many violins?", "three", ("Visual", "Counting"))]
  gts = [task.ground_truth(e) for e in exs]
  toks = np.stack([pad(TOK.encode_target("avqa", a)) for a in ("yes", "two", "two")])
  outs = [[o] for o in task.interpret(toks, {}, None)]
  result = task.score(gts, outs)
  np.testing.assert_allclose(result["overall"], 2 / 3, rtol=0, atol=1e-12)
  np.testing.assert_allclose(result["visual_counting"], 1 / 2, rtol=0, atol=1e-12)
  assert "audio_counting" not in result  # no question of that type: dropped, not None
  task.write(tmp_path, gts, outs)
  readable = json.loads((tmp_path / "predictions.json").read_text())
  assert readable["3"] == {"question": "How many violins?", "type": ["Visual", "Counting"],
                           "predicted": "two", "answer": "three"}
  base = baselines.score_baselines(task, gts, baselines.train_statistics(task, exs[1:]))
  # Per type from "train" (questions 2 and 3): Visual Counting -> "three" (tie broken by
  # name); Existential unseen -> the overall most frequent answer "three" as well.
  np.testing.assert_allclose(base["most frequent answer per type"]["overall"], 1 / 3,
                             rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- SSL
def ssl_example(i, boxes):
  return {"id": f"s{i}", "boxes": np.asarray(boxes, np.float64)}


def test_ssl_map_peak_on_the_box_scores_and_beats_the_centre(tmp_path):
  task = eval_tasks.SslTask(TOK, EvalCfg())
  exs = [ssl_example(0, [[0.0, 0.0, 0.5, 0.5]]), ssl_example(1, [[0.5, 0.5, 1.0, 1.0]])]
  gts = [task.ground_truth(e) for e in exs]
  maps = np.zeros((2, 3, 4, 4), np.float32)
  maps[0, :2, :2, :2] = 1.0  # top-left quadrant in both valid seconds
  maps[1, :2, 2:, 2:] = 1.0
  maps[:, 2] = np.random.default_rng(0).random((2, 4, 4))  # padding second: ignored
  queries = [eval_tasks.row_query(g, 1, -1, 2) for g in gts]
  outs = [[o] for o in task.interpret(None, {"loc_maps": maps}, queries)]
  assert outs[0][0]["heatmap"].shape == (224, 224)
  result = task.score(gts, outs)
  assert set(result) == {"ciou_at_0_5", "auc", "mean_ciou"}
  np.testing.assert_allclose(result["ciou_at_0_5"], 1.0, rtol=0, atol=1e-12)
  # Bilinear 4 -> 224 with half-pixel centres: along each axis the map is 1 up to pixel 84
  # and falls linearly to 0 at pixel 140 (f(x) = clip((140 - x) / 56, 0, 1) at pixel centres),
  # so its mean is 1/4. `sharpen_heatmaps` keeps f(x) f(y) > 1/4, a region inside the
  # 140x140 square around the 112x112 box that the bare map would mark.
  f = np.clip((140 - (np.arange(224) + 0.5)) / 56, 0, 1)
  kept = np.outer(f, f) > np.outer(f, f).mean()
  box = np.zeros((224, 224), bool)
  box[:112, :112] = True
  want = (kept & box).sum() / (box.sum() + (kept & ~box).sum())
  np.testing.assert_allclose(result["mean_ciou"], want, rtol=0, atol=1e-3)
  assert result["mean_ciou"] > 112 ** 2 / 140 ** 2  # Tighter than the unsharpened map.
  base = baselines.score_baselines(task, gts, {})
  for scores in base.values():
    assert scores["mean_ciou"] < result["mean_ciou"]
  task.write(tmp_path, gts, outs)
  assert Image.open(tmp_path / "heatmaps" / "s0.png").size == (224, 224)
  assert json.loads((tmp_path / "predictions.json").read_text())["s1"]["ciou"] > 0.6


def test_ssl_decoded_box_becomes_the_heatmap():
  cfg = EvalCfg()
  cfg.ssl_source = "box"
  task = eval_tasks.SslTask(TOK, cfg)
  assert task.decodes and task.aux_keys == ()
  gts = [task.ground_truth(ssl_example(0, [[0.2, 0.3, 0.6, 0.7]]))]
  seq = pad(TOK.encode_target("ssl", (0.2, 0.3, 0.6, 0.7)))
  outs = task.interpret(seq[None], {}, None)
  np.testing.assert_allclose(outs[0]["box"], [0.2, 0.3, 0.6, 0.7], atol=1e-9)
  np.testing.assert_allclose(task.cious(gts, [outs]), [1.0], atol=1e-12)
  # Corners out of order are sorted rather than dropped.
  lay = TOK.layout
  swapped = pad([lay.loc_token(6), lay.loc_token(3), lay.loc_token(2), lay.loc_token(7), 2])
  np.testing.assert_allclose(task.interpret(swapped[None], {}, None)[0]["box"],
                             [0.2, 0.3, 0.6, 0.7], atol=1e-9)


# ----------------------------------------------------------------------------- AVS
def png(mask):
  buf = io.BytesIO()
  Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buf, format="PNG")
  return buf.getvalue()


def avs_example(i, masks, annotated):
  return {"id": f"a{i}", "masks": [png(m) if a else b"" for m, a in zip(masks, annotated)],
          "mask_annotated": np.asarray(annotated)}


def quadrant(which, size=8):
  m = np.zeros((size, size), bool)
  h = size // 2
  m[(which // 2) * h:(which // 2 + 1) * h, (which % 2) * h:(which % 2 + 1) * h] = True
  return m


def fake_mask_decoder(codes):
  """codes int32[B, 2, 2] -> logits float32[B, 4, 4]: code 1 is foreground."""
  return np.kron(np.where(np.asarray(codes) == 1, 5.0, -5.0), np.ones((2, 2))).astype(np.float32)


def test_avs_codes_to_masks_to_official_scores(tmp_path):
  task = eval_tasks.AvsTask(TOK, EvalCfg(), fake_mask_decoder)
  masks = [quadrant(k % 4) for k in range(5)]
  ex = avs_example(0, masks, [True, True, False, False, False])
  gts = [task.ground_truth(ex)]
  queries = [eval_tasks.row_query(gts[0], k, k, T) for k in (0, 1)]
  assert [q["frame"] for q in queries] == [0, 1] and queries[0]["size"] == 8
  right = TOK.encode_target("avs", np.array([[1, 0], [0, 0]]))  # quadrant 0: frame 0 exact
  wrong = TOK.encode_target("avs", np.array([[0, 0], [1, 0]]))  # quadrant 2, truth is 1
  outs = task.interpret(np.stack([pad(right), pad(wrong)]), {}, queries)
  assert outs[0]["logits"].shape == (8, 8)
  np.testing.assert_array_equal(outs[0]["logits"] > 0, masks[0])
  result = task.score(gts, [outs])
  np.testing.assert_allclose(result["miou"], 0.5, rtol=0, atol=1e-6)
  logits = np.stack([o["logits"] for o in outs])
  want_f = metrics.avs_fscore(logits, np.stack(masks[:2]))
  np.testing.assert_allclose(result["fscore"], want_f, rtol=0, atol=1e-12)
  task.write(tmp_path, gts, [outs])
  saved = np.asarray(Image.open(tmp_path / "masks" / "a0_0.png")) > 127
  np.testing.assert_array_equal(saved, masks[0])


def test_avs_groups_four_videos_per_batch():
  task = eval_tasks.AvsTask(TOK, EvalCfg(), fake_mask_decoder)
  exs = [avs_example(i, [quadrant(i % 4)] * 5, [True] * 5) for i in range(6)]
  gts = [task.ground_truth(e) for e in exs]
  outs = [[{"logits": np.zeros((8, 8), np.float32), "frame": k} for k in range(5)] for _ in exs]
  batches = task.batches(gts, outs)
  assert [b[0].shape[0] for b in batches] == [20, 10]


# ----------------------------------------------------------------------------- baselines
def test_ave_baselines_all_background_and_majority():
  task = eval_tasks.AveTask(TOK)
  train = [ave_example(i, c, 0, 10) for i, c in enumerate(["cat", "cat", "dog"])]
  test = [ave_example(9, "cat", 0, 4), ave_example(8, "dog", 5, 10)]
  gts = [task.ground_truth(e) for e in test]
  base = baselines.score_baselines(task, gts, baselines.train_statistics(task, train))
  np.testing.assert_allclose(base["all background"]["accuracy"], 11 / 20, atol=1e-12)
  np.testing.assert_allclose(base["majority class"]["accuracy"], 4 / 20, atol=1e-12)


def test_avvp_baselines_predict_nothing_gets_the_empty_class_default():
  task = eval_tasks.AvvpTask(TOK, EvalCfg())
  train = [avvp_example(i, [("dog", 0, 10)], []) for i in range(3)]
  test = [avvp_example(0, [("dog", 0, 10)], [])]
  gts = [task.ground_truth(e) for e in test]
  base = baselines.score_baselines(task, gts, baselines.train_statistics(task, train))
  nothing, top = base["predict nothing"], base["top-1 classes everywhere"]
  np.testing.assert_allclose(nothing["seg_visual"], 1.0, atol=1e-12)  # no visual GT, no pred
  np.testing.assert_allclose(nothing["seg_audio"], 0.0, atol=1e-12)
  np.testing.assert_allclose(top["seg_audio"], 1.0, atol=1e-12)
  np.testing.assert_allclose(top["seg_visual"], 0.0, atol=1e-12)


def test_avs_baselines_all_foreground_iou_is_the_foreground_fraction():
  task = eval_tasks.AvsTask(TOK, EvalCfg(), fake_mask_decoder)
  ex = avs_example(0, [quadrant(0)] * 5, [True] * 5)
  gts = [task.ground_truth(ex)]
  base = baselines.score_baselines(task, gts, baselines.train_statistics(task, [ex]))
  np.testing.assert_allclose(base["all foreground"]["miou"], 0.25, atol=1e-6)
  assert base["centre box"]["miou"] < 0.5


def test_label_sets_larger_than_the_benchmark_are_rejected():
  big = tokens.Tokenizer.build({"ave": [f"c{i}" for i in range(30)], "avvp": LLP,
                                "avqa": ANSWERS})
  with pytest.raises(ValueError, match="more than the official metric's 28"):
    eval_tasks.AveTask(big)


def test_sharpen_heatmaps_cuts_at_a_multiple_of_the_mean():
  heat = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
  np.testing.assert_array_equal(eval_tasks.sharpen_heatmaps(heat, 0.0), heat)
  mean = heat.mean(axis=(1, 2), keepdims=True)
  for cut in (0.5, 1.0):
    out = eval_tasks.sharpen_heatmaps(heat, cut)
    np.testing.assert_allclose(out, np.maximum(heat - cut * mean, 0.0), rtol=1e-6)
  assert (eval_tasks.sharpen_heatmaps(heat, 0.5) > 0).sum() > (
      eval_tasks.sharpen_heatmaps(heat, 1.0) > 0).sum()
