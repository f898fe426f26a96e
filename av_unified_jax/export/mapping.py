"""The one table from Flax parameter paths to PyTorch parameter names (docs/MODEL.md, Export).

`TABLE` maps each module type to its entries `(flax sub-path, torch sub-name, what)`, where
`what` is either a transform (for a parameter) or another module type (for a child module).
Paths nest: the entry ("blocks/layers_{i}", "blocks.{i}", "EncoderBlock") of "AudioEncoder"
makes `audio_encoder/blocks/layers_3/attn/query/kernel` the torch tensor
`audio_encoder.blocks.3.attn.query.weight`, transformed by "heads_in".

Placeholders: `{i}`, `{s}`, ... stand for decimal indices. `layers_{i}` also matches a scanned
stack (`layers`, parameters with a leading layer axis), which is unstacked into one torch
tensor per layer. `drop` marks Flax variables that the export leaves out on purpose.

Conversion is strict: every Flax leaf must match exactly one rule, two leaves may not produce
the same torch name, and `check_state` compares the result with the torch model's state dict
(no missing or unexpected names, identical shapes).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping

import numpy as np


class MappingError(ValueError):
  """The Flax parameters and the PyTorch model do not correspond; the message lists how."""


# Transforms: Flax array -> torch layout (numpy in, numpy out).
TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray] | None] = {
    "copy": lambda x: x,
    "dense": lambda x: x.T,  # kernel [in, out] -> weight [out, in]
    "heads_in": lambda x: x.reshape(x.shape[0], -1).T,  # [D, H, Dh] -> [H*Dh, D]
    "heads_bias": lambda x: x.reshape(-1),  # [H, Dh] -> [H*Dh]
    "heads_out": lambda x: x.reshape(-1, x.shape[-1]).T,  # [H, Dh, D] -> [D, H*Dh]
    "conv": lambda x: x.transpose(3, 2, 0, 1),  # [kh, kw, in, out] -> [out, in, kh, kw]
    "drop": None,  # not exported
}

_LN = "LayerNorm"

TABLE: dict[str, tuple[tuple[str, str | None, str], ...]] = {
    # Leaf modules.
    "LayerNorm": (("scale", "weight", "copy"), ("bias", "bias", "copy")),
    "Dense": (("kernel", "weight", "dense"), ("bias", "bias", "copy")),
    "HeadsIn": (("kernel", "weight", "heads_in"), ("bias", "bias", "heads_bias")),
    "HeadsOut": (("kernel", "weight", "heads_out"), ("bias", "bias", "copy")),
    "Conv": (("kernel", "weight", "conv"), ("bias", "bias", "copy")),
    # Building blocks (models/layers.py).
    "Attention": (("query", "query", "HeadsIn"), ("key", "key", "HeadsIn"),
                  ("value", "value", "HeadsIn"), ("out", "out", "HeadsOut")),
    "Mlp": (("wi", "wi", "Dense"), ("wo", "wo", "Dense")),
    "EncoderBlock": (("ln_attn", "ln_attn", _LN), ("attn", "attn", "Attention"),
                     ("ln_mlp", "ln_mlp", _LN), ("mlp", "mlp", "Mlp")),
    "DecoderBlock": (("ln_self", "ln_self", _LN), ("self_attn", "self_attn", "Attention"),
                     ("ln_cross", "ln_cross", _LN), ("cross_attn", "cross_attn", "Attention"),
                     ("ln_mlp", "ln_mlp", _LN), ("mlp", "mlp", "Mlp")),
    # Encoders.
    "AudioEncoder": (("patch_embed", "patch_embed", "Dense"), ("pos_embed", "pos_embed", "copy"),
                     ("blocks/layers_{i}", "blocks.{i}", "EncoderBlock"),
                     ("ln_out", "ln_out", _LN)),
    "VisualEncoder": (("patch_embed", "patch_embed", "Dense"),
                      ("pos_embed", "pos_embed", "copy"),
                      ("blocks/layers_{i}", "blocks.{i}", "EncoderBlock"),
                      ("ln_out", "ln_out", _LN)),
    "PromptEncoder": (("pos_embed", "pos_embed", "copy"), ("ln_pooled", "ln_pooled", _LN)),
    # Multi-scale temporal perception.
    "CrossModalBlock": tuple(
        (f"{m}_{part}", f"{m}_{part}", kind) for m in ("audio", "visual") for part, kind in (
            ("ln_self", _LN), ("self", "Attention"), ("ln_cross", _LN), ("ln_ctx", _LN),
            ("cross", "Attention"), ("ln_mlp", _LN), ("mlp", "Mlp"))),
    "ScaleStack": (("blocks/layers_{i}", "blocks.{i}", "CrossModalBlock"),),
    "Temporal": (("scale_{s}", "scale_{s}", "ScaleStack"),
                 ("scale_logits", "scale_logits", "Dense"),
                 ("ln_audio", "ln_audio", _LN), ("ln_visual", "ln_visual", _LN)),
    # Spatial perception (the guidance's own layers are absent in the uniform ablation).
    "Spatial": (("ln_query", "ln_query", _LN), ("ln_patches", "ln_patches", _LN),
                ("query", "query", "HeadsIn"), ("key", "key", "HeadsIn"),
                ("value", "value", "HeadsIn"), ("out", "out", "HeadsOut"),
                ("ln_mlp", "ln_mlp", _LN), ("mlp", "mlp", "Mlp"), ("ln_out", "ln_out", _LN),
                ("audio_proj", "audio_proj", "Dense"), ("visual_proj", "visual_proj", "Dense")),
    "MILHead": (("frame_logits", "frame_logits", "Dense"), ("time_attn", "time_attn", "Dense"),
                ("modality_attn", "modality_attn", "Dense")),
    "Fusion": (("time_embed", "time_embed", "copy"), ("type_embed", "type_embed", "copy"),
               ("patch_pos_embed", "patch_pos_embed", "copy"),
               ("blocks/layers_{i}", "blocks.{i}", "EncoderBlock"), ("ln_out", "ln_out", _LN)),
    "Decoder": (("pos_embed", "pos_embed", "copy"),
                ("blocks/layers_{i}", "blocks.{i}", "DecoderBlock"), ("ln_out", "ln_out", _LN)),
    "TokenEmbed": (("embedding", "weight", "copy"),),
    "AVUnified": (("embed", "embed", "TokenEmbed"),
                  ("audio_encoder", "audio_encoder", "AudioEncoder"),
                  ("visual_encoder", "visual_encoder", "VisualEncoder"),
                  ("prompt_encoder", "prompt_encoder", "PromptEncoder"),
                  ("temporal", "temporal", "Temporal"), ("spatial", "spatial", "Spatial"),
                  ("mil_head", "mil_head", "MILHead"), ("fusion", "fusion", "Fusion"),
                  ("decoder", "decoder", "Decoder"),
                  # Cell queries (absent when model.mask_task_token is -1).
                  ("cell_norm", "cell_norm", _LN), ("cell_proj", "cell_proj", "Dense"),
                  ("cell_map_proj", "cell_map_proj", "Dense"),
                  # The focus map's embedding (absent unless model.focus_map_embed).
                  ("focus_map_proj", "focus_map_proj", "Dense")),
    # Mask tokenizer (mask_tokenizer/model.py): variables {"params": ..., "vq": ...}.
    "ResBlock": (("conv1", "conv1", "Conv"), ("conv2", "conv2", "Conv")),
    "Upsample": (("conv", "conv", "Conv"),),
    "MaskEncoder": (("down{k}", "down{k}", "Conv"), ("res{r}", "res{r}", "ResBlock"),
                    ("to_code", "to_code", "Conv")),
    "MaskDecoder": (("from_code", "from_code", "Conv"), ("res{r}", "res{r}", "ResBlock"),
                    ("up{k}", "up{k}", "Upsample"), ("to_logits", "to_logits", "Upsample")),
    "MaskTokenizer": (("params/encoder", "encoder", "MaskEncoder"),
                      ("params/decoder", "decoder", "MaskDecoder"),
                      ("vq/quantizer/codebook", "codebook", "copy"),
                      # EMA statistics only drive codebook updates during training.
                      ("vq/quantizer/ema_count", None, "drop"),
                      ("vq/quantizer/ema_sum", None, "drop")),
    # What the export writes: the model's params and the mask tokenizer's variables.
    "Export": (("model", "", "AVUnified"), ("mask_tokenizer", "mask_tokenizer", "MaskTokenizer")),
}


@dataclasses.dataclass(frozen=True)
class Rule:
  """One parameter: a Flax path pattern, its torch name template and its transform."""
  flax: str
  torch: str | None
  transform: str

  @property
  def regex(self) -> re.Pattern:
    out = re.escape(self.flax).replace(r"layers_\{i\}", r"(?:layers_(?P<i>\d+)|layers)")
    return re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>\\d+)", out))

  @property
  def scannable(self) -> bool:
    return "layers_{i}" in self.flax


def _join(prefix: str, name: str, sep: str) -> str:
  return f"{prefix}{sep}{name}" if prefix and name else prefix or name


def rules(module_type: str, flax_prefix: str = "", torch_prefix: str = "") -> list[Rule]:
  """The flat rules of `module_type` (every parameter below it), in table order."""
  if module_type not in TABLE:
    raise KeyError(f"{module_type!r} is not a module type of the export table; known: "
                   f"{sorted(TABLE)}")
  out = []
  for flax_name, torch_name, what in TABLE[module_type]:
    flax_path = _join(flax_prefix, flax_name, "/")
    if what in TRANSFORMS:
      torch_path = None if what == "drop" else _join(torch_prefix, torch_name, ".")
      out.append(Rule(flax_path, torch_path, what))
    else:
      out.extend(rules(what, flax_path, _join(torch_prefix, torch_name, ".")))
  return out


def flatten(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
  """Nested dict of arrays -> {"a/b/c": numpy array}."""
  out = {}
  for key, value in tree.items():
    path = _join(prefix, str(key), "/")
    if isinstance(value, Mapping):
      out.update(flatten(value, path))
    else:
      out[path] = np.asarray(value)
  return out


def convert(tree: Mapping, module_type: str = "Export") -> dict[str, np.ndarray]:
  """Flax variables of `module_type` (nested dict or flat {"a/b": array}) -> torch state dict.

  Raises MappingError listing every Flax path that no rule (or more than one) matches and
  every torch name produced twice.
  """
  flat = flatten(tree) if any(isinstance(v, Mapping) for v in tree.values()) else dict(tree)
  table = [(rule, rule.regex) for rule in rules(module_type)]
  out: dict[str, np.ndarray] = {}
  problems = []
  for path, value in sorted(flat.items()):
    hits = [(rule, m) for rule, regex in table if (m := regex.fullmatch(path))]
    if len(hits) != 1:
      why = "no rule" if not hits else f"{len(hits)} rules ({[r.flax for r, _ in hits]})"
      problems.append(f"{path}: {why} of {module_type!r} matches it")
      continue
    rule, match = hits[0]
    if rule.transform == "drop":
      continue
    for name, array in _expand(rule, match, np.asarray(value)):
      if name in out:
        problems.append(f"{path}: torch name {name} is produced twice")
      out[name] = np.ascontiguousarray(TRANSFORMS[rule.transform](array))
  if problems:
    raise MappingError(f"{len(problems)} Flax parameter(s) do not map to the PyTorch model:\n  "
                       + "\n  ".join(problems))
  return out


def _expand(rule: Rule, match: re.Match, value: np.ndarray):
  """(torch name, array) pairs; a scanned stack gives one pair per layer."""
  groups = match.groupdict()
  if rule.scannable and groups["i"] is None:
    return [(rule.torch.format(**{**groups, "i": i}), value[i]) for i in range(value.shape[0])]
  return [(rule.torch.format(**groups), value)]


def check_state(converted: Mapping[str, np.ndarray], expected: Mapping[str, tuple]) -> None:
  """Strict key-set and shape equality of a converted state dict and the torch model's
  (`expected`: name -> shape). Raises MappingError naming every difference."""
  missing = sorted(set(expected) - set(converted))
  unexpected = sorted(set(converted) - set(expected))
  shapes = [f"{k}: converted {tuple(converted[k].shape)}, torch {tuple(expected[k])}"
            for k in sorted(set(expected) & set(converted))
            if tuple(converted[k].shape) != tuple(expected[k])]
  lines = ([f"missing in the converted weights: {k}" for k in missing]
           + [f"not in the torch model: {k}" for k in unexpected]
           + [f"shape mismatch {s}" for s in shapes])
  if lines:
    raise MappingError(f"{len(lines)} difference(s) between the converted weights and the "
                       "PyTorch model:\n  " + "\n  ".join(lines))


def describe(module_type: str = "Export") -> str:
  """The flat table as text: one `flax pattern -> torch name (transform)` line per rule."""
  return "\n".join(f"{r.flax} -> {r.torch or '(not exported)'} ({r.transform})"
                   for r in rules(module_type))
