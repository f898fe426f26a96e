"""The model's frozen config and the size table of named variants.

Modules only ever see a `ModelConfig`; the experiment's `ConfigDict` is converted once, at the
boundary, by `model_config_from(config.model, vocab_size=..., num_mil_classes=...)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Every size and switch of `AVUnified` (docs/MODEL.md, Network). Field comments give the meaning."""

  # Vocabulary and heads (set from the token layout and the dataset, not from the variant).
  vocab_size: int = 4096  # Size of the unified token vocabulary (docs/MODEL.md, Tokens).
  num_mil_classes: int = 25  # Classes of the multiple-instance head (LLP has 25).
  bos_id: int = 1  # <bos>, prepended to the targets to form decoder inputs (<pad> is 0).

  # Transformer width shared by every module.
  embed_dim: int = 32  # D, the model width.
  num_heads: int = 4  # Attention heads (embed_dim must be divisible by it).
  mlp_dim: int = 64  # Hidden width of the MLPs.
  dropout_rate: float = 0.0  # Dropout on attention outputs, MLPs and embeddings.
  layer_norm_eps: float = 1e-6  # LayerNorm epsilon.

  # Audio encoder: each second's log-mel [F, M] is cut into patches of [pf, pm].
  mel_frames: int = 100  # F, log-mel frames per second (16 kHz audio, hop 160).
  mel_bins: int = 64  # M, mel bins.
  audio_patch_frames: int = 25  # pf, frames per audio patch (F must be divisible by it).
  audio_patch_bins: int = 16  # pm, mel bins per audio patch (M must be divisible by it).
  audio_layers: int = 1  # Transformer blocks of the audio encoder.

  # Visual encoder: a ViT over each frame; the image size comes from the input.
  patch_size: int = 8  # Side of the square image patches in pixels.
  visual_layers: int = 1  # Transformer blocks of the visual encoder.
  max_patches: int = 256  # Rows of the patch position table ((H / patch_size)^2 at most).

  # Multi-scale temporal perception.
  temporal_scales: tuple[int, ...] = (1, 2)  # Window sizes in segments (seconds).
  temporal_layers: int = 1  # Cross-modal blocks per scale.
  max_segments: int = 64  # Rows of the segment (time) embedding table: T at most.

  # Prompt, fusion encoder and decoder.
  max_prompt_len: int = 64  # Rows of the prompt position table: Lp at most.
  fusion_layers: int = 1  # Transformer blocks of the fusion encoder.
  decoder_layers: int = 2  # Decoder blocks (causal self-attention + cross-attention).
  max_decode_len: int = 128  # Decoder positions and KV-cache length: Lt at most.
  # Cell queries: in examples whose prompt starts with `mask_task_token` (<avs>), decoder
  # position k < mask_grid**2 (the input that predicts mask cell k, row-major) reads the focus
  # frame's patch feature and map value at that cell instead of the previous token. -1: off.
  mask_task_token: int = -1  # Task token id of the mask task (set from the token layout).
  mask_grid: int = 8  # Side of the AVS mask-code grid (the tokenizer's mask_grid).
  # How the focus frame's sound-source map enters the fusion memory: False scales each patch
  # by N * m (a silent object's patches fade out), True adds a projection of log(N * m) to the
  # unscaled patch (what the frame shows stays readable, e.g. for AVQA's location questions).
  focus_map_embed: bool = False

  # The three paper components, each switchable off for ablations.
  use_temporal_multiscale: bool = True  # False: a single scale of 1 s, no task-aware mix.
  use_spatial_guidance: bool = True  # False: uniform maps, mean-pooled visual vector.
  use_task_prompts: bool = True  # False: the prompt enters neither the memory nor the mix.

  # Numerics and memory.
  dtype: str = "float32"  # Compute dtype of activations ("bfloat16" or "float32").
  param_dtype: str = "float32"  # Parameter dtype (keep float32; the optimizer state follows).
  remat: bool = False  # Rematerialize each transformer block in the backward pass.
  scan_layers: bool = False  # Stack identical blocks with nn.scan (faster compiles).

  def __post_init__(self):
    if self.embed_dim % self.num_heads:
      raise ValueError(f"model.embed_dim={self.embed_dim} must be divisible by "
                       f"model.num_heads={self.num_heads}")
    if self.mel_frames % self.audio_patch_frames or self.mel_bins % self.audio_patch_bins:
      raise ValueError(
          f"the log-mel size [{self.mel_frames}, {self.mel_bins}] must be divisible by the audio "
          f"patch [{self.audio_patch_frames}, {self.audio_patch_bins}]; change "
          "model.audio_patch_frames / model.audio_patch_bins")
    if not self.temporal_scales or min(self.temporal_scales) < 1:
      raise ValueError(f"model.temporal_scales={self.temporal_scales} must be positive ints")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in ("float32", "bfloat16"):
        raise ValueError(f"model.{name}={getattr(self, name)!r}: use 'float32' or 'bfloat16'")

  @property
  def head_dim(self) -> int:
    return self.embed_dim // self.num_heads

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self):
    return jnp.dtype(self.param_dtype)

  @property
  def audio_grid(self) -> tuple[int, int]:
    """(frame patches, bin patches) of one second of log-mel."""
    return self.mel_frames // self.audio_patch_frames, self.mel_bins // self.audio_patch_bins

  @property
  def scales(self) -> tuple[int, ...]:
    """The temporal scales in use (only 1 s when the multi-scale module is off)."""
    return tuple(self.temporal_scales) if self.use_temporal_multiscale else (1,)


