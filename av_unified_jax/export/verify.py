"""Runs the JAX model and its PyTorch export on the same fixed batch.

    report = verify.verify_export(source, "E")   # {"max_abs_logit_diff", "greedy_tokens_equal",
    verify.passed(report)                         #  "n_params"}

The batch has one row per target format (ave, avvp, avvp_weak, avqa, ssl, avs), each with its
real prompt from the run's tokenizer, deterministic frames and log-mel, and row 0 with a padded
segment. Teacher-forced logits are compared, and every row is decoded greedily under its own
grammar on both sides. For a bfloat16 export the JAX side uses the same bfloat16-rounded
weights, so both sides compute in float32 from identical numbers and the same tolerance holds.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch  # Optional dependency: torch (CPU build) is needed by the export only.

from av_unified_jax import tokens
from av_unified_jax.evaluation import decoding
from av_unified_jax.export import modeling_av_unified as tm
from av_unified_jax.export.source import Source

TOLERANCE = 1e-4  # Largest |logit difference| accepted.
AVQA_QUESTION = "How many instruments are sounding in the video?"


def fixed_batch(source: Source, seed: int = 0) -> tuple[dict, list[str]]:
  """(batch of numpy arrays, grammar name per row): one row per target format."""
  tok, cfg = source.tokenizer, source.model.cfg
  names = list(tok.grammars())
  data = getattr(source.run_config, "data", None)
  t = int(getattr(data, "num_segments", 10))
  size = int(getattr(data, "image_size", 4 * cfg.patch_size))
  prompts = [_prompt(tok, name, t) for name in names]
  lp = max(len(p) for p in prompts)
  if lp > cfg.max_prompt_len:
    raise ValueError(f"a prompt of {lp} tokens exceeds model.max_prompt_len")
  rng = np.random.default_rng(seed)
  b = len(names)
  prompt_tokens = np.zeros((b, lp), np.int32)
  for i, p in enumerate(prompts):
    prompt_tokens[i, :len(p)] = p
  segment_mask = np.ones((b, t), bool)
  segment_mask[0, t - 1] = t < 2  # Row 0 has a padded last segment.
  lt = min(16, cfg.max_decode_len)
  batch = {
      "frames": rng.integers(0, 256, (b, t, size, size, 3), dtype=np.uint8),
      "log_mel": rng.normal(size=(b, t, cfg.mel_frames, cfg.mel_bins)).astype(np.float32),
      "segment_mask": segment_mask,
      "prompt_tokens": prompt_tokens,
      "target_tokens": rng.integers(3, cfg.vocab_size, (b, lt)).astype(np.int32),
      "focus_segment": (np.arange(b) % max(t - 1, 1)).astype(np.int32),
  }
  return batch, names


def _prompt(tok, name: str, num_segments: int) -> np.ndarray:
  task = "avvp" if name == "avvp_weak" else name
  kwargs = {"question": AVQA_QUESTION} if task == "avqa" else {}
  if task == "avs":
    kwargs["second"] = min(1, num_segments - 1)
  return tok.encode_prompt(task, weak=name == "avvp_weak", **kwargs)


def jax_outputs(source: Source, params, batch, names, max_len: int):
  """(logits float32[B, Lt, V], tokens int32[B, max_len]) of the JAX model."""
  model = source.model
  logits = _jax_logits(model, params, batch)
  stack = tokens.stack_grammars(source.tokenizer.grammars())
  index = jnp.asarray([stack.index(n) for n in names], jnp.int32)
  decode_batch = {k: v for k, v in batch.items() if k != "target_tokens"}
  out = decoding.greedy_decode(model, params, decode_batch, stack.allowed, stack.next_state,
                               stack.start_states, max_len, grammar_index=index)
  return np.asarray(logits), np.asarray(out)


@functools.partial(jax.jit, static_argnums=0)
def _jax_logits(model, params, batch):
  return model.apply({"params": params}, batch)["logits"]


def torch_outputs(export_dir, batch, names, max_len: int):
  """(logits, tokens, number of parameters) of the exported PyTorch model (float32)."""
  model = tm.AVUnified.from_pretrained(export_dir, dtype=torch.float32)
  with torch.no_grad():
    logits = model(batch)["logits"].numpy()
  tokens = model.generate(batch, names, max_len=max_len).numpy()
  return logits, tokens, tm.count_parameters(model)


def rounded_params(params, dtype: str):
  """The parameters as the export stores them (bfloat16-rounded, back in float32)."""
  if dtype == "float32":
    return params
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16).astype(jnp.float32), params)


def verify_export(source: Source, export_dir: str | Path,
                  dtype: str = "float32") -> dict:
  """Compares the JAX model with the export in `export_dir` on `fixed_batch`."""
  batch, names = fixed_batch(source)
  cfg = source.model.cfg
  lens = {n: g.max_len for n, g in source.tokenizer.grammars().items()}
  max_len = min(max(lens[n] for n in names), cfg.max_decode_len)
  params = rounded_params(jax.device_get(nn.meta.unbox(source.params)), dtype)
  jax_logits, jax_tokens = jax_outputs(source, params, batch, names, max_len)
  torch_logits, torch_tokens, n_params = torch_outputs(export_dir, batch, names, max_len)
  return {"max_abs_logit_diff": float(np.max(np.abs(jax_logits - torch_logits))),
          "greedy_tokens_equal": bool(np.array_equal(jax_tokens, torch_tokens)),
          "n_params": int(n_params)}


def passed(report: dict) -> bool:
  return report["max_abs_logit_diff"] <= TOLERANCE and report["greedy_tokens_equal"]


def describe_failure(report: dict) -> str:
  parts = []
  if report["max_abs_logit_diff"] > TOLERANCE:
    parts.append(f"logits differ by up to {report['max_abs_logit_diff']:.3g} "
                 f"(tolerance {TOLERANCE:g})")
  if not report["greedy_tokens_equal"]:
    parts.append("greedy decoding gives different tokens")
  return "verification failed: " + "; ".join(parts)


def print_report(report: dict, stream=None) -> None:
  """The report as one JSON line (on stdout by default)."""
  print(json.dumps(report), file=stream or sys.stdout, flush=True)
