"""Export, module by module: each Flax module type converted by the mapping table on its own,
loaded strictly into its PyTorch mirror, and run on the same inputs (outputs within 1e-5).

Parameters are random (biases too, LayerNorm scales around 1), so zero biases and unit scales
cannot hide a wrong transform.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

from av_unified_jax import models
from av_unified_jax.export import mapping
from av_unified_jax.export import modeling_av_unified as tm
from av_unified_jax.models import decoder, fusion, heads, layers, spatial, temporal
from av_unified_jax import mask_tokenizer as mt
from av_unified_jax.models.audio_encoder import AudioEncoder
from av_unified_jax.models.visual_encoder import VisualEncoder

CFG = dataclasses.replace(models.VARIANTS["tiny"], vocab_size=97, num_mil_classes=5,
                          mel_frames=20, mel_bins=16, audio_patch_frames=10, audio_patch_bins=8,
                          temporal_scales=(1, 2, 3), max_decode_len=16)
B, T, L, D = 2, 5, 6, CFG.embed_dim
ATOL = 1e-5
RNG = np.random.default_rng(0)


def torch_cfg(cfg=CFG):
  return tm.model_config({f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})


def normal(*shape):
  return RNG.normal(size=shape).astype(np.float32)


def mask(*shape, pad_first=True):
  m = np.ones(shape, bool)
  if pad_first:
    m[0, -2:] = False  # Example 0 has padding.
  return m


def random_params(abstract, seed=0):
  """Random values for a tree of shapes: LayerNorm scales near 1, everything else around 0."""
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(nn.meta.unbox(abstract))
  return traverse_util.unflatten_dict({
      k: (1.0 if k[-1] == "scale" else 0.0) + 0.2 * rng.normal(size=v.shape).astype(np.float32)
      for k, v in flat.items()})


def init_params(module, *args, seed=0):
  """Random parameters of `module` for inputs `args` (shapes from `eval_shape`, no compile)."""
  abstract = jax.eval_shape(lambda *a: module.init(jax.random.key(0), *a), *args)
  return random_params(abstract["params"], seed)


def load(torch_module, params, module_type):
  """Converts `params` with the table (strict both ways) and loads them into torch."""
  weights = mapping.convert(params, module_type)
  mapping.check_state(weights, {k: tuple(v.shape) for k, v in torch_module.state_dict().items()})
  torch_module.load_state_dict({k: torch.tensor(v) for k, v in weights.items()}, strict=True)
  return torch_module.eval()


def parity(flax_module, args, module_type, torch_module, torch_fn, method=None, init_args=None):
  """Runs both sides; returns (jax outputs, torch outputs) as numpy trees."""
  params = init_params(flax_module, *(init_args or args))
  jax_out = flax_module.apply({"params": params}, *args, method=method)
  load(torch_module, params, module_type)
  with torch.no_grad():
    torch_out = torch_fn(torch_module, *[None if a is None else torch.tensor(np.asarray(a))
                                         for a in args])
  return jax.tree.map(np.asarray, jax_out), jax.tree.map(lambda t: t.numpy(), torch_out)


def close(a, b, atol=ATOL):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=atol, rtol=0), a, b)


def test_attention_with_padding():
  x = normal(B, L, D)
  pad = layers.padding_mask(L, jnp.asarray(mask(B, L)))
  jax_out, torch_out = parity(
      layers.Attention(CFG, "self"), (x, None, pad), "Attention", tm.Attention(torch_cfg()),
      lambda m, x, _, p: m(x, *m.project_kv(x), p))
  close(jax_out, torch_out)


def test_mlp_uses_tanh_gelu():
  jax_out, torch_out = parity(layers.Mlp(CFG), (normal(B, L, D),), "Mlp", tm.Mlp(torch_cfg()),
                              lambda m, x: m(x))
  close(jax_out, torch_out)


def test_encoder_block():
  jax_out, torch_out = parity(
      layers.EncoderBlock(CFG), (normal(B, L, D), mask(B, L)), "EncoderBlock",
      tm.EncoderBlock(torch_cfg()), lambda m, x, k: m(x, k))
  close(jax_out[0], torch_out)


def test_decoder_block():
  args = (normal(B, L, D), normal(B, 7, D), mask(B, 7), jnp.zeros((), jnp.int32))
  jax_out, torch_out = parity(layers.DecoderBlock(CFG), args, "DecoderBlock",
                              tm.DecoderBlock(torch_cfg()), lambda m, x, mem, mm, _: m(x, mem, mm))
  close(jax_out[0], torch_out)


@pytest.mark.parametrize("encoder", ["audio", "visual"])
def test_encoders(encoder):
  if encoder == "audio":
    flax_module, torch_module = AudioEncoder(CFG), tm.AudioEncoder(torch_cfg())
    inputs = 3.0 * normal(B, T, CFG.mel_frames, CFG.mel_bins) + 1.0
    inputs[0, -1] = 0.5  # A constant (padded) segment normalizes to zeros.
  else:
    flax_module, torch_module = VisualEncoder(CFG), tm.VisualEncoder(torch_cfg())
    inputs = RNG.integers(0, 256, (B, T, 16, 24, 3), dtype=np.uint8)
  jax_out, torch_out = parity(flax_module, (inputs,), encoder.capitalize() + "Encoder",
                              torch_module, lambda m, x: m(x))
  close(jax_out, torch_out)


def test_prompt_encoder():
  emb, m = normal(B, L, D), mask(B, L)
  jax_out, torch_out = parity(fusion.PromptEncoder(CFG), (emb, m), "PromptEncoder",
                              tm.PromptEncoder(torch_cfg()), lambda mod, e, k: mod(e, k))
  close(jax_out, torch_out)


def test_cross_modal_scale_stack():
  args = (normal(B, 3, D), normal(B, 3, D), mask(B, 3, pad_first=False))
  jax_out, torch_out = parity(temporal.ScaleStack(CFG), args, "ScaleStack",
                              tm.ScaleStack(torch_cfg()), lambda m, a, v, k: m(a, v, k))
  close(jax_out, torch_out)


@pytest.mark.parametrize("multiscale,prompts", [(True, True), (True, False), (False, True)])
def test_temporal(multiscale, prompts):
  cfg = dataclasses.replace(CFG, use_temporal_multiscale=multiscale, use_task_prompts=prompts)
  prompt_vec = normal(B, D) if prompts else None
  args = (normal(B, T, D), normal(B, T, D), mask(B, T), prompt_vec)
  jax_out, torch_out = parity(temporal.TEMPORAL[multiscale](cfg), args, "Temporal",
                              tm.Temporal(torch_cfg(cfg)),
                              lambda m, a, v, k, p=None: m(a, v, k, p))
  close(jax_out, torch_out)
  assert jax_out[4].shape == (B, len(cfg.scales))


@pytest.mark.parametrize("guided", [True, False])
def test_spatial(guided):
  cfg = dataclasses.replace(CFG, use_spatial_guidance=guided)
  args = (normal(B, T, D), normal(B, T, 6, D))
  jax_out, torch_out = parity(spatial.SPATIAL[guided](cfg), args, "Spatial",
                              tm.Spatial(torch_cfg(cfg)), lambda m, a, p: m(a, p))
  close(jax_out, torch_out)
  np.testing.assert_allclose(torch_out["maps"].sum(-1), 1.0, atol=1e-5)


def test_mil_head():
  args = (normal(B, T, D), normal(B, T, D), mask(B, T))
  jax_out, torch_out = parity(heads.MILHead(CFG), args, "MILHead", tm.MILHead(torch_cfg()),
                              lambda m, a, v, k: m(a, v, k))
  close(jax_out, torch_out)


def test_fusion_encoder():
  args = (normal(B, L, D), mask(B, L), normal(B, T, D), normal(B, T, D), normal(B, T, D),
          mask(B, T), normal(B, 4, D))
  jax_out, torch_out = parity(fusion.FusionEncoder(CFG), args, "Fusion", tm.Fusion(torch_cfg()),
                              lambda m, *a: m(*a))
  close(jax_out, torch_out)


@pytest.mark.parametrize("scan", [False, True])
def test_decoder_scanned_or_looped(scan):
  """A scanned stack (parameters with a leading layer axis) is unstacked per layer."""
  cfg = dataclasses.replace(CFG, scan_layers=scan, decoder_layers=3)
  args = (normal(B, L, D), normal(B, 7, D), mask(B, 7))
  module = decoder.Decoder(cfg)
  assert ("layers" in init_params(module, *args)["blocks"]) == scan
  jax_out, torch_out = parity(module, args, "Decoder", tm.Decoder(torch_cfg(cfg)),
                              lambda m, x, mem, mm: m(x, mem, mm))
  close(jax_out, torch_out)


def test_decoder_cache_matches_full_sequence():
  """Feeding one token at a time through the torch KV cache equals the full causal pass."""
  params = init_params(decoder.Decoder(CFG), normal(B, L, D), normal(B, 7, D), mask(B, 7))
  torch_module = load(tm.Decoder(torch_cfg()), params, "Decoder")
  x, mem, mm = (torch.tensor(a) for a in (normal(B, L, D), normal(B, 7, D), mask(B, 7)))
  with torch.no_grad():
    full = torch_module(x, mem, mm)
    caches = [{} for _ in torch_module.blocks]
    steps = [torch_module(x[:, i:i + 1], mem, mm, i, caches) for i in range(L)]
  close(full.numpy(), torch.cat(steps, dim=1).numpy())


def test_token_embedding_and_tied_output():
  tokens = RNG.integers(0, CFG.vocab_size, (B, L)).astype(np.int32)
  module = decoder.TokenEmbed(CFG)
  jax_out, torch_out = parity(module, (tokens,), "TokenEmbed", tm.TokenEmbed(torch_cfg()),
                              lambda m, t: m(t.long()))
  close(jax_out, torch_out)
  x = normal(B, L, D)
  jax_logits, torch_logits = parity(module, (x,), "TokenEmbed", tm.TokenEmbed(torch_cfg()),
                                    lambda m, h: m.attend(h), method=decoder.TokenEmbed.attend,
                                    init_args=(tokens,))
  close(jax_logits, torch_logits, atol=1e-4)


MASK_CFG = mt.MaskTokenizerConfig(mask_size=32, grid=4, codebook_size=24, code_dim=6,
                                  channels=(4, 8, 8), num_res_blocks=2)


def test_mask_tokenizer_encode_and_decode():
  module = mt.MaskTokenizer(MASK_CFG)
  abstract = jax.eval_shape(lambda: mt.init_variables(MASK_CFG, jax.random.key(3)))
  variables = random_params(abstract, 1)
  torch_module = load(tm.MaskTokenizer(MASK_CFG.to_dict()), variables, "MaskTokenizer")
  masks = (RNG.random((3, 32, 32)) < 0.4).astype(np.float32)
  codes = RNG.integers(0, MASK_CFG.codebook_size, (3, 4, 4)).astype(np.int32)
  run = jax.jit(lambda v, c, m: (module.apply(v, c, method=mt.MaskTokenizer.decode),
                                 module.apply(v, m, method=mt.MaskTokenizer.encode)))
  jax_logits, jax_codes = run(variables, codes, masks)
  with torch.no_grad():
    torch_logits = torch_module.decode(torch.tensor(codes))
    torch_codes = torch_module.encode(torch.tensor(masks))
  assert torch_logits.shape == (3, 32, 32)
  close(np.asarray(jax_logits), torch_logits.numpy())
  np.testing.assert_array_equal(np.asarray(jax_codes), torch_codes.numpy())


def test_cell_local_mask_decoder():
  cfg = mt.MaskTokenizerConfig(**{**MASK_CFG.to_dict(), "decoder_kernel": 1})
  module = mt.MaskTokenizer(cfg)
  variables = random_params(jax.eval_shape(lambda: mt.init_variables(cfg, jax.random.key(3))), 2)
  torch_module = load(tm.MaskTokenizer(cfg.to_dict()), variables, "MaskTokenizer")
  codes = RNG.integers(0, cfg.codebook_size, (3, 4, 4)).astype(np.int32)
  jax_logits = module.apply(variables, codes, method=mt.MaskTokenizer.decode)
  with torch.no_grad():
    torch_logits = torch_module.decode(torch.tensor(codes))
  close(np.asarray(jax_logits), torch_logits.numpy())


def test_training_only_variables_are_dropped_explicitly():
  abstract = jax.eval_shape(lambda: mt.init_variables(MASK_CFG, jax.random.key(3)))
  weights = mapping.convert(random_params(abstract), "MaskTokenizer")
  assert "codebook" in weights
  assert not any("ema" in k for k in weights)
  dropped = [r.flax for r in mapping.rules("MaskTokenizer") if r.transform == "drop"]
  assert dropped == ["vq/quantizer/ema_count", "vq/quantizer/ema_sum"]


def test_unknown_flax_parameter_is_an_error():
  params = init_params(layers.Mlp(CFG), normal(1, 2, D))
  params["gate"] = {"kernel": np.zeros((D, D), np.float32)}
  with pytest.raises(mapping.MappingError, match="gate/kernel: no rule"):
    mapping.convert(params, "Mlp")


def test_missing_unexpected_and_misshapen_names_are_errors():
  weights = mapping.convert(init_params(layers.Mlp(CFG), normal(1, 2, D)), "Mlp")
  expected = {k: tuple(v.shape) for k, v in tm.Mlp(torch_cfg()).state_dict().items()}
  mapping.check_state(weights, expected)
  broken = dict(weights, extra=np.zeros(3))
  del broken["wo.bias"]
  broken["wi.weight"] = broken["wi.weight"].T
  with pytest.raises(mapping.MappingError) as err:
    mapping.check_state(broken, expected)
  message = str(err.value)
  assert "3 difference(s)" in message
  assert "missing in the converted weights: wo.bias" in message
  assert "not in the torch model: extra" in message
  assert "shape mismatch wi.weight" in message


def test_table_covers_the_whole_model_flat():
  text = mapping.describe("Export")
  assert "audio_encoder/blocks/layers_{i}/attn/query/kernel -> " \
         "audio_encoder.blocks.{i}.attn.query.weight (heads_in)" in text
  assert "mask_tokenizer/vq/quantizer/ema_sum -> (not exported) (drop)" in text
  with pytest.raises(KeyError, match="not a module type"):
    mapping.rules("Nope")


def test_whole_model_scanned_converts_like_per_layer():
  """Every parameter of the full model is in the table; a scanned checkpoint gives the same
  torch weights as the per-layer one, and both fit the torch model exactly."""
  cfg = dataclasses.replace(CFG, decoder_layers=3, fusion_layers=2)
  batch = models.example_batch(cfg, 1, T, 16, 4, 3)
  looped = init_params(models.AVUnified(cfg), batch)
  scanned = models.scan_params(looped)
  assert "layers" in scanned["decoder"]["blocks"]
  expected = {k: tuple(v.shape)
              for k, v in tm.AVUnified(vars(torch_cfg(cfg))).state_dict().items()}
  from_looped = mapping.convert({"model": looped}, "Export")
  from_scanned = mapping.convert({"model": scanned}, "Export")
  mapping.check_state(from_looped, expected)
  assert sorted(from_scanned) == sorted(from_looped)
  for name, value in from_looped.items():
    np.testing.assert_array_equal(from_scanned[name], value, err_msg=name)


@pytest.mark.parametrize("focus_map_embed", [False, True])
def test_whole_model_logits_match(focus_map_embed):
  """The full model's logits and maps agree, with the focus map scaling the patches or
  embedded beside them (model.focus_map_embed)."""
  cfg = dataclasses.replace(CFG, focus_map_embed=focus_map_embed)
  batch = models.example_batch(cfg, B, T, 16, 4, 3)
  batch["focus_segment"] = np.asarray([1, 3], np.int32)
  module = models.AVUnified(cfg)
  params = init_params(module, batch)
  assert ("focus_map_proj" in params) == focus_map_embed
  jax_out = module.apply({"params": params}, batch)
  torch_model = load(tm.AVUnified(vars(torch_cfg(cfg))), {"model": params}, "Export")
  with torch.no_grad():
    out = torch_model({k: torch.tensor(v) for k, v in batch.items()})
  close(np.asarray(jax_out["logits"]), out["logits"].numpy(), atol=1e-4)
  close(np.asarray(jax_out["loc_maps"]), out["loc_maps"].numpy())
