"""What an export is made from: a trained run's model, parameters, tokenizer and mask tokenizer.

    source = load_source("W", step=None)   # the run's checkpoint `step` (default: the latest)
    source = load_source("W", overrides={"mesh.fsdp": 1})  # onto another mesh than fitted
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from av_unified_jax import runs


@dataclasses.dataclass
class Source:
  """What an export is made from: the JAX model (an `AVUnified`) and its parameters, the
  tokenizer, the mask tokenizer (its config and variables, or None), and where they came from."""
  model: Any
  params: Any
  tokenizer: Any
  mask_config: Any | None
  mask_variables: Any | None
  run_config: Any = None
  workdir: str = ""
  step: int = 0


def load_source(workdir: str | Path, step: int | None = None,
                overrides: Mapping[str, Any] | None = None) -> Source:
  """The run in `workdir` (config, tokenizer, checkpoint `step` or the latest, mask tokenizer),
  restored onto whatever devices are present (`runs.inference_mesh`; `overrides` may set
  mesh.* only, see `runs.OVERRIDES`)."""
  run = runs.load_run(workdir, step, overrides, mode="export")
  mask = run.mask_decoder
  return Source(run.model, run.params, run.tokenizer, mask.cfg if mask else None,
                mask.variables if mask else None, run.config, str(workdir), int(run.step))
