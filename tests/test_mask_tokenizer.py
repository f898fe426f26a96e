"""Mask tokenizer: shapes, logical axes, resize helpers, IoU rule, dead-code restarts, training."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from av_unified_jax import mask_tokenizer as mt
from av_unified_jax.mask_tokenizer import train as mtt
from configs import mask_tokenizer as mt_config

TINY = mt.MaskTokenizerConfig(mask_size=32, grid=4, codebook_size=64, code_dim=8,
                              channels=(8, 16, 32), num_res_blocks=1, ema_decay=0.9)


@pytest.fixture(scope="module")
def tiny_variables():
  return mt.init_variables(TINY, jax.random.key(0))


def test_default_geometry_shapes_and_dtypes():
  cfg = mt.MaskTokenizerConfig()
  model = mt.MaskTokenizer(cfg)
  variables = jax.eval_shape(lambda: mt.init_variables(cfg, jax.random.key(0)))
  masks = jax.ShapeDtypeStruct((2, 64, 64), jnp.float32)
  codes = jax.eval_shape(lambda v, m: model.apply(v, m, method=model.encode), variables, masks)
  assert (codes.shape, codes.dtype) == ((2, 8, 8), jnp.int32)
  logits = jax.eval_shape(lambda v, c: model.apply(v, c, method=model.decode), variables, codes)
  assert (logits.shape, logits.dtype) == ((2, 64, 64), jnp.float32)
  assert variables["vq"]["quantizer"]["codebook"].shape == (512, cfg.code_dim)


def test_demo_variant_keeps_the_code_interface_of_the_main_model():
  """The demo tokenizer writes 8 x 8 = 64 codes from 512 (AVS targets: 64 codes + eos)."""
  cfg = mtt.model_config(mt_config.get_config("demo"))
  assert (cfg.grid, cfg.codebook_size, cfg.mask_size) == (8, 512, 64)
  variables = jax.eval_shape(lambda: mt.init_variables(cfg, jax.random.key(0)))
  codes = jax.eval_shape(lambda v, m: mt.MaskTokenizer(cfg).apply(v, m, method="encode"),
                         variables, jax.ShapeDtypeStruct((2, 64, 64), jnp.float32))
  assert (codes.shape, codes.dtype) == ((2, 8, 8), jnp.int32)
  assert variables["vq"]["quantizer"]["codebook"].shape == (512, cfg.code_dim)


def test_round_trip_and_call_outputs(tiny_variables):
  variables = tiny_variables
  model = mt.MaskTokenizer(TINY)
  masks = jnp.asarray(mtt.synthetic_masks(3, 32, seed=1), jnp.float32)
  codes = jax.jit(functools.partial(model.apply, method=model.encode))(variables, masks)
  assert codes.shape == (3, 4, 4) and codes.dtype == jnp.int32
  assert int(codes.min()) >= 0 and int(codes.max()) < TINY.codebook_size
  logits = jax.jit(functools.partial(model.apply, method=model.decode))(variables, codes)
  assert logits.shape == (3, 32, 32) and logits.dtype == jnp.float32
  out = jax.jit(model.apply)(variables, masks)
  np.testing.assert_array_equal(np.asarray(out["codes"]), np.asarray(codes))
  # In eval mode the straight-through output equals the quantized vectors: same logits.
  np.testing.assert_allclose(np.asarray(out["logits"]), np.asarray(logits), atol=1e-5)
  for key in ("loss", "bce", "dice", "commitment", "perplexity"):
    assert out[key].shape == () and np.isfinite(float(out[key])), key


def test_patch_encoder_gives_every_empty_cell_the_same_code():
  cfg = mt.MaskTokenizerConfig(**{**TINY.to_dict(), "encoder": "patch", "patch_hidden": 16})
  model = mt.MaskTokenizer(cfg)
  variables = jax.jit(lambda r: mt.init_variables(cfg, r))(jax.random.key(1))
  assert "mlp0" in variables["params"]["encoder"]
  masks = np.zeros((2, 32, 32), np.float32)
  masks[0, 3:12, 5:20] = 1.0  # an object in the top-left cells; mask 1 is empty
  codes = np.asarray(jax.jit(functools.partial(model.apply, method=model.encode))(
      variables, jnp.asarray(masks)))
  assert codes.shape == (2, 4, 4)
  empty = masks.reshape(2, 4, 8, 4, 8).max(axis=(2, 4)) == 0  # [2, 4, 4] cells
  assert len(np.unique(codes[empty])) == 1
  with pytest.raises(ValueError, match="encoder"):
    mt.MaskTokenizerConfig(encoder="mlp")


def test_wrong_mask_size_is_a_clear_error(tiny_variables):
  with pytest.raises(ValueError, match="resize_masks"):
    mt.MaskTokenizer(TINY).apply(tiny_variables, jnp.zeros((1, 64, 64)), method="encode")
  with pytest.raises(ValueError, match="2 \\*\\* len|stride-2"):
    mt.MaskTokenizerConfig(mask_size=64, grid=8, channels=(8, 16))


def test_every_parameter_has_logical_axis_names():
  boxed = jax.eval_shape(lambda: mt.MaskTokenizer(TINY).init(
      jax.random.key(0), jnp.zeros((1, 32, 32)), train=False))
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
  specs = nn.get_partition_spec(boxed)
  assert tuple(specs["vq"]["quantizer"]["codebook"]) == ("codebook", "embed")
  names = {n for x in leaves for n in x.names if n is not None}
  assert names <= {"channels", "codebook", "embed"}, names


def test_resize_masks_area_and_nearest():
  m = np.zeros((1, 4, 4), np.float32)
  m[0, :2, :2] = 1.0  # top-left quadrant
  np.testing.assert_allclose(mt.resize_masks(m, 2, binarize=False)[0], [[1, 0], [0, 0]])
  np.testing.assert_allclose(mt.resize_masks(m, 8, method="nearest")[0, :4, :4], 1.0)
  # Non-integer factor: area averaging keeps the covered fraction.
  frac = mt.resize_masks(np.ones((1, 7, 5)), 3, binarize=False)
  np.testing.assert_allclose(frac, 1.0, rtol=1e-6)
  half = np.zeros((1, 10, 10))
  half[:, :, :5] = 1
  np.testing.assert_allclose(mt.resize_masks(half, 3, binarize=False)[0].sum(), 4.5, rtol=1e-5)
  with pytest.raises(ValueError, match="method"):
    mt.resize_masks(m, 2, method="cubic")


def test_upsample_logits_shape_and_sign():
  logits = jnp.where(jnp.arange(8)[None, None, :] < 4, 5.0, -5.0) * jnp.ones((2, 8, 8))
  up = mt.upsample_logits(logits, 224)
  assert up.shape == (2, 224, 224)
  assert float(up[0, 100, 10]) > 0 and float(up[0, 100, 200]) < 0


def test_mask_iou_rule():
  a = np.zeros((3, 4, 4), bool)
  b = np.zeros((3, 4, 4), bool)
  a[1, :2] = True
  b[1, :1] = True  # half the predicted area
  b[2, 0, 0] = True  # prediction empty, target not
  np.testing.assert_allclose(mt.mask_iou(a, b), [1.0, 0.5, 0.0])


def _batch_usage(model, variables, masks):
  codes = jax.jit(functools.partial(model.apply, method=model.encode))(variables, masks)
  return len(np.unique(np.asarray(codes)))


def test_dead_code_restarts_keep_codebook_in_use(tiny_variables):
  """With restarts, codes are spread over the data; without them most codes stay unused."""
  masks = jnp.asarray(mtt.synthetic_masks(64, 32, seed=3), jnp.float32)
  usage = {}
  for threshold in (0.0, 0.05):
    cfg = mt.MaskTokenizerConfig(**{**TINY.to_dict(), "dead_code_threshold": threshold})
    model = mt.MaskTokenizer(cfg)
    variables = tiny_variables  # same shapes: the threshold only changes the update rule

    @jax.jit
    def ema_step(variables, rng):
      _, new = model.apply(variables, masks, train=True, rngs={"vq": rng}, mutable=["vq"])
      return {"params": variables["params"], **new}

    for i in range(5):
      variables = ema_step(variables, jax.random.key(i))
    usage[threshold] = _batch_usage(model, variables, masks)
  print("distinct codes on the batch, by dead_code_threshold:", usage)
  assert usage[0.05] >= 0.5 * TINY.codebook_size, usage
  assert usage[0.05] >= 2 * usage[0.0], usage


def test_load_masks_png_alpha_palette_and_npz(tmp_path):
  from PIL import Image

  rgba = np.zeros((6, 5, 4), np.uint8)
  rgba[1:3, 2:4] = (200, 10, 10, 255)  # opaque object, transparent elsewhere
  Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
  gray = np.zeros((4, 4), np.uint8)
  gray[0, :] = 255
  Image.fromarray(gray, "L").save(tmp_path / "b.png")
  loaded = mtt.load_masks(tmp_path)
  assert [m.shape for m in loaded] == [(6, 5), (4, 4)]
  assert loaded[0].sum() == 4 and loaded[0][1, 2] and not loaded[0][0, 0]
  assert loaded[1].sum() == 4 and loaded[1][0].all()
  np.savez(tmp_path / "m.npz", masks=np.stack([gray, gray]))
  np.testing.assert_array_equal(mtt.load_masks(tmp_path / "m.npz")[1], gray > 0)
  with pytest.raises(ValueError, match="neither"):
    mtt.load_masks(tmp_path / "missing.txt")


def test_place_cutouts_keeps_the_shape_inside_the_frame():
  cut = np.ones((10, 20), bool)  # a 1:2 rectangle
  placed = mtt.place_cutouts([cut, np.zeros((3, 3), bool)], 40, (0.5, 0.5), seed=0)
  ys, xs = np.nonzero(placed[0])
  assert (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) == (20, 10)
  assert placed[1].sum() == 0


def test_cli_training_raises_iou_and_saves_a_loadable_tokenizer(tmp_path):
  """The real entry point on the tiny variant: held-out IoU rises; save/load round-trips."""
  np.savez_compressed(tmp_path / "masks.npz", masks=mtt.synthetic_masks(160, 48, seed=5))
  workdir = tmp_path / "w"
  rc = mtt.main(["prog", "--config=configs/mask_tokenizer.py:tiny", f"--workdir={workdir}",
                 f"--masks={tmp_path / 'masks.npz'}"])
  assert rc == 0
  # The msgpack, whose presence marks the directory complete, is the last file written.
  newest = max((workdir / n).stat().st_mtime_ns
               for n in ("metrics.json", "reconstructions.png", mt.CONFIG_FILE))
  assert (workdir / mt.VARIABLES_FILE).stat().st_mtime_ns >= newest
  cfg, variables = mt.load_tokenizer(workdir)
  assert cfg == mtt.model_config(mt_config.get_config("tiny"))
  held_out = mtt.synthetic_masks(64, 32, seed=9)
  untrained = mt.init_variables(cfg, jax.random.key(0))
  before = mt.reconstruction_miou(untrained, cfg, held_out)
  after = mt.reconstruction_miou(variables, cfg, held_out)
  assert after > before + 0.2 and after > 0.3, (before, after)
  metrics = json.loads((workdir / "metrics.json").read_text())["results"]
  assert metrics["heldout/num_masks"] == 16  # 10% of the 160 given masks
  # The code search leaves fewer wrong pixels per mask; on these masks the mIoU rises too.
  assert metrics["synthetic/miou"] > metrics["synthetic/miou_nearest"] + 0.01, metrics
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(workdir / "reconstructions.png") as sheet:  # 3 rows: mask, nearest, search
    assert sheet.size[1] > 3 * cfg.mask_size * 2 and sheet.size[0] > 10 * cfg.mask_size * 2
  # The saved numbers are the loaded tokenizer's numbers (save/load is exact).
  np.testing.assert_allclose(
      metrics["synthetic/miou"],
      mt.reconstruction_miou(variables, cfg, mtt.synthetic_masks(64, 64, seed=10_000),
                             batch_size=64), atol=1e-6)


def _wrong_pixels(variables, cfg, codes, masks):
  logits = mt.MaskTokenizer(cfg).apply(variables, jnp.asarray(codes), method="decode")
  return np.sum((np.asarray(logits) > 0) != (masks > 0.5), axis=(1, 2))


def test_code_search_never_decodes_worse_than_the_nearest_codes(tiny_variables):
  masks = mt.resize_masks(mtt.synthetic_masks(24, 32, seed=3), 32)
  nearest = mt.encode_masks(tiny_variables, TINY, masks)
  encode = functools.partial(mt.MaskTokenizer(TINY).apply, method="encode")
  np.testing.assert_array_equal(nearest, np.asarray(encode(tiny_variables, masks)))
  searched_cfg = mt.MaskTokenizerConfig(**{**TINY.to_dict(), "search_candidates": 6,
                                           "search_sweeps": 2})
  searched = mt.encode_masks(tiny_variables, searched_cfg, masks, batch_size=16)
  assert searched.shape == nearest.shape and searched.dtype == np.int32
  assert searched.min() >= 0 and searched.max() < TINY.codebook_size
  before = _wrong_pixels(tiny_variables, TINY, nearest, masks)
  after = _wrong_pixels(tiny_variables, TINY, searched, masks)
  assert np.all(after <= before), (before, after)
  assert after.sum() < before.sum(), (before.sum(), after.sum())
  # The reported IoU uses the search; decoded_ious of the searched codes is the same figure.
  np.testing.assert_allclose(
      mt.reconstruction_ious(tiny_variables, searched_cfg, masks, batch_size=16),
      mt.decoded_ious(tiny_variables, searched_cfg, searched, masks), atol=0)


def test_cell_local_decoder_decodes_each_cell_from_its_code_and_encodes_exactly():
  cfg = mt.MaskTokenizerConfig(**{**TINY.to_dict(), "decoder_kernel": 1})
  variables = mt.init_variables(cfg, jax.random.key(1))
  decode = jax.jit(functools.partial(mt.MaskTokenizer(cfg).apply, method="decode"))
  rng = np.random.default_rng(0)
  codes = rng.integers(0, cfg.codebook_size, (2, 4, 4)).astype(np.int32)
  changed = codes.copy()
  changed[:, 1, 2] = (changed[:, 1, 2] + 1) % cfg.codebook_size
  diff = np.asarray(decode(variables, changed)) != np.asarray(decode(variables, codes))
  r = cfg.mask_size // cfg.grid
  assert diff[:, r:2 * r, 2 * r:3 * r].any()
  diff[:, r:2 * r, 2 * r:3 * r] = False
  assert not diff.any()  # Only the changed cell's pixels moved.
  # Encoding: every cell gets a code that no other code beats on that cell's pixels.
  masks = mt.resize_masks(mtt.synthetic_masks(6, 32, seed=4), 32)
  best = mt.encode_masks(variables, cfg, masks)
  patterns = mt.code_patterns(variables, cfg) > 0  # [K, r, r]
  cells = (masks > 0.5).reshape(6, 4, r, 4, r).transpose(0, 1, 3, 2, 4)  # [N, g, g, r, r]
  wrong = (cells[..., None, :, :] != patterns).sum(axis=(-2, -1))  # [N, g, g, K]
  chosen = np.take_along_axis(wrong, best[..., None], -1)[..., 0]
  np.testing.assert_array_equal(chosen, wrong.min(-1))
  # Equal cells get equal codes: every empty cell has the same one.
  empty = ~cells.any(axis=(-2, -1))
  assert empty.any() and len(np.unique(best[empty])) == 1
  with pytest.raises(ValueError, match="decoder_kernel"):
    mt.MaskTokenizerConfig(decoder_kernel=2)


def test_code_search_settings_are_checked():
  with pytest.raises(ValueError, match="search_candidates"):
    mt.MaskTokenizerConfig(**{**TINY.to_dict(), "search_candidates": 0})
  with pytest.raises(ValueError, match="encode_masks"):
    mt.encode_masks(None, TINY, np.zeros((2, 64, 64), np.float32))
