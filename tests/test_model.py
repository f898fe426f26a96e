"""Model: shapes and dtypes of every module, variants, ablations, scan/remat, config boundary.

Shapes and dtypes come from `jax.eval_shape` (no compilation); values from one jitted forward
pass of the shared tiny model (tests/model_helpers.py).
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model_helpers as H
from av_unified_jax import models
from av_unified_jax.models import fusion, heads, spatial, temporal
from av_unified_jax.models.audio_encoder import AudioEncoder
from av_unified_jax.models.decoder import Decoder, TokenEmbed, shift_right
from av_unified_jax.models.visual_encoder import VisualEncoder

B, T, IMG, LP, LT, V, C = H.B, H.T, H.IMG, H.LP, H.LT, H.V, H.C
CFG = H.CFG
D = CFG.embed_dim
S = jax.ShapeDtypeStruct
F32 = jnp.float32


def _batch(cfg=CFG):
  return H.batch(cfg)


def _shapes(module, *args, **kwargs):
  """(output, params) as ShapeDtypeStructs, via eval_shape of init_with_output."""
  out, variables = jax.eval_shape(
      lambda *a: module.init_with_output(jax.random.key(0), *a, **kwargs), *args)
  return out, nn.meta.unbox(variables).get("params", {})


def _assert(x, shape, dtype=F32):
  assert x.shape == shape, (x.shape, shape)
  assert x.dtype == dtype, (x.dtype, dtype)


def _finite(x):
  assert np.all(np.isfinite(np.asarray(x, np.float32)))


def test_audio_and_visual_encoders_shapes():
  batch = _batch()
  (tokens, pooled), _ = _shapes(AudioEncoder(CFG), batch["log_mel"])
  na = (CFG.mel_frames // CFG.audio_patch_frames) * (CFG.mel_bins // CFG.audio_patch_bins)
  _assert(tokens, (B, T, na, D))
  _assert(pooled, (B, T, D))
  (patches, pooled), params = _shapes(VisualEncoder(CFG), batch["frames"])
  n = (IMG // CFG.patch_size) ** 2
  _assert(patches, (B, T, n, D))
  _assert(pooled, (B, T, D))
  assert params["patch_embed"]["kernel"].shape == (CFG.patch_size ** 2 * 3, D)


def test_temporal_modules_shapes():
  a, v, prompt = S((B, T, D), F32), S((B, T, D), F32), S((B, D), F32)
  mask = S((B, T), jnp.bool_)
  (a2, v2, a_shared, v_shared, w), params = _shapes(temporal.MultiScaleTemporal(CFG), a, v,
                                                     mask, prompt)
  for x in (a2, v2, a_shared, v_shared):
    _assert(x, (B, T, D))
  _assert(w, (B, len(CFG.temporal_scales)))
  assert set(params) >= {"scale_1", "scale_2", "scale_logits"}
  off = dataclasses.replace(CFG, use_temporal_multiscale=False)
  (a3, _, _, _, w3), params3 = _shapes(temporal.SingleScaleTemporal(off), a, v, mask, prompt)
  _assert(a3, (B, T, D))
  _assert(w3, (B, 1))
  assert "scale_2" not in params3 and "scale_logits" not in params3


def test_pooling_respects_the_segment_mask():
  x = np.arange(10, dtype=np.float32).reshape(2, 5, 1)  # [B=2, T=5, D=1]
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  pooled, pmask = temporal.pool_segments(x, mask, 2)  # windows {0,1}, {2,3}, {4}
  np.testing.assert_allclose(np.asarray(pooled[..., 0]), [[0.5, 2.0, 0.0], [5.5, 7.5, 9.0]])
  np.testing.assert_array_equal(np.asarray(pmask), [[True, True, False], [True, True, True]])
  up = temporal.unpool_segments(pooled, 2, 5)
  np.testing.assert_allclose(np.asarray(up[1, :, 0]), [5.5, 5.5, 7.5, 7.5, 9.0])


def test_spatial_modules_shapes_and_uniform_ablation():
  n = (IMG // CFG.patch_size) ** 2
  out, params = _shapes(spatial.SpatialGuidance(CFG), S((B, T, D), F32), S((B, T, n, D), F32))
  _assert(out["maps"], (B, T, n))
  for key in ("guided", "audio_embed", "visual_embed"):
    _assert(out[key], (B, T, D))
  assert {"query", "key", "value"} <= set(params)
  rng = np.random.default_rng(1)
  a = rng.normal(size=(2, 2, D)).astype(np.float32)
  patches = rng.normal(size=(2, 2, n, D)).astype(np.float32)
  module = spatial.UniformSpatial(CFG)
  out2, variables = module.init_with_output(H.init_key(), a, patches)
  np.testing.assert_allclose(np.asarray(out2["maps"]), 1.0 / n)
  np.testing.assert_allclose(np.asarray(out2["guided"]), patches.mean(2), atol=1e-6)
  assert "query" not in variables["params"]


def test_mil_head_and_fusion_and_decoder_shapes():
  (frame, video), params = _shapes(heads.MILHead(CFG), S((B, T, D), F32), S((B, T, D), F32),
                                   S((B, T), jnp.bool_))
  _assert(frame, (B, T, 2, C))
  _assert(video, (B, C))
  assert params["frame_logits"]["kernel"].shape == (D, C)
  n = 16
  x = lambda *shape: S(shape, F32)
  (memory, mask), _ = _shapes(fusion.FusionEncoder(CFG), x(B, LP, D), S((B, LP), jnp.bool_),
                              x(B, T, D), x(B, T, D), x(B, T, D), S((B, T), jnp.bool_),
                              x(B, n, D))
  _assert(memory, (B, LP + 3 * T + n, D))
  _assert(mask, (B, LP + 3 * T + n), jnp.bool_)
  h, _ = _shapes(Decoder(CFG), x(B, LT, D), memory, mask)
  _assert(h, (B, LT, D))
  logits, params = _shapes(TokenEmbed(CFG), S((B, LT), jnp.int32),
                           method=lambda m, t: m.attend(m(t)))
  _assert(logits, (B, LT, V))
  assert params["embedding"].shape == (V, D)
  tokens = _batch()["target_tokens"]
  np.testing.assert_array_equal(np.asarray(shift_right(tokens, 1))[:, 1:], tokens[:, :-1])
  np.testing.assert_array_equal(np.asarray(shift_right(tokens, 1))[:, 0], 1)


def test_full_model_outputs_match_the_contract():
  batch = _batch()
  out = H.forward(H.params(), batch)
  h = IMG // CFG.patch_size
  _assert(out["logits"], (B, LT, V))
  _assert(out["loc_maps"], (B, T, h, h))
  _assert(out["mil_frame_probs"], (B, T, 2, C))
  _assert(out["mil_video_probs"], (B, C))
  _assert(out["audio_embed"], (B, T, D))
  _assert(out["visual_embed"], (B, T, D))
  for value in out.values():
    _finite(value)
  np.testing.assert_allclose(np.asarray(out["loc_maps"]).sum((-2, -1)), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(out["scale_weights"]).sum(-1), 1.0, atol=1e-5)
  video = np.asarray(out["mil_video_probs"])
  assert np.all((video >= 0) & (video <= 1))
  np.testing.assert_allclose(np.asarray(out["mil_frame_probs"][0, T - 1]), 0.0)  # padded
  assert np.ptp(np.asarray(out["logits"])) > 0.1  # not a constant output
  assert set(H.params()) == {"embed", "audio_encoder", "visual_encoder", "prompt_encoder",
                             "temporal", "spatial", "mil_head", "fusion", "decoder",
                             "cell_norm", "cell_proj", "cell_map_proj"}
  assert all(x.dtype == F32 for x in jax.tree.leaves(H.params()))


@pytest.mark.parametrize("grid", [(6, 6), (4, 3)])
def test_cell_resampling_is_a_bilinear_resize(grid):
  x = np.random.default_rng(0).normal(size=(1, *grid, 3)).astype(np.float32)
  weights = models.cell_resampling(grid, 8)  # [64, h*w]
  ours = np.einsum("gn,bnd->bgd", weights, x.reshape(1, -1, 3)).reshape(1, 8, 8, 3)
  reference = jax.image.resize(x, (1, 8, 8, 3), "bilinear")
  np.testing.assert_allclose(ours, np.asarray(reference), atol=1e-5)
  np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-6)


def test_cell_queries_reach_only_mask_task_examples():
  """Odd rows carry the <avs> prompt: changing the cell projection changes their logits, and
  the even rows' logits do not move at all."""
  params, batch = H.params(), H.batch()
  encoded = H.MODEL.apply({"params": params}, batch, method=models.AVUnified.encode)
  assert encoded["cell_queries"].shape == (H.B, H.CFG.mask_grid ** 2, H.CFG.embed_dim)
  np.testing.assert_array_equal(np.asarray(encoded["cell_rows"]), np.arange(H.B) % 2 == 1)
  rng = np.random.default_rng(1)  # Random, not constant: LayerNorm removes a constant shift.
  moved = dict(params, cell_proj=jax.tree.map(
      lambda x: x + rng.normal(size=x.shape).astype(np.float32), params["cell_proj"]))
  before = np.asarray(H.forward(params, batch)["logits"])
  after = np.asarray(H.forward(moved, batch)["logits"])
  np.testing.assert_array_equal(after[0::2], before[0::2])
  assert np.abs(after[1::2] - before[1::2]).max() > 1e-3
  # Only positions < G*G get a query: later positions move only through self-attention.
  off = models.ModelConfig(**{**vars(H.CFG), "mask_task_token": -1})
  plain = models.AVUnified(off).apply(
      {"params": {k: v for k, v in params.items() if not k.startswith("cell_")}}, batch)
  np.testing.assert_allclose(np.asarray(plain["logits"])[0::2], before[0::2], atol=1e-5)


