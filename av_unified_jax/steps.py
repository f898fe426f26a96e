"""Train state, optimizer and the pure step functions (`make_train_step`, `make_eval_step`).

The train step is `fn(state, batch, rng) -> (state, metrics)`: jit it once with shardings and
`donate_argnums=(0,)`. Inside, the dropout key is `fold_in(rng, state.step)`, so a resumed run
draws the same keys as an uninterrupted one.

Loss (per optimizer step, see `compute_loss`), with u_k = loss_weight of task k:
  token_k = sum_{b in k, t} w_bt * ce_bt / sum_{b in k, t} w_bt     (task k's mean per token)
  token = sum_k u_k * token_k / sum_k u_k            (over the tasks present in the batch)
  total = token + loss.contrastive_weight * contrastive + loss.mil_weight * mil
          + loss.map_weight * map + loss.event_weight * event
where `ce` is the (label-smoothed) token cross-entropy and `w` the target weights built by the
input pipeline. Each task's tokens are averaged apart, so a task's share of the loss is its
weight, not its sequence length (AVS targets are 65 tokens, AVQA's two). The contrastive loss
aligns `audio_embed` with `visual_embed` over the valid segments that hold sound (a second of
digital silence, a flat log-mel, has no source to match), and the MIL loss is the binary cross-entropy of `mil_video_probs` against the weak
labels of the examples that have them (`has_weak`), and the map loss is the cross-entropy of
the focus segment's sound-source map against the annotated mask (`focus_map`, AVS examples).
The event loss trains the MIL head's frame probabilities on the seconds of AVE's events
(`event_segments`, `losses.event_segment_bce`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from av_unified_jax.models import losses
from av_unified_jax.tokens import TASKS  # task_id indexes this tuple.

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
# A segment whose log-mel spans less than this (natural-log units) is silence.
SILENT_SPREAD = 1.0


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint needs besides the input iterator.

  Attributes:
    step: int32[] number of optimizer steps taken.
    params: the model parameters (a pytree of float32 arrays).
    opt_state: the optimizer state (same tree structure as `tx.init(params)`).
  """
  step: jax.Array
  params: Any
  opt_state: Any


# ----------------------------------------------------------------------------- optimizer
def make_schedule(optim_cfg, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `learning_rate`, then cosine decay to `end_lr_fraction` of it."""
  peak = float(optim_cfg.learning_rate)
  warmup = int(optim_cfg.warmup_steps)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup,
      decay_steps=max(int(total_steps), warmup + 1),
      end_value=peak * float(optim_cfg.end_lr_fraction))


def _decay_mask(params):
  """Weight decay on matrices and embeddings only (not on biases, norm scales)."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(optim_cfg, total_steps: int) -> tuple[optax.GradientTransformation,
                                                         optax.Schedule]:
  """AdamW with the warmup + cosine schedule, after global-norm gradient clipping."""
  schedule = make_schedule(optim_cfg, total_steps)
  parts = []
  if optim_cfg.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(float(optim_cfg.grad_clip_norm)))
  parts.append(optax.adamw(schedule, b1=float(optim_cfg.b1), b2=float(optim_cfg.b2),
                           weight_decay=float(optim_cfg.weight_decay), mask=_decay_mask))
  return optax.chain(*parts), schedule


# ----------------------------------------------------------------------------- loss
def task_loss_weights(config) -> jax.Array:
  """float32[num_tasks]: `config.tasks.<task>.loss_weight` in `TASKS` order."""
  return jnp.asarray([float(config.tasks[t].loss_weight) for t in TASKS], jnp.float32)


