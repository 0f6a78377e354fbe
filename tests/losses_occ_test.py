"""OCC losses (seed 002) against numpy: squared distance, soft boundary, its gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjax.losses import occ as occ_losses


def _data(seed=0, shape=(2, 3, 4, 5)):
  rng = np.random.default_rng(seed)
  return rng.normal(size=shape).astype(np.float32), rng.normal(size=shape[-1]).astype(np.float32)


def test_squared_distance_matches_numpy():
  features, center = _data()
  expected = ((features.astype(np.float64) - center) ** 2).sum(-1)
  got = occ_losses.squared_distance(jnp.asarray(features), jnp.asarray(center))
  assert got.shape == (2, 3, 4)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize('radius', [1e-5, 2.0, 100.0])
def test_soft_boundary_matches_numpy(radius):
  features, center = _data(seed=1)
  expected = np.maximum(((features.astype(np.float64) - center) ** 2).sum(-1) - radius ** 2, 0.0)
  got = occ_losses.soft_boundary(jnp.asarray(features), jnp.asarray(center), radius=radius)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  if radius == 100.0:
    assert not np.any(np.asarray(got))  # Every vector lies inside a huge sphere.


def test_soft_boundary_gradient_is_zero_inside_and_2_z_minus_c_outside():
  features, center = _data(seed=2, shape=(6, 4))
  features[:3] = center + 0.01 * features[:3]  # Three vectors well inside R = 0.5.
  grad = jax.grad(lambda z: jnp.sum(occ_losses.soft_boundary(z, jnp.asarray(center), radius=0.5)))(
      jnp.asarray(features))
  expected = 2 * (features - center)
  expected[:3] = 0.0
  np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)


def test_shape_mismatch_is_refused():
  with pytest.raises(ValueError, match='channels'):
    occ_losses.squared_distance(jnp.zeros((2, 5)), jnp.zeros(4))
