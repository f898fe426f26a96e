"""Per-example transforms: crop and flip keep boxes and masks on the pixels they annotate,
corrupt boxes are dropped, SpecAugment is seeded and bounded, seconds are chosen by rule."""

import numpy as np
import pytest

from av_unified_jax.data import transforms as tf


def bright_bbox(image, threshold=150):
  """Normalized [x0, y0, x1, y1] of the pixels brighter than `threshold` (channel 0)."""
  ys, xs = np.nonzero(image[..., 0] > threshold)
  h, w = image.shape[:2]
  return np.array([xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h])


def drawn_clip(size=96, box_px=(20, 30, 60, 70), frames=3):
  x0, y0, x1, y1 = box_px
  image = np.full((size, size, 3), 40, np.uint8)
  image[y0:y1, x0:x1] = 230
  mask = np.zeros((size, size), bool)
  mask[y0:y1, x0:x1] = True
  return {"frames": np.stack([image] * frames), "log_mel": np.zeros((frames, 10, 8), np.float32),
          "boxes": np.array([[x0 / size, y0 / size, x1 / size, y1 / size]]), "mask": mask}


@pytest.mark.parametrize("seed", range(12))
def test_crop_and_flip_keep_box_and_mask_aligned(seed):
  rng = np.random.default_rng(seed)
  clip = drawn_clip()
  out = tf.RandomResizedCrop(48, min_area=0.3)(clip, rng)
  out = tf.RandomHorizontalFlip(p=1.0)(out, rng)
  assert out["frames"].shape == (3, 48, 48, 3) and out["frames"].dtype == np.uint8
  assert out["flipped"] and out["mask"].shape == (48, 48)
  # The box kept at least half its area (SSL crops are redrawn otherwise) and still lies on
  # the bright rectangle, to within about one output pixel per edge.
  box = out["boxes"][0]
  np.testing.assert_allclose(box, bright_bbox(out["frames"][0]), atol=1.6 / 48)
  for frame in out["frames"]:
    np.testing.assert_array_equal(frame, out["frames"][0])
  bright = out["frames"][0][..., 0] > 135
  iou = (bright & out["mask"]).sum() / (bright | out["mask"]).sum()
  assert iou > 0.9, iou


def test_flip_mirrors_box_coordinates():
  clip = drawn_clip()
  out = tf.RandomHorizontalFlip(p=1.0)(clip, np.random.default_rng(0))
  x0, y0, x1, y1 = clip["boxes"][0]
  np.testing.assert_allclose(out["boxes"][0], [1 - x1, y0, 1 - x0, y1])
  np.testing.assert_array_equal(out["mask"], clip["mask"][:, ::-1])
  kept = tf.RandomHorizontalFlip(p=0.0)(clip, np.random.default_rng(0))
  assert not kept["flipped"] and kept["frames"] is clip["frames"]


def test_eval_resize_is_the_whole_frame():
  clip = drawn_clip()
  out = tf.RandomResizedCrop(48, min_area=1.0)(clip, np.random.default_rng(0))
  np.testing.assert_allclose(out["crop"], [0, 0, 1, 1])
  np.testing.assert_allclose(out["boxes"], clip["boxes"])
  np.testing.assert_allclose(bright_bbox(out["frames"][1]), clip["boxes"][0], atol=1 / 48)


def test_crop_is_a_function_of_the_seed():
  clip = drawn_clip()
  crop = tf.RandomResizedCrop(32, min_area=0.3)
  a = crop(clip, np.random.default_rng(7))
  b = crop(clip, np.random.default_rng(7))
  c = crop(clip, np.random.default_rng(8))
  np.testing.assert_array_equal(a["frames"], b["frames"])
  assert not np.allclose(a["crop"], c["crop"])


