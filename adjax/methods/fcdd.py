"""FCDD and the pixel-wise hypersphere loss (seed 000): one adjax method, two settings of `config.fcdd.loss`.

  'fcdd'  Eq. 4 (Liznerski et al.): per image, mean((1 - Y) A) + p(mean(Y A))
  'hsc'   Eq. 5 (seed 000): per pixel, (1 - Y) A + |J0| / |J1| Y p(A), averaged over all pixels of the batch
A is the heatmap of `adjax.models.fcdd` (pseudo-Huber + receptive-field Gaussian upsampling) at input
resolution, Y the pixel mask of the batch: confetti noise (unsupervised) or real anomalies (semi-supervised,
`adjax.data.semi_supervised`). An anomalous image with an empty mask (e.g. confetti's 'malformed_normal'
mode or a mask-less real anomaly) counts as anomalous everywhere.

Network: VGG11-BN trunk cut before the 4th max-pool with weights from `config.model.backbone_weights`, frozen
up to the 3rd max-pool (`stop_gradient` in the model + zero updates through `adjax.models.freezing`), or a
small from-scratch CNN trunk. BatchNorm: in training mode every BatchNorm layer, frozen ones included,
normalises with batch statistics and updates its running statistics, as FCDD's reference code does
(`model.frozen_bn_eval=True` keeps the frozen layers on their ImageNet statistics instead). Scoring uses the
running statistics.

Optimiser (seed 000 Sec. 4): SGD, Nesterov momentum 0.9, weight decay 1e-4 (added to the gradient, as torch),
learning rate 1e-3 x 0.985 per FCDD epoch, where an FCDD epoch is `fcdd.passes_per_epoch` (10) passes over the
normal training images. `train.num_epochs` of the loop counts single passes over the training split.

Scores: map `heatmap` (A, upsampled); image scores `mean` (mean of the low-resolution pseudo-Huber map, FCDD's
image score) and `max` (max of A, the MVTec reference convention).
"""

from absl import logging
import jax
import jax.numpy as jnp
import optax

from adjax.errors import InputError
from adjax.losses import fcdd as fcdd_losses
from adjax.methods import Method, compute_dtype
from adjax.models import fcdd as fcdd_models
from adjax.models import freezing
from adjax.models import weights

LOSSES = ('fcdd', 'hsc')


def _image_size(size) -> tuple[int, int]:
  height, width = (size, size) if isinstance(size, int) else tuple(size)
  return int(height), int(width)


def learning_rate_schedule(optim, *, steps_per_epoch: float | None) -> optax.Schedule:
  """lr * decay_per_epoch ** floor(update / updates_per_epoch); constant if `steps_per_epoch` is None.

  Counted in optimizer updates: with `accumulate_steps` k, an epoch has steps_per_epoch / k updates.
  """
  if not steps_per_epoch:
    logging.warning('FCDD: training-set size unknown, learning rate stays at %g (no per-epoch decay)',
                    optim.learning_rate)
    return optax.constant_schedule(optim.learning_rate)
  return optax.exponential_decay(
      optim.learning_rate, transition_steps=steps_per_epoch / (optim.get('accumulate_steps', 1) or 1),
      decay_rate=optim.decay_per_epoch, staircase=True)


def make_optimizer(optim, *, steps_per_epoch: float | None, model_config) -> optax.GradientTransformation:
  """SGD (Nesterov) with weight decay and a per-epoch exponential learning-rate decay; frozen VGG prefix.

  `steps_per_epoch` None (training-set size unknown): constant learning rate.
  """
  accumulate = optim.get('accumulate_steps', 1) or 1
  learning_rate = learning_rate_schedule(optim, steps_per_epoch=steps_per_epoch)
  tx = optax.chain(optax.add_decayed_weights(optim.weight_decay),
                   optax.sgd(learning_rate, momentum=optim.momentum, nesterov=optim.nesterov))
  frozen_until = model_config.get('frozen_until') or None
  if frozen_until:
    tx = freezing.freeze(tx, model=weights.create_model(fcdd_models.VGG_ARCH), frozen_until=frozen_until,
                         backbone_path=('backbone',))
  if accumulate > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=accumulate)
  return tx


def effective_masks(masks: jax.Array, labels: jax.Array) -> jax.Array:
  """Pixel targets [batch, height, width]: an anomalous image with an empty mask is anomalous everywhere."""
  empty = jnp.sum(masks, axis=(1, 2)) == 0
  whole = (labels == 1) & empty
  return jnp.where(whole[:, None, None], 1.0, masks.astype(jnp.float32))


def _masked_mean(values, weights_):
  return jnp.sum(values * weights_, axis=(1, 2)) / jnp.maximum(jnp.sum(weights_, axis=(1, 2)), 1.0)