def compute_loss(outputs: Mapping[str, jax.Array], batch: Batch, loss_cfg,
                 task_weights: jax.Array,
                 token_norm: jax.Array | None = None) -> tuple[jax.Array, Metrics]:
  """Total loss and its parts for one (micro-)batch.

  Args:
    outputs: the model's output dict (`logits` float32[B, Lt, V], `audio_embed` and
      `visual_embed` float32[B, T, D], `mil_video_probs` float32[B, C], ...).
    batch: the input dict (`target_tokens` int32[B, Lt], `target_weights` float32[B, Lt],
      `task_id` int32[B], `segment_mask` bool[B, T], `weak_labels` float32[B, C],
      `has_weak` bool[B]).
    loss_cfg: `config.loss`.
    task_weights: float32[num_tasks] per-task weight of the token loss.
    token_norm: float32[num_tasks] target-token count per task (default: this batch's);
      with gradient accumulation, the whole batch's, so that the micro-batch token losses add
      up to the whole batch's.
  Returns:
    (loss float32[], metrics): `token_loss`, `contrastive`, `mil`, `map` (float32[]) and the sums
    needed for per-task logging, `task_loss_sum` / `task_token_count` float32[num_tasks],
    `target_tokens`, `examples`.
  """
  task_mask = jax.nn.one_hot(batch["task_id"], len(TASKS), dtype=jnp.float32)  # [B, tasks]
  ce = losses.token_cross_entropies(outputs["logits"], batch["target_tokens"],
                                    loss_cfg.label_smoothing)  # [B, Lt]
  weights = batch["target_weights"].astype(jnp.float32)  # [B, Lt]
  task_sum = jnp.sum((ce * weights).sum(-1)[:, None] * task_mask, axis=0)  # [tasks]
  task_count = jnp.sum(weights.sum(-1)[:, None] * task_mask, axis=0)  # [tasks]
  if token_norm is None:
    token_norm = task_count
  present = (token_norm > 0).astype(jnp.float32)  # [tasks]
  per_task = task_sum / jnp.maximum(token_norm, 1e-6)  # [tasks] (this batch's share)
  token_loss = jnp.sum(per_task * task_weights) / jnp.maximum(
      jnp.sum(present * task_weights), 1e-6)

  contrastive = losses.contrastive_loss(
      outputs["audio_embed"], outputs["visual_embed"], sounding_segments(batch),
      loss_cfg.contrastive_temperature)
  mil = losses.mil_bce(outputs["mil_video_probs"], batch["weak_labels"], batch["has_weak"],
                       loss_cfg.get("mil_positive_weight", 1.0))
  loss = token_loss + loss_cfg.contrastive_weight * contrastive + loss_cfg.mil_weight * mil
  event_part = jnp.zeros((), jnp.float32)
  if "event_segments" in batch and loss_cfg.get("event_weight", 0.0):
    event_part = losses.event_segment_bce(
        outputs["mil_frame_probs"], batch["weak_labels"], batch["event_segments"],
        batch["has_event_segments"], batch["segment_mask"])
    loss = loss + loss_cfg.event_weight * event_part
  map_part = jnp.zeros((), jnp.float32)
  if "focus_map" in batch and "loc_maps" in outputs:
    map_part = losses.map_loss(outputs["loc_maps"], batch["focus_segment"], batch["focus_map"],
                               batch["has_focus_map"])
    loss = loss + loss_cfg.map_weight * map_part
  metrics = {
      "task_loss_sum": task_sum,
      "task_token_count": task_count,
      "token_loss": token_loss,
      "contrastive": contrastive,
      "mil": mil,
      "map": map_part,
      "event": event_part,
      "target_tokens": jnp.sum(task_count),
      "examples": jnp.asarray(batch["task_id"].shape[0], jnp.float32),
  }
  return loss, metrics


def token_normalizer(batch: Batch) -> jax.Array:
  """float32[num_tasks]: the number of (weighted) target tokens of each task in a batch."""
  per_example = jnp.sum(batch["target_weights"].astype(jnp.float32), axis=-1)  # [B]
  task_mask = jax.nn.one_hot(batch["task_id"], len(TASKS), dtype=jnp.float32)  # [B, tasks]
  return per_example @ task_mask


def sounding_segments(batch: Batch) -> jax.Array:
  """bool[B, T]: valid segments whose log-mel is not flat (a silent second is constant)."""
  mask = batch["segment_mask"].astype(bool)
  if "log_mel" not in batch:
    return mask
  mel = batch["log_mel"].astype(jnp.float32)  # [B, T, F, M]
  spread = mel.max(axis=(2, 3)) - mel.min(axis=(2, 3))  # [B, T]
  return mask & (spread > SILENT_SPREAD)


