"""Gradient maps of an energy and their per-pixel standardization (seed 004, Section 2).

    g(x) = d log p(x) / dx = -dE/dx             gradient map, Eq. 1
    l_k(x) = (g_k(x) - mu_k(x)) / sigma_k(x)    per pixel and channel; stats from training maps
    a(x) = (sum_k |l_k(x)|^r)^(1/r)              pixel score, Eq. 2 (`pixel_scores`)
    A = (sum_x |a(x)|^r)^(1/r)                   image score, Eq. 3 (`image_scores`)

mu and sigma are streamed over the training set with a pure, mergeable accumulator (`moments_*`:
per-batch two-pass moments combined with Chan et al.'s parallel update, stable for large means).
Thresholds without anomalous data: `three_sigma_threshold` (mean + 3 std of training scores).
"""

from typing import Callable

import jax
import jax.numpy as jnp

from adjax import errors

EnergyFn = Callable[[jax.Array], jax.Array]  # images [batch, height, width, channels] -> [batch]


def energy_and_gradient_map(energy_fn: EnergyFn,
                            images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Energies [batch] and gradient maps g = -dE/dx [batch, height, width, channels] in one pass.

  The map of image i is the gradient of sum_j E(x_j) w.r.t. x_i, which equals dE(x_i)/dx_i only
  because the images do not interact in `energy_fn` (true for `EnergyNet`, which has no BatchNorm;
  a net using batch statistics in the forward pass would break this).
  """
  energies, energy_vjp = jax.vjp(energy_fn, images)
  (grad,) = energy_vjp(jnp.ones_like(energies))
  return energies, -grad


def gradient_map(energy_fn: EnergyFn, images: jax.Array) -> jax.Array:
  """g(x) = d log p(x)/dx = -dE/dx, float [batch, height, width, channels] (seed 004, Eq. 1)."""
  return energy_and_gradient_map(energy_fn, images)[1]


def moments_init(shape: tuple[int, ...]) -> dict[str, jax.Array]:
  """Empty streaming moments of maps of one-image `shape`, e.g. [height, width, channels].

  The state is {'count': int32 [], 'mean': float32 shape, 'm2': float32 shape} where m2 is the sum
  of squared deviations from the mean (Welford's M2).
  """
  return {'count': jnp.zeros((), jnp.int32), 'mean': jnp.zeros(shape, jnp.float32),
          'm2': jnp.zeros(shape, jnp.float32)}


def moments_merge(a: dict[str, jax.Array], b: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Moments of the union of two disjoint sets (Chan et al. 1979), e.g. from two devices.

  Exact in exact arithmetic and associative, so per-device states can be merged in any order; the
  update uses only the difference of the means, which keeps it stable when values share a large
  offset.
  """
  count = a['count'] + b['count']
  count_a = a['count'].astype(jnp.float32)
  count_b = b['count'].astype(jnp.float32)
  total = jnp.maximum(count.astype(jnp.float32), 1.)  # both empty -> stays empty (all zeros)
  delta = b['mean'] - a['mean']
  mean = a['mean'] + delta * (count_b / total)
  m2 = a['m2'] + b['m2'] + jnp.square(delta) * (count_a * count_b / total)
  return {'count': count, 'mean': mean, 'm2': m2}


def moments_update(state: dict[str, jax.Array], batch_maps: jax.Array) -> dict[str, jax.Array]:
  """Adds a batch of maps [batch, *shape] to the state (two-pass batch moments, then merge)."""
  batch_maps = batch_maps.astype(jnp.float32)
  batch_mean = jnp.mean(batch_maps, axis=0)
  batch = {'count': jnp.asarray(batch_maps.shape[0], jnp.int32), 'mean': batch_mean,
           'm2': jnp.sum(jnp.square(batch_maps - batch_mean), axis=0)}
  return moments_merge(state, batch)


def moments_finalize(state: dict[str, jax.Array], *, eps: float = 1e-6,
                     ddof: int = 0) -> tuple[jax.Array, jax.Array]:
  """(mean, std) per element of the maps; std = max(sqrt(m2 / (count - ddof)), eps).

  The floor `eps` keeps `standardize` finite where the training maps are constant (std 0).
  """
  variance = state['m2'] / jnp.maximum(state['count'] - ddof, 1).astype(jnp.float32)
  return state['mean'], jnp.maximum(jnp.sqrt(variance), eps)


def standardize(maps: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
  """l = (g - mean) / std.

  Args:
    maps: float [batch, height, width, channels].
    mean, std: float [height, width, channels], e.g. from `moments_finalize`.

  Returns:
    float [batch, height, width, channels].
  """
  return (maps - mean) / std


# Norms over a channel axis this short are sums of the channels' slices: elementwise work XLA fuses into one
# pass, where a reduction over a minor axis of 3 went to a separate YNNPACK reduce on CPU (a small gain in the
# EBM's scores, `python scripts/conv_speed.py --tables 16`).
SLICED_NORM_MAX_CHANNELS = 4


def _norm(values: jax.Array, axis, norm: str) -> jax.Array:
  if norm == 'l1':
    magnitude = jnp.abs
  elif norm == 'l2':
    magnitude = jnp.square
  else:
    raise errors.InputError(f"score norm must be 'l1' or 'l2', got {norm!r}")
  if axis == -1 and values.shape[-1] <= SLICED_NORM_MAX_CHANNELS:
    total = sum((magnitude(values[..., k]) for k in range(1, values.shape[-1])), magnitude(values[..., 0]))
  else:
    total = jnp.sum(magnitude(values), axis=axis)
  return total if norm == 'l1' else jnp.sqrt(total)


def pixel_scores(maps: jax.Array, *, norm: str = 'l2') -> jax.Array:
  """a(x): L1 or L2 norm over channels of raw or standardized maps (Eq. 2).

  Args:
    maps: float [batch, height, width, channels].
    norm: 'l1' (sum_k |g_k|) or 'l2' (sqrt(sum_k g_k^2)).

  Returns:
    float [batch, height, width], higher = more anomalous.
  """
  return _norm(maps, -1, norm)


def image_scores(pixel_scores: jax.Array, *, norm: str = 'l2') -> jax.Array:
  """A: L1 or L2 norm over all pixels of pixel scores [batch, height, width] -> [batch] (Eq. 3)."""
  return _norm(pixel_scores, (1, 2), norm)


def three_sigma_threshold(train_scores: jax.Array, *, num_sigmas: float = 3.0) -> jax.Array:
  """mean + num_sigmas * std (population std, ddof 0) over all elements of `train_scores`.

  For images pass the training image scores [num_images]; for pixels pass the training pixel scores
  [num_images, height, width]: all pixels of all training images are pooled into one threshold (the
  "three-sigma rule" lines of seed 004, Fig. 3). Training scores are in-sample when the
  standardization statistics come from the same images, so this threshold tends to be on the low
  side.
  Returns a float32 scalar.
  """
  values = jnp.asarray(train_scores, jnp.float32).reshape(-1)
  return jnp.mean(values) + num_sigmas * jnp.std(values)
