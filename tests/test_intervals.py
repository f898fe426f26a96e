"""Bootstrap intervals over videos: the per-video decompositions give exactly the official
metric (on the videos themselves and on any resample), the interval contains the point
estimate, narrows with more videos, collapses when every video is the same, and resamples
whole videos (all questions of an AVQA video together)."""

import numpy as np
import pytest

from av_unified_jax import metrics, tokens
from av_unified_jax.evaluation import intervals
from av_unified_jax.evaluation import tasks as eval_tasks

AVE = ("dog", "cat", "violin")
LLP = ("speech", "dog", "violin", "car")
ANSWERS = ("yes", "no", "two", "three")
TOK = tokens.Tokenizer.build({"ave": AVE, "avvp": LLP, "avqa": ANSWERS},
                             extra_text=["Is the dog left?"], num_mask_codes=8,
                             mask_grid=(2, 2), num_loc_bins=11)
TYPES = (("Audio", "Counting"), ("Visual", "Location"), ("Audio-Visual", "Existential"))


class EvalCfg:
  avvp_source = "mil"
  ssl_source = "map"
  ciou_protocol = "lvs"


def ave_data(n, rng, offset=0):
  task = eval_tasks.AveTask(TOK)
  gts, outs = [], []
  for i in range(n):
    seg = rng.integers(0, 4, 10).astype(np.int32)
    seg[seg == 3] = 28
    pred = np.where(rng.random(10) < 0.6, seg, 28).astype(np.int32)
    gts.append({"id": f"v{i + offset}:x", "video_id": f"v{i + offset}", "segments": seg})
    outs.append([{"segments": pred}])
  return task, gts, outs


def avvp_data(n, rng, offset=0):
  task = eval_tasks.AvvpTask(TOK, EvalCfg())
  gts, outs = [], []
  for i in range(n):
    mats = [(rng.random((25, 10)) < 0.1).astype(np.int64) for _ in range(4)]
    for m in mats:
      m[len(LLP):] = 0
    gts.append({"id": f"v{i + offset}", "GT_a": mats[0], "GT_v": mats[1]})
    outs.append([{"SO_a": mats[0] | mats[2], "SO_v": mats[3]}])
  return task, gts, outs


def avqa_data(n, rng, offset=0, per_video=3):
  task = eval_tasks.AvqaTask(TOK)
  gts, outs = [], []
  for i in range(n):
    for q in range(per_video):
      answer = str(rng.choice(ANSWERS))
      gts.append({"id": f"{i}-{q}", "video_id": f"v{i + offset}", "question_id": q,
                  "question": "?", "answer": answer, "type": TYPES[q % len(TYPES)]})
      outs.append([{"answer": answer if rng.random() < 0.5 else "no"}])
  return task, gts, outs


def ssl_data(n, rng, offset=0):
  task = eval_tasks.SslTask(TOK, EvalCfg())
  gts, outs = [], []
  for i in range(n):
    x0, y0 = rng.uniform(0, 0.5, 2)
    box = [x0, y0, x0 + 0.4, y0 + 0.4]
    guess = np.clip(np.array(box) + rng.normal(0, 0.15, 4), 0, 1)
    guess = [min(guess[0], guess[2]), min(guess[1], guess[3]),
             max(guess[0], guess[2]), max(guess[1], guess[3])]
    gts.append({"id": f"v{i + offset}", "boxes": [box], "gt_map": metrics.vggss_gt_map([box])})
    outs.append([{"heatmap": eval_tasks.box_heatmap(guess), "box": guess}])
  return task, gts, outs


def avs_data(n, rng, offset=0):
  task = eval_tasks.AvsTask(TOK, EvalCfg(), None)
  gts, outs = [], []
  for i in range(n):
    masks = rng.random((5, 8, 8)) < rng.uniform(0.0, 0.6)
    frames = [0] if i % 3 == 0 else [0, 1, 2, 3, 4]
    gts.append({"id": f"v{i + offset}", "masks": masks,
                "annotated": np.isin(np.arange(5), frames)})
    outs.append([{"logits": rng.normal(0, 3, (8, 8)).astype(np.float32) + 4 * masks[k] - 2,
                  "frame": k} for k in frames])
  return task, gts, outs


