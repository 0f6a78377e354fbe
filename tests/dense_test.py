"""`dense.matmul` is `lax.dot_general` over the last axis (values, gradients of any order) without the
transposed copy of the output gradient XLA:CPU makes for JAX's kernel-gradient rule."""

import re

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from adjax.models import dense


def _lax_matmul(x, kernel):
  return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _inputs(x_shape, kernel_shape, dtype=jnp.float32, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=x_shape), dtype), jnp.asarray(rng.normal(size=kernel_shape), dtype))


@pytest.mark.parametrize('x_shape', [(7, 5), (2, 3, 4, 5), (5,)])
def test_values_and_gradients_equal_lax(x_shape):
  x, kernel = _inputs(x_shape, (5, 6))
  np.testing.assert_allclose(dense.matmul(x, kernel), _lax_matmul(x, kernel), rtol=1e-6, atol=1e-6)
  loss = lambda f: lambda x, k: jnp.sum(jnp.sin(f(x, k)))
  ours, theirs = (jax.grad(loss(f), argnums=(0, 1))(x, kernel) for f in (dense.matmul, _lax_matmul))
  for got, want in zip(ours, theirs):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Second order: the gradient w.r.t. the kernel of a penalty on the input gradient.
  penalty = lambda f: lambda k: jnp.sum(jnp.square(jax.grad(loss(f))(x, k)))
  np.testing.assert_allclose(jax.grad(penalty(dense.matmul))(kernel), jax.grad(penalty(_lax_matmul))(kernel),
                             rtol=1e-4, atol=1e-4)


def test_bfloat16_gradients_keep_their_dtypes():
  x, kernel = _inputs((4, 3, 8), (8, 2), jnp.bfloat16)
  grads = jax.grad(lambda x, k: jnp.sum(dense.matmul(x, k).astype(jnp.float32)), argnums=(0, 1))(x, kernel)
  assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]
  assert dense.matmul(x, kernel).dtype == jnp.bfloat16


def test_flax_dense_with_it_equals_default_dense_and_others_fall_back():
  x = _inputs((2, 4, 4, 6), (6, 6))[0]
  ours, plain = nn.Dense(5, dot_general=dense.flax_dot_general), nn.Dense(5)
  params = plain.init(jax.random.key(1), x)
  np.testing.assert_allclose(ours.apply(params, x), plain.apply(params, x), rtol=1e-6, atol=1e-6)
  grads = [jax.grad(lambda p, m=m: jnp.sum(jnp.square(m.apply(p, x))))(params) for m in (ours, plain)]
  for got, want in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Batch axes and other contractions are lax's.
  a, b = _inputs((3, 4, 5), (3, 5, 2))
  numbers = (((2,), (1,)), ((0,), (0,)))
  np.testing.assert_array_equal(dense.flax_dot_general(a, b, numbers), lax.dot_general(a, b, numbers))


def test_kernel_gradient_has_no_transposed_copy_of_the_output_gradient():
  """The reason for the module: JAX's rule makes XLA:CPU write the output gradient transposed first."""
  if jax.default_backend() != 'cpu':
    pytest.skip('XLA:CPU layout check')
  x, kernel = _inputs((16, 16, 16, 96), (96, 80))
  center = jnp.linspace(-1., 1., 80)

  def kernel_gradient_hlo(f):
    loss = lambda k: jnp.sum(jnp.square(f(x, k) - center) / (1 + jnp.sum(jnp.square(f(x, k)), -1, keepdims=True)))
    return jax.jit(jax.grad(loss)).lower(kernel).compile().as_text()

  transposed = re.compile(r'= f32\[80,4096\]\S* (fusion|copy|transpose)\(')
  assert not transposed.search(kernel_gradient_hlo(dense.matmul))
  # Guard the test itself: if XLA stops transposing for JAX's rule, this test no longer shows anything.
  assert transposed.search(kernel_gradient_hlo(_lax_matmul))