def test_mask_cells_read_their_query_not_the_previous_token():
  """In <avs> rows the inputs at cell positions 1 .. G*G-1 (the targets before the last cell)
  are not read: changing them moves no logit of those rows; other rows change."""
  params, batch = H.params(), H.batch()
  q = H.CFG.mask_grid ** 2
  changed = dict(batch, target_tokens=batch["target_tokens"].copy())
  changed["target_tokens"][:, :q - 1] = (changed["target_tokens"][:, :q - 1] + 5) % H.V
  before = np.asarray(H.forward(params, batch)["logits"])
  after = np.asarray(H.forward(params, changed)["logits"])
  np.testing.assert_array_equal(after[1::2], before[1::2])
  assert np.abs(after[0::2] - before[0::2]).max() > 1e-3


def test_outputs_ignore_padded_prompt_tokens_and_segments():
  batch = _batch()
  changed = {k: v.copy() for k, v in batch.items()}
  changed["prompt_tokens"][0, -2:] = 0  # Already padding: keep it padding...
  noise = np.random.default_rng(5).normal(size=changed["log_mel"].shape[2:])
  changed["log_mel"][0, T - 1] = noise  # ...but change the padded segment's inputs.
  changed["frames"][0, T - 1] = 255 - changed["frames"][0, T - 1]
  ref, out = H.forward(H.params(), batch), H.forward(H.params(), changed)
  np.testing.assert_allclose(np.asarray(out["logits"]), np.asarray(ref["logits"]), atol=1e-5)
  changed["log_mel"][0, 0] = noise  # A valid segment does change the output.
  out = H.forward(H.params(), changed)
  assert np.abs(np.asarray(out["logits"][0]) - np.asarray(ref["logits"][0])).max() > 1e-4