def fcdd_steps_per_epoch(config, *, train_size: int | None) -> float | None:
  """Train steps per FCDD epoch: `fcdd.passes_per_epoch` passes over the normal training images.

  A semi-supervised training split repeats its few real anomalies as `data.anomaly_fraction` of its items
  (`adjax.data.semi_supervised`); those slots stand for the replaced images and do not lengthen the epoch.
  """
  if not train_size:
    return None
  semi_supervised = bool(config.data.get('labeled_anomalies_per_type'))
  normal_fraction = 1.0 - (config.data.get('anomaly_fraction', 0.5) if semi_supervised else 0.0)
  return config.fcdd.passes_per_epoch * train_size * normal_fraction / config.train.batch_size


def make(config, *, train_size: int | None = None) -> Method:
  """Builds the FCDD method from `config.model`, `config.fcdd`, `config.optim`, `config.data.image_size`.

  `train_size`: number of training images (the learning-rate decay is per FCDD epoch).
  """
  hp, model_config = config.fcdd, config.model
  if hp.loss not in LOSSES:
    raise InputError(f'config.fcdd.loss: {hp.loss!r} is not one of {", ".join(LOSSES)}')
  trunk = model_config.trunk
  cnn_layers = tuple(model_config.get('cnn_layers') or fcdd_models.DEFAULT_CNN_LAYERS)
  fcdd_models.check_options(trunk=trunk, cnn_layers=cnn_layers)
  frozen_until = model_config.get('frozen_until') or None
  if frozen_until and trunk != fcdd_models.VGG_ARCH:
    raise InputError(f'config.model.frozen_until: {frozen_until!r} needs trunk {fcdd_models.VGG_ARCH!r}; '
                     f'the {trunk!r} trunk trains from scratch (set it to "")')
  model = fcdd_models.FCDDNet(trunk=trunk, cnn_layers=cnn_layers, dtype=compute_dtype(model_config))
  heatmap = fcdd_models.make_heatmap_fn(
      trunk=trunk, image_size=_image_size(config.data.image_size), order=hp.heatmap_order,
      std=hp.get('upsample_std') or None, cnn_layers=cnn_layers)

  backbone = None
  if trunk == fcdd_models.VGG_ARCH:
    # Warns loudly and initialises randomly when backbone_weights is empty.
    backbone = weights.load_backbone_variables(fcdd_models.VGG_ARCH, model_config.backbone_weights,
                                               outputs=(fcdd_models.VGG_CUT,))
  else:
    logging.warning('FCDD: FROM-SCRATCH CNN trunk %s (no pretrained weights; the seed uses an ImageNet '
                    'VGG11-BN trunk)', cnn_layers)
  if config.data.get('labeled_anomalies_per_type') and 'confetti' in config.data.train_preprocess:
    logging.warning('FCDD: real labelled anomalies and confetti noise in one training; the seed never '
                    'mixes them (drop confetti from data.train_preprocess)')

  steps_per_epoch = fcdd_steps_per_epoch(config, train_size=train_size)

  def init(rng, images):
    variables = dict(model.init(rng, images))
    if backbone is not None:
      variables['params'] = dict(variables['params'], backbone=backbone['params'])
      variables['batch_stats'] = dict(variables['batch_stats'], backbone=backbone['batch_stats'])
    return variables

  def loss_fn(params, model_state, batch, rng):
    del rng
    low_res, updates = model.apply({'params': params, **model_state}, batch['image'], train=True,
                                   frozen_until=frozen_until, frozen_bn_eval=model_config.frozen_bn_eval,
                                   mutable=['batch_stats'])
    heat, _ = heatmap(low_res)
    masks = effective_masks(batch['mask'], batch['label'])
    if hp.loss == 'fcdd':
      per_example = fcdd_losses.fcdd_loss(heat, masks)
    else:  # The mean over this per-image mean is the mean over all pixels of the batch (Eq. 5).
      per_example = jnp.mean(fcdd_losses.pixel_hsc_loss(heat, masks), axis=(1, 2))
    metrics = {'heat_normal': _masked_mean(heat, 1 - masks), 'heat_anomalous': _masked_mean(heat, masks),
               'anomalous_pixel_fraction': jnp.mean(masks, axis=(1, 2))}
    return per_example, (dict(model_state, **updates), metrics)

  def fit(variables, make_batches):
    del variables, make_batches  # FCDD needs no post-training statistics.
    return {}

  @jax.jit
  def score(variables, statistics, images):
    del statistics
    heat, low_heat = heatmap(model.apply(variables, images, train=False))
    return ({'heatmap': heat},
            {'mean': jnp.mean(low_heat, axis=(1, 2)), 'max': jnp.max(heat, axis=(1, 2))})

  return Method(name='fcdd', init=init, loss_fn=loss_fn, fit=fit, score=score,
                optimizer=make_optimizer(config.optim, steps_per_epoch=steps_per_epoch,
                                         model_config=model_config))
