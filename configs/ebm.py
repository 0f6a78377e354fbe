"""EBM (seed 004): `python -m adjax.main --config=configs/ebm.py[:smoke|:paper]`.

Presets
  smoke    a whole run in well under a minute on 2 CPU cores (tests use it); numbers mean nothing.
  default  embedded gravel texture, 64x64, 40 SGLD steps, 60 iterations (< 10 min on 2 CPU cores).
  paper    seed 004's settings: 128x128, Table 3 network, 100 non-persistent SGLD steps from U(-1, 1),
           MVTec AD (set --config.data.manual_dir and --config.data.category); meant for a GPU.
"""

import ml_collections

from adjax import config_defaults

PRESETS = ('smoke', 'default', 'paper')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or 'default'
  if preset not in PRESETS:
    raise ValueError(f'unknown preset {preset!r} for configs/ebm.py; known: {", ".join(PRESETS)}')
  config = ml_collections.ConfigDict()
  config.method = 'ebm'
  config.seed = 0

  # Gravel: the EBM detects its defects within the CPU budget; on brick's faint defects it stays near chance
  # (README, EBM).
  config.data = config_defaults.data(category='gravel')

  config.model = ml_collections.ConfigDict()
  config.model.first_features = 32  # Table 3: 3x3 conv to 32 channels.
  config.model.features = (64, 128, 256, 256)  # Stride-2 4x4 convs; Table 3 has five (for 128x128).
  # Stride-2 convs: 'strided_vjp' (fastest SGLD on CPU), 'space_to_depth' or 'direct'; the same function
  # (adjax.models.energy).
  config.model.strided_impl = 'strided_vjp'
  # Input gradient of the stride-1 convs: 'hwio' (adjax.models.convolution, fast inside the SGLD scan on
  # CPU) or 'lax' (JAX's own rule); the same function.
  config.model.conv_vjp = 'hwio'
  # 'bfloat16': convs compute in bfloat16 (parameters, energies and the chain stay float32); for accelerators.
  config.model.compute_dtype = 'float32'

  config.ebm = ml_collections.ConfigDict()
  config.ebm.chain_init = 'uniform'  # 'uniform' (non-persistent, paper) or 'replay' (persistent).
  config.ebm.sgld_steps = 40
  config.ebm.step_size = 1.0  # x <- x - step_size * dE/dx + noise_scale * N(0, I) (Nijkamp et al.).
  config.ebm.noise_scale = 0.01
  config.ebm.grad_clip = 0.0  # 0: no clipping of dE/dx in the chain.
  config.ebm.value_range = (-1.0, 1.0)  # Chains stay in the data range.
  config.ebm.data_noise = 0.03
  config.ebm.regularization = 0.0  # Weight of E(x+)^2 + E(x-)^2 (off in the paper).
  config.ebm.replay_size = 10000
  config.ebm.reinit_probability = 0.05
  config.ebm.std_eps = 1e-6

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 1e-4
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.grad_clip_norm = 0.0

  config.train = config_defaults.train(num_steps=60, log_every=10, checkpoint_every=30)

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 32
  config.eval.map = 'std'  # 'std' (standardized gradients, paper best) or 'raw'.
  config.eval.score = 'std'  # 'std', 'raw' (norm over pixels, Eq. 3), 'std_max', 'raw_max' or 'energy'.
  config.eval.norm = 'l2'  # Norm over channels (pixel score) and over pixels (image score): 'l1' | 'l2'.
  config.eval.fpr_limit = 0.3
  config.eval.num_bins = 0  # 0: exact pixel metrics; else binned with this many bins.

  if preset == 'smoke':
    config.data.image_size = 16
    config.model.first_features = 8
    config.model.features = (16, 16)
    config.ebm.sgld_steps = 5
    config.train.batch_size = 4
    config.train.num_steps = 4
    config.train.log_every = 2
    config.train.checkpoint_every = 2
    config.eval.batch_size = 16
  elif preset == 'paper':
    config.data.name = 'mvtec_ad'
    config.data.category = 'carpet'
    config.data.image_size = 128
    config.model.features = (64, 128, 256, 256, 256)
    config.ebm.sgld_steps = 100
    config.train.batch_size = 64
    config.train.num_steps = 20000
    config.train.log_every = 100
    config.train.checkpoint_every = 1000
  return config