# ----------------------------------------------------------------------------- steps
def _split_microbatches(batch: Batch, num: int) -> Batch:
  """Leaves [B, ...] -> [num, B / num, ...]; micro-batch i takes examples i, i + num, ...

  Taking every num-th example keeps each device's rows on that device (no resharding).
  """
  def split(x):
    if x.shape[0] % num:
      raise ValueError(f"batch size {x.shape[0]} is not divisible by optim.grad_accum_steps="
                       f"{num}; pick a divisor of data.batch_size")
    x = x.reshape((x.shape[0] // num, num) + x.shape[1:])  # [B / num, num, ...]
    return jnp.swapaxes(x, 0, 1)  # [num, B / num, ...]
  return jax.tree.map(split, dict(batch))


def make_train_step(model, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    config) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState,
                                                                             Metrics]]:
  """Returns `train_step(state, batch, rng) -> (new_state, metrics)` (pure; jit it).

  With `optim.grad_accum_steps = A > 1`, the batch is split into A micro-batches whose
  gradients are averaged before one optimizer update.
  """
  loss_cfg = config.loss
  task_weights = task_loss_weights(config)
  accum = int(config.optim.grad_accum_steps)
  if accum < 1:
    raise ValueError(f"optim.grad_accum_steps={accum} must be >= 1")

  def loss_fn(params, batch, rng, token_norm=None):
    outputs = model.apply({"params": params}, batch, train=True, rngs={"dropout": rng})
    return compute_loss(outputs, batch, loss_cfg, task_weights, token_norm)

  def micro_loss_fn(params, batch, rng, token_norm):
    # Token loss normalised by the whole batch's token counts (the parts add up); auxiliary
    # losses are micro-batch means, so they enter with 1 / accum (their sum is the average).
    loss, metrics = loss_fn(params, batch, rng, token_norm)
    token_loss = metrics["token_loss"]
    return token_loss + (loss - token_loss) / accum, metrics

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  micro_grad_fn = jax.value_and_grad(micro_loss_fn, has_aux=True)

  def accumulated_grads(params, batch, rng):
    if accum == 1:
      return grad_fn(params, batch, rng)
    micro = _split_microbatches(batch, accum)
    token_norm = token_normalizer(batch)

    def body(carry, inputs):
      index, mb = inputs
      out = micro_grad_fn(params, mb, jax.random.fold_in(rng, index), token_norm)
      return jax.tree.map(jnp.add, carry, out), None

    shapes = jax.eval_shape(micro_grad_fn, params, jax.tree.map(lambda x: x[0], micro), rng,
                            token_norm)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    ((loss, metrics), grads), _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro))
    metrics = dict(metrics, contrastive=metrics["contrastive"] / accum,
                   mil=metrics["mil"] / accum, map=metrics["map"] / accum,
                   event=metrics["event"] / accum)
    return (loss, metrics), grads

  def train_step(state: TrainState, batch: Batch, rng: jax.Array):
    step_rng = jax.random.fold_in(rng, state.step)
    (loss, metrics), grads = accumulated_grads(state.params, batch, step_rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads),
                   lr=schedule(state.step))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  return train_step


def make_eval_step(model, config) -> Callable[[Any, Batch], Metrics]:
  """Returns `eval_step(params, batch) -> metrics`: teacher-forced losses, no dropout.

  The metrics are `compute_loss`'s (sums per task, so they add up across batches) plus `loss`.
  """
  loss_cfg = config.loss
  task_weights = task_loss_weights(config)

  def eval_step(params, batch):
    outputs = model.apply({"params": params}, batch, train=False)
    loss, metrics = compute_loss(outputs, batch, loss_cfg, task_weights)
    return dict(metrics, loss=loss)

  return eval_step


def host_scalars(metrics: Mapping[str, Any], prefix: str = "train") -> dict[str, float]:
  """Device metrics (already fetched to host) -> flat `{"train/loss": ..., ...}` floats.

  Per-task losses `<prefix>/loss/<task>` are reported only for tasks present in the batch.
  """
  out = {f"{prefix}/loss": float(metrics["loss"])}
  for name in ("token_loss", "contrastive", "mil", "map", "event", "grad_norm", "lr"):
    if name in metrics:
      out[f"{prefix}/{name}"] = float(metrics[name])
  for i, task in enumerate(TASKS):
    count = float(metrics["task_token_count"][i])
    if count > 0:
      out[f"{prefix}/loss/{task}"] = float(metrics["task_loss_sum"][i]) / count
  return out
