"""The PyTorch side of the comparisons: the exported model built from JAX parameters, its
training loss (the mirror of `steps.compute_loss`) and a train step with AdamW.

    model = torch_model(cfg, jax_params)        # modeling_av_unified.AVUnified, strict load
    trainer = TorchTrainer(cfg, jax_params, batch, config, threads=2); trainer.run(3)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from av_unified_jax.models import losses
from av_unified_jax.tokens import TASKS


def torch_model(cfg, params):
  """The export's `AVUnified` (float32) holding `params` (plain Flax params of `cfg`)."""
  from av_unified_jax.export import exporter, mapping  # Late: torch after OMP_WAIT_POLICY.
  from av_unified_jax.export import modeling_av_unified as tm  # Late: torch after OMP_WAIT_POLICY.

  weights = mapping.convert({"model": params}, "Export")
  model = tm.AVUnified(exporter.model_config_dict(cfg))
  state = {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in weights.items()}
  model.load_state_dict(state, strict=True)
  return model


def token_loss(logits, targets, weights, task_id=None, task_weights=None, num_tasks: int = 5,
               label_smoothing: float = 0.0):
  """`steps.compute_loss`'s token loss: sum_k u_k token_k / sum_k u_k over the tasks present,
  token_k = sum(w * ce) / sum(w) over task k's tokens. logits float[B, L, V], targets
  int64[B, L], weights float[B, L], task_id int[B] (None: one task), task_weights float[tasks]
  (None: all 1)."""
  ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none",
                       label_smoothing=label_smoothing)
  weights = weights.float()
  per_example = (ce.view_as(weights) * weights).sum(-1)  # [B]
  counts = weights.sum(-1)  # [B]
  if task_id is None:
    return per_example.sum() / counts.sum().clamp_min(1e-6)
  onehot = F.one_hot(task_id.long(), num_tasks).float()  # [B, tasks]
  task_sum, task_count = per_example @ onehot, counts @ onehot  # [tasks]
  u = torch.ones(num_tasks) if task_weights is None else task_weights.float()
  present = (task_count > 0).float()
  return ((task_sum / task_count.clamp_min(1e-6)) * u).sum() / (present * u).sum().clamp_min(1e-6)


def sounding_segments(segment_mask, log_mel, silent_spread: float = 1.0):
  """`steps.sounding_segments`: valid segments whose log-mel is not flat."""
  spread = log_mel.float().amax(dim=(2, 3)) - log_mel.float().amin(dim=(2, 3))  # [B, T]
  return segment_mask.bool() & (spread > silent_spread)


def contrastive_loss(audio, visual, segment_mask, temperature: float):
  """Symmetric InfoNCE of `losses.contrastive_loss`: audio, visual float[B, T, D]."""
  b, t, d = audio.shape
  a = F.normalize(audio.reshape(b * t, d).float(), dim=-1, eps=1e-6)  # [BT, D]
  v = F.normalize(visual.reshape(b * t, d).float(), dim=-1, eps=1e-6)
  valid = segment_mask.reshape(b * t).bool()  # [BT]
  clip = torch.arange(b).repeat_interleave(t)  # [BT]
  eye = torch.eye(b * t, dtype=torch.bool)
  keep = (eye | (clip[:, None] != clip[None, :])) & valid[None, :] & valid[:, None]
  logits = torch.where(keep, a @ v.T / temperature, torch.full((), -1e9))
  labels = torch.arange(b * t)
  both = (F.cross_entropy(logits, labels, reduction="none")
          + F.cross_entropy(logits.T, labels, reduction="none"))
  w = valid.float()
  return (both * 0.5 * w).sum() / w.sum().clamp_min(1.0)


def mil_bce(video_probs, weak_labels, has_weak, positive_weight: float = 1.0):
  """`losses.mil_bce`: video_probs float[B, C], weak_labels float[B, C], has_weak bool[B]."""
  p = video_probs.float().clamp(1e-6, 1.0 - 1e-6)
  y = weak_labels.float()
  bce = -(positive_weight * y * torch.log(p) + (1.0 - y) * torch.log1p(-p)).mean(dim=-1)  # [B]
  w = has_weak.float()
  return (bce * w).sum() / w.sum().clamp_min(1.0)


