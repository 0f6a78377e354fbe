"""Stride-1 convolution by Winograd's minimal filtering F(m x m, r x r) (Lavin & Gray, CVPR 2016).

The output is cut into m x m tiles; each tile reads an a x a input tile d (a = m + r - 1) and is

    Y = A^T [ (G g G^T) ⊙ (B^T d B) ]_summed over input channels A

so the channel contraction becomes a^2 independent matmuls [tiles, in] @ [in, out], one per point of the
transformed tile: a^2 / m^2 multiplications per output instead of r^2 (3x3 kernels: 2.25x fewer for m = 2,
4x for m = 4; 2x2 kernels: 2.25x for m = 3). The transforms are sums of strided slices of the input (B^T,
scaled to small integers) and of the matmul outputs (A^T), which XLA fuses into elementwise loops.
`transforms(m, r)` builds (B^T, G, A^T) exactly, in fractions, by Cook-Toom from the points 0, 1, -1, 2,
-2, ... and infinity; for F(2x2, 3x3) and F(4x4, 3x3) these are Lavin & Gray's matrices up to the sign
of a row.

Same function as the direct convolution up to float rounding: in float32, F(2x2, 3x3) and F(3x3, 2x2)
stay within 5e-6 of the output's largest value of `lax.conv_general_dilated`'s result, F(4x4, 3x3)
(points up to ±2) within 1e-4 (`tests/winograd_test.py`). The transforms touch a^2 / m^2 times the
input and output, so the matmuls must be large enough to pay for it: many channels on small maps (VGG's
blocks 3-5, ResNet's later stages); `convolution.conv2d` decides when
(`convolution.winograd_tile`), and `python scripts/conv_speed.py --tables 7,8` measures it.
"""

from fractions import Fraction
import functools
import math
from typing import Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

# Interpolation points in the order used (then infinity): small values keep the rounding error low.
_POINTS = (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2))
# The largest tile a = m + r - 1 the points allow.
MAX_INPUT_TILE = len(_POINTS) + 1


def _inverse(matrix: list[list[Fraction]]) -> list[list[Fraction]]:
  """Exact inverse of a square matrix of Fractions (Gauss-Jordan)."""
  n = len(matrix)
  rows = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
  for col in range(n):
    pivot = next(r for r in range(col, n) if rows[r][col] != 0)
    rows[col], rows[pivot] = rows[pivot], rows[col]
    rows[col] = [value / rows[col][col] for value in rows[col]]
    for r in range(n):
      if r != col and rows[r][col] != 0:
        rows[r] = [left - rows[r][col] * right for left, right in zip(rows[r], rows[col])]
  return [row[n:] for row in rows]


