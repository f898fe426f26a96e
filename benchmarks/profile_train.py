"""Where the training step's time goes, JAX against the PyTorch export (same weights, batch,
threads): forward and forward + backward of the loss side by side, then each framework's own
profiler, its op time grouped by kind.

  python -m benchmarks.profile_train [--config demo] [--batch 32] [--repeats 4]

JAX ops are read from a `jax.profiler` trace (XLA's fusions and library calls by name,
numbered suffixes dropped); PyTorch ops from `torch.profiler` (self CPU time per aten op).

It also prints what bounds the JAX/PyTorch ratio: the FLOPs of the JAX forward and forward +
backward (XLA's cost analysis) with the rate each ran at, and the op time spent in matrix
products (YNNPACK fusions, which may carry fused elementwise work, and XLA's own dots): the
PyTorch forward + backward divided by that time is the ratio the JAX step would reach if
every other op cost nothing.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from av_unified_jax import models, steps, tokens
from benchmarks.run import cpu_threads

NOT_OPS = ("ThunkExecutor", "$", "SlinkyThreadPool", "PjitFunction", "CommonPjRt",
           "Handle inputs")
# Op kinds of a JAX trace that are matrix products (library calls and XLA's dot emitters).
MATMUL_OPS = ("ynn_fusion", "dot_general", "dot", "onednn_matmul", "xnn_fusion")


def _modules():
  """(timing, torch_side, train_step), imported after OMP_WAIT_POLICY is set (torch reads it
  when it is first imported)."""
  from benchmarks import timing, torch_side, train_step  # Late: torch after OMP_WAIT_POLICY.

  return timing, torch_side, train_step


def jax_loss_fns(config, cfg, batch):
  """(params, jitted loss, jitted grad, device batch) of the project's model and loss."""
  model = models.AVUnified(cfg)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), batch))["params"]
  weights = jnp.ones(len(steps.TASKS))

  def loss(p, b):
    out = model.apply({"params": p}, b, train=True, rngs={"dropout": jax.random.key(0)})
    return steps.compute_loss(out, b, config.loss, weights)[0]

  return params, jax.jit(loss), jax.jit(jax.grad(loss)), jax.device_put(batch)


def jax_op_times(fn, steps: int = 2) -> collections.Counter:
  """{op kind: microseconds per call} from a jax.profiler trace of `steps` calls of fn."""
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      for _ in range(steps):
        fn()
    path = glob.glob(os.path.join(tmp, "plugins", "profile", "*", "perfetto_trace.json.gz"))[0]
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  out = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and not e["name"].startswith(NOT_OPS):
      out[re.sub(r"\.\d+$", "", e["name"])] += e.get("dur", 0) / steps
  return out


def torch_op_times(fn, steps: int = 2) -> collections.Counter:
  """{aten op: self CPU microseconds per call} from torch.profiler."""
  from torch.profiler import ProfilerActivity, profile  # Late: torch after OMP_WAIT_POLICY.

  with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(steps):
      fn()
  return collections.Counter({r.key: r.self_cpu_time_total / steps
                              for r in prof.key_averages()})


def flops(jitted, *args) -> float:
  """FLOPs of one call of a jitted function, from XLA's cost analysis of its compiled form."""
  analysis = jitted.lower(*args).compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  return float(analysis.get("flops", 0.0))


def matmul_share(times: collections.Counter) -> float:
  """Microseconds per call spent in matrix-product op kinds (`MATMUL_OPS`)."""
  return sum(us for name, us in times.items() if name in MATMUL_OPS)


def print_top(title: str, times: collections.Counter, top: int) -> None:
  total = sum(times.values())
  print(f"{title}: {total / 1e3:,.0f} ms of op time per call (all threads)")
  for name, us in times.most_common(top):
    print(f"  {us / 1e3:9.1f} ms {100 * us / total:5.1f}%  {name}")


def main(argv=None) -> int:
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="demo", help="configs/<name>.py")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=4)
  parser.add_argument("--top", type=int, default=12)
  args = parser.parse_args(argv)
  timing, torch_side, train_step = _modules()
  import torch  # Late: torch after OMP_WAIT_POLICY.

  threads = cpu_threads()
  torch.set_num_threads(threads)
  vocab = tokens.Tokenizer.build(tokens.OFFICIAL_LABEL_SETS).layout.vocab_size
  config = train_step.load_config(args.config, args.batch)
  cfg = models.model_config_from(config.model, vocab_size=vocab,
                                 num_mil_classes=train_step.NUM_CLASSES)
  batch = train_step.make_batch(config, cfg, vocab)
  params, loss, grad, jb = jax_loss_fns(config, cfg, batch)
  tmodel = torch_side.torch_model(cfg, params)
  tb = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}

  def torch_fwd():
    return torch_side.total_loss(tmodel(tb), tb, config.loss)

  def torch_fwd_bwd():
    tmodel.zero_grad(set_to_none=True)
    torch_fwd().backward()

  fns = {"jax forward": lambda: jax.block_until_ready(loss(params, jb)),
         "jax forward+backward": lambda: jax.block_until_ready(grad(params, jb)),
         "torch forward": torch_fwd, "torch forward+backward": torch_fwd_bwd}
  for fn in fns.values():
    fn()  # Compiles / warms up.
  seconds = timing.interleaved(fns, args.repeats)
  print(f"{args.config} variant, batch {args.batch}, {threads} threads, "
        f"load {os.getloadavg()[0]:.1f}; seconds, median [min-max] of {args.repeats}:")
  stats = {name: timing.stats(s, "s") for name, s in seconds.items()}
  for name, st in stats.items():
    print(f"  {name:24s} {st['median']:.3f} [{st['min']:.3f}-{st['max']:.3f}]")
  median = {name: st["median"] for name, st in stats.items()}
  for name, fn in (("forward", loss), ("forward+backward", grad)):
    f = flops(fn, params, jb)
    print(f"  jax {name}: {f / 1e9:.1f} GFLOP at {f / 1e9 / median['jax ' + name]:.0f} GFLOP/s")
  jax_ops = jax_op_times(fns["jax forward+backward"])
  print_top("JAX forward+backward", jax_ops, args.top)
  print_top("PyTorch forward+backward", torch_op_times(torch_fwd_bwd), args.top)
  mm = matmul_share(jax_ops) / 1e6  # seconds
  print(f"JAX matrix products ({', '.join(MATMUL_OPS)}): {1e3 * mm:.0f} ms of "
        f"{sum(jax_ops.values()) / 1e3:.0f} ms op time; forward+backward ratio with every "
        f"other op free: {median['torch forward+backward'] / mm:.2f} "
        f"(measured: {median['torch forward+backward'] / median['jax forward+backward']:.2f})")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
