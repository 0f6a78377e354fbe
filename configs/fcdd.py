"""FCDD / pixel-wise HSC (seed 000): `python -m adjax.main --config=configs/fcdd.py[:preset[,loss]]`.

Presets (the optional `,hsc` or `,fcdd` part picks the loss: Eq. 5 or Eq. 4; default fcdd)
  smoke       a whole run in well under a minute on 2 CPU cores (tests use it); numbers mean nothing.
  default     embedded `textures` (brick), 64x64, a small FROM-SCRATCH CNN trunk (no ImageNet weights),
              unsupervised with confetti noise: a few minutes on 2 CPU cores.
  paper       seed 000 Sec. 4: VGG11-BN (ImageNet weights from --config.model.backbone_weights=FILE) cut
              before the 4th max-pool and frozen up to the 3rd, 240 -> 224, batch 128, 50 FCDD epochs of 10
              passes, unsupervised with confetti (no border smoothing), MVTec AD
              (--config.data.manual_dir, --config.data.category); meant for a GPU.
  paper_semi  paper, semi-supervised: one real anomalous image per defect type moved from test to train
              (50% of the training draws), no confetti.
Examples: `configs/fcdd.py:smoke,hsc`, `configs/fcdd.py:paper_semi,hsc`, `configs/hsc.py:paper`.
"""

import ml_collections

from adjax import config_defaults

PRESETS = ('smoke', 'default', 'paper', 'paper_semi')
LOSSES = ('fcdd', 'hsc')

_JITTER = ('one_of(["color_jitter(0.04, 0.04, 0.04, 0.04)", '
           '"color_jitter(0.0005, 0.0005, 0.0005, 0.0005)"])')
# Seed 000 Sec. 4, after the synthetic anomalies: random crop or resize, colour jitter, Gaussian noise on half
# the pixels, local contrast normalisation, min-max.
_AUGMENT = ('crop_or_resize({image_size})|' + _JITTER +
            '|gaussian_noise(std_fraction=0.1, pixel_fraction=0.5)|local_contrast_normalization|min_max')
_CONFETTI = 'confetti(0.5, "pixels", blur_sigma=0.0)'  # Modified pixels are the mask; no border smoothing.
_EVAL = 'resize({image_size})|local_contrast_normalization|min_max'


def parse_arg(arg: str | None) -> tuple[str, str]:
  """'paper_semi,hsc' -> ('paper_semi', 'hsc'); 'hsc' -> ('default', 'hsc'); None -> ('default', 'fcdd')."""
  preset, loss = 'default', 'fcdd'
  for part in filter(None, (arg or '').split(',')):
    if part in PRESETS:
      preset = part
    elif part in LOSSES:
      loss = part
    else:
      raise ValueError(f'unknown preset or loss {part!r} for configs/fcdd.py; presets: '
                       f'{", ".join(PRESETS)}; losses: {", ".join(LOSSES)}')
  return preset, loss


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset, loss = parse_arg(arg)
  config = ml_collections.ConfigDict()
  config.method = 'fcdd'
  config.seed = 0

  config.data = config_defaults.data(preprocess=_EVAL)
  # The first resize fixes the size confetti is drawn at (seed: 240 for 224); keep it >= data.image_size.
  config.data.train_preprocess = f'resize(68)|{_CONFETTI}|{_AUGMENT}'
  config.data.labeled_anomalies_per_type = 0  # > 0: semi-supervised (real anomalies moved from test).
  config.data.anomaly_fraction = 0.5  # Semi-supervised: share of training draws that are real anomalies.

  config.model = ml_collections.ConfigDict()
  config.model.trunk = 'cnn'  # FROM-SCRATCH small CNN; 'vgg11_bn' is the seed's ImageNet VGG11-BN trunk.
  config.model.cnn_layers = (32, 'M', 64, 'M', 128, 128)  # 3x3 conv widths and 'M' max-pools.
  config.model.backbone_weights = ''  # vgg11_bn: .pth/.safetensors/.msgpack file; empty = random (warns).
  config.model.frozen_until = ''  # vgg11_bn: 'pool3' (seed); '' trains everything.
  config.model.frozen_bn_eval = False  # False: frozen BatchNorms still update their statistics (reference).
  # 'bfloat16': convs compute in bfloat16 (parameters, BatchNorm statistics and losses stay float32); for accelerators.
  config.model.compute_dtype = 'float32'

  config.fcdd = ml_collections.ConfigDict()
  config.fcdd.loss = loss  # 'fcdd' (Eq. 4) or 'hsc' (Eq. 5).
  # Paper's A = upsample(h(a)); the pixel-wise HSC code: 'upsample_then_huber'.
  config.fcdd.heatmap_order = 'huber_then_upsample'
  config.fcdd.upsample_std = 0.0  # 0: FCDD's default for the receptive field (10 for r = 62); MVTec runs: 12.
  config.fcdd.passes_per_epoch = 10  # An FCDD epoch = 10 passes over the normal training images.

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 1e-3
  config.optim.decay_per_epoch = 0.985  # "decreasing by 1.5% at each epoch" (the HSC code uses 0.9985).
  config.optim.momentum = 0.9
  config.optim.nesterov = True
  config.optim.weight_decay = 1e-4
  config.optim.accumulate_steps = 1  # > 1: gradient accumulation (optax.MultiSteps); FCDD's code: 16 x 8.

  # num_epochs: passes over the training split (an FCDD epoch is passes_per_epoch of them).
  config.train = config_defaults.train(num_steps=300)

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 32
  config.eval.map = 'heatmap'
  config.eval.score = 'mean'  # 'mean' (FCDD: mean of the low-resolution heatmap) or 'max' (of the map).
  config.eval.fpr_limit = 0.3
  config.eval.num_bins = 0  # 0: exact pixel metrics; else binned with this many bins.

  if preset == 'smoke':
    config.data.image_size = 32
    config.data.train_preprocess = f'resize(36)|{_CONFETTI}|{_AUGMENT}'
    config.model.cnn_layers = (8, 'M', 16)
    config.train.batch_size = 4
    config.train.num_steps = 4
    config.train.log_every = 2
    config.train.checkpoint_every = 4
    config.eval.batch_size = 16
  elif preset in ('paper', 'paper_semi'):
    config.data.name = 'mvtec_ad'
    config.data.category = 'carpet'
    config.data.image_size = 224
    config.data.train_preprocess = f'resize(240)|{_CONFETTI}|{_AUGMENT}'
    config.model.trunk = 'vgg11_bn'
    config.model.frozen_until = 'pool3'
    config.fcdd.upsample_std = 12.0
    config.train.batch_size = 128
    config.train.num_epochs = 50 * 10  # 50 FCDD epochs of 10 passes.
    config.train.log_every = 20
    config.train.checkpoint_every = 500
    config.eval.batch_size = 64
    if preset == 'paper_semi':
      config.data.labeled_anomalies_per_type = 1
      config.data.train_preprocess = f'resize(240)|{_AUGMENT}'
      # The training split lists each normal image once and as many anomaly slots (anomaly_fraction 0.5),
      # so one loop pass is two FCDD passes: 50 FCDD epochs = 250 loop passes.
      config.train.num_epochs = 50 * 10 // 2
  return config