def event_segment_bce(frame_probs, weak_labels, event_segments, has_events, segment_mask):
  """`losses.event_segment_bce`: frame_probs float[B, T, 2, C], weak_labels float[B, C],
  event_segments float[B, T], has_events bool[B], segment_mask bool[B, T]."""
  y = weak_labels.float()[:, None, None, :]  # [B, 1, 1, C]
  p = (frame_probs.float() * y).sum(-1).clamp(1e-6, 1.0 - 1e-6)  # [B, T, 2]
  inside = event_segments.float()
  inside_loss = -(torch.log(p[..., 0]) + torch.log(p[..., 1]))
  outside_loss = -torch.log1p(-p[..., 0] * p[..., 1])
  per_segment = inside * inside_loss + (1.0 - inside) * outside_loss  # [B, T]
  valid = segment_mask.float() * has_events.float()[:, None]
  return (per_segment * valid).sum() / valid.sum().clamp_min(1.0)


def map_loss(loc_maps, focus_segment, focus_map, has_focus_map):
  """`losses.map_loss`: loc_maps float[B, T, h, w], focus_segment int[B], focus_map
  float[B, G, G], has_focus_map bool[B]."""
  b, _, h, w = loc_maps.shape
  m = loc_maps.float()[torch.arange(b), focus_segment.long()]  # [B, h, w]
  g_h, g_w = focus_map.shape[1:]
  rows = torch.from_numpy(losses._area_matrix(g_h, h))  # [h, G]
  cols = torch.from_numpy(losses._area_matrix(g_w, w))  # [w, G]
  target = torch.einsum("hg,bgk,wk->bhw", rows, focus_map.float(), cols)
  target = target / target.sum(dim=(1, 2), keepdim=True).clamp_min(1e-6)
  ce = -(target * torch.log(m + 1e-6)).sum(dim=(1, 2))  # [B]
  weight = has_focus_map.float()
  return (ce * weight).sum() / weight.sum().clamp_min(1.0)


def total_loss(outputs, batch, loss_cfg, task_weights=None):
  """The training loss of `steps.compute_loss`: token loss with the tasks' loss weights,
  plus the contrastive, MIL, event and map terms with `config.loss`'s weights."""
  loss = token_loss(outputs["logits"], batch["target_tokens"].long(), batch["target_weights"],
                    batch.get("task_id"), task_weights,
                    label_smoothing=float(loss_cfg.label_smoothing))
  loss = loss + loss_cfg.contrastive_weight * contrastive_loss(
      outputs["audio_embed"], outputs["visual_embed"],
      sounding_segments(batch["segment_mask"], batch["log_mel"]),
      loss_cfg.contrastive_temperature)
  loss = loss + loss_cfg.mil_weight * mil_bce(outputs["mil_video_probs"], batch["weak_labels"],
                                              batch["has_weak"],
                                              float(loss_cfg.get("mil_positive_weight", 1.0)))
  if "event_segments" in batch and loss_cfg.get("event_weight", 0.0):
    loss = loss + loss_cfg.event_weight * event_segment_bce(
        outputs["mil_frame_probs"], batch["weak_labels"], batch["event_segments"],
        batch["has_event_segments"], batch["segment_mask"])
  if "focus_map" in batch and "loc_maps" in outputs:
    loss = loss + loss_cfg.map_weight * map_loss(outputs["loc_maps"], batch["focus_segment"],
                                                 batch["focus_map"], batch["has_focus_map"])
  return loss


class TorchTrainer:
  """forward + backward + clip + AdamW on one fixed batch, with `threads` CPU threads."""

  def __init__(self, cfg, params, batch: dict[str, np.ndarray], config, threads: int):
    torch.set_num_threads(threads)
    self.model = torch_model(cfg, params).train()
    optim = config.optim
    decay = [p for p in self.model.parameters() if p.ndim >= 2]
    rest = [p for p in self.model.parameters() if p.ndim < 2]
    self.opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": float(optim.weight_decay)},
         {"params": rest, "weight_decay": 0.0}],
        lr=float(optim.learning_rate), betas=(float(optim.b1), float(optim.b2)), eps=1e-8)
    self.clip = float(optim.grad_clip_norm)
    self.loss_cfg = config.loss
    self.task_weights = torch.tensor([float(config.tasks[t].loss_weight) for t in TASKS])
    self.batch = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}
    self.first_loss = self.step()  # Also the warm-up step.

  def step(self) -> float:
    self.opt.zero_grad(set_to_none=True)
    loss = total_loss(self.model(self.batch), self.batch, self.loss_cfg, self.task_weights)
    loss.backward()
    if self.clip > 0:
      torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
    self.opt.step()
    return float(loss.detach())

  def run(self, num_steps: int) -> None:
    for _ in range(num_steps):
      self.step()
