"""The training and evaluation input pipeline over tiny converted datasets of every layout:
shapes and dtypes per task, targets and weights, determinism, exact resume (also with another
number of processes), each process's rows of the global batches,
mixture proportions, evaluation batches, global arrays, label sets and errors."""

import numpy as np
import pytest

from av_unified_jax import tokens
from av_unified_jax.data import decode_masks, pipeline, shards, tasks, transforms
from av_unified_jax.mask_tokenizer.mask_codes import MaskCodeTable
from configs import tiny
from test_pipeline_shards import write_tiny_datasets

TASK_DATASET = {"ave": "ave", "avvp": "llp", "avqa": "music_avqa", "ssl": "vggss",
                "avs": "avsbench_s4"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("shards")
  uids = write_tiny_datasets(root)
  return root, uids


@pytest.fixture(scope="module")
def tok(data):
  return pipeline.build_tokenizer(make_config(data[0]))


def make_config(root, only=None, **data_overrides):
  c = tiny.get_config()
  c.data.shards_dir = str(root)
  c.data.batch_size = 8
  for key, value in data_overrides.items():
    c.data[key] = value
  if only is not None:
    for t in tasks.TASK_ORDER:
      c.tasks[t].weight = float(only.get(t, 0.0))
  return c


def uid_of(batch):
  """The example identity written into every log-mel value (see test_pipeline_shards)."""
  return np.rint(batch["log_mel"][:, 0, 0, 0]).astype(int)


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
  for x, y in zip(a, b, strict=True):
    assert sorted(x) == sorted(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


class CodeTable:
  """mask_codes lookup: a fixed code grid per (example id, frame)."""

  def __init__(self, grid=(8, 8)):
    self.grid = grid

  def __call__(self, example_id, frame):
    seed = sum(map(ord, example_id)) + frame
    return np.random.default_rng(seed).integers(0, 512, self.grid).astype(np.int32)


def check_common(batch, task, tok, config):
  shapes = pipeline.example_shapes(config, tok)
  assert sorted(batch) == sorted(shapes) == sorted(tasks.MODEL_FIELDS)
  for key, (shape, dtype) in shapes.items():
    assert batch[key].shape == (8,) + shape, key
    assert batch[key].dtype == dtype, key
  np.testing.assert_array_equal(batch["task_id"], tasks.TASK_ORDER.index(task))
  np.testing.assert_array_equal(batch["prompt_tokens"][:, 0], tok.layout.task_token(task))
  w, t = batch["target_weights"], batch["target_tokens"]
  n = w.sum(1).astype(int)
  for row in range(8):  # weights: ones on the real tokens through <eos>, zeros after
    np.testing.assert_array_equal(w[row], np.arange(w.shape[1]) < n[row])
    np.testing.assert_array_equal(t[row, n[row]:], 0)
    if n[row]:
      assert t[row, n[row] - 1] == tok.layout.EOS and tok.layout.EOS not in t[row, :n[row] - 1]
  return n


def test_ave_batches(data, tok):
  root, uids = data
  config = make_config(root, {"ave": 1})
  batch = next(pipeline.make_train_iterator(config, tok, process_index=0, process_count=1))
  n = check_common(batch, "ave", tok, config)
  source = shards.open_split(root / "ave", "train")
  for row, uid in enumerate(uid_of(batch)):
    ex = source[uids[("ave", "train")].index(uid)]
    label = ex["category"] if ex["end"] > ex["start"] else None
    decoded = tok.decode_target("ave", batch["target_tokens"][row, :n[row]])
    want = {"label": label, "start": int(ex["start"]), "end": int(ex["end"])} if label else \
        {"label": None, "start": 0, "end": 0}
    assert decoded == want
  assert batch["segment_mask"].all() and not batch["has_weak"].any()
  np.testing.assert_array_equal(batch["focus_segment"], 5)


def test_avvp_batches_use_weak_prompt_and_multi_hot(data, tok):
  root, uids = data
  config = make_config(root, {"avvp": 1}, batch_size=8)
  it = pipeline.make_train_iterator(config, tok, process_index=0, process_count=1)
  source = shards.open_split(root / "llp", "train")
  weak_prompt = tok.encode_prompt("avvp", weak=True)
  seen_short = False
  for batch in take(it, 3):
    n = check_common(batch, "avvp", tok, config)
    np.testing.assert_array_equal(batch["prompt_tokens"][:, :len(weak_prompt)],
                                  np.broadcast_to(weak_prompt, (8, len(weak_prompt))))
    assert batch["has_weak"].all()
    for row, uid in enumerate(uid_of(batch)):
      index = uids[("llp", "train")].index(uid)
      ex = source[index]
      want = np.isin(tok.label_sets["avvp"], ex["weak_labels"]).astype(np.float32)
      np.testing.assert_array_equal(batch["weak_labels"][row], want)
      assert tok.decode_target("avvp", batch["target_tokens"][row, :n[row]], weak=True) == \
          sorted(ex["weak_labels"], key=tok.label_sets["avvp"].index)
      assert batch["segment_mask"][row].sum() == int(ex["num_segments"])
      seen_short |= int(ex["num_segments"]) == 8
  assert seen_short  # the clip with 8 valid seconds came through with segment_mask 8 True


def test_avqa_batches_sample_ten_of_sixty_seconds(data, tok):
  root, uids = data
  config = make_config(root, {"avqa": 1})
  batch = next(pipeline.make_train_iterator(config, tok, process_index=0, process_count=1))
  n = check_common(batch, "avqa", tok, config)
  assert batch["segment_mask"].all()
  source = shards.open_split(root / "music_avqa", "train")
  answers = {source[i]["question"]: source[i]["answer"] for i in range(len(source))}
  for row in range(8):
    prompt = batch["prompt_tokens"][row]
    question = tok.text.decode([int(t) - tok.layout.text_range[0] for t in prompt[1:] if t])
    assert tok.decode_target("avqa", batch["target_tokens"][row, :n[row]]) == answers[question]


def test_ssl_training_clips_without_boxes_have_zero_target_weight(data, tok):
  root, _ = data
  config = make_config(root, {"ssl": 1})
  batch = next(pipeline.make_train_iterator(config, tok, process_index=0, process_count=1))
  check_common(batch, "ssl", tok, config)
  assert batch["target_weights"].sum() == 0 and batch["segment_mask"].all()
  assert not batch["has_focus_map"].any() and not batch["focus_map"].any()


@pytest.mark.parametrize("augment", [True, False])
def test_ssl_clips_with_boxes_train_the_box_tokens_and_the_map(data, tok, augment):
  """VGG-SS clips with boxes (here its test split, trained on): the union box becomes the
  target and the boxes, painted as a mask, the focus map; both follow the crop and flip.
  Without augmentation the target is the stored union box itself."""
  root, uids = data
  config = make_config(root, {"ssl": 1}, train_split="test", augment=augment)
  batch = next(pipeline.make_train_iterator(config, tok, process_index=0, process_count=1))
  n = check_common(batch, "ssl", tok, config)
  assert batch["has_focus_map"].all() and (n == 5).all()
  source = shards.open_split(root / "vggss", "test")
  g = tasks.MAP_GRID
  for row, uid in enumerate(uid_of(batch)):
    x0, y0, x1, y1 = tok.decode_target("ssl", batch["target_tokens"][row])
    cells = batch["focus_map"][row]
    inside = np.zeros((g, g), bool)
    inside[int(np.floor(y0 * g)):int(np.ceil(y1 * g)), int(np.floor(x0 * g)):int(np.ceil(x1 * g))] = 1
    assert cells[inside].sum() > 0 and cells[~inside].sum() < 0.05 * cells.sum(), row
    if not augment:
      stored = source[uids[("vggss", "test")].index(uid)]["boxes"]
      union = transforms.union_box(transforms.clean_boxes(stored))
      np.testing.assert_allclose([x0, y0, x1, y1], union, atol=1.01 / tok.layout.num_loc_bins)


def test_boxes_mask_paints_every_clean_box():
  mask = tasks.boxes_mask(np.array([[0.0, 0.0, 0.25, 0.5], [0.5, 0.5, 1.0, 1.0],
                                    [0.2, 0.2, 0.1, 0.1]]), size=8)  # the last is corrupt
  expected = np.zeros((8, 8), bool)
  expected[0:4, 0:2] = True
  expected[4:8, 4:8] = True
  np.testing.assert_array_equal(mask, expected)
  assert tasks.boxes_mask(np.zeros((0, 4))) is None


def test_avs_batches_pad_to_t_and_take_codes(data, tok):
  root, uids = data
  config = make_config(root, {"avs": 1})
  table = CodeTable()
  it = pipeline.make_train_iterator(config, tok, mask_codes=table, process_index=0,
                                    process_count=1)
  batch = next(it)
  n = check_common(batch, "avs", tok, config)
  np.testing.assert_array_equal(batch["segment_mask"], np.broadcast_to(np.arange(10) < 5, (8, 10)))
  np.testing.assert_array_equal(batch["frames"][:, 5:], 0)
  np.testing.assert_array_equal(batch["focus_segment"], 0)  # S4 train: frame 0 annotated
  np.testing.assert_array_equal(n, 65)
  source = shards.open_split(root / "avsbench_s4", "train")
  for row, uid in enumerate(uid_of(batch)):
    example_id = source[uids[("avsbench_s4", "train")].index(uid)]["id"]
    np.testing.assert_array_equal(tok.decode_target("avs", batch["target_tokens"][row]),
                                  table(example_id, 0))
  # The focus map is the focus frame's mask as cell fractions (the frames are a plain resize).
  for row, uid in enumerate(uid_of(batch)):
    example = source[uids[("avsbench_s4", "train")].index(uid)]
    mask = decode_masks(example)[0]
    assert batch["has_focus_map"][row] == mask.any()
    covered = batch["focus_map"][row].mean()
    np.testing.assert_allclose(covered, mask.mean(), atol=0.02)
  np.testing.assert_array_equal(batch["prompt_tokens"][:, len(tok.encode_prompt("avs", second=0))
                                                      - 1], tok.layout.time_token(0))
  no_codes = next(pipeline.make_train_iterator(config, tok, process_index=0, process_count=1))
  assert no_codes["target_weights"].sum() == 0


def test_same_seed_same_batches_other_seed_other_batches(data, tok):
  config = make_config(data[0])
  a = take(pipeline.make_train_iterator(config, tok, process_index=0, process_count=1), 3)
  b = take(pipeline.make_train_iterator(config, tok, process_index=0, process_count=1), 3)
  assert_batches_equal(a, b)
  config.seed = 1
  c = take(pipeline.make_train_iterator(config, tok, process_index=0, process_count=1), 3)
  assert not all(np.array_equal(x["frames"], y["frames"]) for x, y in zip(a, c))


def test_resume_continues_exactly_and_workers_do_not_change_the_stream(data, tok):
  config = make_config(data[0])
  full = take(pipeline.make_train_iterator(config, tok, process_index=0, process_count=1), 5)
  it = pipeline.make_train_iterator(config, tok, process_index=0, process_count=1)
  take(it, 2)
  state = it.get_state()
  assert state["next_batch"] == 2
  config.data.worker_count = 1
  resumed = pipeline.make_train_iterator(config, tok, process_index=0, process_count=1)
  resumed.set_state(state)
  try:
    assert_batches_equal(full[2:], take(resumed, 3))
    assert resumed.get_state()["next_batch"] == 5
  finally:
    resumed.close()
  config.seed = 5
  other = pipeline.make_train_iterator(config, tok, process_index=0, process_count=1)
  with pytest.raises(ValueError, match="seed"):
    other.set_state(state)


def test_processes_read_their_rows_of_one_global_stream(data, tok):
  """Process p of n reads rows [p B/n, (p+1) B/n) of every global batch, and the global
  batches are the same for any process count."""
  root, uids = data
  config = make_config(root, {"ave": 3, "ssl": 1}, batch_size=4)
  one = take(pipeline.make_train_iterator(config, tok, process_index=0, process_count=1), 6)
  parts = [take(pipeline.make_train_iterator(config, tok, process_index=p, process_count=2), 6)
           for p in range(2)]
  for k, batch in enumerate(one):
    for key, value in batch.items():
      np.testing.assert_array_equal(
          value, np.concatenate([parts[0][k][key], parts[1][k][key]]), err_msg=f"{k} {key}")
  ave = {int(u) for b in one for u, t in zip(uid_of(b), b["task_id"]) if t == 0}
  assert ave <= set(uids[("ave", "train")]) and len(ave) > 1


def test_resume_with_another_process_count_continues_the_global_stream(data, tok):
  """A state written by each of 2 processes restores in 1 process (and one of 1 in 2): the
  next batch is the next global batch, as an uninterrupted run of either count reads it."""
  config = make_config(data[0], {"ave": 1, "avqa": 1}, batch_size=4)
  full = take(pipeline.make_train_iterator(config, tok, process_index=0, process_count=1), 5)
  two = [pipeline.make_train_iterator(config, tok, process_index=p, process_count=2)
         for p in range(2)]
  for it in two:
    take(it, 3)
  states = [it.get_state() for it in two]
  assert states[0]["next_batch"] == states[1]["next_batch"] == 3
  assert states[0]["fingerprint"] == states[1]["fingerprint"]
  resumed = pipeline.make_train_iterator(config, tok, process_index=0, process_count=1)
  resumed.set_state(states[1])
  assert_batches_equal(full[3:], take(resumed, 2))
  back = pipeline.make_train_iterator(config, tok, process_index=1, process_count=2)
  back.set_state(resumed.get_state())  # 1 -> 2 processes: process 1 reads its rows of batch 5.
  sixth = take(pipeline.make_train_iterator(config, tok, process_index=0, process_count=1), 6)[5]
  local = next(back)
  for key, value in local.items():
    np.testing.assert_array_equal(value, sixth[key][2:], err_msg=key)


def test_mixture_follows_the_weights(data, tok):
  config = make_config(data[0], {"ave": 3, "ssl": 1}, batch_size=8)
  it = pipeline.make_train_iterator(config, tok, process_index=0, process_count=1)
  ids = np.concatenate([b["task_id"] for b in take(it, 25)])
  share = np.mean(ids == tasks.TASK_ORDER.index("ave"))
  assert set(ids.tolist()) == {0, 3} and 0.70 <= share <= 0.80, share


def test_eval_batches_cover_the_split_once_per_process_layout(data, tok):
  root, uids = data
  config = make_config(root)
  table = CodeTable()
  rows = []
  for p in range(2):
    ev = pipeline.make_eval_batches(config, "avs", tok, batch_size=4, max_examples=0,
                                    mask_codes=table, process_index=p, process_count=2)
    batches = list(ev.batches)
    assert ev.num_examples == 15 and len(batches) == ev.num_batches == 4
    for b in batches:
      assert b["frames"].shape == (2, 10, 32, 32, 3)
      np.testing.assert_array_equal(b["focus_segment"], b["frame_index"])
      np.testing.assert_array_equal(b["target_weights"].sum(1), 65)
      rows += [(int(i), int(k)) for i, k, v in zip(b["example_index"], b["frame_index"],
                                                   b["valid"]) if v]
  assert sorted(rows) == [(i, k) for i in range(3) for k in range(5)]
  ssl = pipeline.make_eval_batches(config, "ssl", tok, batch_size=8, max_examples=0,
                                   process_index=0, process_count=1)
  b = next(iter(ssl.batches))
  np.testing.assert_array_equal(b["valid"], np.arange(8) < 4)
  first = ssl.source[0]
  box = tokens.quantize_coord(np.asarray(first["boxes"][0]), tok.layout.num_loc_bins)
  np.testing.assert_array_equal(b["target_tokens"][0, :4], tok.layout.loc_token(box))
  assert b["segment_mask"].all()  # one stored frame, repeated over the 10 seconds
  np.testing.assert_array_equal(b["frames"][0, 0], b["frames"][0, 9])
  avvp = next(iter(pipeline.make_eval_batches(config, "avvp", tok, max_examples=0,
                                              process_index=0, process_count=1).batches))
  dense = tok.encode_prompt("avvp")
  np.testing.assert_array_equal(avvp["prompt_tokens"][0, :len(dense)], dense)


def test_global_batch_on_eight_devices(data, tok):
  import jax  # pylint: disable=g-import-not-at-top
  from av_unified_jax import sharding  # pylint: disable=g-import-not-at-top

  config = make_config(data[0])
  local = next(pipeline.make_train_iterator(config, tok, process_index=0, process_count=1))
  spec = pipeline.batch_spec(config, tok)
  mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  shardings = sharding.batch_shardings(spec, mesh, sharding.logical_rules(config))
  batch = pipeline.global_batch(local, shardings, spec)
  assert len(jax.devices()) == 8
  for key, value in batch.items():
    assert value.shape == spec[key].shape and value.dtype == spec[key].dtype
    assert len(value.addressable_shards) == 8
    np.testing.assert_array_equal(np.asarray(value), local[key])


def test_label_sets_and_tokenizer_saved_in_workdir(data, tmp_path):
  root, _ = data
  label_sets, extra = pipeline.collect_label_sets(str(root))
  assert label_sets["ave"] == tokens.AVE_CLASSES  # only official names: official order
  assert label_sets["avvp"] == tokens.LLP_CLASSES
  assert label_sets["avqa"] == ("two", "yes", "left", "no")  # first appearance in train
  assert len(extra) == 9 and extra[0].startswith("Is the instrument")
  config = make_config(root)
  tok = pipeline.load_or_build_tokenizer(config, tmp_path)
  assert (tmp_path / pipeline.TOKENIZER_DIR / "tokenizer.json").exists()
  again = pipeline.load_or_build_tokenizer(config, tmp_path)
  assert again.layout == tok.layout and again.label_sets == tok.label_sets


def test_clear_errors(data, tok, tmp_path):
  root, _ = data
  config = make_config(tmp_path / "nothing", {"ave": 1})
  with pytest.raises(FileNotFoundError, match="dataset_info.json"):
    pipeline.make_train_iterator(config, tok, process_index=0, process_count=1)
  config = make_config(root, {"ave": 1}, num_segments=5)
  with pytest.raises(ValueError, match="num_segments=5"):
    pipeline.make_train_iterator(config, tok, process_index=0, process_count=1)
  config = make_config(root, {"ave": 1}, batch_size=9)
  with pytest.raises(ValueError, match="not divisible"):
    pipeline.make_train_iterator(config, tok, process_index=0, process_count=2)
  config = make_config(root, {"avs": 1})
  config.tokens.max_target_len = 40
  with pytest.raises(ValueError, match="max_target_len=40"):
    pipeline.make_train_iterator(config, tok, process_index=0, process_count=1)
  config = make_config(root, {"ave": 1})
  config.tokens.max_time = 9
  with pytest.raises(ValueError, match="<t_10>"):
    pipeline.make_train_iterator(config, tok, process_index=0, process_count=1)
  config = make_config(root, {})
  with pytest.raises(ValueError, match="weight is 0"):
    pipeline.make_train_iterator(config, tok, process_index=0, process_count=1)


def test_mask_code_table_from_an_encoder_feeds_avs_targets(data, tok):
  import pickle  # pylint: disable=g-import-not-at-top

  root, _ = data
  source = shards.open_split(root / "avsbench_s4", "train")

  def encode(masks):  # bool[B, 16, 16] -> int32[B, 8, 8]: 2x2 block sums (0..4)
    assert masks.shape[1:] == (16, 16) and masks.dtype == bool
    return masks.reshape(-1, 8, 2, 8, 2).sum((2, 4)).astype(np.int32)  # [B, 8, 8]

  table = MaskCodeTable.from_encoder(source, encode, mask_size=16, batch_size=4)
  assert len(table) == len(source)  # S4 train: one annotated frame per clip
  assert table(source[0]["id"], 1) is None and table(source[0]["id"], 0).max() == 4
  table = pickle.loads(pickle.dumps(table))
  config = make_config(root, {"avs": 1})
  batch = next(pipeline.make_train_iterator(config, tok, mask_codes=table, process_index=0,
                                            process_count=1))
  codes = tok.layout.token_code(batch["target_tokens"][:, :64].astype(np.int64))
  assert codes.max() == 4 and (codes > 0).any(axis=1).all()


def test_flip_is_off_for_avqa_and_geometry_off_for_avs(data, tok):
  config = make_config(data[0])
  names = {t: [type(op).__name__ for op in pipeline.example_transforms(config, t, tok, train=True)]
           for t in tasks.TASK_ORDER}
  assert "RandomHorizontalFlip" in names["ave"] and "RandomHorizontalFlip" in names["ssl"]
  assert "RandomHorizontalFlip" not in names["avqa"] and "RandomHorizontalFlip" not in names["avs"]
  assert all("SpecAugment" in n for n in names.values())
  evals = pipeline.example_transforms(config, "ave", tok, train=False)
  assert [type(op).__name__ for op in evals] == ["SelectSegments", "RandomResizedCrop",
                                                 "TaskTokens", "ModelExample"]
  assert evals[1].min_area == 1.0


def test_train_data_for_the_train_loop(data, tok):
  from av_unified_jax import models  # pylint: disable=g-import-not-at-top

  config = make_config(data[0])
  train_data = pipeline.make_train_data(config, tok, process_index=0, process_count=1)
  assert train_data.vocab_size == tok.layout.vocab_size and train_data.num_classes == 25
  cfg = models.model_config_from(config.model)
  assert train_data.batch_spec["log_mel"].shape == (8, 10, cfg.mel_frames, cfg.mel_bins)
  batch = next(train_data.iterator)
  assert {k: v.shape for k, v in batch.items()} == \
      {k: s.shape for k, s in train_data.batch_spec.items()}


def test_iterator_state_round_trips_through_the_checkpoint_handler(data, tok, tmp_path):
  from etils import epath  # pylint: disable=g-import-not-at-top
  from av_unified_jax import checkpointing  # pylint: disable=g-import-not-at-top

  config = make_config(data[0], {"ave": 1, "avqa": 2})
  it = pipeline.make_train_iterator(config, tok, process_index=0, process_count=1)
  take(it, 3)
  handler = checkpointing.DataIteratorHandler()
  handler.save(epath.Path(tmp_path), checkpointing.DataIteratorSave(it))
  expected = take(it, 2)
  fresh = pipeline.make_train_iterator(config, tok, process_index=0, process_count=1)
  handler.restore(epath.Path(tmp_path), checkpointing.DataIteratorRestore(fresh))
  assert_batches_equal(expected, take(fresh, 2))


def test_avs_trains_on_extra_datasets_and_weighs_background_codes(data, tok):
  root, uids = data
  config = make_config(root, {"avs": 1})
  config.tasks.avs.extra_train_datasets = ("avsbench_ms3",)
  config.loss.avs_background_weight = 0.25
  table = CodeTable()
  table.background_code = 7
  it = pipeline.make_train_iterator(config, tok, mask_codes=table, process_index=0,
                                    process_count=1)
  batches = take(it, 6)
  s4, ms3 = set(uids[("avsbench_s4", "train")]), set(uids[("avsbench_ms3", "train")])
  seen = {int(u) for b in batches for u in uid_of(b)}
  assert seen & s4 and seen & ms3  # Both datasets feed the AVS stream.
  # MS3 annotates all five training frames: the focus is not always frame 0.
  assert any(b["focus_segment"].max() > 0 for b in batches)
  background = tok.encode_target("avs", np.full(tok.mask_grid, 7, np.int32))[0]
  for b in batches:
    w, t = b["target_weights"], b["target_tokens"]
    np.testing.assert_array_equal(w[t == background], 0.25)
    np.testing.assert_array_equal(w[(t != background) & (t != 0)], 1.0)
  config.tasks.avs.extra_train_datasets = ("ave",)
  with pytest.raises(ValueError, match="extra_train_datasets"):
    pipeline.make_train_iterator(config, tok, mask_codes=table, process_index=0,
                                 process_count=1)


def test_ave_event_classes_in_the_llp_label_set_train_the_mil_head(data, tok):
  root, uids = data
  config = make_config(root, {"ave": 1})
  config.loss.mil_tasks = ("avvp", "ave")
  batches = take(pipeline.make_train_iterator(config, tok, process_index=0, process_count=1), 3)
  source = shards.open_split(root / "ave", "train")
  classes = list(tok.label_sets["avvp"])
  seen_weak = False
  for batch in batches:
    for row, uid in enumerate(uid_of(batch)):
      ex = source[uids[("ave", "train")].index(uid)]
      shared = ex["end"] > ex["start"] and ex["category"] in classes  # "Cat" is in both sets.
      assert batch["has_weak"][row] == shared
      want = np.zeros(len(classes), np.float32)
      if shared:
        want[classes.index(ex["category"])] = 1.0
        seen_weak = True
      np.testing.assert_array_equal(batch["weak_labels"][row], want)
      # The event's seconds reach the batch for the event loss (loss.event_weight).
      seconds = np.arange(batch["event_segments"].shape[1])
      inside = (seconds >= ex["start"]) & (seconds < ex["end"]) if shared else seconds < 0
      assert batch["has_event_segments"][row] == shared
      np.testing.assert_array_equal(batch["event_segments"][row], inside.astype(np.float32))
  assert seen_weak
