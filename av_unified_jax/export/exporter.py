"""Writes a self-contained PyTorch export of a trained run (see docs/ARCHITECTURE.md).

    summary = exporter.export_workdir("W", "E", step=None, dtype="float32", overrides={})

E/ then holds:
  model.safetensors        every parameter of the model and of the mask tokenizer (torch names)
  config.json              model and mask tokenizer configs, grammar names, source run and step
  layout.json, text_tokenizer.json, tokenizer.json   the vocabulary (tokens.Tokenizer.save)
  grammars.safetensors     constrained-decoding tables (allowed, next_state, start_states, ...)
  modeling_av_unified.py   the PyTorch model (imports only torch, numpy and safetensors)
  README.md                how to load and run it
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import numpy as np
import torch  # Optional dependency: torch (CPU build) is needed by the export only.
from safetensors.torch import save_file

from av_unified_jax import atomic, paths, runs, tokens
from av_unified_jax.export import mapping
from av_unified_jax.export import modeling_av_unified as tm
from av_unified_jax.export import verify as verify_lib
from av_unified_jax.export.source import Source, load_source

__all__ = ["DTYPES", "ExportError", "Source", "convert_source", "export_source",
           "export_workdir", "flax_variables", "load_source", "model_config_dict", "run",
           "write_grammars"]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
GRAMMARS_FILE = "grammars.safetensors"
MODELING_FILE = "modeling_av_unified.py"
README_FILE = "README.md"
DTYPES = ("float32", "bfloat16")


class ExportError(ValueError):
  """The run cannot be exported (missing files, weights that do not fit the model)."""


def run(workdir: str | Path, export_dir: str | Path, step: int | None = None,
        dtype: str = "float32", verify: bool = False,
        overrides: Mapping[str, Any] | None = None) -> int:
  """--mode=export: exports W's checkpoint `step` (default latest) to `export_dir`; with
  `verify`, prints the verification's JSON line and returns 1 when it fails. The checkpoint
  is restored onto whatever devices are present (`overrides`: mesh.* only, see `load_source`).
  A URL `export_dir` (gs://...) is written and verified in a local staging directory, then
  copied."""
  if dtype not in DTYPES:
    raise ExportError(f"--dtype={dtype}: use one of {DTYPES}")
  if paths.is_url(export_dir):  # safetensors and torch read and write local files only.
    return _run_staged(workdir, export_dir, step, dtype, verify, overrides)
  try:
    source, summary = export_workdir(workdir, export_dir, step, dtype, overrides)
  except (runs.RunError, mapping.MappingError, FileNotFoundError) as e:
    raise ExportError(str(e)) from None
  print(f"exported step {summary['step']} of {workdir} ({summary['n_params']:,} parameters, "
        f"{dtype}) to {export_dir}", file=sys.stderr)
  if source.mask_config is None:
    print(f"note: {workdir} has no mask_tokenizer/, so the export cannot turn AVS code tokens "
          "into masks (decode_masks raises)", file=sys.stderr)
  if not verify:
    return 0
  report = verify_lib.verify_export(source, export_dir, dtype)
  verify_lib.print_report(report)
  if not verify_lib.passed(report):
    print(f"error: {verify_lib.describe_failure(report)}", file=sys.stderr)
    return 1
  return 0


def _run_staged(workdir, export_dir, step, dtype: str, verify: bool, overrides=None) -> int:
  """`run` into a local temporary directory, then its files copied to the URL `export_dir`."""
  with tempfile.TemporaryDirectory(prefix="av_unified_export_") as stage:
    code = run(workdir, stage, step, dtype, verify, overrides)
    target = paths.as_path(export_dir)
    target.mkdir(parents=True, exist_ok=True)
    files = sorted(Path(stage).iterdir(), key=lambda f: (f.name == CONFIG_FILE, f.name))
    for f in files:  # config.json last, as in `export_source`.
      atomic.write_bytes(target / f.name, f.read_bytes())
  print(f"copied the export to {target}", file=sys.stderr)
  return code


def flax_variables(source: Source) -> dict[str, Any]:
  """The tree the table's "Export" root reads: {"model": params, "mask_tokenizer": vars}."""
  tree = {"model": nn.meta.unbox(source.params)}
  if source.mask_variables is not None:
    tree["mask_tokenizer"] = nn.meta.unbox(source.mask_variables)
  return tree


def model_config_dict(cfg) -> dict[str, Any]:
  """The ModelConfig as JSON-ready values (tuples become lists)."""
  return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def convert_source(source: Source) -> dict[str, np.ndarray]:
  """Converted float32 weights, checked strictly against the PyTorch model of the config."""
  weights = mapping.convert(flax_variables(source), "Export")
  mask_dict = source.mask_config.to_dict() if source.mask_config is not None else None
  with torch.device("meta"):
    torch_model = tm.AVUnified(model_config_dict(source.model.cfg), mask_dict)
  mapping.check_state(weights, {k: tuple(v.shape) for k, v in torch_model.state_dict().items()})
  return {k: v.astype(np.float32) for k, v in weights.items()}


def export_source(source: Source, export_dir: str | Path, dtype: str = "float32") -> dict:
  """Writes the export directory; returns a summary (directory, step, n_params, dtype, files)."""
  if dtype not in DTYPES:
    raise ValueError(f"export dtype {dtype!r}: use one of {DTYPES}")
  out = Path(export_dir)
  out.mkdir(parents=True, exist_ok=True)
  weights = convert_source(source)
  torch_dtype = getattr(torch, dtype)
  save_file({k: torch.from_numpy(v).to(torch_dtype).contiguous() for k, v in weights.items()},
            str(out / MODEL_FILE), metadata={"format": "pt", "dtype": dtype})
  names = write_grammars(source.tokenizer, out / GRAMMARS_FILE)
  source.tokenizer.save(out)
  config = {
      "format": _format(),
      "model": model_config_dict(source.model.cfg),
      "mask_tokenizer": (source.mask_config.to_dict() if source.mask_config is not None
                         else None),
      "grammars": list(names),
      "dtype": dtype,
      "source": {"workdir": str(paths.as_path(source.workdir)) if source.workdir else "",
                 "step": source.step},
  }
  shutil.copyfile(Path(__file__).with_name(MODELING_FILE), out / MODELING_FILE)
  atomic.write_text(out / README_FILE, readme_text(source, names, dtype))
  for name in (MODEL_FILE, GRAMMARS_FILE):  # safetensors writes owner-only files.
    (out / name).chmod(0o644)
  # config.json last and atomically: `from_pretrained` needs it, so an export cut short by a
  # crash is never taken for a whole one.
  atomic.write_text(out / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True) + "\n")
  n_params = int(sum(v.size for v in weights.values()))
  return {"export_dir": str(out), "step": source.step, "n_params": n_params, "dtype": dtype,
          "files": sorted(p.name for p in out.iterdir())}


