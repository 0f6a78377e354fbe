"""Bilinear upsampling, the same function as `jax.image.resize(..., 'bilinear')`, fast for integer factors.

`jax.image.resize` computes a resize as one interpolation matmul per spatial axis, each with the axis moved
to the front and back again: on CPU several transposed copies of the whole map. For an integer factor f,
half-pixel centres put output pixel f i + p at input coordinate i + d_p, d_p = (p + 1/2) / f - 1/2, between
the same two input pixels for every i: each phase p is a weighted sum of two shifted copies of the input
(the edge pixel repeated at the borders, which is what resize's renormalised weights do there), and the
phases interleave by a reshape. Elementwise work XLA fuses into one pass per axis. A custom VJP computes the
adjoint in the same form (each phase's gradient added back onto the two pixels it read): the transpose JAX
derives materialised every shifted, padded copy of the gradient (OCC's 224² train step: 3592 MB of XLA
buffers with it, 2833 MB with the custom VJP, `python -m adjax.bench --methods=occ`).
"""

import functools
from typing import Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np


def _taps(factor: int):
  """Per output phase p: (low, weight) — it reads input pixels i + low and i + low + 1 with weights 1 - w, w."""
  taps = []
  for phase in range(factor):
    offset = (phase + 0.5) / factor - 0.5  # In (-1/2, 1/2).
    low = int(np.floor(offset))
    taps.append((low, offset - low))
  return taps


def _upsample_axis(x: jax.Array, factor: int, axis: int) -> jax.Array:
  length = x.shape[axis]
  padded = jnp.concatenate([lax.slice_in_dim(x, 0, 1, axis=axis), x,
                            lax.slice_in_dim(x, length - 1, length, axis=axis)], axis=axis)
  phases = [(1 - weight) * lax.slice_in_dim(padded, 1 + low, 1 + low + length, axis=axis)
            + weight * lax.slice_in_dim(padded, 2 + low, 2 + low + length, axis=axis)
            for low, weight in _taps(factor)]
  shape = list(x.shape)
  shape[axis] *= factor
  return jnp.stack(phases, axis=axis + 1).reshape(shape)


def _upsample_axis_transpose(grad: jax.Array, factor: int, axis: int) -> jax.Array:
  """The adjoint of `_upsample_axis`: each phase's gradient added back onto the two pixels it read.

  Input pixel k gets (1 - w) g_p[k - low] + w g_p[k - low - 1] from phase p, read from the phases padded by
  one zero on both sides (materialised once; fused into the sums, XLA:CPU kept each shifted copy as its
  own buffer).
  """
  length = grad.shape[axis] // factor
  phases = grad.reshape(grad.shape[:axis] + (length, factor) + grad.shape[axis + 1:])
  widths = [(1, 1, 0) if dim == axis else (0, 0, 0) for dim in range(phases.ndim)]
  padded = lax.optimization_barrier(lax.pad(phases, jnp.zeros((), grad.dtype), widths))
  total, first, last = None, 0, 0
  for phase, (low, weight) in enumerate(_taps(factor)):
    padded_phase = lax.index_in_dim(padded, phase, axis=axis + 1, keepdims=False)
    term = ((1 - weight) * lax.slice_in_dim(padded_phase, 1 - low, 1 - low + length, axis=axis)
            + weight * lax.slice_in_dim(padded_phase, -low, -low + length, axis=axis))
    total = term if total is None else total + term
    # The edge pixels also get the clamped reads beyond them: pixel 0 from phases reading one to its left,
    # the last pixel from phases reading one to its right (padded[1] and padded[length] are g_p[0], g_p[-1]).
    if low < 0:
      first = first + (1 - weight) * lax.slice_in_dim(padded_phase, 1, 2, axis=axis)
    else:
      last = last + weight * lax.slice_in_dim(padded_phase, length, length + 1, axis=axis)
  if length == 1:
    return total + first + last
  return jnp.concatenate([lax.slice_in_dim(total, 0, 1, axis=axis) + first,
                          lax.slice_in_dim(total, 1, length - 1, axis=axis),
                          lax.slice_in_dim(total, length - 1, length, axis=axis) + last], axis=axis)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _upsample(x, factor_h, factor_w):
  for axis, factor in ((1, factor_h), (2, factor_w)):
    if factor > 1:
      x = _upsample_axis(x, factor, axis)
  return x


def _upsample_forward(x, factor_h, factor_w):
  return _upsample(x, factor_h, factor_w), None


def _upsample_backward(factor_h, factor_w, _, grad):
  for axis, factor in ((2, factor_w), (1, factor_h)):
    if factor > 1:
      grad = _upsample_axis_transpose(grad, factor, axis)
  return (grad,)


_upsample.defvjp(_upsample_forward, _upsample_backward)


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
  return _upsample(x, out_height // height, out_width // width)
