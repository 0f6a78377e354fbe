"""CAE family (seed 003): `python -m adjax.main --config=configs/cae.py[:smoke|:paper]`.

Convolutional autoencoder of seed 003 Table 1 (4x4 stride-2 convs, 4x4 'VALID' conv to 1024, dense latent
128, mirrored transposed-conv decoder, LeakyReLU 0.2 + BatchNorm, tanh, N(0, 0.02) weights) trained as a
denoising (v = 0.3, training only) and contractive (lambda 1e-4, ||J_E||_F^2) autoencoder; thresholds per
category by seed 003 Eq. 6 from training scores. Variants by key: `--config.denoising.scale=0` (CAE / CO-AE),
`--config.contractive.weight=0` (DE-AE), `--config.model.architecture=fully_conv` (Table 2),
`--config.loss.base=ssim`, `--config.mixer.num_categories=K` (latent classifier over K categories; needs
several categories in one run: `--config.data.category=all` or `a+b+c`, see `adjax.data.sources`).

Presets
  smoke    a whole run in well under a minute on 2 CPU cores (tests use it); numbers mean nothing.
  default  embedded brick texture at 64x64 (Table 1 depth adapted: 4 stride-2 convs), CO+DE, Adam.
  paper    seed 003 Sec. 3.7: Table 2 fully convolutional AE at 224, CO+DE, L2, Adam 1e-3 (eps 1e-6),
           batch 128, per MVTec AD category.
  mixer    the default, but ONE model over all three embedded textures with the Mixer latent classifier
           and per-category thresholds (decision score `mixer`).
  paper_mixer  `paper` over all 15 MVTec AD categories at once with the Mixer (seed 003's main setting).
"""

import ml_collections

PRESETS = ('smoke', 'default', 'paper', 'mixer', 'paper_mixer')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or 'default'
  if preset not in PRESETS:
    raise ValueError(f'unknown preset {preset!r} for configs/cae.py; known: {", ".join(PRESETS)}')
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
  config.model.architecture = 'cae'  # 'cae' (Table 1) | 'fully_conv' (Table 2) | 'lamp' (seed 001)
  config.model.num_blocks = 4  # 'lamp' only.
  config.model.features = ()  # Empty: Table 1 widths adapted to the size (Table 2's for fully_conv).
  config.model.kernel_size = 3  # 'lamp' only.
  config.model.patches_per_side = 1  # > 1: patch-wise reconstruction with p x p patches.
  config.model.output_activation = 'tanh'  # Inputs are in [-1, 1].
  config.model.init_std = 0.02
  config.model.latent_dim = 128  # l_d of Table 1.
  config.model.bottleneck = 1024  # Conv7 of Table 1.

  config.loss = ml_collections.ConfigDict()
  config.loss.base = 'l2'  # 'l2' | 'l1' | 'ssim'
  config.loss.pixel_reduction = 'mean'  # Over H, W, C; Eq. 1 sums ('sum'), which only rescales the loss.
  config.loss.data_range = 2.0  # SSIM data range of [-1, 1] images.
  config.loss.ssim_window = 11

  config.lamp = ml_collections.ConfigDict()
  config.lamp.enabled = False
  config.lamp.epsilon = 1e-3  # Seed 001 gives no value.
  config.lamp.reduction = 'batch'  # max over the (per-device) batch as in the paper, or 'image'.
  config.lamp.stop_gradient_max = False  # Paper's literal reading: differentiate through the max.

  config.denoising = ml_collections.ConfigDict(dict(scale=0.3, value_range=(-1.0, 1.0)))
  config.contractive = ml_collections.ConfigDict(dict(weight=1e-4, method='hutchinson', num_projections=1))
  config.mixer = ml_collections.ConfigDict(dict(
      num_categories=0, classifier_weight=3.0, hidden=(256, 128), dropout=0.3, score='l2'))
  # Seed 003 Eq. 6 thresholds from training scores (values of the seed-003 code).
  config.threshold = ml_collections.ConfigDict(dict(alpha=0.65, beta=0.3, initial=0.5))

  config.optim = ml_collections.ConfigDict()
  config.optim.name = 'adam'  # 'sgd' | 'rmsprop' | 'adam'
  config.optim.learning_rate = 1e-3
  config.optim.momentum = 0.9  # sgd
  config.optim.decay = 0.9  # rmsprop
  config.optim.eps = 1e-6  # Seed 003 Sec. 3.7.
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
    config.model.features = (8, 16)
    config.model.bottleneck = 32
    config.model.latent_dim = 16
    config.train.batch_size = 4
    config.train.num_steps = 4
    config.train.log_every = 2
    config.train.checkpoint_every = 2
    config.eval.batch_size = 32
  elif preset in ('paper', 'paper_mixer'):
    config.data.name = 'mvtec_ad'
    config.data.category = 'bottle'
    config.data.image_size = 224
    config.model.architecture = 'fully_conv'
    config.train.batch_size = 128
    config.train.num_epochs = 200  # Seed 003 early-stops on test F1 (not reproduced: no test leakage).
    config.train.log_every = 20
    config.train.checkpoint_every = 500
  if preset in ('mixer', 'paper_mixer'):
    config.data.category = 'all'
    config.mixer.num_categories = 15 if preset == 'paper_mixer' else 3
    config.eval.score = 'mixer'
  return config