@functools.cache
def transforms(output_tile: int, kernel_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(B^T [a, a], G [a, r], A^T [m, a]) of F(m, r), a = m + r - 1, exact up to float64 rounding.

  The correlation y_i = sum_k g_k d_(i + k) is the transpose of the linear convolution of g with a length-m
  signal, which Cook-Toom computes by evaluation at a - 1 points and infinity and interpolation:
  s = V_a^-1 [(V_r g) ⊙ (V_m d)], V_n the [a, n] matrix of rows (1, p, ..., p^(n - 1)) (infinity: the top
  coefficient). Transposed: y = V_m^T [(V_r g) ⊙ (V_a^-T d)], so A^T = V_m^T, G = V_r, B^T = V_a^-T. Each
  row of B^T is scaled to integers and the inverse scale moved into G, so the input transform adds only.
  """
  m, r = output_tile, kernel_size
  a = m + r - 1
  if m < 1 or r < 2 or a > MAX_INPUT_TILE:
    raise ValueError(f'winograd: no F({m}, {r}) (needs output tile >= 1, kernel >= 2, m + r - 1 <= '
                     f'{MAX_INPUT_TILE})')
  points = _POINTS[:a - 1]

  def vandermonde(n):
    return [[Fraction(p)**i for i in range(n)] for p in points] + [[Fraction(0)] * (n - 1) + [Fraction(1)]]

  inverse = _inverse(vandermonde(a))
  input_t = [[inverse[k][j] for k in range(a)] for j in range(a)]
  kernel_t = vandermonde(r)
  for j, row in enumerate(input_t):
    scale = math.lcm(*(value.denominator for value in row))
    input_t[j] = [value * scale for value in row]
    kernel_t[j] = [value / scale for value in kernel_t[j]]
  output_t = [list(column) for column in zip(*vandermonde(m))]
  as_array = lambda rows: np.array([[float(value) for value in row] for row in rows])
  return as_array(input_t), as_array(kernel_t), as_array(output_t)


def _combine(coefficients: np.ndarray, arrays: Sequence[jax.Array]) -> jax.Array:
  """sum_k coefficients[k] * arrays[k], skipping zeros and multiplications by ±1."""
  terms = []
  for coefficient, array in zip(coefficients, arrays):
    if coefficient == 0:
      continue
    if abs(coefficient) == 1:
      terms.append(array if coefficient > 0 else -array)
    else:
      terms.append(float(coefficient) * array)
  return functools.reduce(jnp.add, terms)


def _transform_along(x: jax.Array, matrix: np.ndarray, *, axis: int, tiles: int, step: int) -> list[jax.Array]:
  """Rows of `matrix` applied to the tiles along `axis`: out[i][t] = sum_k matrix[i, k] x[step * t + k]."""
  slices = [lax.slice_in_dim(x, k, k + step * (tiles - 1) + 1, step, axis) for k in range(matrix.shape[1])]
  return [_combine(row, slices) for row in matrix]


def transformed_kernel(kernel: jax.Array, *, output_tile: int) -> jax.Array:
  """U = G g G^T for every (in, out) pair: float [r, r, in, out] -> [a^2, in, out], a = output_tile + r - 1."""
  _, g, _ = transforms(output_tile, kernel.shape[0])
  g = jnp.asarray(g, kernel.dtype)
  transformed = jnp.einsum('ik,klco,jl->ijco', g, kernel, g, precision=lax.Precision.HIGHEST)
  return transformed.reshape(-1, *kernel.shape[2:])


def conv(x: jax.Array, kernel: jax.Array, padding, *, output_tile: int) -> jax.Array:
  """Stride-1 r x r convolution (NHWC / HWIO), the same function as `lax.conv_general_dilated` up to rounding.

  Differentiable to any order in reverse mode: the input gradient is again a Winograd conv (of the output
  gradient with the kernel flipped, in/out swapped, padding r - 1 - padding), the kernel gradient a direct
  convolution (differentiating through the transforms ran slower there).

  Args:
    x: float [batch, height, width, in_channels].
    kernel: float [r, r, in_channels, out_channels], r >= 2.
    padding: ((top, bottom), (left, right)) zero padding, ints in [0, r - 1].
    output_tile: m of F(m x m, r x r).

  Returns:
    float [batch, height + top + bottom - r + 1, width + left + right - r + 1, out_channels].
  """
  size = kernel.shape[0]
  if kernel.ndim != 4 or kernel.shape[1] != size:
    raise ValueError(f'winograd.conv: kernel {kernel.shape} is not square [r, r, in, out]')
  transforms(output_tile, size)  # Raises for tiles the points do not cover.
  padding = tuple((int(low), int(high)) for low, high in padding)
  if not all(0 <= pad <= size - 1 for pair in padding for pad in pair):
    raise ValueError(f'winograd.conv: padding {padding} must lie in [0, {size - 1}]')
  return _conv(x, kernel, padding, output_tile)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, kernel, padding, output_tile):
  return _winograd(x, kernel, padding, output_tile)


def _conv_forward(x, kernel, padding, output_tile):
  return _winograd(x, kernel, padding, output_tile), (x, kernel)


def _conv_backward(padding, output_tile, residuals, grad_out):
  x, kernel = residuals
  size = kernel.shape[0]
  flipped = kernel[::-1, ::-1].transpose(0, 1, 3, 2)
  grad_x = _conv(grad_out, flipped, tuple((size - 1 - low, size - 1 - high) for low, high in padding),
                 output_tile)
  direct = lambda k: lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  _, kernel_vjp = jax.vjp(direct, kernel)
  return grad_x, kernel_vjp(grad_out)[0]


_conv.defvjp(_conv_forward, _conv_backward)


def _winograd(x, kernel, padding, output_tile):
  """conv's value: transforms, a^2 matmuls, inverse transform."""
  size = kernel.shape[0]
  input_matrix, _, output_matrix = transforms(output_tile, size)
  m, a = output_matrix.shape
  (top, bottom), (left, right) = padding
  batch, height, width, in_channels = x.shape
  out_h, out_w = height + top + bottom - size + 1, width + left + right - size + 1
  tiles_h, tiles_w = -(-out_h // m), -(-out_w // m)
  # Padding to whole tiles; the extra outputs are cut off at the end.
  x = jnp.pad(x, ((0, 0), (top, bottom + tiles_h * m - out_h), (left, right + tiles_w * m - out_w), (0, 0)))
  rows = _transform_along(x, input_matrix, axis=1, tiles=tiles_h, step=m)  # a x [batch, tiles_h, W, in]
  transformed = [column for row in rows
                 for column in _transform_along(row, input_matrix, axis=2, tiles=tiles_w, step=m)]
  transformed = jnp.stack(transformed).reshape(a * a, -1, in_channels)  # [a^2, batch * tiles, in]
  products = lax.dot_general(transformed, transformed_kernel(kernel, output_tile=output_tile),
                             (((2,), (1,)), ((0,), (0,))))  # [a^2, batch * tiles, out]
  products = products.reshape(a, a, batch, tiles_h, tiles_w, -1)
  partial = [[_combine(output_matrix[p], [products[i, j] for i in range(a)]) for j in range(a)]
             for p in range(m)]
  outputs = [[_combine(output_matrix[q], partial[p]) for q in range(m)] for p in range(m)]
  # outputs[p][q]: output pixel (m * tile_row + p, m * tile_col + q), [batch, tiles_h, tiles_w, out].
  y = jnp.stack([jnp.stack(row, axis=3) for row in outputs], axis=2)  # [batch, tiles_h, m, tiles_w, m, out]
  y = y.reshape(batch, tiles_h * m, tiles_w * m, -1)
  return y[:, :out_h, :out_w]
