"""The AV-Unified model: config and variants, modules, losses.

  from av_unified_jax import models
  cfg = models.model_config_from(config.model, vocab_size=layout.vocab_size, num_mil_classes=25)
  model = models.AVUnified(cfg)
"""

from av_unified_jax.models import losses
from av_unified_jax.models.config import VARIANTS, ModelConfig, model_config_from
from av_unified_jax.models.model import (AVUnified, cell_resampling, example_batch, scan_params,
                                         unscan_params)

__all__ = [
    "AVUnified",
    "ModelConfig",
    "VARIANTS",
    "cell_resampling",
    "example_batch",
    "losses",
    "model_config_from",
    "scan_params",
    "unscan_params",
]
