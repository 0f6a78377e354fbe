"""Bilinear upsampling, the same function as `jax.image.resize(..., 'bilinear')`, fast for integer factors.

`jax.image.resize` computes a resize as one interpolation matmul per spatial axis, each with the axis moved
to the front and back again: on CPU several transposed copies of the whole map. For an integer factor f,
half-pixel centres put output pixel f i + p at input coordinate i + d_p, d_p = (p + 1/2) / f - 1/2, between
the same two input pixels for every i: each phase p is a weighted sum of two shifted copies of the input
(the edge pixel repeated at the borders, which is what resize's renormalised weights do there), and the
phases interleave by a reshape. Elementwise work XLA fuses into one pass per axis.
"""

from typing import Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np


def _upsample_axis(x: jax.Array, factor: int, axis: int) -> jax.Array:
  length = x.shape[axis]
  padded = jnp.concatenate([lax.slice_in_dim(x, 0, 1, axis=axis), x,
                            lax.slice_in_dim(x, length - 1, length, axis=axis)], axis=axis)
  phases = []
  for phase in range(factor):
    offset = (phase + 0.5) / factor - 0.5  # In (-1/2, 1/2): between input pixels i + low and i + low + 1.
    low = int(np.floor(offset))
    weight = offset - low
    first = lax.slice_in_dim(padded, 1 + low, 1 + low + length, axis=axis)
    second = lax.slice_in_dim(padded, 2 + low, 2 + low + length, axis=axis)
    phases.append((1 - weight) * first + weight * second)
  shape = list(x.shape)
  shape[axis] *= factor
  return jnp.stack(phases, axis=axis + 1).reshape(shape)


def bilinear(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """x float [batch, height, width, channels] -> [batch, size[0], size[1], channels].

  Equal to `jax.image.resize(x, (batch, *size, channels), 'bilinear')` (half-pixel centres, as PyTorch's
  `interpolate(..., align_corners=False)`) up to float rounding. Integer upsampling factors (1 included) per
  axis take the two-tap form of the module docstring; other sizes go to `jax.image.resize`.
  """
  height, width = x.shape[1:3]
  out_height, out_width = (int(value) for value in size)
  if out_height % height or out_width % width:
    return jax.image.resize(x, (x.shape[0], out_height, out_width) + x.shape[3:], 'bilinear')
  for axis, factor in ((1, out_height // height), (2, out_width // width)):
    if factor > 1:
      x = _upsample_axis(x, factor, axis)
  return x
