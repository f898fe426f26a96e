"""Trains the mask tokenizer and reports its reconstruction mIoU on held-out masks.

Usage:
  python -m av_unified_jax.mask_tokenizer_train --config=configs/mask_tokenizer.py:demo \
      --masks=<dir of PNGs | .npz> --workdir=W [--eval_masks=<dir | .npz>]
  python -m av_unified_jax.mask_tokenizer_train --config=configs/mask_tokenizer.py \
      --shards_dir=<converted datasets> --workdir=W/mask_tokenizer [--split=train]

`--shards_dir` reads the annotated masks of the converted AVSBench datasets under it
(`avsbench_s4` and `avsbench_ms3`, those present; see `shard_masks`), as the main job does.
Writes `W/mask_tokenizer.msgpack` + `W/mask_tokenizer.json` (see `coding.save_tokenizer`),
`W/metrics.json` and `W/reconstructions.png` (held-out masks decoded from nearest and from
searched codes, wrong pixels coloured); the msgpack comes last, so a run cut short leaves no
msgpack and counts as not done. Without --masks it trains on synthetic object-like masks.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import time
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags
from etils import epath
from ml_collections import config_flags
from PIL import Image, ImageDraw

from av_unified_jax import atomic
from av_unified_jax.data import shards
from av_unified_jax.mask_tokenizer import coding
from av_unified_jax.mask_tokenizer import model as mt

# ---------------------------------------------------------------------------------- masks


def _shape_polygon(rng: np.random.Generator, size: int) -> list[tuple[float, float]]:
  """One object-like outline: an ellipse or a star-shaped polygon, randomly placed and sized."""
  cx, cy = rng.uniform(0.1, 0.9, 2) * size
  radius = rng.uniform(0.08, 0.4) * size
  angle0 = rng.uniform(0, 2 * np.pi)
  if rng.random() < 0.4:  # ellipse
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    a, b = radius, radius * rng.uniform(0.35, 1.0)
    x, y = a * np.cos(t), b * np.sin(t)
  else:  # star-shaped polygon with jittered radii
    n = int(rng.integers(3, 13))
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * rng.uniform(0.45, 1.0, n)
    x, y = r * np.cos(t), r * np.sin(t)
  c, s = np.cos(angle0), np.sin(angle0)
  return [(cx + c * xi - s * yi, cy + s * xi + c * yi) for xi, yi in zip(x, y)]


def synthetic_masks(num: int, size: int = 64, seed: int = 0) -> np.ndarray:
  """Object-like binary masks: unions of 1-3 ellipses/polygons, some with a hole. `uint8[N,S,S]`.

  Drawn at 2x resolution and area-downsampled, so edges are not aliased.
  """
  rng = np.random.default_rng(seed)
  out = np.zeros((num, size, size), np.uint8)
  big = 2 * size
  for i in range(num):
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.choice([1, 1, 1, 2, 2, 3]))):
      draw.polygon(_shape_polygon(rng, big), fill=255)
    if rng.random() < 0.15:  # a hole or a bite
      draw.polygon(_shape_polygon(rng, big), fill=0)
    out[i] = np.asarray(img).reshape(size, 2, size, 2).mean(axis=(1, 3)) >= 127.5  # area 2x
  return out


def _png_mask(path: Path) -> np.ndarray:
  """Binary mask of one PNG: its alpha channel if it has one, else its values (> 0). `bool[H,W]`."""
  with Image.open(path) as img:
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
      return np.asarray(img.convert("RGBA"))[..., 3] > 127
    if img.mode == "P":  # palette index: 0 is background
      return np.asarray(img) > 0
    return np.asarray(img.convert("L")) > 127


def load_masks(path) -> list[np.ndarray]:
  """Masks from a .npz (`masks` array `[N,H,W]`, or its only array) or a directory of PNGs.

  Returns a list of `bool[H, W]` (sizes may differ). PNGs are read recursively, sorted by path.
  """
  path = Path(path)
  if path.suffix == ".npz":
    with np.load(path) as data:
      key = "masks" if "masks" in data else (list(data)[0] if len(data) == 1 else None)
      if key is None:
        raise ValueError(f"load_masks: {path} has arrays {list(data)}; name the masks 'masks'")
      arr = np.asarray(data[key])
    if arr.ndim != 3:
      raise ValueError(f"load_masks: {path}:{key} must be [N, H, W], got shape {arr.shape}")
    arr = arr > (127 if arr.dtype == np.uint8 and arr.max() > 1 else 0.5)
    return list(arr)
  if path.is_dir():
    files = sorted(path.rglob("*.png"))
    if not files:
      raise ValueError(f"load_masks: no .png files under {path}")
    return [_png_mask(f) for f in files]
  raise ValueError(f"load_masks: {path} is neither a .npz file nor a directory of PNGs")


AVS_DATASETS = ("avsbench_s4", "avsbench_ms3")  # Converted datasets whose masks train it.


def shard_masks(shards_dir, split: str = "train", datasets=AVS_DATASETS,
                log=print) -> list[np.ndarray]:
  """The annotated masks (`bool[H, W]` each) of `split` of every converted dataset of
  `datasets` under `shards_dir` (the S4 and MS3 training masks by default)."""
  masks, found = [], []
  for name in datasets:
    path = epath.Path(shards_dir) / name
    if not (path / shards.INFO_FILE).exists():
      continue
    source = shards.open_split(path, split)
    before = len(masks)
    for i in range(len(source)):
      example = source[i]
      masks += list(shards.decode_masks(example)[np.asarray(example["mask_annotated"], bool)])
    found.append(name)
    log(f"mask tokenizer: {len(masks) - before} {name}/{split} masks")
  if not masks:
    raise ValueError(f"no {split} masks in {shards_dir}: it holds no converted "
                     f"{' or '.join(datasets)} with annotated masks (found {found}); convert "
                     "them with python -m data_prep.convert --dataset avsbench_s4 ...")
  return masks


def place_cutouts(masks: list[np.ndarray], size: int, scale_range, seed: int) -> np.ndarray:
  """Puts each cut-out mask (cropped to its box) in an empty `size x size` frame at a random
  scale (longest side / size, uniform in `scale_range`) and position. `uint8[N, size, size]`."""
  rng = np.random.default_rng(seed)
  out = np.zeros((len(masks), size, size), np.uint8)
  for i, m in enumerate(masks):
    ys, xs = np.nonzero(m)
    if ys.size == 0:
      continue
    crop = m[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32)
    scale = rng.uniform(*scale_range) * size / max(crop.shape)
    h = max(1, min(size, round(crop.shape[0] * scale)))
    w = max(1, min(size, round(crop.shape[1] * scale)))
    hi = np.asarray(Image.fromarray(crop * 255).resize((w, h), Image.BILINEAR)) > 127
    y0, x0 = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
    out[i, y0:y0 + h, x0:x0 + w] = hi
  return out


def to_array(masks, size: int, dtype=np.float32) -> np.ndarray:
  """List/array of `[H, W]` masks (any sizes) -> area-resized binary `dtype[N, size, size]`."""
  out = np.zeros((len(masks), size, size), dtype)
  by_shape = {}
  for i, m in enumerate(masks):
    by_shape.setdefault(np.shape(m), []).append(i)
  for idx in by_shape.values():  # one batched resize per input shape
    out[idx] = coding.resize_masks(np.stack([masks[i] for i in idx]), size)
  return out


def augment(batch: np.ndarray, rng: np.random.Generator, hflip: bool, max_shift: int):
  """Random horizontal flips and zero-filled shifts of `float32[B, S, S]` masks."""
  out = batch.copy()
  if hflip:
    flip = rng.random(len(out)) < 0.5
    out[flip] = out[flip, :, ::-1]
  if max_shift:
    s = out.shape[1]
    for i, (dy, dx) in enumerate(rng.integers(-max_shift, max_shift + 1, (len(out), 2))):
      shifted = np.zeros_like(out[i])
      shifted[max(dy, 0):s + min(dy, 0), max(dx, 0):s + min(dx, 0)] = \
          out[i, max(-dy, 0):s + min(-dy, 0), max(-dx, 0):s + min(-dx, 0)]
      out[i] = shifted
  return out


# --------------------------------------------------------------------------------- training


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  vq: dict
  opt_state: optax.OptState


def model_config(config) -> mt.MaskTokenizerConfig:
  """The `model` section of the ConfigDict as the module's frozen dataclass."""
  return mt.MaskTokenizerConfig.from_dict(config.model.to_dict())


