"""3x3 stride-1 convolution by Winograd's minimal filtering F(m x m, 3 x 3) (Lavin & Gray, CVPR 2016).

The output is cut into m x m tiles; each tile reads an (m + 2) x (m + 2) input tile d and is

    Y = A^T [ (G g G^T) ⊙ (B^T d B) ]_summed over input channels A

so the channel contraction becomes (m + 2)^2 independent matmuls [tiles, in] @ [in, out], one per point of
the transformed tile: (m + 2)^2 / m^2 multiplications per output instead of 9, i.e. 2.25x fewer for m = 2
and 4x for m = 4. The transforms are sums of strided slices of the input (B^T, whose entries are small
integers) and of the matmul outputs (A^T), which XLA fuses into elementwise loops.

Same function as the direct convolution up to float rounding: in float32, m = 2 stays within 5e-6 of
the output's largest value of `lax.conv_general_dilated`'s result, m = 4 (points 0, ±1, ±2) within 1e-4
(`tests/winograd_test.py`). The
transforms touch (m + 2)^2 / m^2 times the input and output, so the matmuls must be large enough to pay for
it: many channels on small maps (VGG's blocks 3-5, ResNet's later stages); `convolution.conv2d` decides when
(`convolution.WINOGRAD_MIN_CHANNELS`), and `python scripts/conv_speed.py --tables 7` measures it.
"""

import functools
from typing import Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

# (B^T, G, A^T) of F(2x2, 3x3) and F(4x4, 3x3) (interpolation points 0, 1, -1 and 0, ±1, ±2, plus infinity).
_TRANSFORMS = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
        np.array([[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]]),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]])),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                  [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                  [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]])),
}
OUTPUT_TILES = tuple(_TRANSFORMS)


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


def transformed_kernel(kernel: jax.Array, *, output_tile: int = 2) -> jax.Array:
  """U = G g G^T for every (in, out) pair: float [3, 3, in, out] -> [(m + 2)^2, in, out]."""
  _, g, _ = _TRANSFORMS[output_tile]
  g = jnp.asarray(g, kernel.dtype)
  transformed = jnp.einsum('ik,klco,jl->ijco', g, kernel, g, precision=lax.Precision.HIGHEST)
  return transformed.reshape(-1, *kernel.shape[2:])


def conv3x3(x: jax.Array, kernel: jax.Array, padding, *, output_tile: int = 2) -> jax.Array:
  """Stride-1 3x3 convolution (NHWC / HWIO), the same function as `lax.conv_general_dilated` up to rounding.

  Differentiable to any order in reverse mode: the input gradient is again a Winograd 3x3 conv (of the
  output gradient with the kernel flipped, in/out swapped, padding 2 - padding), the kernel gradient a
  direct convolution (differentiating through the transforms ran slower there).

  Args:
    x: float [batch, height, width, in_channels].
    kernel: float [3, 3, in_channels, out_channels].
    padding: ((top, bottom), (left, right)) zero padding, ints in [0, 2].
    output_tile: m of F(m x m, 3 x 3), 2 or 4.

  Returns:
    float [batch, height + top + bottom - 2, width + left + right - 2, out_channels].
  """
  if kernel.shape[:2] != (3, 3):
    raise ValueError(f'winograd.conv3x3: kernel {kernel.shape} is not 3x3')
  if output_tile not in _TRANSFORMS:
    raise ValueError(f'winograd.conv3x3: output_tile {output_tile} is not one of {OUTPUT_TILES}')
  padding = tuple((int(low), int(high)) for low, high in padding)
  if not all(0 <= pad <= 2 for pair in padding for pad in pair):
    raise ValueError(f'winograd.conv3x3: padding {padding} must lie in [0, 2]')
  return _conv3x3(x, kernel, padding, output_tile)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv3x3(x, kernel, padding, output_tile):
  return _winograd(x, kernel, padding, output_tile)


def _conv3x3_forward(x, kernel, padding, output_tile):
  return _winograd(x, kernel, padding, output_tile), (x, kernel)


def _conv3x3_backward(padding, output_tile, residuals, grad_out):
  x, kernel = residuals
  flipped = kernel[::-1, ::-1].transpose(0, 1, 3, 2)
  grad_x = _conv3x3(grad_out, flipped, tuple((2 - low, 2 - high) for low, high in padding), output_tile)
  direct = lambda k: lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  _, kernel_vjp = jax.vjp(direct, kernel)
  return grad_x, kernel_vjp(grad_out)[0]


_conv3x3.defvjp(_conv3x3_forward, _conv3x3_backward)


def _winograd(x, kernel, padding, output_tile):
  """conv3x3's value: transforms, (m + 2)^2 matmuls, inverse transform."""
  input_matrix, _, output_matrix = _TRANSFORMS[output_tile]
  m, a = output_matrix.shape
  (top, bottom), (left, right) = padding
  batch, height, width, in_channels = x.shape
  out_h, out_w = height + top + bottom - 2, width + left + right - 2
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