# The size table. Fields not listed keep the dataclass default.
VARIANTS: dict[str, ModelConfig] = {
    # Tests: seconds on one CPU core.
    "tiny": ModelConfig(),
    # The demo job: minutes on a laptop CPU.
    "demo": ModelConfig(
        embed_dim=128, num_heads=4, mlp_dim=256, dropout_rate=0.1,
        audio_patch_frames=25, audio_patch_bins=16, audio_layers=1,
        patch_size=16, visual_layers=2, temporal_scales=(1, 2, 5), temporal_layers=1,
        fusion_layers=2, decoder_layers=2),
    # About OFA-Base: d=768, 12 heads, 6 decoder layers.
    "base": ModelConfig(
        embed_dim=768, num_heads=12, mlp_dim=3072, dropout_rate=0.1,
        audio_patch_frames=10, audio_patch_bins=16, audio_layers=4,
        patch_size=16, visual_layers=8, temporal_scales=(1, 2, 5), temporal_layers=1,
        fusion_layers=4, decoder_layers=6, dtype="bfloat16"),
    # About OFA-Large: d=1024, 16 heads, 12 decoder layers; scanned and rematerialized.
    "large": ModelConfig(
        embed_dim=1024, num_heads=16, mlp_dim=4096, dropout_rate=0.1,
        audio_patch_frames=10, audio_patch_bins=16, audio_layers=8,
        patch_size=16, visual_layers=16, temporal_scales=(1, 2, 5), temporal_layers=2,
        fusion_layers=8, decoder_layers=12, dtype="bfloat16", remat=True, scan_layers=True),
}

FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))


def model_config_from(section: Mapping[str, Any] | Any, *, vocab_size: int | None = None,
                      num_mil_classes: int | None = None, **overrides) -> ModelConfig:
  """The `ModelConfig` of a config's `model` section.

  Args:
    section: the `config.model` ConfigDict (or a dict): `variant` names a row of `VARIANTS`;
      every other key is a `ModelConfig` field whose value replaces the variant's unless None.
    vocab_size: size of the token vocabulary (from the token layout).
    num_mil_classes: classes of the multiple-instance head (from the LLP label set).
    **overrides: further field values that win over both (e.g. in tests).
  Returns: the frozen ModelConfig.
  """
  values = dict(section.items()) if hasattr(section, "items") else dict(section)
  variant = values.pop("variant", "tiny")
  if variant not in VARIANTS:
    raise ValueError(f"model.variant={variant!r} is not one of {sorted(VARIANTS)}")
  unknown = sorted(set(values) - set(FIELDS))
  if unknown:
    raise ValueError(f"unknown model config keys {unknown}; known fields: {list(FIELDS)}")
  changes = {k: v for k, v in values.items() if v is not None}
  for key, value in (("vocab_size", vocab_size), ("num_mil_classes", num_mil_classes)):
    if value is not None:
      changes[key] = value
  changes.update(overrides)
  if "temporal_scales" in changes:
    changes["temporal_scales"] = tuple(int(s) for s in changes["temporal_scales"])
  return dataclasses.replace(VARIANTS[variant], **changes)
