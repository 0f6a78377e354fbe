"""CAE family (seed 003): `python -m adjax.main --config=configs/cae.py[:smoke|:paper]`.

Convolutional autoencoder of seed 003 Table 1 (4x4 stride-2 convs, 4x4 'VALID' conv to 1024, dense latent
128, mirrored transposed-conv decoder, LeakyReLU 0.2 + BatchNorm, tanh, N(0, 0.02) weights) trained as a
denoising (v = 0.3, training only) and contractive (lambda 1e-4, ||J_E||_F^2) autoencoder; thresholds per
category by seed 003 Eq. 6 from training scores. Variants by key: `--config.denoising.scale=0` (CAE / CO-AE),
`--config.contractive.weight=0` (DE-AE), `--config.model.architecture=fully_conv` (Table 2),
`--config.loss.base=ssim`, `--config.mixer.num_categories=K` (latent classifier over K categories; needs
several categories in one run: `--config.data.category=all` or `a+b+c`, see `adjax.data.sources`).
Ensemble (seed 003 Eq. 10): train the members with this file, then `scripts/ensemble.py --run DIR ...` votes
with their saved decisions; `scripts/cae_experiment.py` runs all of seed 003's Table 3 including the vote.

Presets
  smoke    a whole run in well under a minute on 2 CPU cores (tests use it); numbers mean nothing.
  default  embedded brick texture at 64x64 (Table 1 depth adapted: 4 stride-2 convs), CO+DE, Adam.
  paper    seed 003 Sec. 3.7: Table 2 fully convolutional AE at 224, CO+DE, L2, Adam 1e-3 (eps 1e-6),
           reduce-on-plateau (of the training loss), batch 128, per MVTec AD category.
  mixer    the default, but ONE model over all three embedded textures with the Mixer latent classifier
           and per-category thresholds (decision score `mixer`).
  paper_mixer  `paper` over all 15 MVTec AD categories at once with the Mixer (seed 003's main setting).
"""

import ml_collections

from adjax import config_defaults

PRESETS = ('smoke', 'default', 'paper', 'mixer', 'paper_mixer')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or 'default'
  if preset not in PRESETS:
    raise ValueError(f'unknown preset {preset!r} for configs/cae.py; known: {", ".join(PRESETS)}')
  config = config_defaults.reconstruction()
  config.model.architecture = 'cae'
  config.denoising.scale = 0.3  # Training only.
  config.contractive.weight = 1e-4  # lambda of Eq. 8.
  config.optim.eps = 1e-6  # Seed 003 Sec. 3.7.

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
    config.optim.plateau_factor = 0.1  # Reduce-on-plateau (PyTorch's defaults: x0.1 after 10 epochs).
    config.train.log_every = 20
    config.train.checkpoint_every = 500
  if preset in ('mixer', 'paper_mixer'):
    config.data.category = 'all'
    config.mixer.num_categories = 15 if preset == 'paper_mixer' else 3
    config.eval.score = 'mixer'
  return config
