"""The summary ratios, the targets, and PERFORMANCE.md rendered from a results dict.

    summary = summarize(results["measurements"])      # the four ratios (None if not measured)
    text = render(results, notes)                      # the whole PERFORMANCE.md
"""

from __future__ import annotations

from collections.abc import Mapping

SUMMARY_KEYS = ("train_step_speed_jax_over_torch", "decode_speedup_cached_over_uncached",
                "decode_speed_jax_over_torch", "pipeline_rate_over_train_consumption",
                "fsdp8_bytes_over_ideal")

# key -> (comparison, threshold, wording); a target holds when `value <op> threshold`.
TARGETS = {
    "train_step_speed_jax_over_torch": (">=", 1.5, "JAX train step 1.5x PyTorch's"),
    "decode_speedup_cached_over_uncached": (">=", 3.0, "cached decoding >= 3x uncached"),
    "decode_speed_jax_over_torch": (">=", 2.0, "JAX cached decoding >= 2x PyTorch generate"),
    "pipeline_rate_over_train_consumption": (">=", 5.0,
                                             "pipeline >= 5x the demo train step's intake"),
    "fsdp8_bytes_over_ideal": ("<=", 1.15, "FSDP per-device bytes within 15% of total/8"),
}

TRAIN_VARIANT = "demo"  # The variant whose ratio is the summary's train-step figure.


def _ok(m: Mapping | None) -> bool:
  return bool(m) and m.get("status") == "ok"


def best_pipeline_rate(pipeline: Mapping) -> tuple[str, float]:
  """(worker count, median examples/s) of the fastest worker count."""
  rows = pipeline["workers"]
  best = max(rows, key=lambda w: rows[w]["examples_per_s"]["median"])
  return best, rows[best]["examples_per_s"]["median"]


def train_intake(measurements: Mapping) -> dict | None:
  """Stats of the examples/s the demo train step consumes: measured next to the pipeline
  when it was, else the JAX figure of the train-step section."""
  pipeline = measurements.get("pipeline")
  if _ok(pipeline) and pipeline.get("train_consumption"):
    return pipeline["train_consumption"]
  train = measurements.get("train_step")
  demo = train["variants"].get(TRAIN_VARIANT) if _ok(train) else None
  return demo["jax"] if demo else None


def summarize(measurements: Mapping) -> dict:
  """The summary ratios; a ratio whose measurement did not run (or compared other work) is
  None."""
  out = dict.fromkeys(SUMMARY_KEYS)
  train = measurements.get("train_step")
  demo = train["variants"].get(TRAIN_VARIANT) if _ok(train) else None
  if demo:
    out["train_step_speed_jax_over_torch"] = demo["jax_over_torch"]
  if _ok(measurements.get("decode")):
    decode = measurements["decode"]
    out["decode_speedup_cached_over_uncached"] = decode["cached_over_uncached"]
    if decode.get("tokens_equal", {}).get("torch_vs_cached"):  # Else not the same work.
      out["decode_speed_jax_over_torch"] = decode["cached_over_torch"]
  intake = train_intake(measurements)
  if _ok(measurements.get("pipeline")) and intake:
    _, rate = best_pipeline_rate(measurements["pipeline"])
    out["pipeline_rate_over_train_consumption"] = rate / intake["median"]
  fsdp = measurements.get("fsdp_memory")
  if _ok(fsdp):
    rows = [r for r in fsdp["bytes"]["rows"] if r["devices"] == 8]
    out["fsdp8_bytes_over_ideal"] = rows[0]["over_ideal"] if rows else None
  return out


def target_holds(key: str, value: float | None) -> bool | None:
  if value is None:
    return None
  op, threshold, _ = TARGETS[key]
  return value >= threshold if op == ">=" else value <= threshold


# ----------------------------------------------------------------------------- formatting
def fig(s: Mapping | None, digits: int = 1) -> str:
  """A stats dict as `median [min-max]`."""
  if not s:
    return "-"
  return f"{s['median']:,.{digits}f} [{s['min']:,.{digits}f}-{s['max']:,.{digits}f}]"


def num(x: float | None, fmt: str = ".2f") -> str:
  return "-" if x is None else format(x, fmt)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _status_line(m: Mapping | None) -> list[str] | None:
  """Lines for a measurement that did not run (None when it ran)."""
  if m is None:
    return ["Not measured in this run."]
  if m.get("status") != "ok":
    return [f"**{m.get('status', 'failed')}**: {m.get('reason', 'no reason recorded')}"]
  return None


