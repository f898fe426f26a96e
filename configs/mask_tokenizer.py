"""Mask tokenizer (VQ-VAE for binary masks, docs/MODEL.md), trained before the main model.

Variants: `base` (default), `demo` (about two CPU-minutes; held-out mIoU 0.85 with nearest
codes, 0.91 with the code search), `tiny` (tests).
Usage: python -m av_unified_jax.mask_tokenizer_train --config=configs/mask_tokenizer.py:demo \
           --masks=<dir of PNGs | .npz> --workdir=W  [--config.total_steps=400]
       python -m av_unified_jax.mask_tokenizer_train --config=configs/mask_tokenizer.py \
           --shards_dir=<converted datasets: avsbench_s4, avsbench_ms3> --workdir=W/mask_tokenizer
"""

import ml_collections

from configs import common

VARIANTS = ("base", "demo", "tiny")


def base_config() -> ml_collections.ConfigDict:
  """The complete key set with the `base` values, locked: variants override values, and a
  misspelt key raises (a key is added only inside `with c.unlocked():`)."""
  c = ml_collections.ConfigDict()
  c.variant = "base"  # Name of the variant these values came from.
  c.seed = 0  # Seeds parameters, restarts, data split, order and augmentation.
  c.total_steps = 5000  # Optimizer steps.
  c.batch_size = 64  # Masks per step.
  c.log_every_steps = 100  # Scalars to stdout and metrics.json.

  # Model (converted to mask_tokenizer.MaskTokenizerConfig; same field names).
  c.model = ml_collections.ConfigDict()
  c.model.mask_size = 64  # Mask side the tokenizer reads and writes.
  c.model.grid = 8  # Code grid side (mask_size / grid = 2 ** len(channels)).
  c.model.codebook_size = 512  # Codes; must equal tokens.num_mask_codes of the main config.
  c.model.code_dim = 32  # Codebook vector dimension.
  c.model.channels = (32, 64, 128)  # Conv widths of the stride-2 stages, high resolution first.
  c.model.encoder = "conv"  # "conv" (convolutional, sees neighbours) or "patch" (per-cell MLP).
  c.model.patch_hidden = 256  # Hidden width of the "patch" encoder.
  c.model.num_res_blocks = 2  # Residual blocks at grid resolution (encoder and decoder each).
  c.model.decoder_kernel = 3  # Decoder conv side: 3 sees neighbouring cells, 1 is cell-local.
  c.model.commitment_weight = 0.25  # Commitment loss weight (beta).
  c.model.dice_weight = 1.0  # Soft-dice weight beside pixel BCE.
  c.model.ema_decay = 0.99  # Codebook EMA decay.
  c.model.dead_code_threshold = 0.05  # EMA usage (vectors/step) under which a code restarts.
  c.model.restart_usage = 1.0  # EMA usage a restarted code starts with.
  c.model.epsilon = 1e-5  # Laplace smoothing of EMA cluster sizes.
  # Encoding (mask_tokenizer.encode_masks): codes tried per cell by a search through
  # the decoder (fewest wrong pixels wins); 1 = nearest code only. Sweeps over the grid.
  c.model.search_candidates = 8
  c.model.search_sweeps = 1

  # Optimizer.
  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 1e-3  # Peak learning rate (AdamW).
  c.optim.warmup_steps = 200  # Linear warmup steps.
  c.optim.end_lr_fraction = 0.05  # Cosine decay ends at this fraction of the peak.
  c.optim.weight_decay = 1e-4  # Decoupled weight decay.
  c.optim.grad_clip_norm = 1.0  # Global gradient-norm clip (0 disables).

  # Data.
  c.data = ml_collections.ConfigDict()
  c.data.masks = ""  # Training masks (.npz or PNG dir); --masks overrides; "" = synthetic only.
  c.data.eval_masks = ""  # Extra held-out masks (.npz or PNG dir); --eval_masks overrides.
  c.data.place_cutouts = False  # Masks are tight cut-outs: put them in frames at random scale.
  c.data.place_scale_min = 0.25  # Placed cut-out: min longest side / frame side.
  c.data.place_scale_max = 0.9  # Placed cut-out: max longest side / frame side.
  c.data.holdout_fraction = 0.1  # Fraction of the given masks held out for evaluation.
  c.data.num_synthetic = 4000  # Synthetic object-like masks added to the training set.
  c.data.num_synthetic_eval = 256  # Synthetic held-out masks (another seed).
  c.data.hflip = True  # Random horizontal flips.
  c.data.max_shift = 4  # Random shifts of up to this many pixels (zero-filled).
  c.data.eval_size = 224  # Evaluation size: held-out masks kept at this side, logits upsampled.

  # Evaluation.
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 256  # Masks per evaluation call.
  c.eval.train_subset = 512  # Training masks whose reconstruction mIoU is also reported (0: none).
  c.lock()
  return c


