"""`upsampling.bilinear` is `jax.image.resize(..., 'bilinear')`: values and gradients, integer factors in
the two-tap form, other sizes through resize itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjax.models import upsampling
from jaxpr_helpers import primitive_names


def _resize(x, size):
  return jax.image.resize(x, (x.shape[0], *size, x.shape[3]), 'bilinear')


@pytest.mark.parametrize('shape, size', [((2, 3, 5, 2), (6, 10)), ((1, 7, 4, 3), (28, 16)), ((2, 4, 4, 1), (12, 8)),
                                         ((1, 1, 2, 2), (5, 2)), ((2, 5, 5, 2), (5, 5)), ((1, 4, 6, 2), (7, 9))])
def test_values_and_gradients_equal_jax_image_resize(shape, size):
  x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
  weights = jnp.asarray(np.random.default_rng(1).normal(size=(shape[0], *size, shape[3])), jnp.float32)

  @jax.jit  # One program: op-by-op dispatch of the phases is slow to compile.
  def values_and_gradients(x):
    return [jax.value_and_grad(lambda x, f=f: jnp.sum(weights * f(x, size)))(x) + (f(x, size),)
            for f in (upsampling.bilinear, _resize)]

  (_, grad, value), (_, want_grad, want_value) = values_and_gradients(x)
  np.testing.assert_allclose(value, want_value, rtol=0, atol=2e-6)
  np.testing.assert_allclose(grad, want_grad, rtol=0, atol=1e-5)


def test_integer_factors_take_no_interpolation_matmul():
  """The reason for the module: resize's per-axis matmuls and the transposes around them."""
  x = jnp.ones((2, 7, 7, 3))
  assert 'dot_general' not in primitive_names(jax.make_jaxpr(lambda x: upsampling.bilinear(x, (28, 14)))(x))
  assert 'dot_general' in primitive_names(jax.make_jaxpr(lambda x: _resize(x, (28, 14)))(x))