def test_bfloat16_compute_keeps_float32_params_and_logits():
  cfg = dataclasses.replace(CFG, dtype="bfloat16")
  model = models.AVUnified(cfg)
  batch = _batch(cfg)
  variables = jax.eval_shape(model.init, jax.random.key(0), batch)
  assert all(x.dtype == F32 for x in jax.tree.leaves(nn.meta.unbox(variables)))
  memory = jax.eval_shape(lambda v, b: model.apply(v, b, method=models.AVUnified.encode),
                          variables, batch)
  assert memory["memory"].dtype == jnp.bfloat16
  out = jax.eval_shape(model.apply, variables, batch)
  _assert(out["logits"], (B, LT, V))


@pytest.mark.parametrize("switch", ["use_temporal_multiscale", "use_spatial_guidance",
                                    "use_task_prompts"])
def test_each_component_can_be_switched_off(switch):
  cfg = dataclasses.replace(CFG, **{switch: False})
  out, params = _shapes(models.AVUnified(cfg), _batch(cfg))
  _assert(out["logits"], (B, LT, V))
  _assert(out["loc_maps"], (B, T, IMG // CFG.patch_size, IMG // CFG.patch_size))
  count = lambda p: sum(x.size for x in jax.tree.leaves(p))
  assert count(params) < count(H.params())  # The component's own parameters are gone.
  gone = {"use_temporal_multiscale": ("temporal", "scale_2"),
          "use_spatial_guidance": ("spatial", "query"),
          "use_task_prompts": ("prompt_encoder", None)}[switch]
  assert gone[0] not in params if gone[1] is None else gone[1] not in params[gone[0]]


def test_scanned_layers_match_per_layer_and_convert_both_ways():
  batch = _batch()
  per_layer = H.params()
  stacked = models.scan_params(per_layer)
  layers = stacked["decoder"]["blocks"]["layers"]
  assert layers["mlp"]["wi"]["kernel"].shape == (CFG.decoder_layers, D, CFG.mlp_dim)
  back = models.unscan_params(stacked)
  assert jax.tree.structure(back) == jax.tree.structure(per_layer)
  for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(per_layer), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  scanned = models.AVUnified(dataclasses.replace(CFG, scan_layers=True, remat=True))
  abstract = jax.eval_shape(scanned.init, jax.random.key(0), batch)
  names = nn.get_partition_spec(abstract)["params"]["decoder"]["blocks"]["layers"]
  assert names["mlp"]["wi"]["kernel"] == jax.sharding.PartitionSpec("layers", "embed", "mlp")
  assert jax.tree.map(lambda x: x.shape, nn.meta.unbox(abstract)["params"]) == jax.tree.map(
      lambda x: x.shape, stacked)
  out_scan = jax.jit(scanned.apply)({"params": stacked}, batch)["logits"]
  out_loop = H.forward(per_layer, batch)["logits"]
  np.testing.assert_allclose(np.asarray(out_scan), np.asarray(out_loop), atol=1e-5)


def test_variant_parameter_counts_grow():
  counts = {}
  for name, cfg in models.VARIANTS.items():
    batch = models.example_batch(cfg, 1, 2, 32, 4, 4)
    abstract = jax.eval_shape(models.AVUnified(cfg).init, jax.random.key(0), batch)
    counts[name] = sum(x.size for x in jax.tree.leaves(nn.meta.unbox(abstract)))
  assert counts["tiny"] < counts["demo"] < counts["base"] < counts["large"], counts
  assert 120e6 < counts["base"] < 260e6, counts  # About OFA-Base (182M).
  print("parameters per variant:", counts)


def test_model_config_from_the_config_section():
  from configs import tiny

  config = tiny.get_config()
  cfg = models.model_config_from(config.model, vocab_size=99, num_mil_classes=7)
  assert cfg.vocab_size == 99 and cfg.num_mil_classes == 7
  assert dataclasses.replace(cfg, vocab_size=4096, num_mil_classes=25) == models.VARIANTS["tiny"]
  assert set(config.model.keys()) == set(models.config.FIELDS) | {"variant"}
  config.model.variant = "demo"
  config.model.embed_dim = 64
  config.model.temporal_scales = (1, 3)
  cfg = models.model_config_from(config.model)
  assert (cfg.embed_dim, cfg.mlp_dim, cfg.temporal_scales) == (64, 256, (1, 3))
  with pytest.raises(ValueError, match="variant"):
    models.model_config_from({"variant": "huge"})
  with pytest.raises(ValueError, match="embed_dimm"):
    models.model_config_from({"variant": "tiny", "embed_dimm": 3})
  with pytest.raises(ValueError, match="num_heads"):
    models.ModelConfig(embed_dim=30, num_heads=4)


def test_wrong_input_sizes_give_clear_errors():
  batch = _batch()
  batch["log_mel"] = batch["log_mel"][:, :, :50]
  with pytest.raises(ValueError, match="mel_frames"):
    jax.eval_shape(H.MODEL.init, jax.random.key(0), batch)
  batch = _batch()
  del batch["frames"]
  with pytest.raises(KeyError, match="frames"):
    jax.eval_shape(H.MODEL.init, jax.random.key(0), batch)
