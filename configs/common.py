"""Shared config blocks: `:arg` parsing, mesh, logical-axis rules, tasks, optimizer, schedule.

Every experiment config calls `base_config()` and then changes values; every key exists here
with a one-line comment. `base_config()` returns the config locked, so a misspelt key fails
naming it, whether in a `--config.key=value` override or in a config file's own assignments
(`c.optim.warmup_step = 3` raises). A config that deliberately adds a key does it inside
`with c.unlocked():`.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses `"k1=v1,k2=v2"` (the part after `:` in `--config=configs/x.py:...`).

  Values are converted to the type of the default; a key without a default is an error.
  A bare word (no `=`) sets the first default key, e.g. `configs/base.py:B`.
  """
  out = ml_collections.ConfigDict(dict(defaults))
  if not arg:
    return out
  keys = list(defaults)
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    key, value = item.split("=", 1) if "=" in item else (keys[0], item)
    if key not in defaults:
      raise ValueError(f"config argument {key!r} is not one of {sorted(defaults)}")
    default = defaults[key]
    if isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes")
    elif default is None:
      out[key] = value
    else:
      out[key] = type(default)(value)
  return out


def mesh_config(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
  """Mesh shape by axis name; one axis may be -1 (fills the remaining devices)."""
  return ml_collections.ConfigDict({"data": data, "fsdp": fsdp, "tensor": tensor})


# Logical axis name -> mesh axis (or tuple of axes, or None = replicated). Model code only ever
# names the logical axes on the left.
LOGICAL_AXIS_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("segments", None),
    ("patches", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("channels", None),
    ("codebook", None),
    ("layers", None),
    ("scales", None),
    ("classes", None),
    ("types", None),
)


def base_config() -> ml_collections.ConfigDict:
  """The complete key set with defaults, locked. Experiment configs override values; a key is
  added only inside `with c.unlocked():`."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds parameters, data order, augmentation and dropout.
  c.total_steps = 1000  # Number of optimizer steps.
  c.log_every_steps = 10  # Scalars to stdout, metrics.jsonl and TensorBoard.
  c.eval_every_steps = 500  # Periodic evaluation (and once at the end); 0: none.
  c.checkpoint_every_steps = 200  # Orbax checkpoint period (and on SIGTERM, and at the end).
  c.keep_checkpoints = 3  # Number of checkpoints kept by the manager.

  # Model: a named variant of the size table plus per-field overrides (see av_unified_jax.models).
  c.model = ml_collections.ConfigDict()
  c.model.variant = "tiny"  # One of the size table's variants: tiny, demo, base, large.
  _model_fields(c.model)

  # Tokens (docs/MODEL.md, Tokens).
  c.tokens = ml_collections.ConfigDict()
  c.tokens.max_time = 10  # Time tokens <t_0> .. <t_max_time>.
  c.tokens.num_loc_bins = 100  # Location bins for box coordinates.
  c.tokens.num_mask_codes = 512  # Mask tokenizer codebook size.
  c.tokens.max_prompt_len = 32  # Prompt tokens per example (padded).
  c.tokens.max_target_len = 72  # Target tokens per example (padded; AVS needs 8*8 + 1).

  # Data.
  c.data = ml_collections.ConfigDict()
  c.data.shards_dir = ""  # Root of converted datasets (<shards_dir>/<dataset>/<split>/).
  c.data.image_size = 112  # Frame side after cropping, pixels.
  c.data.num_segments = 10  # T: one frame and one second of log-mel per segment.
  c.data.batch_size = 16  # Global batch size (all hosts together).
  c.data.worker_count = 0  # grain worker processes per host (part of the iterator state).
  c.data.prefetch = 2  # Batches prefetched per worker.
  c.data.train_split = "train"  # Split used for training.
  c.data.eval_split = "test"  # Split used for evaluation.
  c.data.mel_shift = 0  # Training: random shift of the log-mel by up to this many mel bins.
  # Training augmentation (each task's crops, flips and SpecAugment, and mel_shift); False:
  # training clips are cut as in evaluation (memorization checks, debugging).
  c.data.augment = True
  c.data.synthetic = False  # Train on deterministic random batches (tests, speed checks).

  # Task mixture: per task, the converted dataset it reads and its sampling weight.
  c.tasks = ml_collections.ConfigDict()
  for task, dataset, weight in (("ave", "ave", 1.0), ("avvp", "llp", 1.0),
                                ("avqa", "music_avqa", 1.0), ("ssl", "vggss", 1.0),
                                ("avs", "avsbench_s4", 1.0)):
    c.tasks[task] = ml_collections.ConfigDict({
        "dataset": dataset,  # Name of the converted dataset under data.shards_dir.
        "weight": weight,  # Sampling weight in the mixture (0 disables the task).
        "loss_weight": 1.0,  # Weight of this task's token cross-entropy.
        # More converted datasets of this task mixed into its training examples (evaluation
        # reads `dataset` only), e.g. AVS: ("avsbench_ms3",) beside S4's first-frame masks.
        "extra_train_datasets": (),
    })

  # Losses.
  c.loss = ml_collections.ConfigDict()
  c.loss.label_smoothing = 0.0  # Label smoothing of the token cross-entropy.
  c.loss.contrastive_weight = 0.1  # Audio-visual contrastive loss of the spatial module.
  c.loss.mil_weight = 1.0  # Multiple-instance loss on weak LLP labels.
  c.loss.mil_positive_weight = 1.0  # Weight of the present classes in the MIL loss.
  c.loss.mil_tasks = ("avvp",)  # Tasks whose clip classes train the MIL head ("ave" adds AVE's).
  c.loss.contrastive_temperature = 0.07  # Temperature of the contrastive loss.
  c.loss.map_weight = 1.0  # Sound-source map vs the focus frame's mask, where one exists (AVS).
  c.loss.avs_background_weight = 1.0  # Weight of AVS target tokens of the background code.
  # MIL frame probabilities vs the seconds of AVE's events (needs "ave" in mil_tasks).
  c.loss.event_weight = 0.0

  # Optimizer and schedule.
  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 3e-4  # Peak learning rate.
  c.optim.warmup_steps = 100  # Linear warmup steps.
  c.optim.end_lr_fraction = 0.01  # Cosine decay ends at this fraction of the peak.
  c.optim.weight_decay = 0.05  # AdamW decoupled weight decay.
  c.optim.b1 = 0.9  # AdamW beta1.
  c.optim.b2 = 0.98  # AdamW beta2.
  c.optim.grad_clip_norm = 1.0  # Global gradient norm clipping (0 disables).
  c.optim.grad_accum_steps = 1  # Micro-batches accumulated per optimizer step.

  # Evaluation.
  c.eval = ml_collections.ConfigDict()
  c.eval.max_examples = 0  # Examples per task evaluated (0 = the whole split).
  c.eval.batch_size = 16  # Evaluation batch size.
  c.eval.beam_size = 1  # 1 = constrained greedy decoding.
  # AVS cells: "foreground" decides object-or-not by the probability mass of the mask codes
  # that decode to foreground, then takes the likeliest code; "greedy" = plain argmax.
  c.eval.avs_decode = "foreground"
  # AVS cells: an object where the foreground codes hold more than this share of the mass.
  c.eval.avs_foreground_threshold = 0.5
  c.eval.avvp_source = "mil"  # AVVP scores from "mil" (the MIL head) or "decoded" (the parse).
  c.eval.ssl_source = "map"  # SSL heatmap from "map" (spatial perception) or "box" (decoded).
  c.eval.ciou_protocol = "lvs"  # cIoU binarisation: "lvs" or "ezvsl".
  # SSL map heatmap: zero below this multiple of its mean (0: the bare map). 0.75 scored best
  # on the demo's 240 training clips (cIoU@0.5 0.65; 0.5: 0.646, 1.0: 0.60, 0: 0.50).
  c.eval.ssl_heatmap_cut = 0.75

  # Sharding.
  c.mesh = mesh_config()
  c.logical_axis_rules = LOGICAL_AXIS_RULES  # Logical axis -> mesh axes (one table).
  c.lock()
  return c


def _model_fields(m: ml_collections.ConfigDict) -> None:
  """Every field of `models.ModelConfig`; None (the default) keeps the variant's value."""
  p = config_dict.placeholder
  m.vocab_size = p(int)  # Token vocabulary size (normally set from the token layout).
  m.num_mil_classes = p(int)  # Classes of the MIL head (normally the LLP label set).
  m.bos_id = p(int)  # Id of <bos>, prepended to targets to form decoder inputs.
  m.embed_dim = p(int)  # Model width D.
  m.num_heads = p(int)  # Attention heads.
  m.mlp_dim = p(int)  # MLP hidden width.
  m.dropout_rate = p(float)  # Dropout rate.
  m.layer_norm_eps = p(float)  # LayerNorm epsilon.
  m.mel_frames = p(int)  # F: log-mel frames per 1-s segment.
  m.mel_bins = p(int)  # M: mel bins.
  m.audio_patch_frames = p(int)  # Frames per audio patch.
  m.audio_patch_bins = p(int)  # Mel bins per audio patch.
  m.audio_layers = p(int)  # Audio encoder blocks.
  m.patch_size = p(int)  # Image patch side in pixels.
  m.visual_layers = p(int)  # Visual encoder (ViT) blocks.
  m.max_patches = p(int)  # Rows of the image patch position table.
  m.temporal_scales = p(tuple)  # Temporal perception window sizes in seconds, e.g. (1, 2, 5).
  m.temporal_layers = p(int)  # Cross-modal blocks per temporal scale.
  m.max_segments = p(int)  # Largest T (rows of the time embedding table).
  m.max_prompt_len = p(int)  # Largest prompt length (rows of its position table).
  m.fusion_layers = p(int)  # Fusion encoder blocks.
  m.decoder_layers = p(int)  # Decoder blocks.
  m.max_decode_len = p(int)  # Largest decoder length and KV-cache rows.
  m.mask_task_token = p(int)  # Task token of the cell queries (None: <avs>; -1: none).
  m.mask_grid = p(int)  # Side of the AVS mask-code grid the cell queries cover.
  m.focus_map_embed = p(bool)  # Focus patches + embedded log-map instead of map-scaled.
  m.use_temporal_multiscale = p(bool)  # Ablation switch: multi-scale temporal perception.
  m.use_spatial_guidance = p(bool)  # Ablation switch: audio-guided spatial perception.
  m.use_task_prompts = p(bool)  # Ablation switch: task prompts in the memory and scale mix.
  m.dtype = p(str)  # Compute dtype: "bfloat16" or "float32".
  m.param_dtype = p(str)  # Parameter dtype (keep "float32").
  m.remat = p(bool)  # Rematerialize each block in the backward pass.
  m.scan_layers = p(bool)  # Stack blocks with nn.scan (convert with models.unscan_params).
