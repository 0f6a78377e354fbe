"""A dense layer's matmul whose kernel gradient XLA:CPU computes without transposing the output gradient.

`x [..., in] @ kernel [in, out]` is differentiated by JAX into dL/dkernel as a contraction of x with the
output gradient g over all leading axes, for which XLA:CPU writes g transposed ([out, n]) in a loop fusion
before the matmul: a strided copy far below memory speed (OCC's projector; its train step is ~10% faster
without it, `python scripts/conv_speed.py --tables 13`). `matmul`'s custom VJP contracts the flattened
x [n, in] and g [n, out] over their leading axis, which XLA's dot takes as it is. The same function: equal
values and gradients of any order (tests/dense_test.py). `flax_dot_general` plugs it into
`flax.linen.Dense(..., dot_general=...)`; other contractions go to `lax.dot_general` unchanged.
"""

import jax
from jax import lax
import jax.numpy as jnp


def _forward_product(x, kernel):
  return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


@jax.custom_vjp
def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x float [..., in] @ kernel float [in, out] -> [..., out] (same dtype; as `lax.dot_general`)."""
  return _forward_product(x, kernel)


def _matmul_forward(x, kernel):
  return _forward_product(x, kernel), (x, kernel)


def _matmul_backward(residuals, grad_out):
  x, kernel = residuals
  grad_x = lax.dot_general(grad_out, kernel, (((grad_out.ndim - 1,), (1,)), ((), ())))
  rows = x.reshape(-1, x.shape[-1])
  grad_rows = grad_out.reshape(-1, grad_out.shape[-1])
  grad_kernel = lax.dot_general(rows, grad_rows, (((0,), (0,)), ((), ())))
  return grad_x.astype(x.dtype), grad_kernel.astype(kernel.dtype)


matmul.defvjp(_matmul_forward, _matmul_backward)


def flax_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None,
                     preferred_element_type=None, **kwargs) -> jax.Array:
  """`lax.dot_general`'s signature; `flax.linen.Dense`'s contraction (last axis of lhs with the first of a
  2-D rhs, no batch axes, default precision, equal dtypes) uses `matmul`."""
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  plain = (tuple(lhs_contract) == (lhs.ndim - 1,) and tuple(rhs_contract) == (0,) and rhs.ndim == 2
           and not lhs_batch and not rhs_batch and precision is None and preferred_element_type is None
           and not kwargs and lhs.dtype == rhs.dtype and jnp.issubdtype(lhs.dtype, jnp.floating))
  if plain:
    return matmul(lhs, rhs)
  return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                         preferred_element_type=preferred_element_type, **kwargs)