def test_clean_boxes_drops_corrupt_and_empty_boxes():
  boxes = np.array([[0.1, 0.2, 0.5, 0.6], [-2.8823037615171176e16, 0.1, 0.2, 0.3],
                    [0.26875, 1.0, 0.753125, 1.0], [np.nan, 0, 1, 1], [-0.005, 0.0, 1.004, 0.5]])
  out = tf.clean_boxes(boxes)
  np.testing.assert_allclose(out, [[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 0.5]])
  np.testing.assert_allclose(tf.union_box(out), [0.0, 0.0, 1.0, 0.6])
  assert tf.union_box(tf.clean_boxes(np.zeros((0, 4)))) is None


def test_spec_augment_masks_with_the_second_mean_and_is_seeded():
  rng = np.random.default_rng(0)
  log_mel = rng.normal(size=(4, 100, 64)).astype(np.float32)
  aug = tf.SpecAugment(freq_masks=2, max_freq=8, time_masks=1, max_time=12)
  a = aug({"log_mel": log_mel}, np.random.default_rng(3))["log_mel"]
  b = aug({"log_mel": log_mel}, np.random.default_rng(3))["log_mel"]
  np.testing.assert_array_equal(a, b)
  changed = a != log_mel  # [S, F, M]
  assert changed.any()
  means = log_mel.mean(axis=(1, 2))
  for s in range(4):
    np.testing.assert_allclose(a[s][changed[s]], means[s], rtol=1e-6)
    bins = np.flatnonzero(changed[s].all(axis=0))  # fully masked mel bins
    frames = np.flatnonzero(changed[s].all(axis=1))  # fully masked frames
    assert len(bins) <= 16 and len(frames) <= 12


def test_mel_shift_moves_every_second_by_the_same_bins_and_is_seeded():
  log_mel = np.tile(np.arange(16, dtype=np.float32), (3, 5, 1))  # [S, F, M], value = bin
  aug = tf.MelShift(max_shift=3)
  shifts = set()
  for seed in range(20):
    out = aug({"log_mel": log_mel}, np.random.default_rng(seed))["log_mel"]
    again = aug({"log_mel": log_mel}, np.random.default_rng(seed))["log_mel"]
    np.testing.assert_array_equal(out, again)
    k = int(8 - out[0, 0, 8])  # bin 8 reads bin 8 - k
    assert abs(k) <= 3
    np.testing.assert_array_equal(out, np.clip(np.arange(16) - k, 0, 15)[None, None].repeat(
        3, 0).repeat(5, 1))
    shifts.add(k)
  assert len(shifts) > 1


def test_stratified_seconds_and_frame_index():
  rng = np.random.default_rng(0)
  for _ in range(20):
    sec = tf.stratified_seconds(60, 10, rng)
    assert sec.dtype == np.int32 and np.all(sec // 6 == np.arange(10))
  np.testing.assert_array_equal(tf.stratified_seconds(60, 10, None), np.arange(10) * 6 + 3)
  np.testing.assert_array_equal(tf.stratified_seconds(7, 10, None) < 7, True)
  assert tf.frame_index(3, 10, 10) == 3 and tf.frame_index(3, 1, 10) == 0
  assert tf.frame_index(3, 20, 10) == 7  # 2 fps: the second frame of second 3


def test_select_segments_pads_short_clips_and_samples_long_ones():
  from test_pipeline_shards import avqa_records, avs_examples, Uids  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  record, _ = avqa_records(rng, Uids(), "train", 1, 1)[0]
  example = {**{k: v for k, v in record.items() if k != "questions"}, **record["questions"][0]}
  clip = tf.SelectSegments(10, sample=True, mask_frame=False, train=True)(
      example, np.random.default_rng(0))
  assert clip["frames"].shape[0] == 10 and np.all(clip["seconds"] // 6 == np.arange(10))
  avs = avs_examples(rng, Uids(), "test", 1)[0]
  avs["_frame_index"] = 3
  clip = tf.SelectSegments(10, sample=False, mask_frame=True, train=False)(avs, None)
  assert clip["frames"].shape[0] == 5 and clip["focus"] == 3 and clip["mask_frame"] == 3
  assert clip["mask"].dtype == bool and clip["mask"].any()
