"""Reconstruction autoencoders (seed 001 LAMP, seed 003 CAE / DAE / contractive / Mixer) as one method.

Every combination is a config (see `configs/lamp.py`, `configs/cae.py`):
  model.architecture    'lamp' (seed 001 conv AE) | 'cae' (seed 003 Table 1) | 'fully_conv' (Table 2)
  loss.base             'l2' | 'l1' | 'ssim' (1 - SSIM map): the per-pixel training loss
  lamp.enabled          amplify the base loss, -log(1 - L / max L * (1 - epsilon)) (seed 001 Eq. 1-2)
  denoising.scale       > 0: train on clamp(x + scale * N(0, 1)), reconstruct the clean x (test: clean)
  contractive.weight    > 0: add weight * ||J_E(x)||_F^2 (exact or Hutchinson), seed 003 Eq. 8
  mixer.num_categories  > 0: latent classifier with cross-entropy (weight 3) over categories
  optim.name            'sgd' | 'rmsprop' | 'adam'

Scores (all at input resolution): maps `l2`, `l1` (channel mean of the squared / absolute error) and
`ssim` (channel mean of 1 - SSIM); image scores `l2` (mean squared error, seed 001's score), `l1`,
`ssim`, `<map>_max`, and `mixer` = score[mixer.score] - T[predicted category] (> 0 = anomalous).

Thresholds (seed 003 Eq. 6): T <- (1 - alpha) T + alpha (mu + beta sigma) per category, from training
scores only. The paper updates once per training epoch with the scores seen during that epoch; adjax
computes the training split's scores once in `fit`, with the final model on clean images, and applies
the same update once per epoch trained (from `threshold.initial`), i.e. the paper's recursion with the
final model's statistics standing in for every epoch's. Test data never reach `fit`.

The contractive penalty differentiates the encoder with BatchNorm on its running averages: examples
must not interact through the batch for a per-example Jacobian (see `losses.contractive_penalty`).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adjax import processes
from adjax.data import sources
from adjax.errors import InputError
from adjax.losses import reconstruction as rec_losses
from adjax.methods import Method, cast_floating, compute_dtype
from adjax.models import autoencoders

MAP_NAMES = ('l2', 'l1', 'ssim')
CATEGORY_KEY = 'category_index'  # int [batch] in train batches of a multi-category dataset.


def make_optimizer(optim, *, steps_per_epoch: int = 1) -> optax.GradientTransformation:
  """SGD (momentum), RMSprop or Adam (seed 003: eps 1e-6), optional decoupled weight decay, optional
  reduce-on-plateau (`optim.plateau_factor` > 0, seed 003 Sec. 3.7).

  The plateau watches the training loss averaged over `optim.plateau_epochs` epochs of `steps_per_epoch`
  steps: seed 003 watches a validation metric, but the only labelled data here is the test split, which
  must not steer training. The learning rate is multiplied by `plateau_factor` after `plateau_patience`
  such averages without a relative improvement of `plateau_rtol`.
  """
  name = optim.name
  if name == 'sgd':
    base = optax.sgd(optim.learning_rate, momentum=optim.get('momentum') or None)
  elif name == 'rmsprop':
    base = optax.rmsprop(optim.learning_rate, decay=optim.get('decay', 0.9), eps=optim.get('eps', 1e-8))
  elif name == 'adam':
    base = optax.adam(optim.learning_rate, b1=optim.get('b1', 0.9), b2=optim.get('b2', 0.999),
                      eps=optim.get('eps', 1e-8))
  else:
    raise InputError(f"config.optim.name: 'sgd', 'rmsprop' or 'adam', got {name!r}")
  parts = [base]
  if optim.get('weight_decay'):
    parts.insert(0, optax.add_decayed_weights(optim.weight_decay))
  factor = optim.get('plateau_factor', 0.0)
  if factor:
    if not 0.0 < factor < 1.0:
      raise InputError(f'config.optim.plateau_factor: must be in (0, 1) (0 = off), got {factor}')
    parts.append(optax.contrib.reduce_on_plateau(
        factor=factor, patience=optim.get('plateau_patience', 10), rtol=optim.get('plateau_rtol', 1e-4),
        accumulation_size=max(1, round(optim.get('plateau_epochs', 1) * steps_per_epoch))))
  return parts[0] if len(parts) == 1 else optax.chain(*parts)


def build_model(config) -> autoencoders.Autoencoder:
  m = config.model
  return autoencoders.build(
      architecture=m.architecture, image_size=config.data.image_size, channels=m.get('channels', 3),
      features=tuple(m.get('features') or ()) or None, num_blocks=m.get('num_blocks') or None,
      kernel_size=m.get('kernel_size', 3), latent_dim=m.get('latent_dim', 128),
      bottleneck=m.get('bottleneck', 1024), output_activation=m.get('output_activation', 'tanh'),
      init_std=m.init_std, patches_per_side=m.get('patches_per_side', 1),
      num_classes=config.mixer.num_categories, head_hidden=tuple(config.mixer.hidden),
      head_dropout=config.mixer.dropout)


def num_threshold_updates(config, train_size: int | None) -> int:
  """Epochs trained (one threshold update each, as the paper): `train.num_epochs` or steps * batch / N."""
  if config.train.get('num_epochs'):
    return max(1, math.ceil(config.train.num_epochs))
  if not train_size:
    return 1
  return max(1, math.ceil(config.train.num_steps * config.train.batch_size / train_size))


def error_maps(images, reconstruction, *, data_range: float, ssim_window: int) -> dict:
  """Per-pixel errors `[batch, height, width]` (channel means) for every name in `MAP_NAMES`."""
  ssim = rec_losses.ssim_loss_map(images, reconstruction, data_range=data_range, window_size=ssim_window)
  return {'l2': jnp.mean(rec_losses.l2_map(images, reconstruction), axis=-1),
          'l1': jnp.mean(rec_losses.l1_map(images, reconstruction), axis=-1),
          'ssim': jnp.mean(ssim, axis=-1)}


def make(config, *, train_size: int | None = None) -> Method:
  """Builds the method from `config.model`, `.loss`, `.lamp`, `.denoising`, `.contractive`, `.mixer`,
  `.threshold`, `.optim`, `.eval`; `train_size` sets the number of threshold updates (epochs)."""
  model = build_model(config)
  loss_cfg, lamp_cfg, mixer = config.loss, config.lamp, config.mixer
  if loss_cfg.base not in MAP_NAMES:
    raise InputError(f"config.loss.base: 'l2', 'l1' or 'ssim', got {loss_cfg.base!r}")
  if loss_cfg.pixel_reduction not in ('mean', 'sum'):
    raise InputError(f"config.loss.pixel_reduction: 'mean' or 'sum', got {loss_cfg.pixel_reduction!r}")
  if config.contractive.method not in ('exact', 'hutchinson'):
    raise InputError(f"config.contractive.method: 'exact' or 'hutchinson', got {config.contractive.method!r}")
  score_names = MAP_NAMES + tuple(f'{name}_max' for name in MAP_NAMES)
  if mixer.score not in score_names:
    raise InputError(f'config.mixer.score: one of {", ".join(score_names)}, got {mixer.score!r}')
  if config.eval.score not in score_names + ('mixer',) or config.eval.map not in MAP_NAMES:
    raise InputError(f'config.eval.score / config.eval.map: scores are {", ".join(score_names)}, mixer; '
                     f'maps are {", ".join(MAP_NAMES)}; got {config.eval.score!r} / {config.eval.map!r}')
  num_data_categories = len(sources.categories_of(name=config.data.name, category=config.data.category))
  if mixer.num_categories > 1 and mixer.num_categories != num_data_categories:
    raise InputError(f'config.mixer.num_categories: {mixer.num_categories}, but config.data.category '
                     f'{config.data.category!r} has {num_data_categories} categories')
  # Thresholds per true category (seed 003 trains one model, so one threshold, per category).
  num_classes = max(1, mixer.num_categories, num_data_categories)
  data_range, ssim_window = loss_cfg.data_range, loss_cfg.ssim_window
  patches = config.model.get('patches_per_side', 1)
  updates = num_threshold_updates(config, train_size)
  steps_per_epoch = math.ceil((train_size or config.train.batch_size) / config.train.batch_size)
  value_range = tuple(config.denoising.value_range)
  dtype = compute_dtype(config.model)

  def apply(variables, images, **kwargs):
    """`model.apply` computing in `dtype` (parameters and inputs cast; batch statistics and outputs float32)."""
    variables = dict(variables, params=cast_floating(variables['params'], dtype))
    outputs = model.apply(variables, cast_floating(images, dtype), **kwargs)
    return outputs if dtype is None else cast_floating(outputs, jnp.float32)

  def init(rng, images):
    return autoencoders.init_variables(model, rng, images, init_std=config.model.init_std)

  def base_loss_map(images, reconstruction):
    if loss_cfg.base == 'l2':
      return rec_losses.l2_map(images, reconstruction)
    if loss_cfg.base == 'l1':
      return rec_losses.l1_map(images, reconstruction)
    return rec_losses.ssim_loss_map(images, reconstruction, data_range=data_range, window_size=ssim_window)

  def categories(batch):
    if mixer.num_categories <= 1:
      return jnp.zeros(batch['image'].shape[:1], jnp.int32)
    if CATEGORY_KEY not in batch:
      raise InputError(f'config.mixer.num_categories: {mixer.num_categories} categories need training '
                       f'batches with {CATEGORY_KEY!r} (a multi-category dataset); this dataset has one '
                       f'category, so set mixer.num_categories to 0 or 1')
    return batch[CATEGORY_KEY].astype(jnp.int32)

  def loss_fn(params, model_state, batch, rng):
    images = batch['image']
    noise_rng, dropout_rng, probe_rng = jax.random.split(rng, 3)
    inputs = images
    if config.denoising.scale > 0:
      inputs = rec_losses.denoising_corruption(noise_rng, images, scale=config.denoising.scale,
                                               value_range=value_range)
    (reconstruction, _, logits), new_state = apply(
        {'params': params, **model_state}, inputs, train=True, mutable=['batch_stats'],
        rngs={'dropout': dropout_rng})
    base = base_loss_map(images, reconstruction)
    if lamp_cfg.enabled:
      reconstruction_loss = rec_losses.lamp(base, epsilon=lamp_cfg.epsilon, reduction=lamp_cfg.reduction,
                                            stop_gradient_max=lamp_cfg.stop_gradient_max)
      if loss_cfg.pixel_reduction == 'mean':
        reconstruction_loss = reconstruction_loss / math.prod(base.shape[1:])
    else:
      reduce = jnp.mean if loss_cfg.pixel_reduction == 'mean' else jnp.sum
      reconstruction_loss = reduce(base, axis=(1, 2, 3))
    per_example = reconstruction_loss
    metrics = {'reconstruction_loss': reconstruction_loss,
               'mse': jnp.mean(rec_losses.l2_map(images, reconstruction), axis=(1, 2, 3))}
    if config.contractive.weight > 0:
      encoder_inputs = autoencoders.to_patches(inputs, patches) if patches > 1 else inputs
      encoder_fn = lambda x: apply({'params': params, **model_state}, x,
                                   method=lambda module, x: module.encoder(x, train=False))
      penalty = rec_losses.contractive_penalty(
          encoder_fn, encoder_inputs, method=config.contractive.method,
          num_projections=config.contractive.num_projections, rng=probe_rng)
      penalty = penalty.reshape(images.shape[0], -1).sum(axis=1)  # Patches of one image add up.
      per_example = per_example + config.contractive.weight * penalty
      metrics['contractive_penalty'] = penalty
    if logits is not None:
      classes = categories(batch)
      if patches > 1:  # One latent per patch: every patch predicts its image's category.
        classes = jnp.repeat(classes, patches * patches)
      cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, classes)
      cross_entropy = cross_entropy.reshape(images.shape[0], -1).mean(axis=1)
      per_example = per_example + mixer.classifier_weight * cross_entropy
      metrics['cross_entropy'] = cross_entropy
    return per_example, (dict(new_state), metrics)

  def raw_outputs(variables, images):
    """Error maps, image scores (without `mixer`) and predicted categories `[batch]`."""
    reconstruction, latent, logits = apply(
        {'params': variables['params'], 'batch_stats': variables['batch_stats']}, images, train=False)
    maps = error_maps(images, reconstruction, data_range=data_range, ssim_window=ssim_window)
    scores = {name: jnp.mean(value, axis=(1, 2)) for name, value in maps.items()}
    scores.update({f'{name}_max': jnp.max(value, axis=(1, 2)) for name, value in maps.items()})
    if logits is None:
      predicted = jnp.zeros(images.shape[:1], jnp.int32)
    else:  # Patch logits are averaged per image.
      predicted = jnp.argmax(logits.reshape(images.shape[0], -1, logits.shape[-1]).mean(axis=1), axis=-1)
    return maps, scores, predicted

  @jax.jit
  def score(variables, statistics, images):
    maps, scores, predicted = raw_outputs(variables, images)
    thresholds = statistics['class_thresholds'][mixer.score]
    scores['mixer'] = scores[mixer.score] - thresholds[predicted]
    return maps, scores

  raw_outputs_jit = jax.jit(raw_outputs)

  def fit(variables, make_batches):
    """Per-category thresholds (Eq. 6, `updates` times) of every score from the training split."""
    scores, classes, predicted = {}, [], []
    for batch in make_batches():
      valid = np.asarray(batch['valid'])
      _, batch_scores, batch_predicted = raw_outputs_jit(variables, jnp.asarray(batch['image']))
      for name, value in batch_scores.items():
        scores.setdefault(name, []).append(np.asarray(value)[valid])
      classes.append(np.asarray(batch.get(CATEGORY_KEY, np.zeros(valid.shape, np.int32)))[valid])
      predicted.append(np.asarray(batch_predicted)[valid])
    # Several processes: each scored its share of the training split; the thresholds see all of it.
    gathered = processes.gather_rows({'scores': {k: np.concatenate(v) for k, v in scores.items()},
                                      'classes': np.concatenate(classes), 'predicted': np.concatenate(predicted)})
    classes = jnp.asarray(gathered['classes'])
    thresholds = {}
    for name, values in gathered['scores'].items():
      values = jnp.asarray(values)
      current = jnp.full((num_classes,), config.threshold.initial, jnp.float32)
      for _ in range(updates):
        current = rec_losses.ema_class_thresholds(current, values, classes, alpha=config.threshold.alpha,
                                                  beta=config.threshold.beta)
      thresholds[name] = current
    # Without a Mixer every image is 'predicted' category 0: the accuracy is only meaningful with one.
    accuracy = np.mean(gathered['predicted'] == np.asarray(classes))
    return {'class_thresholds': thresholds, 'train_category_accuracy': jnp.float32(accuracy)}

  def thresholds(statistics):
    if config.eval.score == 'mixer':
      return {'image': 0.0, 'pixel': None}
    per_class = np.asarray(statistics['class_thresholds'][config.eval.score])
    if per_class.size == 1:
      return {'image': float(per_class[0]), 'pixel': None}
    return {'image': None, 'pixel': None, 'image_by_category': per_class.tolist()}

  return Method(name='reconstruction', init=init, loss_fn=loss_fn, fit=fit, score=score,
                optimizer=make_optimizer(config.optim, steps_per_epoch=steps_per_epoch),
                thresholds=thresholds)