def make_optimizer(config, total_steps: int) -> optax.GradientTransformation:
  o = config.optim
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, o.learning_rate, max(1, o.warmup_steps), max(total_steps, o.warmup_steps + 1),
      end_value=o.learning_rate * o.end_lr_fraction)
  chain = [optax.clip_by_global_norm(o.grad_clip_norm)] if o.grad_clip_norm else []
  return optax.chain(*chain, optax.adamw(schedule, weight_decay=o.weight_decay))


def make_train_step(model: mt.MaskTokenizer, tx: optax.GradientTransformation):
  """`(state, float32[B,S,S] masks, rng) -> (state, metrics)`: one optimizer + EMA step."""

  def train_step(state: TrainState, masks, rng):
    rng = jax.random.fold_in(rng, state.step)

    def loss_fn(params):
      out, new = model.apply({"params": params, "vq": state.vq}, masks, train=True,
                             rngs={"vq": rng}, mutable=[mt.VQ_COLLECTION])
      return out["loss"], (out, new[mt.VQ_COLLECTION])

    grads, (out, vq) = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {k: v for k, v in out.items() if k not in ("logits", "codes")}
    metrics["iou"] = jnp.mean(_soft_free_iou(out["logits"], masks))
    return TrainState(state.step + 1, params, vq, opt_state), metrics

  return jax.jit(train_step, donate_argnums=(0,))


