"""A stride-1 2-D convolution whose input gradient XLA:CPU runs fast inside loops (`lax.scan`).

JAX differentiates `lax.conv_general_dilated` w.r.t. its input as a convolution of the output gradient
with the flipped kernel, read in `[height, width, out, in]` order (XLA `dim_labels=..._01oi`) instead of
transposing it. Outside loops XLA:CPU makes a transposed copy and calls its fast convolution; inside a
`while` body (every `lax.scan`, so every SGLD chain) it does not, and that convolution ran ≈ 2.5x slower
than the whole rest of the step (`python -m adjax.bench --methods=ebm` measures it; the README's
Performance section has the figures). `conv2d` computes the same function with a custom VJP whose
input gradient transposes the flipped kernel explicitly to `[height, width, in, out]` (HWIO), which XLA
keeps inside loops. The kernel gradient is JAX's own.

`flax_conv_general_dilated` plugs it into `flax.linen.Conv(..., conv_general_dilated=...)`; any call it
does not cover (strides, dilations, groups, other layouts) goes to `lax.conv_general_dilated` unchanged.
Forward-mode differentiation (`jax.jvp`) is not defined through a custom VJP; reverse mode of any
order is.
"""

import functools
from typing import Sequence

import jax
from jax import lax

NHWC_HWIO = ('NHWC', 'HWIO', 'NHWC')

Padding = tuple[tuple[int, int], tuple[int, int]]


def _conv(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=NHWC_HWIO)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  """Stride-1 convolution, the same function as `lax.conv_general_dilated` with NHWC/HWIO.

  Args:
    x: float [batch, height, width, in_channels].
    kernel: float [kernel_height, kernel_width, in_channels, out_channels].
    padding: ((top, bottom), (left, right)) zero padding, non-negative ints.

  Returns:
    float [batch, height + top + bottom - kernel_height + 1, width + left + right - kernel_width + 1,
    out_channels].
  """
  return _conv(x, kernel, padding)


def _conv2d_forward(x, kernel, padding):
  return _conv(x, kernel, padding), (x, kernel)


def _conv2d_backward(padding, residuals, grad_out):
  x, kernel = residuals
  # dL/dx = grad_out (*) kernel flipped in space with in/out swapped, padded so that the 'full'
  # correlation lands on x's grid: k - 1 - pad on each side.
  flipped = kernel[::-1, ::-1].transpose(0, 1, 3, 2)
  input_padding = tuple((size - 1 - low, size - 1 - high)
                        for (low, high), size in zip(padding, kernel.shape[:2]))
  grad_x = _conv(grad_out, flipped, input_padding)
  _, kernel_vjp = jax.vjp(lambda k: _conv(x, k, padding), kernel)
  (grad_kernel,) = kernel_vjp(grad_out)
  return grad_x, grad_kernel


conv2d.defvjp(_conv2d_forward, _conv2d_backward)


def _is_nhwc_hwio(dimension_numbers, lhs_shape, rhs_shape) -> bool:
  if dimension_numbers is None:
    return False
  wanted = lax.conv_dimension_numbers(lhs_shape, rhs_shape, NHWC_HWIO)
  given = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
  return given == wanted


def flax_conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                              padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                              feature_group_count: int = 1, precision=None, **kwargs) -> jax.Array:
  """`lax.conv_general_dilated`'s signature; stride-1 undilated NHWC/HWIO 2-D convs use `conv2d`."""
  plain = all(s == 1 for s in window_strides) and not kwargs and precision is None
  plain &= all(d == 1 for d in (lhs_dilation or ())) and all(d == 1 for d in (rhs_dilation or ()))
  plain &= lhs.ndim == 4 and feature_group_count == 1
  if plain and _is_nhwc_hwio(dimension_numbers, lhs.shape, rhs.shape):
    if isinstance(padding, str):
      padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    return conv2d(lhs, rhs, tuple((int(low), int(high)) for low, high in padding))
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                  rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                  feature_group_count=feature_group_count, precision=precision, **kwargs)