def render_summary(summary: Mapping) -> list[str]:
  rows = []
  for key in SUMMARY_KEYS:
    op, threshold, words = TARGETS[key]
    holds = target_holds(key, summary.get(key))
    verdict = {True: "holds", False: "**does not hold**", None: "not measured"}[holds]
    rows.append([f"`{key}`", num(summary.get(key)), f"{op} {threshold:g} ({words})", verdict])
  return table(["summary ratio", "measured", "target", "verdict"], rows)


def render_train(m: Mapping | None) -> list[str]:
  lines = ["## 1. Training step (forward + backward + AdamW), examples/s", ""]
  status = _status_line(m)
  if status:
    return lines + status
  lines += [f"Same weights, same batch, {m['threads']} CPU threads on both sides (XLA's "
            "thread pool and `torch.set_num_threads`), dropout 0 (the export has none). "
            "Figures: median [min-max] over the repeats, JAX and PyTorch interleaved; a ratio "
            "is the median of the per-round ratios.", ""]
  rows = []
  for name, v in m["variants"].items():
    loss = v["first_loss"]
    rows.append([name, v["batch_size"], f"{v['image_size']}px x {v['num_segments']}",
                 fig(v["jax"]), fig(v["torch"]), num(v["jax_over_torch"]),
                 f"{loss['jax']:.5f} / {loss['torch']:.5f}", f"{v['jax_compile_s']:.1f}"])
  lines += table(["variant", "batch", "frames", "JAX", "PyTorch", "JAX / PyTorch",
                  "first loss JAX / PyTorch", "JAX compile s"], rows)
  refused = [n for n, v in m["variants"].items() if v["jax_over_torch"] is None]
  if refused:
    lines += ["", f"No ratio for {', '.join(refused)}: the first losses differ, so the two "
              "sides do not compute the same loss."]
  slower = [n for n, v in m["variants"].items() if (v["jax_over_torch"] or 1.0) < 1.0]
  if slower:
    lines += ["", f"JAX is slower than PyTorch for {', '.join(slower)}: the profile is under "
              "Analysis below."]
  return lines


def render_decode(m: Mapping | None) -> list[str]:
  lines = ["## 2. Constrained greedy decoding, tokens/s", ""]
  status = _status_line(m)
  if status:
    return lines + status
  eq = m["tokens_equal"]
  lines += [f"`{m['variant']}` variant, batch {m['batch_size']}, {m['max_len']} target tokens "
            f"(the `{m['grammar']}` grammar), {m['emitted_tokens_per_call']} tokens per call, "
            f"{m['threads']} CPU threads; each call includes the encoder; the three run interleaved "
            "and ratios are medians of per-round ratios. Emitted tokens equal: "
            f"uncached vs cached {eq['uncached_vs_cached']}, PyTorch vs cached "
            f"{eq['torch_vs_cached']}.", ""]
  rows = [["JAX, KV cache", fig(m["jax_cached"]), "1.00"],
          ["JAX, no cache", fig(m["jax_uncached"]),
           num(1 / m["cached_over_uncached"] if m["cached_over_uncached"] else None)],
          ["PyTorch `generate` (KV cache)", fig(m["torch_generate"]),
           num(1 / m["cached_over_torch"] if m["cached_over_torch"] else None)]]
  return lines + table(["decoder", "tokens/s", "relative to JAX cached"], rows)


def render_pipeline(m: Mapping | None, measurements: Mapping) -> list[str]:
  lines = ["## 3. Input pipeline on the demo shards, examples/s", ""]
  status = _status_line(m)
  if status:
    return lines + status
  disabled = m.get("tasks_disabled") or {}
  lines += [f"`{m['config']}` stream (batch {m['batch_size']}, {m['image_size']}px crops), "
            f"{m['batches_per_repeat']} batches per repeat after the first batch and a "
            "warm-up that empties the prefetch buffers. "
            + (f"Tasks left out: {disabled}." if disabled else "All five tasks mixed."), ""]
  rows = [[w, fig(r["examples_per_s"]), f"{r['first_batch_s']:.1f}"]
          for w, r in m["workers"].items()]
  intake = train_intake(measurements)
  if intake:
    where = ("steps just before and after these rows" if m.get("train_consumption")
             else "section 1")
    rows.append([f"demo train step (JAX) consumes ({where})", fig(intake), "-"])
  return lines + table(["grain workers", "examples/s", "first batch s"], rows)


