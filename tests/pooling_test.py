"""`pooling.max_pool_2x2` is flax's 2x2 stride-2 max pooling: same values, same gradients (ties included),
same second-order gradients, without `select_and_scatter_add`."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjax.models import pooling
from jaxpr_helpers import primitive_names


def flax_pool(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2))


def _tied_input(shape, seed=0):
  """Small integers: most windows hold equal values, so the tie-breaking rule matters."""
  return jnp.asarray(np.random.default_rng(seed).integers(-2, 3, shape), jnp.float32)


@pytest.mark.parametrize('shape', [(2, 6, 8, 3), (1, 7, 5, 2), (3, 2, 2, 1)])
def test_values_and_gradients_equal_flax_max_pool_with_ties(shape):
  x = _tied_input(shape)
  grad_out = jnp.asarray(np.random.default_rng(1).normal(size=flax_pool(x).shape), jnp.float32)
  ours, our_vjp = jax.vjp(pooling.max_pool_2x2, x)
  theirs, their_vjp = jax.vjp(flax_pool, x)
  np.testing.assert_array_equal(ours, theirs)
  np.testing.assert_array_equal(our_vjp(grad_out)[0], their_vjp(grad_out)[0])
  # Each window's gradient reaches exactly one pixel (the first maximum), odd rows/columns none.
  assert int(jnp.sum(our_vjp(jnp.ones_like(grad_out))[0])) == grad_out.size


def test_second_order_gradients_equal_flax():
  """d/ds ||d/dx sum(w * pool(s * x))||^2, the shape of the CAE's contractive penalty."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
  w = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 4, 3))

  def penalty(scale, pool):
    inner = jax.grad(lambda y: jnp.sum(w * pool(scale * y)))(x)
    return jnp.sum(inner ** 2)

  ours = jax.grad(penalty)(1.5, pooling.max_pool_2x2)
  np.testing.assert_allclose(ours, jax.grad(penalty)(1.5, flax_pool), rtol=1e-6)
  # The inner gradient is scale * w routed to the maxima, so the penalty is scale^2 ||w||^2.
  np.testing.assert_allclose(ours, 2 * 1.5 * jnp.sum(w ** 2), rtol=1e-5)


def test_the_gradient_avoids_select_and_scatter():
  """The reason for the module: JAX's rule for flax's pooling is `select_and_scatter_add` (slow on CPU)."""
  x = jnp.zeros((1, 4, 4, 1))
  grad_of = lambda pool: jax.make_jaxpr(jax.grad(lambda y: jnp.sum(pool(y))))(x)
  assert 'select_and_scatter_add' in primitive_names(grad_of(flax_pool))
  assert 'select_and_scatter_add' not in primitive_names(grad_of(pooling.max_pool_2x2))


def test_phase_maxima_outside_differentiation_and_the_reduction_inside():
  """Scoring takes elementwise maxima of the window phases, training the reduction; the values are equal."""
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 9, 6, 4)), jnp.float32)
  x = x.at[0, 0, 0, 0].set(jnp.nan)  # A NaN stays in its window's maximum either way.
  primal = jax.jit(pooling.max_pool_2x2)(x)
  differentiated, _ = jax.vjp(jax.jit(pooling.max_pool_2x2), x)
  np.testing.assert_array_equal(primal, differentiated)
  np.testing.assert_array_equal(primal, flax_pool(x))
  assert np.isnan(primal[0, 0, 0, 0]) and np.isnan(primal).sum() == 1
  assert 'reduce_max' not in primitive_names(jax.make_jaxpr(pooling.max_pool_2x2)(x))
  assert 'reduce_max' in primitive_names(jax.make_jaxpr(lambda y: jax.vjp(pooling.max_pool_2x2, y)[0])(x))
