"""Benchmark harness: statistics, summary ratios and targets, the rendered report, byte
counting under shardings, and the PyTorch loss mirror. No timings are asserted."""

import collections
import copy

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from av_unified_jax import steps
from av_unified_jax.models import losses
from benchmarks import fsdp_memory, profile_train, report, run, timing


def s(median, lo=None, hi=None, unit="x/s"):
  lo = median if lo is None else lo
  hi = median if hi is None else hi
  return timing.stats([lo, median, hi], unit)


def fake_results():
  """A results dict shaped like `benchmarks.run`'s, with made-up figures."""
  train = {"variant": "demo", "batch_size": 32, "image_size": 96, "num_segments": 10,
           "jax": s(20.0, 18.0, 21.0), "torch": s(10.0, 9.0, 12.0), "jax_over_torch": 2.0,
           "jax_compile_s": 30.0, "first_loss": {"jax": 8.1, "torch": 8.1}}
  return {
      "command": "python -m benchmarks.run --quick", "created": "2026-01-01T00:00:00+00:00",
      "wall_time_s": 200.0, "quick": True,
      "machine": {"platform": "Linux", "cpu_model": "Test CPU", "cpus_usable": 2,
                  "memory_gib": 8.0, "jax_backend": "cpu", "jax_devices": 1,
                  "load_average": {"start": 1.0, "end": 2.0}},
      "versions": {"jax": "0.10.2", "torch": "2.13.0"},
      "measurements": {
          "train_step": {"status": "ok", "threads": 2, "variants": {
              "tiny": dict(train, variant="tiny", jax_over_torch=3.0), "demo": train}},
          "decode": {"status": "ok", "variant": "demo", "batch_size": 4, "max_len": 64,
                     "grammar": "avs", "emitted_tokens_per_call": 256, "threads": 2,
                     "jax_cached": s(800.0), "jax_uncached": s(200.0),
                     "torch_generate": s(400.0), "cached_over_uncached": 4.0,
                     "cached_over_torch": 2.0,
                     "tokens_equal": {"uncached_vs_cached": True, "torch_vs_cached": True}},
          "pipeline": {"status": "ok", "config": "configs/demo.py", "batch_size": 32,
                       "image_size": 96, "batches_per_repeat": 4, "tasks_disabled": {},
                       "workers": {"0": {"first_batch_s": 1.0, "examples_per_s": s(50.0)},
                                   "1": {"first_batch_s": 5.0, "examples_per_s": s(120.0)},
                                   "2": {"first_batch_s": 6.0, "examples_per_s": s(90.0)}}},
          "conversion": {"status": "skipped", "reason": "no PyAV here"},
          "fsdp_memory": {"status": "ok", "bytes": {
              "config": "configs/base.py", "variant": "base", "rows": [
                  {"devices": n, "total_bytes": 800, "per_device_bytes_max": 800 // n + 10,
                   "ideal_bytes": 800 / n, "over_ideal": (800 // n + 10) / (800 / n)}
                  for n in (1, 2, 4, 8)]},
              "compile": {"config": "configs/tiny.py", "variant": "tiny", "rows": [
                  {"devices": 8, "batch_size": 16, "lower_s": 1.0, "compile_s": 9.0,
                   "activation_constraints": True}]}},
          "mfu": {"status": "skipped", "reason": "no accelerator"},
      },
  }


# ----------------------------------------------------------------------------- timing
def test_stats_median_and_spread():
  out = timing.stats([3.0, 1.0, 2.0, 10.0], "examples/s")
  assert out["median"] == pytest.approx(2.5)
  assert (out["min"], out["max"], out["repeats"]) == (1.0, 10.0, 4)
  assert out["spread_pct"] == pytest.approx(100 * 9.0 / 2.5)
  assert out["samples"] == [3.0, 1.0, 2.0, 10.0]  # Measurement order, for paired ratios.
  with pytest.raises(ValueError, match="at least one sample"):
    timing.stats([], "x")


def test_rate_stats_and_ratio():
  rate = timing.rate_stats([2.0, 4.0, 1.0], work=8, unit="examples/s")
  np.testing.assert_allclose(rate["samples"], [4.0, 2.0, 8.0])
  assert timing.ratio(rate, timing.stats([2.0], "x")) == pytest.approx(2.0)
  assert timing.ratio(None, rate) is None


def test_paired_ratio_follows_rounds():
  # Round 2 ran under heavy load on both sides: per-round ratios are 2, 2, 3.
  a = timing.stats([10.0, 2.0, 30.0], "x/s")
  b = timing.stats([5.0, 1.0, 10.0], "x/s")
  assert timing.paired_ratio(a, b) == pytest.approx(2.0)
  assert timing.ratio(a, b) == pytest.approx(2.0)  # Median over median, not paired.
  assert timing.paired_ratio(timing.stats([4.0, 1.0], "x"), timing.stats([1.0, 4.0], "x")) \
      == pytest.approx((4.0 + 0.25) / 2)
  with pytest.raises(ValueError, match="as many samples"):
    timing.paired_ratio(a, timing.stats([1.0], "x"))


def test_interleaved_alternates_calls():
  calls = []
  out = timing.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
  assert calls == ["a", "b"] * 3
  assert [len(v) for v in out.values()] == [3, 3]


# ----------------------------------------------------------------------------- summary
def test_summary_has_exactly_the_five_ratios():
  summary = report.summarize(fake_results()["measurements"])
  assert tuple(summary) == report.SUMMARY_KEYS == (
      "train_step_speed_jax_over_torch", "decode_speedup_cached_over_uncached",
      "decode_speed_jax_over_torch", "pipeline_rate_over_train_consumption",
      "fsdp8_bytes_over_ideal")
  assert summary["train_step_speed_jax_over_torch"] == pytest.approx(2.0)  # demo, not tiny
  assert summary["decode_speedup_cached_over_uncached"] == pytest.approx(4.0)
  assert summary["decode_speed_jax_over_torch"] == pytest.approx(2.0)
  assert summary["pipeline_rate_over_train_consumption"] == pytest.approx(120.0 / 20.0)
  assert summary["fsdp8_bytes_over_ideal"] == pytest.approx(110 / 100)


def test_pipeline_ratio_prefers_the_intake_measured_next_to_it():
  results = fake_results()
  results["measurements"]["pipeline"]["train_consumption"] = s(24.0, 20.0, 30.0)
  summary = report.summarize(results["measurements"])
  assert summary["pipeline_rate_over_train_consumption"] == pytest.approx(120.0 / 24.0)
  results["summary"] = summary
  text = report.render(results)
  assert ("| demo train step (JAX) consumes (steps just before and after these rows) "
          "| 24.0 [20.0-30.0] | - |") in text


def test_summary_of_skipped_measurements_is_none():
  m = copy.deepcopy(fake_results()["measurements"])
  m["train_step"] = {"status": "skipped", "reason": "export missing"}
  m["fsdp_memory"] = {"status": "failed", "reason": "RuntimeError: boom"}
  summary = report.summarize(m)
  assert summary["train_step_speed_jax_over_torch"] is None
  assert summary["pipeline_rate_over_train_consumption"] is None  # needs the train rate
  assert summary["fsdp8_bytes_over_ideal"] is None
  assert summary["decode_speedup_cached_over_uncached"] == pytest.approx(4.0)


@pytest.mark.parametrize("key,value,holds", [
    ("train_step_speed_jax_over_torch", 1.4, False), ("train_step_speed_jax_over_torch", 1.5, True),
    ("decode_speed_jax_over_torch", 1.9, False), ("decode_speed_jax_over_torch", 2.0, True),
    ("decode_speedup_cached_over_uncached", 2.9, False),
    ("pipeline_rate_over_train_consumption", 5.0, True),
    ("fsdp8_bytes_over_ideal", 1.16, False), ("fsdp8_bytes_over_ideal", 1.01, True),
    ("fsdp8_bytes_over_ideal", None, None)])
def test_targets(key, value, holds):
  assert report.target_holds(key, value) is holds


def test_render_shows_tables_commands_and_reasons():
  results = fake_results()
  results["summary"] = report.summarize(results["measurements"])
  text = report.render(results, notes="Profile: the gap is in the attention.")
  assert "python -m benchmarks.run --quick" in text
  assert "| `train_step_speed_jax_over_torch` | 2.00 |" in text
  assert "| `fsdp8_bytes_over_ideal` | 1.10 | <= 1.15" in text
  assert "| demo | 32 | 96px x 10 | 20.0 [18.0-21.0] | 10.0 [9.0-12.0] | 2.00 |" in text
  assert "**skipped**: no PyAV here" in text
  assert "**skipped**: no accelerator" in text
  assert "| demo train step (JAX) consumes (section 1) | 20.0 [18.0-21.0] | - |" in text
  assert text.rstrip().endswith("Profile: the gap is in the attention.")
  assert text.count("| 8 |") >= 2  # The bytes row and the compile row of 8 devices.


def test_no_ratio_when_the_two_sides_compute_other_losses():
  from benchmarks import train_step

  assert train_step.same_loss(22.76709, 22.76709 + 1e-4)  # 4e-6 relative
  assert not train_step.same_loss(11.88, 8.96)
  assert not train_step.same_loss(0.5, 0.5 + 2e-5)  # below 1: absolute 1e-5
  results = fake_results()
  demo = results["measurements"]["train_step"]["variants"]["demo"]
  demo.update(jax_over_torch=None, first_loss={"jax": 12.87, "torch": 9.2})
  results["measurements"]["decode"]["tokens_equal"]["torch_vs_cached"] = False
  results["summary"] = report.summarize(results["measurements"])
  assert results["summary"]["train_step_speed_jax_over_torch"] is None
  assert results["summary"]["decode_speed_jax_over_torch"] is None
  text = report.render(results)
  assert "No ratio for demo: the first losses differ" in text
  assert "| demo | 32 | 96px x 10 | 20.0 [18.0-21.0] | 10.0 [9.0-12.0] | - |" in text


def test_only_rejects_unknown_measurements(capsys):
  with pytest.raises(SystemExit):
    run.parse_args(["--only", "train_step,speed"])
  assert "speed" in capsys.readouterr().err
  assert run.parse_args(["--only", "decode"]).only == ["decode"]


# ----------------------------------------------------------------------------- profiler, plan
def test_profile_flops_of_a_matrix_product():
  a, b = jnp.ones((64, 32), jnp.float32), jnp.ones((32, 16), jnp.float32)
  assert profile_train.flops(jax.jit(jnp.matmul), a, b) == pytest.approx(2 * 64 * 32 * 16,
                                                                          rel=0.05)


def test_profile_matmul_share_counts_only_matrix_products():
  times = collections.Counter({"ynn_fusion": 300.0, "dot_general": 20.0, "dot": 5.0,
                               "copy_bitcast_fusion": 40.0, "wrapped_broadcast": 30.0})
  assert profile_train.matmul_share(times) == 325.0


def test_quick_plan_builds_the_full_runs_demo_dataset():
  # A 12-clip split made grain's index shuffle (about 23 ms / rows per example) a third of
  # the measured pipeline time; both plans share one cached 48-clip dataset.
  assert run.make_plan(quick=True).demo_clips == run.make_plan(quick=False).demo_clips == 48


# ----------------------------------------------------------------------------- fsdp bytes
def test_device_bytes_counts_each_shard():
  devices = jax.devices()[:8]
  mesh = jax.make_mesh((8,), ("fsdp",), devices=devices)
  state = {"sharded": jax.ShapeDtypeStruct((8, 4), jnp.float32),
           "replicated": jax.ShapeDtypeStruct((3,), jnp.float32),
           "uneven": jax.ShapeDtypeStruct((2, 16), jnp.bfloat16)}
  shardings = {"sharded": NamedSharding(mesh, P("fsdp")),
               "replicated": NamedSharding(mesh, P()),
               "uneven": NamedSharding(mesh, P(None, "fsdp"))}
  per_device = fsdp_memory.device_bytes(state, shardings, devices)
  # 8*4*4 / 8 + 3*4 + 2*16*2 / 8 bytes on every device.
  assert per_device == {d.id: 16 + 12 + 8 for d in devices}


# ----------------------------------------------------------------------------- torch mirror
def test_torch_losses_match_the_jax_losses():
  torch = pytest.importorskip("torch", reason="torch is needed for the PyTorch loss mirror")
  from benchmarks import torch_side

  rng = np.random.default_rng(0)
  b, t, d, length, vocab, classes = 3, 4, 8, 5, 11, 6
  logits = rng.normal(size=(b, length, vocab)).astype(np.float32)
  targets = rng.integers(0, vocab, (b, length)).astype(np.int32)
  weights = (rng.random((b, length)) < 0.7).astype(np.float32)
  audio, visual = rng.normal(size=(2, b, t, d)).astype(np.float32)
  mask = rng.random((b, t)) < 0.8
  probs = rng.random((b, classes)).astype(np.float32)
  labels = (rng.random((b, classes)) < 0.3).astype(np.float32)
  has = np.array([True, False, True])
  ce_sum, ce_w = losses.token_cross_entropy(logits, targets, weights)
  pairs = [
      (ce_sum / ce_w, torch_side.token_loss(torch.from_numpy(logits),
                                            torch.from_numpy(targets).long(),
                                            torch.from_numpy(weights))),
      (losses.contrastive_loss(audio, visual, mask, 0.07),
       torch_side.contrastive_loss(torch.from_numpy(audio), torch.from_numpy(visual),
                                   torch.from_numpy(mask), 0.07)),
      (losses.mil_bce(probs, labels, has),
       torch_side.mil_bce(torch.from_numpy(probs), torch.from_numpy(labels),
                          torch.from_numpy(has))),
  ]
  frame_probs = rng.random((b, t, 2, classes)).astype(np.float32)
  onehot = np.eye(classes, dtype=np.float32)[[0, 2, 5]]
  events = (rng.random((b, t)) < 0.5).astype(np.float32)
  maps = rng.random((b, t, 3, 3)).astype(np.float32)
  maps /= maps.sum(axis=(2, 3), keepdims=True)
  focus = np.array([0, 3, 1], np.int32)
  focus_map = rng.random((b, 16, 16)).astype(np.float32)
  task_id = np.array([0, 4, 4], np.int32)
  task_weights = np.array([1.0, 1.0, 1.0, 1.0, 2.0], np.float32)
  t_ = torch.from_numpy
  pairs += [
      (losses.mil_bce(probs, labels, has, 2.0), torch_side.mil_bce(t_(probs), t_(labels),
                                                                   t_(has), 2.0)),
      (losses.event_segment_bce(frame_probs, onehot, events, has, mask),
       torch_side.event_segment_bce(t_(frame_probs), t_(onehot), t_(events), t_(has),
                                    t_(mask))),
      (losses.map_loss(maps, focus, focus_map, has),
       torch_side.map_loss(t_(maps), t_(focus), t_(focus_map), t_(has))),
  ]
  # The token loss with the tasks' loss weights and label smoothing, as steps.compute_loss.
  loss_cfg = ml_collections.ConfigDict({"label_smoothing": 0.1, "contrastive_weight": 0.0,
                                        "contrastive_temperature": 0.07, "mil_weight": 0.0,
                                        "mil_positive_weight": 1.0, "map_weight": 0.0,
                                        "event_weight": 0.0})
  outputs = {"logits": logits, "audio_embed": audio, "visual_embed": visual,
             "mil_video_probs": probs}
  batch = {"target_tokens": targets, "target_weights": weights, "task_id": task_id,
           "segment_mask": mask, "log_mel": rng.normal(size=(b, t, 4, 4)).astype(np.float32),
           "weak_labels": labels, "has_weak": has}
  want, _ = steps.compute_loss(outputs, batch, loss_cfg, jnp.asarray(task_weights))
  got = torch_side.total_loss({k: t_(v) for k, v in outputs.items()},
                              {k: t_(v) for k, v in batch.items()}, loss_cfg, t_(task_weights))
  pairs.append((want, got))
  for want, got in pairs:
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5, atol=1e-6)
