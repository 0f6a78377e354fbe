"""Energy-based anomaly detection and localization (seed 004) as an adjax method.

Training: contrastive divergence between training images (plus small data noise) and negatives drawn by a
short-run SGLD chain started from uniform noise (paper default) or from a persistent replay buffer.
Scoring: the gradient map g(x) = -dE/dx, standardized per pixel and channel with training-set moments,
reduced over channels (pixel score a) and over pixels (image score A); the energy is a third image score.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adjax import losses
from adjax import processes
from adjax import sampling
from adjax import scoring
from adjax.methods import Method, compute_dtype
from adjax.models import energy


def make_optimizer(optim) -> optax.GradientTransformation:
  """Adam (Nijkamp et al. short-run EBMs: lr 1e-4), optional gradient clipping by global norm."""
  chain = []
  if optim.get('grad_clip_norm'):
    chain.append(optax.clip_by_global_norm(optim.grad_clip_norm))
  chain.append(optax.adam(optim.learning_rate, b1=optim.get('b1', 0.9), b2=optim.get('b2', 0.999)))
  return optax.chain(*chain)


def build_model(config) -> energy.EnergyNet:
  """EnergyNet from `config.model`: widths, `strided_impl`, `conv_vjp`, `compute_dtype` (float32 | bfloat16)."""
  return energy.EnergyNet(first_features=config.model.first_features, features=tuple(config.model.features),
                          strided_impl=config.model.get('strided_impl', 'strided_vjp'),
                          conv_vjp=config.model.get('conv_vjp', 'hwio'),
                          dtype=compute_dtype(config.model))


def make(config, *, train_size: int | None = None) -> Method:
  """Builds the EBM method from `config.model`, `config.ebm`, `config.optim`, `config.eval`.

  `train_size` is unused: the EBM's schedule is in steps.
  """
  del train_size
  model = build_model(config)
  hp = config.ebm
  sgld = functools.partial(
      sampling.sgld, num_steps=hp.sgld_steps, step_size=hp.step_size, noise_scale=hp.noise_scale,
      grad_clip=hp.get('grad_clip') or None,
      value_range=tuple(hp.value_range) if hp.get('value_range') else None)
  value_low, value_high = tuple(hp.get('value_range') or (-1.0, 1.0))
  persistent = hp.chain_init == 'replay'
  norm = config.eval.norm

  def init(rng, images):
    variables = dict(model.init(rng, images))
    if persistent:
      variables['replay'] = sampling.replay_buffer_init(
          jax.random.fold_in(rng, 1), size=hp.replay_size, shape=images.shape[1:],
          low=value_low, high=value_high)
    return variables

  def loss_fn(params, model_state, batch, rng):
    images = batch['image']
    noise_rng, init_rng, chain_rng = jax.random.split(rng, 3)
    positives = images + hp.data_noise * sampling.normal(noise_rng, images.shape)
    if persistent:
      start, indices = sampling.replay_buffer_sample(
          model_state['replay'], init_rng, batch_size=images.shape[0],
          reinit_probability=hp.reinit_probability, low=value_low, high=value_high)
    else:
      start = sampling.uniform_init(init_rng, images.shape, low=value_low, high=value_high)
    energy_fn = lambda x: model.apply({'params': jax.lax.stop_gradient(params)}, x)
    negatives = sgld(energy_fn, start, chain_rng)
    energy_pos = model.apply({'params': params}, positives)
    energy_neg = model.apply({'params': params}, negatives)
    per_example = losses.contrastive_divergence(energy_pos, energy_neg,
                                                regularization=hp.regularization)
    metrics = {'energy_positive': energy_pos, 'energy_negative': energy_neg}
    new_state = dict(model_state)
    if persistent:
      new_state['replay'] = model_state['replay']
      new_state['replay_update'] = (indices, negatives)
    return per_example, (new_state, metrics)

  def sync_state(model_state, axis_name):
    # Every device writes every device's new chains into its buffer copy, so the copies stay equal.
    if not persistent:
      return model_state
    indices, samples = model_state.pop('replay_update')
    indices = jax.lax.all_gather(indices, axis_name).reshape(-1)
    samples = jax.lax.all_gather(samples, axis_name)
    samples = samples.reshape((-1,) + samples.shape[2:])
    model_state['replay'] = sampling.replay_buffer_update(model_state['replay'], indices, samples)
    return model_state

  def apply_energy(variables, images):
    return model.apply({'params': variables['params']}, images)

  def raw_outputs(variables, images):
    """Energies `[batch]` and gradient maps `[batch, height, width, channels]`."""
    return scoring.energy_and_gradient_map(functools.partial(apply_energy, variables), images)

  def maps_and_scores(energies, gradients, mean, std):
    standardized = scoring.standardize(gradients, mean, std)
    maps = {'std': scoring.pixel_scores(standardized, norm=norm),
            'raw': scoring.pixel_scores(gradients, norm=norm)}
    scores = {name: scoring.image_scores(value, norm=norm) for name, value in maps.items()}
    # The MVTec reference evaluation scores an image by the max of its map; reported beside Eq. 3.
    scores.update({f'{name}_max': jnp.max(value, axis=(1, 2)) for name, value in maps.items()})
    scores['energy'] = energies
    return maps, scores

  raw_outputs_jit = jax.jit(raw_outputs)

  def fit(variables, make_batches):
    """Per-pixel, per-channel moments of training gradient maps, then three-sigma thresholds.

    Two passes over `make_batches()`: moments first, then the training scores the thresholds come from.
    """
    moments = None
    for batch in make_batches():
      # Padded rows are dropped on the host: the last batch may compile once more, nothing else does.
      images = jnp.asarray(np.asarray(batch['image'])[np.asarray(batch['valid'])])
      if moments is None:
        moments = scoring.moments_init(images.shape[1:])
      moments = scoring.moments_update(moments, raw_outputs_jit(variables, images)[1])
    mean, std = scoring.moments_finalize(processes.merge_across(moments, scoring.moments_merge), eps=hp.std_eps)
    statistics = {'mean': mean, 'std': std}
    pixel_values, image_values = {}, {}
    for batch in make_batches():
      maps, scores = score(variables, statistics, jnp.asarray(batch['image']))
      valid = batch['valid']
      for name, value in maps.items():
        pixel_values.setdefault(name, []).append(np.asarray(value)[valid])
      for name, value in scores.items():
        image_values.setdefault(name, []).append(np.asarray(value)[valid])
    # Several processes: every one fitted its share of the training split; all thresholds see all of it.
    gathered = processes.gather_rows({'pixel': {k: np.concatenate(v) for k, v in pixel_values.items()},
                                      'image': {k: np.concatenate(v) for k, v in image_values.items()}})
    statistics['pixel_threshold'] = {name: jnp.float32(scoring.three_sigma_threshold(np.ravel(v)))
                                     for name, v in gathered['pixel'].items()}
    statistics['image_threshold'] = {name: jnp.float32(scoring.three_sigma_threshold(v))
                                     for name, v in gathered['image'].items()}
    return statistics

  @jax.jit
  def score(variables, statistics, images):
    energies, gradients = raw_outputs(variables, images)
    return maps_and_scores(energies, gradients, statistics['mean'], statistics['std'])

  def thresholds(statistics):
    return {'image': float(statistics['image_threshold'][config.eval.score]),
            'pixel': float(statistics['pixel_threshold'].get(config.eval.map, np.nan))}

  return Method(name='ebm', init=init, loss_fn=loss_fn, fit=fit, score=score,
                optimizer=make_optimizer(config.optim), thresholds=thresholds, sync_state=sync_state)
