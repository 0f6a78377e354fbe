"""LAMP (seed 001): `python -m adjax.main --config=configs/lamp.py[:smoke|:paper]`.

A conv autoencoder (conv -> BatchNorm -> LeakyReLU blocks, no skips) trained with the amplified loss
-log(1 - L / max L * (1 - epsilon)); image score = mean squared reconstruction error (seed 001).
`--config.lamp.enabled=False` gives the plain base loss; `--config.loss.base=l1|ssim`,
`--config.optim.name=sgd|rmsprop|adam` give the other cells of seed 001 Table 2.
One-vs-rest digits: `--config.data.name=digits --config.data.category=3 --config.data.image_size=16`.

Presets
  smoke    a whole run in well under a minute on 2 CPU cores (tests use it); numbers mean nothing.
  default  embedded brick texture at 64x64, 4 blocks, L2-LAMP, Adam, 600 steps of batch 16.
  paper    seed 001 on MVTec AD: 256x256, 6 blocks, batch 16 (Table 2), L2-LAMP with Adam
           (set --config.data.manual_dir and --config.data.category); meant for a GPU.
"""

import ml_collections

PRESETS = ('smoke', 'default', 'paper')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or 'default'
  if preset not in PRESETS:
    raise ValueError(f'unknown preset {preset!r} for configs/lamp.py; known: {", ".join(PRESETS)}')
  config = ml_collections.ConfigDict()
  config.method = 'reconstruction'
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = 'textures'
  config.data.category = 'brick'
  config.data.data_dir = ''  # Empty: tfds's default (~/tensorflow_datasets).
  config.data.manual_dir = ''  # Root of an MVTec-layout tree for `mvtec_ad` / `folder`.
  config.data.image_size = 64
  config.data.train_preprocess = 'resize({image_size})|value_range(-1, 1)'
  config.data.eval_preprocess = 'resize({image_size})|value_range(-1, 1)'

  config.model = ml_collections.ConfigDict()
  config.model.architecture = 'lamp'  # 'lamp' | 'cae' (seed 003 Table 1) | 'fully_conv' (Table 2)
  config.model.num_blocks = 4  # Seed 001: 6 (4 for small images such as MNIST).
  config.model.features = ()  # Empty: the first num_blocks of (32, 64, 128, 256, 256, 256).
  config.model.kernel_size = 3  # Tuned in seed 001 (no value given).
  config.model.patches_per_side = 1  # > 1: patch-wise reconstruction with p x p patches.
  config.model.output_activation = 'tanh'  # Inputs are in [-1, 1].
  config.model.init_std = 0.02
  config.model.latent_dim = 128  # 'cae' only.
  config.model.bottleneck = 1024  # 'cae' only.

  config.loss = ml_collections.ConfigDict()
  config.loss.base = 'l2'  # 'l2' | 'l1' | 'ssim'
  config.loss.pixel_reduction = 'mean'  # Over H, W, C; Eq. 1 sums ('sum'), which only rescales the loss.
  config.loss.data_range = 2.0  # SSIM data range of [-1, 1] images.
  config.loss.ssim_window = 11

  config.lamp = ml_collections.ConfigDict()
  config.lamp.enabled = True
  config.lamp.epsilon = 1e-3  # Seed 001 gives no value.
  config.lamp.reduction = 'batch'  # max over the (per-device) batch as in the paper, or 'image'.
  config.lamp.stop_gradient_max = False  # Paper's literal reading: differentiate through the max.

  config.denoising = ml_collections.ConfigDict(dict(scale=0.0, value_range=(-1.0, 1.0)))
  config.contractive = ml_collections.ConfigDict(dict(weight=0.0, method='hutchinson', num_projections=1))
  config.mixer = ml_collections.ConfigDict(dict(
      num_categories=0, classifier_weight=3.0, hidden=(256, 128), dropout=0.3, score='l2'))
  # Seed 003 Eq. 6 thresholds from training scores (values of the seed-003 code).
  config.threshold = ml_collections.ConfigDict(dict(alpha=0.65, beta=0.3, initial=0.5))

  config.optim = ml_collections.ConfigDict()
  config.optim.name = 'adam'  # 'sgd' | 'rmsprop' | 'adam'
  config.optim.learning_rate = 1e-3
  config.optim.momentum = 0.9  # sgd
  config.optim.decay = 0.9  # rmsprop
  config.optim.eps = 1e-8
  config.optim.weight_decay = 0.0

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 16
  config.train.num_steps = 600
  config.train.num_epochs = 0  # > 0 overrides num_steps.
  config.train.num_devices = 0  # 0: all local devices.
  config.train.log_every = 50
  config.train.checkpoint_every = 300
  config.train.checkpoints_to_keep = 2

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 32
  config.eval.map = 'l2'  # 'l2' | 'l1' | 'ssim'
  config.eval.score = 'l2'  # 'l2' (seed 001) | 'l1' | 'ssim' | '<map>_max' | 'mixer'
  config.eval.fpr_limit = 0.3
  config.eval.num_bins = 0

  if preset == 'smoke':
    config.data.image_size = 16
    config.model.num_blocks = 2
    config.model.features = (8, 16)
    config.train.batch_size = 4
    config.train.num_steps = 4
    config.train.log_every = 2
    config.train.checkpoint_every = 2
    config.eval.batch_size = 32
  elif preset == 'paper':
    config.data.name = 'mvtec_ad'
    config.data.category = 'bottle'
    config.data.image_size = 256
    config.model.num_blocks = 6
    config.train.batch_size = 16
    config.train.num_epochs = 100  # Not given in seed 001.
    config.train.log_every = 100
    config.train.checkpoint_every = 2000
  return config