def get_config(arg=None):
  args = common.parse_arg(arg, variant="base")
  if args.variant not in VARIANTS:
    raise ValueError(f"configs/mask_tokenizer.py: variant {args.variant!r} is not one of "
                     f"{VARIANTS}")
  c = base_config()  # Locked: a misspelt key below raises.
  c.variant = args.variant
  if args.variant == "demo":  # Demo AVS masks (small objects): about 125 CPU-seconds.
    # Measured with the demo masks (907 train, 101 held out; 720 val+test masks as --eval_masks)
    # on one core: held-out mIoU 0.853 at 64 px (val+test 0.865; at 112 px 0.818 / 0.835),
    # 126 CPU-s of training. The previous setting (code_dim 32, lr 3e-3, 1200 steps, one res
    # block) gave 0.800 (val+test 0.806). Val+test mIoU of the steps that got there:
    #   lr 1e-3 / 3e-3 / 1e-2 / 2e-2 at 1200 steps: 0.776 / 0.806 / 0.826 / 0.828;
    #   lr 2e-2, 2000 steps, code_dim 8 / 4 / 3 / 2: 0.844 / 0.856 / 0.857 / 0.836;
    #   no res block (cheaper steps) and 2400 steps: 0.865 (seed 1: held-out 0.864, val+test
    #   0.865; code_dim 3: 0.865).
    # Without shifts and flips the model memorises the training masks (train 0.88, val+test
    # 0.79). No gain: channels (32, 64, 128), 2 res blocks, batch 8 or 32, dice weight 3,
    # commitment 1, EMA decay 0.99, a continuous warm-up then k-means codebook, the rotation
    # trick, a per-cell logit head, the Lovasz hinge (collapsed). The code_dim 32 net without
    # quantization reaches 0.88 (lr 1e-2, 1200 steps); all 512 codes are in use on val+test
    # (5.6 bits per cell): 9 bits per cell and the CPU budget, not dead codes, bound the figure.
    c.total_steps = 1200  # The main job's budget; 2400 gave held-out 0.907 (see below).
    c.batch_size = 16
    c.log_every_steps = 200
    c.model.channels = (16, 32, 64)
    c.model.num_res_blocks = 0
    # A cell-local decoder: each cell's code is the best of all codes for that cell's pixels
    # alone, so equal cells get equal codes and the AVS targets are predictable from what
    # the model sees at the cell (with the 3x3 decoder, cells next to an object took a dozen
    # look-alike codes, and the AVS token loss stayed near 4 nats for the whole run).
    # Held-out mIoU 0.834 at 64 px, 0.794 at 112 px (the 3x3 decoder with the code search:
    # 0.896 and 0.839), 55 CPU-s of training; encoding 1,440 masks takes seconds.
    c.model.decoder_kernel = 1
    c.model.code_dim = 4  # Unit codes on a 3-sphere: 512 codes cover it densely.
    c.model.ema_decay = 0.95
    c.model.restart_usage = 0.2
    c.optim.learning_rate = 2e-2
    c.optim.warmup_steps = 100
    c.data.num_synthetic = 0  # Train on the given masks only (set it when giving none).
    c.data.num_synthetic_eval = 0
    c.data.eval_size = 112  # The demo's mask size.
    # Code search when encoding (mask_tokenizer.encode_masks), measured on the
    # checkpoint of this variant (held-out / val+test mIoU; seconds to encode the 1008 demo
    # training masks on 2 cores): nearest code 0.854 / 0.863; 8 candidates, 1 sweep
    # 0.901 / 0.916, 37 s; 12 x 1: 0.905 / 0.918, 52 s; 16 x 1: 0.905 / 0.920, 69 s;
    # 6 x 2: 0.907 / 0.922, 58 s; 8 x 2: 0.925 val+test, 74 s.
    c.model.search_candidates = 6
    c.model.search_sweeps = 1  # One sweep: the main job encodes 1,440 training masks.
    c.eval.train_subset = 0  # Saves the main job a search over 512 more masks.
  elif args.variant == "tiny":
    c.total_steps = 60
    c.batch_size = 16
    c.log_every_steps = 10
    c.model.mask_size = 32
    c.model.grid = 4
    c.model.codebook_size = 64
    c.model.code_dim = 8
    c.model.channels = (8, 16, 32)
    c.model.num_res_blocks = 1
    c.model.ema_decay = 0.9
    c.model.restart_usage = 0.2
    c.optim.learning_rate = 3e-3
    c.optim.warmup_steps = 5
    c.data.num_synthetic = 256
    c.data.num_synthetic_eval = 64
    c.data.max_shift = 2
    c.data.eval_size = 64
    c.model.search_candidates = 4
    c.eval.batch_size = 64
    c.eval.train_subset = 64
  return c