def render_conversion(m: Mapping | None) -> list[str]:
  lines = ["## 4. Conversion, clips/s", ""]
  status = _status_line(m)
  if status:
    return lines + status
  lines += [f"{m['clips']} clips of {m['clip_seconds']} s ({m['source']}), the same files for "
            "every row.", ""]
  rows = []
  for n, r in m["convert_over_decode"].items():
    rows.append([n, fig(m[f"decode_only_{n}"], 2), fig(m[f"convert_{n}"], 2), num(r)])
  return lines + table(["processes / workers", "decode-only PyAV", "data_prep.convert",
                        "convert / decode"], rows)


def render_fsdp(m: Mapping | None) -> list[str]:
  lines = ["## 5. FSDP: per-device bytes of params + AdamW state, compile time", ""]
  status = _status_line(m)
  if status:
    return lines + status
  b, c = m["bytes"], m["compile"]
  lines += [f"`{b['variant']}` variant ({b['config']} shapes), float32 params and both AdamW "
            "moments, counted from `jax.eval_shape` and the train loop's shardings "
            "(nothing allocated), on meshes of data=1, fsdp=N fake CPU devices.", ""]
  rows = [[r["devices"], f"{r['total_bytes'] / 2**20:,.1f}",
           f"{r['per_device_bytes_max'] / 2**20:,.1f}", f"{r['ideal_bytes'] / 2**20:,.1f}",
           f"{r['over_ideal']:.4f}"] for r in b["rows"]]
  lines += table(["devices", "total MiB", "per device MiB (max)", "total / N MiB",
                  "per device / ideal"], rows)
  lines += ["", f"Compile time of the jitted train step, `{c['variant']}` variant "
            f"({c['config']}, 2 examples per device):", ""]
  rows = [[r["devices"], r["batch_size"], f"{r['lower_s']:.1f}", f"{r['compile_s']:.1f}",
           "on" if r["activation_constraints"] else "off"] for r in c["rows"]]
  return lines + table(["devices", "global batch", "lower s", "compile s",
                        "activation constraints"], rows)


def render_mfu(m: Mapping | None) -> list[str]:
  lines = ["## 6. Model FLOPs utilization (accelerator only)", ""]
  status = _status_line(m)
  if status:
    return lines + status
  return lines + table(
      ["device", "variant / dtype", "batch", "FLOPs per step", "steps/s", "MFU"],
      [[m["device_kind"], f"{m['variant']} / {m['dtype']}", m["batch_size"],
        f"{m['flops_per_step']:.3g}", fig(m["steps_per_s"], 3),
        num(m["mfu"], ".1%") if m["mfu"] is not None else m["mfu_note"]]])


def render_machine(results: Mapping) -> list[str]:
  mach, v = results["machine"], results["versions"]
  load = mach.get("load_average", {})
  return [f"- CPU: {mach['cpu_model']}, {mach['cpus_usable']} usable cores, "
          f"{mach['memory_gib']:.0f} GiB; {mach['platform']}; jax backend "
          f"{mach['jax_backend']} ({mach['jax_devices']} device(s))",
          f"- Load average (1 min) at start / end: {num(load.get('start'), '.1f')} / "
          f"{num(load.get('end'), '.1f')} (other work on a shared machine slows every row; "
          "the ratios are measured side by side)",
          "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items())]


def render(results: Mapping, notes: str = "") -> str:
  """PERFORMANCE.md from a results dict (see `benchmarks/run.py`) and hand-written notes."""
  m = results["measurements"]
  lines = [
      "# Performance", "",
      f"Measured by `{results['command']}` on {results['created']} (whole run "
      f"{results['wall_time_s']:.0f} s wall, {results.get('cpu_time_s', 0):.0f} s of CPU). "
      "This file is generated from `benchmarks/results.json` "
      "by `benchmarks/report.py`; edit `benchmarks/notes.md` for the analysis below the tables.",
      "", "## Reproduce", "", "```bash",
      "python -m benchmarks.run --quick        # a few minutes on 2 CPU cores",
      "python -m benchmarks.run                # more repeats; compile time of the base variant",
      "python -m benchmarks.run --render_only  # rebuild this file from benchmarks/results.json",
      "```", "",
      "Both write `benchmarks/results.json` (machine, versions, every figure with its median, "
      "min, max and samples) and this file. `--only train_step,decode` runs a subset.", "",
      "## Machine", "", *render_machine(results), "",
      "## Summary", "", *render_summary(results["summary"]), "",
      *render_train(m.get("train_step")), "",
      *render_decode(m.get("decode")), "",
      *render_pipeline(m.get("pipeline"), m), "",
      *render_conversion(m.get("conversion")), "",
      *render_fsdp(m.get("fsdp_memory")), "",
      *render_mfu(m.get("mfu")), "",
  ]
  if notes.strip():
    lines += ["## Analysis", "", notes.strip(), ""]
  return "\n".join(lines)
