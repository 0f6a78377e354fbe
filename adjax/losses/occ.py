"""Losses of one-class classification with a data-agnostic hypersphere center (seed 002).

  squared_distance  ||z - c||^2 over the feature axis
  soft_boundary     max(||z - c||^2 - R^2, 0) (Eq. 15 as loss, Eq. 17 as pixel score)
"""

import jax
import jax.numpy as jnp


def squared_distance(features: jax.Array, center: jax.Array) -> jax.Array:
  """Squared Euclidean distance of every feature vector to the center.

  Args:
    features: float [..., channels] projected features z (e.g. [batch, height, width, channels]).
    center: float [channels] hypersphere center c.

  Returns:
    float [...] ||z - c||^2, one value per feature vector (not reduced).
  """
  if center.ndim != 1 or features.shape[-1] != center.shape[0]:
    raise ValueError(f'squared_distance expects features [..., {center.shape[-1]}] and a center [channels], '
                     f'got {features.shape} and {center.shape}')
  return jnp.sum(jnp.square(features - center), axis=-1)


def soft_boundary(features: jax.Array, center: jax.Array, *, radius: float = 1e-5) -> jax.Array:
  """max(||z - c||^2 - R^2, 0) per feature vector: zero inside the hypersphere of radius R.

  Seed 002 uses it both as the training loss (Eq. 15, R = 1e-5) and as the pixel anomaly score (Eq. 17).
  The gradient is that of ||z - c||^2 outside the sphere and zero inside.

  Args:
    features: float [..., channels] projected features z.
    center: float [channels] hypersphere center c (a constant: no gradient is meant to reach it).
    radius: R >= 0.

  Returns:
    float [...] one value per feature vector (not reduced).
  """
  return jnp.maximum(squared_distance(features, center) - radius ** 2, 0.0)