def _soft_free_iou(logits, masks):
  """Per-mask IoU of `logits > 0` against masks (empty vs empty = 1). `float32[B]`."""
  pred, ref = logits > 0, masks > 0.5
  inter = jnp.sum(pred & ref, axis=(1, 2))
  union = jnp.sum(pred | ref, axis=(1, 2))
  return jnp.where(union == 0, 1.0, inter / jnp.maximum(union, 1))


def _split(masks: np.ndarray, holdout_fraction: float, seed: int):
  """Seeded split of `[N, ...]` into (train, held-out)."""
  order = np.random.default_rng(seed).permutation(len(masks))
  n_eval = int(round(len(masks) * holdout_fraction))
  return masks[order[n_eval:]], masks[order[:n_eval]]


def prepare_data(config, masks=None, eval_masks=None):
  """(train `float32[N,S,S]`, {name: held-out masks `[M, H, W]`}) from arrays/paths/config."""
  d, size = config.data, config.model.mask_size
  masks = masks if masks is not None else (d.masks or None)
  eval_masks = eval_masks if eval_masks is not None else (d.eval_masks or None)
  held_out, train = {}, []
  if masks is not None:
    real = load_masks(masks) if isinstance(masks, (str, Path)) else list(masks)
    if d.place_cutouts:
      real = place_cutouts(real, d.eval_size, (d.place_scale_min, d.place_scale_max), config.seed)
    real_train, real_eval = _split(to_array(real, d.eval_size, np.uint8),
                                   d.holdout_fraction, config.seed)
    train.append(to_array(real_train, size))
    if len(real_eval):
      held_out["heldout"] = real_eval
  if d.num_synthetic:
    train.append(synthetic_masks(d.num_synthetic, size, seed=config.seed).astype(np.float32))
  if d.num_synthetic_eval:
    held_out["synthetic"] = synthetic_masks(d.num_synthetic_eval, d.eval_size,
                                            seed=config.seed + 10_000)
  if eval_masks is not None:
    em = load_masks(eval_masks) if isinstance(eval_masks, (str, Path)) else list(eval_masks)
    if d.place_cutouts:
      em = place_cutouts(em, d.eval_size, (d.place_scale_min, d.place_scale_max),
                         config.seed + 20_000)
    held_out["eval_masks"] = to_array(em, d.eval_size, np.uint8)
  train = np.concatenate(train) if train else np.zeros((0, size, size), np.float32)
  if len(train) < config.batch_size:
    raise ValueError(f"train_mask_tokenizer: {len(train)} training masks, fewer than batch_size="
                     f"{config.batch_size}; give more masks or set data.num_synthetic")
  return train, held_out


