"""Tests of adjax.losses.ebm: the contrastive-divergence loss (through the package re-export)."""

import jax
import jax.numpy as jnp
from jax import test_util
import numpy as np
import pytest

from adjax import losses


def test_contrastive_divergence_values():
  energy_pos = jnp.array([1.0, 2.0, -0.5])
  energy_neg = jnp.array([3.0, -1.0, -0.5])
  np.testing.assert_allclose(losses.contrastive_divergence(energy_pos, energy_neg),
                             [-2.0, 3.0, 0.0])


def test_contrastive_divergence_regularizer():
  energy_pos = jnp.array([1.0, 2.0, -0.5])
  energy_neg = jnp.array([3.0, -1.0, -0.5])
  # E+ - E- + 0.5 * (E+^2 + E-^2), by hand.
  expected = [-2.0 + 0.5 * (1 + 9), 3.0 + 0.5 * (4 + 1), 0.0 + 0.5 * (0.25 + 0.25)]
  np.testing.assert_allclose(
      losses.contrastive_divergence(energy_pos, energy_neg, regularization=0.5), expected)


def test_contrastive_divergence_gradients():
  rng = np.random.default_rng(0)
  energy_pos = jnp.asarray(rng.normal(size=5))
  energy_neg = jnp.asarray(rng.normal(size=5))

  def total(pos, neg):
    return jnp.sum(losses.contrastive_divergence(pos, neg, regularization=0.3))

  test_util.check_grads(total, (energy_pos, energy_neg), order=2, modes=('fwd', 'rev'))
  grad_pos, grad_neg = jax.grad(total, argnums=(0, 1))(energy_pos, energy_neg)
  # d/dE+ = 1 + 0.6 E+ (pushes data energy down), d/dE- = -1 + 0.6 E- (pushes samples up).
  np.testing.assert_allclose(grad_pos, 1 + 0.6 * energy_pos, rtol=1e-6)
  np.testing.assert_allclose(grad_neg, -1 + 0.6 * energy_neg, rtol=1e-6)


def test_contrastive_divergence_traced_regularization_under_jit():
  loss = jax.jit(losses.contrastive_divergence)(jnp.ones(2), jnp.zeros(2), regularization=0.25)
  np.testing.assert_allclose(loss, [1.25, 1.25])


@pytest.mark.parametrize('shapes', [((3,), (4,)), ((2, 3), (2, 3))])
def test_contrastive_divergence_rejects_bad_shapes(shapes):
  with pytest.raises(ValueError):
    losses.contrastive_divergence(jnp.zeros(shapes[0]), jnp.zeros(shapes[1]))
