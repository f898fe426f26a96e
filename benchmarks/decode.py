"""Constrained greedy decoding, tokens/s: JAX with the KV cache, JAX without it (every step
re-decodes the whole prefix), and the PyTorch export's `generate` (its own KV cache).

All three decode the same batch with the same weights under the AVS grammar, whose targets
are 8 x 8 = 64 mask-code tokens before <eos>, so every row emits exactly `max_len` = 64
tokens. Each timing covers one whole call (encoder once + 64 decoder steps). The emitted
tokens of the three are compared, as evidence that they do the same work.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np

from av_unified_jax import models, tokens
from av_unified_jax.evaluation import decoding
from benchmarks import timing, torch_side, train_step

GRAMMAR = "avs"


def _prompts(tok, batch_size: int, prompt_len: int) -> np.ndarray:
  """int32[B, Lp]: the AVS prompt (second 1) of the tokenizer, padded with <pad>."""
  prompt = tok.encode_prompt(GRAMMAR, second=1)
  out = np.zeros((batch_size, prompt_len), np.int32)
  out[:, :len(prompt)] = prompt
  return out


def _inputs(config, cfg, tok) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(decoder inputs, the same with target_tokens for `model.init`)."""
  batch = train_step.make_batch(config, cfg, tok.layout.vocab_size)
  batch["prompt_tokens"] = _prompts(tok, config.data.batch_size, config.tokens.max_prompt_len)
  keep = ("frames", "log_mel", "segment_mask", "prompt_tokens", "focus_segment")
  inputs = {k: batch[k] for k in keep}
  return inputs, {**inputs, "target_tokens": batch["target_tokens"]}


def _torch_generator(cfg, params, stack, threads: int):
  import torch  # Late: torch after OMP_WAIT_POLICY.

  from av_unified_jax.export import modeling_av_unified as tm  # Late: torch after OMP_WAIT_POLICY.

  torch.set_num_threads(threads)
  model = torch_side.torch_model(cfg, params).eval()
  max_lens = [int(np.max(stack.max_len))] * len(stack.names)
  model.grammars = tm.Grammars(
      stack.names, torch.from_numpy(np.asarray(stack.allowed)),
      torch.from_numpy(np.asarray(stack.next_state)),
      torch.from_numpy(np.asarray(stack.start_states)), torch.tensor(max_lens))
  return model


def measure(config_name: str, batch_size: int, max_len: int, repeats: int, threads: int,
            tok, params=None) -> dict:
  """Interleaved repeats of the three decoders; tokens/s = emitted tokens / seconds.

  `params`: the model's parameters (default: a fresh initialization with the config's seed).
  """
  import torch  # Late: torch after OMP_WAIT_POLICY.

  config = train_step.load_config(config_name, batch_size)
  cfg = train_step.model_config(config, tok.layout.vocab_size)
  model = models.AVUnified(cfg)
  batch, init_batch = _inputs(config, cfg, tok)
  if params is None:
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(config.seed),
                                               init_batch))["params"]
  stack = tokens.stack_grammars(tok.grammars())
  index = np.full((batch_size,), stack.index(GRAMMAR), np.int32)
  tables = (stack.allowed, stack.next_state, stack.start_states)

  def jax_decoder(cached: bool):
    return lambda: np.asarray(decoding.greedy_decode(
        model, params, batch, *tables, max_len, grammar_index=index, cached=cached))

  torch_model = _torch_generator(cfg, params, stack, threads)

  def torch_decode():
    with torch.no_grad():
      return torch_model.generate(batch, GRAMMAR, max_len=max_len).numpy()

  fns = {"jax_cached": jax_decoder(True), "jax_uncached": jax_decoder(False),
         "torch_generate": torch_decode}
  first = {name: timing.timed(fn) for name, fn in fns.items()}  # Compiles the JAX ones.
  outputs = {name: fn() for name, fn in fns.items()}
  emitted = int(np.sum(outputs["jax_cached"] != 0))
  seconds = timing.interleaved(fns, repeats)
  rates = {name: timing.rate_stats(s, emitted, "tokens/s") for name, s in seconds.items()}
  return {
      "variant": config.model.variant, "config": f"configs/{config_name}.py",
      "batch_size": batch_size, "max_len": max_len, "grammar": GRAMMAR,
      "emitted_tokens_per_call": emitted, "threads": threads,
      "first_call_s": first, **rates,
      "cached_over_uncached": timing.paired_ratio(rates["jax_cached"], rates["jax_uncached"]),
      "cached_over_torch": timing.paired_ratio(rates["jax_cached"], rates["torch_generate"]),
      "tokens_equal": {
          "uncached_vs_cached": bool(np.array_equal(outputs["jax_uncached"],
                                                    outputs["jax_cached"])),
          "torch_vs_cached": bool(np.array_equal(outputs["torch_generate"],
                                                 outputs["jax_cached"]))},
  }