def evaluate(variables, cfg: mt.MaskTokenizerConfig, held_out: dict, config) -> dict:
  """Reconstruction mIoU per held-out set, at mask_size and at data.eval_size; with a code
  search (`model.search_candidates` > 1) also `<set>/miou_nearest`, the nearest-code figure."""
  out = {}
  bs = config.eval.batch_size
  for name, m in held_out.items():
    small = coding.resize_masks(m, cfg.mask_size)
    codes = coding.encode_masks(variables, cfg, small, bs, log=print)
    out[f"{name}/miou"] = float(np.mean(coding.decoded_ious(variables, cfg, codes, m, bs)))
    out[f"{name}/miou@{config.data.eval_size}"] = float(np.mean(coding.decoded_ious(
        variables, cfg, codes, m, bs, eval_size=config.data.eval_size)))
    if cfg.search_candidates > 1:
      nearest = coding.encode_masks(variables, dataclasses.replace(cfg, search_candidates=1),
                                    small, bs)
      out[f"{name}/miou_nearest"] = float(np.mean(coding.decoded_ious(variables, cfg, nearest,
                                                                      m, bs)))
    out[f"{name}/num_masks"] = len(m)
  return out


def reconstruction_sheet(variables, cfg: mt.MaskTokenizerConfig, masks, path,
                         num: int = 10, cell: int = 2) -> Path:
  """Draws held-out masks (top row), their decoding from the nearest codes (middle) and from
  the searched codes (bottom) into a PNG; wrong pixels are red (extra) or blue (missed), and
  each decoding is titled with its IoU. Uses the first `num` non-empty masks."""
  small = coding.resize_masks(masks, cfg.mask_size)
  small = small[small.reshape(len(small), -1).any(axis=1)][:num]
  if not len(small):
    raise ValueError("reconstruction_sheet: no non-empty masks to draw")
  nearest_cfg = dataclasses.replace(cfg, search_candidates=1)
  rows = [(small > 0.5, None)]
  for c in (nearest_cfg, cfg):
    codes = coding.encode_masks(variables, c, small, batch_size=len(small))
    pred = np.asarray(mt.MaskTokenizer(c).apply(variables, jnp.asarray(codes), method="decode")) > 0
    rows.append((pred, coding.mask_iou(pred, small > 0.5)))
  s, pad, title = cfg.mask_size * cell, 4, 12
  img = Image.new("RGB", (len(small) * (s + pad) + pad, 3 * (s + pad + title) + pad), "white")
  draw = ImageDraw.Draw(img)
  for r, (pred, ious) in enumerate(rows):
    for k in range(len(small)):
      ref = small[k] > 0.5
      rgb = np.zeros(ref.shape + (3,), np.uint8)
      rgb[pred[k] & ref] = 255
      rgb[pred[k] & ~ref] = (230, 40, 40)
      rgb[~pred[k] & ref] = (40, 90, 230)
      x, y = pad + k * (s + pad), pad + r * (s + pad + title)
      img.paste(Image.fromarray(rgb).resize((s, s), Image.NEAREST), (x, y + title))
      label = ("mask", "nearest", "search")[r] + ("" if ious is None else f" {ious[k]:.2f}")
      draw.text((x, y), label, fill="black")
  path = epath.Path(path)  # Local or a URL (gs://...).
  buf = io.BytesIO()
  img.save(buf, format="PNG")
  path.write_bytes(buf.getvalue())
  return path


