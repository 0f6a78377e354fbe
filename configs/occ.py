"""OCC with a data-agnostic center (seed 002): `python -m adjax.main --config=configs/occ.py[:preset]`.

Backbone weights: `model.backbone_weights` is a local .safetensors/.pth/.msgpack file (torchvision or timm
names; see `adjax.models.weights`). EMPTY BY DEFAULT: with no file the encoder is RANDOMLY initialised
(a loud warning is logged) and the numbers are those of random features, not of the paper's ImageNet
features. No weights can be downloaded on the build machines, so every measured figure in the README is
for a random encoder.

Presets
  smoke    whole run in seconds on 2 CPU cores (tests use it); numbers mean nothing.
  default  embedded brick texture at 64x64, ResNet-18 layer1-3 (448 channels at 16x16), 60 epochs (1125
           steps) of the 1x1 projector with the feature cache: 6.4 min wall on 2 busy CPU cores (318 s of
           training); random encoder: image AUROC 0.637, pixel AUROC 0.661 (measured).
  paper_a  protocol A (image-level one-class classification): ResNet-152 penultimate (2048), 224 crops,
           batch 64, 20 epochs, on `digits` (one normal digit; set data.category) or any one-class dataset.
  paper_b  protocol B (detection + segmentation): Wide-ResNet-50-2 layer1..layer3 (1792 channels at 56x56
           for 224 input; the paper's "layers 2, 3, 4" counting the stem as layer 1), batch 16, 50 epochs,
           MVTec AD (set data.manual_dir and data.category).
  paper_c  protocol C (online): paper_b with batch 1 on one device and one epoch (each training image seen
           once); `scripts/occ_experiment.py online` scores it after every chunk.
Optimizer everywhere: Adam lr 1e-4 with L2 weight decay 5e-4; center N(0, 1), norm 1, seed 1024; R = 1e-5.
"""

import ml_collections

from adjax import config_defaults

PRESETS = ('smoke', 'default', 'paper_a', 'paper_b', 'paper_c')
IMAGENET_SPEC = 'resize({resize})|center_crop({image_size})|normalize("imagenet")'


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or 'default'
  if preset not in PRESETS:
    raise ValueError(f'unknown preset {preset!r} for configs/occ.py; known: {", ".join(PRESETS)}')
  config = ml_collections.ConfigDict()
  config.method = 'occ'
  config.seed = 0

  # Deterministic preprocessing (no augmentation, as in the paper) is what makes the feature cache hit.
  config.data = config_defaults.data(preprocess='resize({image_size})|normalize("imagenet")')

  config.model = ml_collections.ConfigDict()
  config.model.backbone = 'resnet18'  # resnet18 | resnet50 | resnet152 | wide_resnet50_2
  config.model.backbone_weights = ''  # Empty: RANDOM encoder (loud warning). Give a weights file.
  config.model.feature_layers = ('layer1', 'layer2', 'layer3')  # Or ('penultimate',) for protocol A.
  config.model.projector = 'conv1x1'  # 'conv1x1' (with bias, paper) or 'linear' (no bias).
  # 'bfloat16': encoder and projector compute in bfloat16 (parameters, distances and losses stay float32); for
  # accelerators.
  config.model.compute_dtype = 'float32'

  config.occ = ml_collections.ConfigDict()
  config.occ.center_distribution = 'normal'  # normal | uniform | ones | feature_mean
  config.occ.center_norm = 1.0
  config.occ.center_seed = 1024
  config.occ.radius = 1e-5
  config.occ.cache_features = True  # Encoder once per training image; one device; useless with augmentation.
  config.occ.threshold = 'three_sigma'  # three_sigma (training scores) | radius (d > R) | none (test F1)

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 1e-4
  config.optim.weight_decay = 5e-4

  # 60 epochs set num_steps = ceil(epochs * train_size / batch_size). The feature cache works on one device
  # (0: all local devices, no cache). The checkpoint holds the (constant) encoder too: keep one.
  config.train = config_defaults.train(num_epochs=60, num_steps=0, num_devices=1, log_every=100,
                                       checkpoint_every=1000, checkpoints_to_keep=1)

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 32
  config.eval.map = 'distance'  # max(||z - c||^2 - R^2, 0) upsampled to the input.
  config.eval.score = 'max'  # 'max' (MVTec convention) or 'mean' of the map.
  config.eval.smoothing_sigma = 0.0  # Gaussian blur of the map, in input pixels (0: none).
  config.eval.fpr_limit = 0.3
  config.eval.num_bins = 0  # 0: exact pixel metrics; else binned with this many bins.

  if preset == 'smoke':
    config.data.image_size = 32
    config.train.batch_size = 4
    config.train.num_epochs = 0
    config.train.num_steps = 4
    config.train.log_every = 2
    config.train.checkpoint_every = 2
    config.eval.batch_size = 32
  elif preset in ('paper_a', 'paper_b', 'paper_c'):
    config.data.image_size = 224
    spec = IMAGENET_SPEC.replace('{resize}', '256')
    config.data.train_preprocess = spec
    config.data.eval_preprocess = spec
    config.train.log_every = 50
    if preset == 'paper_a':
      config.data.name = 'digits'
      config.data.category = '0'
      config.model.backbone = 'resnet152'
      config.model.feature_layers = ('penultimate',)
      config.train.batch_size = 64
      config.train.num_epochs = 20
    else:
      config.data.name = 'mvtec_ad'
      config.data.category = 'carpet'
      config.model.backbone = 'wide_resnet50_2'
      config.model.feature_layers = ('layer1', 'layer2', 'layer3')
      config.train.batch_size = 16
      config.train.num_epochs = 50
    if preset == 'paper_c':
      config.train.batch_size = 1
      config.train.num_devices = 1  # A batch of one image cannot be split over devices.
      config.train.num_epochs = 1  # One pass over the stream: no image is revisited.
      config.occ.cache_features = False  # Nothing is seen twice: a cache would only cost memory.
  return config
