"""Config sections shared by several config files (as big_vision's `configs/common.py`).

Config files in `configs/` start from these and set what differs; the keys are documented here once.
"""

import ml_collections

VALUE_RANGE_PREPROCESS = 'resize({image_size})|value_range(-1, 1)'


def data(*, category: str = 'brick', preprocess: str = VALUE_RANGE_PREPROCESS,
         image_size: int = 64) -> ml_collections.ConfigDict:
  """The `data` section: the embedded textures at `image_size`, the same preprocessing for train and eval.

  `{image_size}` in the preprocessing specs is filled in from `data.image_size`, so overriding the size
  alone works.
  """
  return ml_collections.ConfigDict(dict(
      name='textures',
      category=category,  # Several at once: 'all' or 'a+b' (see adjax.data.sources).
      data_dir='',  # Empty: tfds's default (~/tensorflow_datasets).
      manual_dir='',  # Root of an MVTec-layout tree for `mvtec_ad` / `folder`.
      image_size=image_size,
      train_preprocess=preprocess,
      eval_preprocess=preprocess,
  ))


def train(*, batch_size: int = 16, num_steps: int = 600, num_epochs: float = 0, log_every: int = 50,
          checkpoint_every: int = 300, checkpoints_to_keep: int = 2,
          num_devices: int = 0) -> ml_collections.ConfigDict:
  """The `train` section; `num_epochs` > 0 sets the steps to ceil(num_epochs * train_size / batch_size)."""
  return ml_collections.ConfigDict(dict(
      batch_size=batch_size, num_steps=num_steps, num_epochs=num_epochs,
      num_devices=num_devices,  # 0: all local devices.
      log_every=log_every, checkpoint_every=checkpoint_every, checkpoints_to_keep=checkpoints_to_keep))


def reconstruction() -> ml_collections.ConfigDict:
  """Every key of the `reconstruction` method (seed 001 LAMP / seed 003 CAE family) with neutral values:
  a 4-block `lamp` autoencoder on the embedded brick texture at 64x64, plain L2 loss, Adam, 600 steps."""
  config = ml_collections.ConfigDict()
  config.method = 'reconstruction'
  config.seed = 0

  config.data = data()

  config.model = ml_collections.ConfigDict()
  config.model.architecture = 'lamp'  # 'lamp' (seed 001) | 'cae' (seed 003 Table 1) | 'fully_conv' (Table 2)
  config.model.num_blocks = 4  # 'lamp': seed 001 uses 6 (4 for small images such as MNIST).
  # Empty: 'lamp' takes the first num_blocks of (32, 64, 128, 256, 256, 256); 'cae' Table 1's widths
  # adapted to the size; 'fully_conv' Table 2's.
  config.model.features = ()
  config.model.kernel_size = 3  # 'lamp' only; tuned in seed 001 (no value given).
  config.model.patches_per_side = 1  # > 1: patch-wise reconstruction with p x p patches.
  config.model.output_activation = 'tanh'  # Inputs are in [-1, 1].
  config.model.init_std = 0.02
  config.model.latent_dim = 128  # 'cae' only: l_d of Table 1.
  config.model.bottleneck = 1024  # 'cae' only: Conv7 of Table 1.
  # 'bfloat16': the autoencoder computes in bfloat16 (parameters, BatchNorm statistics, reconstructions for the
  # losses and scores stay float32); for accelerators.
  config.model.compute_dtype = 'float32'

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
  # Reduce-on-plateau of the training loss (seed 003 Sec. 3.7); 0 = off, else the factor (e.g. 0.1).
  config.optim.plateau_factor = 0.0
  config.optim.plateau_patience = 10  # Averages without improvement before lowering the rate.
  config.optim.plateau_epochs = 1.0  # Epochs per average of the training loss.
  config.optim.plateau_rtol = 1e-4

  config.train = train()

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 32
  config.eval.map = 'l2'  # 'l2' | 'l1' | 'ssim'
  config.eval.score = 'l2'  # 'l2' (seed 001) | 'l1' | 'ssim' | '<map>_max' | 'mixer'
  config.eval.fpr_limit = 0.3
  config.eval.num_bins = 0
  return config