def train_mask_tokenizer(config, masks=None, workdir=None, eval_masks=None):
  """Trains the tokenizer; returns (variables `{"params", "vq"}`, metrics dict).

  `masks`: path (.npz or PNG directory), array/list of `[H, W]` masks, or None (config.data.masks,
  then synthetic masks only). With `workdir`, saves the tokenizer and `metrics.json` there.
  """
  t0, cpu0 = time.time(), time.process_time()
  cfg = model_config(config)
  # Data.
  train, held_out = prepare_data(config, masks, eval_masks)
  print(f"mask tokenizer: {len(train)} training masks; held out: "
        f"{ {k: len(v) for k, v in held_out.items()} }", flush=True)
  # State and step function.
  model = mt.MaskTokenizer(cfg)
  rng = jax.random.key(config.seed)
  variables = mt.init_variables(cfg, rng)
  tx = make_optimizer(config, config.total_steps)
  state = TrainState(jnp.zeros((), jnp.int32), variables["params"], variables[mt.VQ_COLLECTION],
                     tx.init(variables["params"]))
  train_step = make_train_step(model, tx)
  # Loop.
  np_rng = np.random.default_rng(config.seed)
  history = []
  for step in range(1, config.total_steps + 1):
    idx = np_rng.choice(len(train), config.batch_size, replace=False)
    batch = augment(train[idx], np_rng, config.data.hflip, config.data.max_shift)
    state, metrics = train_step(state, batch, rng)
    if step % config.log_every_steps == 0 or step == config.total_steps:
      scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
      history.append({"step": step, **scalars})
      print(f"step {step}: " + " ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items())),
            flush=True)
  train_seconds, train_cpu_seconds = time.time() - t0, time.process_time() - cpu0
  # Final evaluation and save.
  variables = {"params": state.params, mt.VQ_COLLECTION: state.vq}
  results = {"steps": config.total_steps, "train_seconds": train_seconds,
             "train_cpu_seconds": train_cpu_seconds,
             **evaluate(variables, cfg, held_out, config)}
  if config.eval.train_subset:
    results["train_subset/miou"] = coding.reconstruction_miou(
        variables, cfg, train[:config.eval.train_subset], batch_size=config.eval.batch_size)
  results["last_log"] = history[-1] if history else {}
  print("mask tokenizer results: " + json.dumps(results, sort_keys=True), flush=True)
  if workdir:  # The tokenizer files last: its msgpack marks the directory complete.
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    atomic.write_text(epath.Path(workdir, "metrics.json"), json.dumps(
        {"results": results, "history": history}, indent=2, sort_keys=True))
    if held_out:
      name, m = next(iter(held_out.items()))
      if np.any(m):
        sheet = reconstruction_sheet(variables, cfg, m, epath.Path(workdir, "reconstructions.png"))
        print(f"mask tokenizer: {name} reconstructions drawn in {sheet}", flush=True)
    coding.save_tokenizer(workdir, cfg, variables, extra={"metrics": results})
  return variables, results


# -------------------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
  argv = sys.argv if argv is None else argv
  fl = flags.FlagValues()
  # sys_argv: the `--config.<key>` overrides are found in argv (ml_collections reads sys.argv).
  config_flags.DEFINE_config_file("config", "configs/mask_tokenizer.py", "Config file.",
                                  flag_values=fl, lock_config=True, sys_argv=argv)
  flags.DEFINE_string("masks", None, "Training masks: .npz or directory of PNGs.", flag_values=fl)
  flags.DEFINE_string("shards_dir", None, "Or: converted datasets; trains on the masks of "
                      f"{' and '.join(AVS_DATASETS)} there.", flag_values=fl)
  flags.DEFINE_string("split", "train", "The split --shards_dir is read from.", flag_values=fl)
  flags.DEFINE_string("eval_masks", None, "Extra held-out masks (.npz or PNGs).", flag_values=fl)
  flags.DEFINE_string("workdir", None, "Output directory for the tokenizer.", flag_values=fl)
  fl(argv)
  for name in ("masks", "eval_masks"):
    if fl[name].value and not Path(fl[name].value).exists():
      print(f"error: --{name}={fl[name].value} does not exist", file=sys.stderr)
      return 2
  masks = fl.masks
  if fl.shards_dir:
    if fl.masks:
      print("error: give --masks or --shards_dir, not both", file=sys.stderr)
      return 2
    try:
      masks = shard_masks(fl.shards_dir, fl.split)
    except (ValueError, FileNotFoundError) as e:
      print(f"error: --shards_dir={fl.shards_dir}: {e}", file=sys.stderr)
      return 2
  train_mask_tokenizer(fl.config, masks, fl.workdir, fl.eval_masks)
  return 0


if __name__ == "__main__":
  sys.exit(main())