def export_workdir(workdir: str | Path, export_dir: str | Path, step: int | None = None,
                   dtype: str = "float32", overrides: Mapping[str, Any] | None = None
                   ) -> tuple[Source, dict]:
  """Loads the run in `workdir` (onto the devices present, `load_source`) and exports it;
  returns (the source, the summary)."""
  source = load_source(workdir, step, overrides)
  return source, export_source(source, export_dir, dtype)


def write_grammars(tokenizer, path: Path) -> tuple[str, ...]:
  """Every target format's grammar, stacked, as safetensors; returns the format names."""
  grammars = tokenizer.grammars()
  stack = tokens.stack_grammars(grammars)
  tables = {
      "allowed": torch.from_numpy(np.asarray(stack.allowed, bool)),
      "next_state": torch.from_numpy(np.asarray(stack.next_state, np.int32)),
      "start_states": torch.from_numpy(np.asarray(stack.start_states, np.int32)),
      "accepting": torch.from_numpy(np.asarray(stack.accepting, bool)),
      "max_lens": torch.tensor([g.max_len for g in grammars.values()], dtype=torch.int32),
  }
  save_file(tables, str(path))
  return tuple(grammars)


def _format() -> str:
  return tm.FORMAT


def readme_text(source: Source, names, dtype: str) -> str:
  """E/README.md: what the directory holds and a usage example."""
  cfg = source.model.cfg
  has_masks = source.mask_config is not None
  return f"""# AV-Unified, exported to PyTorch

Exported from `{source.workdir or '(in memory)'}`, checkpoint step {source.step}, weights in
{dtype}. Model: D={cfg.embed_dim}, {cfg.num_heads} heads, {cfg.decoder_layers} decoder layers,
vocabulary of {cfg.vocab_size} tokens.

Files: `model.safetensors` (all weights{', mask tokenizer included' if has_masks else ''}),
`config.json`, `layout.json` + `text_tokenizer.json` + `tokenizer.json` (the vocabulary),
`grammars.safetensors` (constrained-decoding tables of {', '.join(names)}),
`modeling_av_unified.py` (the model; it needs only torch, numpy and safetensors).

```python
import sys
import numpy as np
import torch

sys.path.insert(0, "path/to/this/directory")
from modeling_av_unified import AVUnified

model = AVUnified.from_pretrained("path/to/this/directory")  # float32, eval mode
B, T, S = 1, 10, 112  # batch, 1-s segments, frame side (a multiple of {cfg.patch_size})
prompt = model.vocab.prompt("ave")  # or prompt("avqa", question=...), prompt("avs", second=2)
batch = {{
    "frames": np.zeros((B, T, S, S, 3), np.uint8),  # one RGB frame per second
    "log_mel": np.zeros((B, T, {cfg.mel_frames}, {cfg.mel_bins}), np.float32),  # log-mel per second
    "segment_mask": np.ones((B, T), bool),
    "prompt_tokens": np.array([prompt], np.int64),
}}
with torch.no_grad():
    tokens = model.generate(batch, "ave")  # constrained greedy decoding, int64[B, L]
    print([model.vocab.describe(t) for t in tokens[0] if t != 0])
    maps = model.encode(batch)["loc_maps"]  # sound-source maps [B, T, S/p, S/p], p={cfg.patch_size}
    # Teacher-forced logits: model({{**batch, "target_tokens": targets}})["logits"]
```
{_mask_usage() if has_masks else ''}
The log-mel of each second has {cfg.mel_frames} frames of {cfg.mel_bins} mel bins, as produced by
the project's data preparation (16 kHz audio). Weights stored in bfloat16 are converted to the
`dtype` given to `from_pretrained` (float32 by default).
"""


def _mask_usage() -> str:
  return """
Segmentation (`avs`): the generated code tokens become mask logits with
`model.mask_logits_from_tokens(model.generate(batch, "avs"))` (float32[B, S, S]; a pixel belongs
to the sounding object where the logit is above 0); `model.decode_masks(codes)` takes the code
grid directly.
"""
