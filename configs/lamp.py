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

from adjax import config_defaults

PRESETS = ('smoke', 'default', 'paper')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or 'default'
  if preset not in PRESETS:
    raise ValueError(f'unknown preset {preset!r} for configs/lamp.py; known: {", ".join(PRESETS)}')
  config = config_defaults.reconstruction()
  config.lamp.enabled = True

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