MAKERS = {"ave": ave_data, "avvp": avvp_data, "avqa": avqa_data, "ssl": ssl_data,
          "avs": avs_data}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_per_video_contributions_give_the_official_metric(name):
  rng = np.random.default_rng(1)
  task, gts, outs = MAKERS[name](11, rng)
  stat = intervals.VideoStatistic.build(task, gts, outs)
  official = task.score(gts, outs)
  point = stat.point()
  for key, value in official.items():
    np.testing.assert_allclose(point[key], value, rtol=0, atol=1e-9, err_msg=key)
  # On resamples too: the official scoring of the drawn videos' examples, in the drawn order.
  generic = intervals._Generic(task, gts, outs, *intervals.group_by_video(gts))
  idx = intervals.resample_indices(stat.num_videos, 6, seed=3)
  fast, slow = stat(idx), generic(idx)
  for key in official:
    np.testing.assert_allclose(fast[key], slow[key], rtol=0, atol=1e-9, err_msg=key)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_interval_contains_the_point_and_shrinks_with_more_videos(name):
  task, gts, outs = MAKERS[name](12, np.random.default_rng(2))
  official = task.score(gts, outs)
  small = intervals.bootstrap(task, gts, outs, resamples=400)
  # Four times as many videos, each of the twelve repeated under new ids: same point estimate.
  big_gts, big_outs = [], []
  for copy in range(4):
    for g, o in zip(gts, outs, strict=True):
      big_gts.append({**g, "id": f"{copy}/{g['id']}",
                      "video_id": f"{copy}/{g.get('video_id', g['id'])}"})
      big_outs.append(o)
  big = intervals.bootstrap(task, big_gts, big_outs, resamples=400)
  checked = [k for k in ("accuracy", "seg_audio", "overall", "ciou_at_0_5", "auc", "miou")
             if k in official]
  assert checked
  for key in checked:
    lo, hi = small[key]
    assert lo <= official[key] <= hi, (key, lo, official[key], hi)
    assert hi - lo > 0
    assert (big[key][1] - big[key][0]) < 0.75 * (hi - lo), (key, small[key], big[key])


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_identical_videos_give_a_point_interval(name):
  task, gts, outs = MAKERS[name](1, np.random.default_rng(4))
  same_gts = [{**g, "id": f"{i}/{g['id']}", "video_id": f"v{i}"} for i in range(9)
              for g in gts]
  same_outs = [o for _ in range(9) for o in outs]
  official = task.score(same_gts, same_outs)
  got = intervals.bootstrap(task, same_gts, same_outs, resamples=200)
  for key, value in official.items():
    if key == "fscore":  # per-batch F: a batch of 4 videos vs one of 1 share the curve's max
      continue
    np.testing.assert_allclose(got[key], (value, value), rtol=0, atol=1e-9, err_msg=key)


def test_avqa_resamples_whole_videos():
  task = eval_tasks.AvqaTask(TOK)
  gts, outs = [], []
  for v, right in (("a", True), ("b", False)):
    for q in range(2):
      gts.append({"id": f"{v}{q}", "video_id": v, "question_id": q, "question": "?",
                  "answer": "yes", "type": TYPES[0]})
      outs.append([{"answer": "yes" if right else "no"}])
  stat = intervals.VideoStatistic.build(task, gts, outs)
  assert stat.num_videos == 2
  values = stat(intervals.resample_indices(2, 300, seed=0))["overall"]
  assert set(np.round(values, 6)) == {0.0, 0.5, 1.0}  # never 0.25 or 0.75


def test_resamples_are_reproducible_and_summary_is_json_ready():
  task, gts, outs = ave_data(8, np.random.default_rng(5))
  a = intervals.bootstrap(task, gts, outs, resamples=100, seed=7)
  b = intervals.bootstrap(task, gts, outs, resamples=100, seed=7)
  assert a == b
  saved = intervals.summary({"ave": a}, {"ave": 8}, resamples=100, seed=7)
  assert saved["intervals"]["ave"]["accuracy"] == list(a["accuracy"])
  assert saved["videos"] == {"ave": 8} and saved["level"] == 0.95
  assert intervals.percentile_interval(np.array([np.nan, np.nan])) is None
