"""2-D convolutions computed the way XLA:CPU runs fast; each is the same function as its `lax` counterpart.

- `conv2d` (stride 1, custom VJP). JAX differentiates a convolution w.r.t. its input as a convolution of the
  output gradient with the flipped kernel read in `[height, width, out, in]` order (XLA
  `dim_labels=..._01oi`). Outside loops XLA:CPU copies the kernel into its preferred layout; inside a `while`
  body (every `lax.scan`, so every SGLD chain) it does not, and the chain ran ≈ 2.3x slower. The custom VJP
  transposes the flipped kernel explicitly to HWIO, which XLA keeps inside loops.
- `strided_conv2d` (stride 2, custom VJP): the input gradient is `strided_input_gradient`, one stride-1
  convolution over the four output phases and a depth-to-space, instead of an lhs-dilated convolution (one
  exact convolution per phase for odd kernel sizes and on small maps).
- `conv_transpose2d`: a stride-2 transposed convolution in the same sub-pixel form.
- 3x3 stride-1 convolutions with many channels on maps that are not too small (`winograd_tile`) run as
  Winograd's F(2x2, 3x3) (`adjax.models.winograd`), forward and input gradient: 2.25x fewer multiplications.
- Stride-1 convolutions with at most `IM2COL_MAX_OUTPUT_PIXELS` outputs run as patches @ kernel, those with
  a few output channels from many inputs as one matmul and a shifted sum (`shifted_matmul_conv`).
- `upsample_conv2d`: nearest 2x upsampling followed by a stride-1 conv, computed on the small map: each of
  the four output phases is a conv of the input with the kernel's taps summed where they read the same
  input pixel (2x2 taps for a 3x3 kernel). The upsampled map is never built; 2.25x fewer FLOPs for 3x3.

`python scripts/conv_speed.py` measures each of these paths against `lax`; the README's Performance section has
the figures. `flax_conv_general_dilated` plugs `conv2d` / `strided_conv2d` into
`flax.linen.Conv(..., conv_general_dilated=...)`; calls they do not cover (other strides, dilations, groups,
layouts) go to `lax.conv_general_dilated` unchanged. Forward-mode differentiation (`jax.jvp`) is not defined
through a custom VJP; reverse mode of any order is.
"""

import functools
from typing import NamedTuple, Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from adjax.models import tap_folding
from adjax.models import winograd

NHWC_HWIO = ('NHWC', 'HWIO', 'NHWC')

Padding = tuple[tuple[int, int], tuple[int, int]]


# Stride-1 convs with at most this many output pixels run as patches @ kernel: XLA:CPU's convolution is
# about 4x (1x1 outputs) to 10x (2x2) slower than the equivalent matmul there (3x3, 256 -> 256 channels,
# batch 16), level at 4x4 and faster from 8x8 up (`python scripts/conv_speed.py`; README, Performance). The
# slices behind larger patch matrices also cost compile time, which dominates small runs.
IM2COL_MAX_OUTPUT_PIXELS = 4


def _output_size(size: int, kernel_size: int, padding: tuple[int, int]) -> int:
  return size + padding[0] + padding[1] - kernel_size + 1


def im2col_conv(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  """Stride-1 conv as one matmul of the [batch * out_h * out_w, kh * kw * in] patches with the kernel."""
  kernel_h, kernel_w, in_channels, out_channels = kernel.shape
  # lax.pad: the input gradient's padding may be negative (a crop), as convolutions allow.
  padded = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0),) + tuple((low, high, 0) for low, high in padding)
                   + ((0, 0, 0),))
  out_h, out_w = padded.shape[1] - kernel_h + 1, padded.shape[2] - kernel_w + 1
  if out_h == out_w == 1:  # The kernel covers the whole (padded) input: a dense layer, no slicing.
    patches = padded
  else:
    patches = jnp.concatenate([padded[:, row:row + out_h, col:col + out_w]
                               for row in range(kernel_h) for col in range(kernel_w)], axis=-1)
  out = patches.reshape(-1, kernel_h * kernel_w * in_channels) @ kernel.reshape(-1, out_channels)
  return out.reshape(x.shape[0], out_h, out_w, out_channels)


# Stride-1 convs with at most this many output channels (and at least `SHIFTED_MATMUL_MIN_IN_CHANNELS`
# inputs) run as `shifted_matmul_conv`: XLA:CPU's convolution to an image's 3 channels ran 1.8-3.6x slower
# (the input gradient of an image-reading conv, a decoder's last conv; `python scripts/conv_speed.py`).
SHIFTED_MATMUL_MAX_OUT_CHANNELS = 4
SHIFTED_MATMUL_MIN_IN_CHANNELS = 8


def shifted_matmul_conv(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  """Stride-1 conv as one matmul of the input with every tap's kernel, then the taps' outputs shifted and summed.

  y[i, j] = sum_{t, s} (x @ kernel[t, s])[i + t - top, j + s - left]: the matmul has kh * kw * out columns,
  which keeps it efficient when out is tiny, and the sum touches only out channels per tap.
  """
  kernel_h, kernel_w, in_channels, out_channels = kernel.shape
  batch, height, width, _ = x.shape
  taps = x.reshape(-1, in_channels) @ kernel.transpose(2, 0, 1, 3).reshape(in_channels, -1)
  taps = taps.reshape(batch, height, width, kernel_h * kernel_w, out_channels)
  # lax.pad: the input gradient's padding may be negative (a crop), as convolutions allow.
  taps = lax.pad(taps, jnp.zeros((), taps.dtype),
                 ((0, 0, 0),) + tuple((low, high, 0) for low, high in padding) + ((0, 0, 0), (0, 0, 0)))
  out_h, out_w = taps.shape[1] - kernel_h + 1, taps.shape[2] - kernel_w + 1
  shifted = [taps[:, row:row + out_h, col:col + out_w, row * kernel_w + col]
             for row in range(kernel_h) for col in range(kernel_w)]
  return functools.reduce(jnp.add, shifted)


class WinogradRule(NamedTuple):
  """When `conv2d` runs an r x r stride-1 conv as Winograd's F(m x m, r x r), m = `output_tile`."""
  output_tile: int
  min_channels: int  # Input and output channels.
  min_side: int  # Output height and width.


# Per kernel size r. With fewer channels or smaller maps the transforms cost more than they save (`python
# scripts/conv_speed.py --tables 7`). No rule for 2x2 (the EBM's space-to-depth layers): F(3x3, 2x2) ran
# those layers 1.2-1.3x faster one by one (`--tables 8`) but the whole SGLD step no faster (A/B in
# README, Performance). An empty dict turns Winograd off.
WINOGRAD_RULES = {3: WinogradRule(output_tile=2, min_channels=128, min_side=14)}


def winograd_tile(x_shape: Sequence[int], kernel_shape: Sequence[int], padding: Padding) -> int | None:
  """m of the F(m x m, r x r) by which `conv2d` computes this stride-1 conv (and its input gradient's), or None."""
  rule = WINOGRAD_RULES.get(kernel_shape[0]) if kernel_shape[0] == kernel_shape[1] else None
  if rule is None:
    return None
  sides = (_output_size(x_shape[1], kernel_shape[0], padding[0]), _output_size(x_shape[2], kernel_shape[1], padding[1]))
  fits = (min(kernel_shape[2:]) >= rule.min_channels and min(sides) >= rule.min_side
          and all(0 <= pad <= kernel_shape[0] - 1 for pair in padding for pad in pair))
  return rule.output_tile if fits else None


def _conv(x: jax.Array, kernel: jax.Array, padding: Padding, *, allow_winograd: bool = True) -> jax.Array:
  out_h = _output_size(x.shape[1], kernel.shape[0], padding[0])
  out_w = _output_size(x.shape[2], kernel.shape[1], padding[1])
  # float32 only: the transforms' rounding error grows with a coarser format.
  tile = winograd_tile(x.shape, kernel.shape, padding) if allow_winograd else None
  if tile and x.dtype == kernel.dtype == jnp.float32:
    return winograd.conv(x, kernel, padding, output_tile=tile)
  if out_h * out_w <= IM2COL_MAX_OUTPUT_PIXELS:
    return im2col_conv(x, kernel, padding)
  if kernel.shape[3] <= SHIFTED_MATMUL_MAX_OUT_CHANNELS and kernel.shape[2] >= SHIFTED_MATMUL_MIN_IN_CHANNELS:
    return shifted_matmul_conv(x, kernel, padding)
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
  _, kernel_vjp = jax.vjp(lambda k: _conv(x, k, padding, allow_winograd=False), kernel)
  (grad_kernel,) = kernel_vjp(grad_out)
  return grad_x, grad_kernel


conv2d.defvjp(_conv2d_forward, _conv2d_backward)


def _strided_conv(x, kernel, padding):
  return lax.conv_general_dilated(x, kernel, (2, 2), padding, dimension_numbers=NHWC_HWIO)


# `strided_input_gradient` with odd kernel sizes runs one conv per phase from this many input channels up
# (LAMP encoder, 3x3 stride 2: 1.3-1.7x faster, `python scripts/conv_speed.py`); below, one conv for all
# phases, as four convs with few outputs each run slowly.
PER_PHASE_MIN_CHANNELS = 16
# With even kernel sizes one conv gives all four phases, but on the padded grid: (h / 2 + 1) x (w / 2 + 1)
# outputs per phase for padding 1, where the input has h / 2 x w / 2 per phase. On small maps that waste is
# large (25 / 16 at a 4x4 output) and four exact convs are faster: up to this many output pixels of the
# forward conv (the EBM's three last stride-2 layers at 128²: 0.63-0.93x the time of one conv, 1.08-1.09x on
# the two larger maps; `python scripts/conv_speed.py --tables 16`).
PER_PHASE_MAX_EVEN_OUTPUT_PIXELS = 256
# Per-phase convs give each phase exactly its part of dx (even heights and widths). False: every phase on the
# padded grid, then cropped, as before stop 22 (for comparisons, `python scripts/conv_speed.py --tables 5,16`).
EXACT_PHASES = True


# Negate the folded kernel of `strided_input_gradient` (and its result; both exact) so that XLA hoists the
# fold out of loops: it does not hoist reshapes, reverses and transposes on their own, so inside an SGLD
# chain's `lax.scan` the kernel was refolded every step (a slow strided copy per layer); a
# negation is worth hoisting, and it takes the fold with it. The result's negation fuses into the
# depth-to-space. False: the fold as written (for comparisons, `python scripts/conv_speed.py --tables 12`).
HOIST_KERNEL_FOLD = True


def strided_input_gradient(grad_out: jax.Array, kernel: jax.Array, padding: Padding,
                           input_shape: Sequence[int]) -> jax.Array:
  """dL/dx of a stride-2 conv as stride-1 convs giving the four output phases, then depth-to-space.

  In one axis, with xp = pad(x, (low, high)) and y[i] = sum_t k[t] xp[2i + t], the gradient at xp[2m + r]
  is sum_u k[2u + r] dy[m - u]: for each phase r a stride-1 correlation of dy with the flipped sub-kernel
  k[r::2]. With even kernel sizes every phase has K / 2 taps and the four (row, column) phases are the
  output channels of one convolution; with odd sizes each phase is its own convolution with its own
  number of taps. Interleaving the phases and dropping the padding gives dx. Nothing is dilated. Per-phase
  convs (odd sizes, and even ones on small maps) give each phase just its part of dx when the height and
  width are even, and cannot share one conv then: the phases read windows of dy shifted by one.

  Args:
    grad_out: float [batch, out_height, out_width, out_channels].
    kernel: float [kernel_height, kernel_width, in_channels, out_channels].
    padding: ((top, bottom), (left, right)) of the forward conv.
    input_shape: the forward input's shape [batch, height, width, in_channels].

  Returns:
    float [batch, height, width, in_channels].
  """
  kernel_h, kernel_w, in_channels, out_channels = kernel.shape
  _, height, width, _ = input_shape
  (top, bottom), (left, right) = padding
  rows, cols = -(-(height + top + bottom) // 2), -(-(width + left + right) // 2)
  batch, out_h, out_w, _ = grad_out.shape
  even = kernel_h % 2 == 0 and kernel_w % 2 == 0
  exact = (EXACT_PHASES and height % 2 == 0 and width % 2 == 0 and min(kernel_h, kernel_w) >= 2
           and in_channels >= PER_PHASE_MIN_CHANNELS
           and (not even or out_h * out_w <= PER_PHASE_MAX_EVEN_OUTPUT_PIXELS))
  if exact:
    return _exact_phases_input_gradient(grad_out, kernel, padding, (height, width))
  if even or in_channels < PER_PHASE_MIN_CHANNELS:
    # Even sizes: every phase has kernel size / 2 taps, and the four phases are the output channels of one
    # convolution. Few channels: the same with zero taps padded in (convs with few outputs run slowly).
    taps_h, taps_w = (kernel_h + 1) // 2, (kernel_w + 1) // 2
    folded = jnp.pad(kernel, ((0, 2 * taps_h - kernel_h), (0, 2 * taps_w - kernel_w), (0, 0), (0, 0)))
    folded = folded.reshape(taps_h, 2, taps_w, 2, in_channels, out_channels)[::-1, :, ::-1]
    folded = folded.transpose(0, 2, 5, 1, 3, 4).reshape(taps_h, taps_w, out_channels, 4 * in_channels)
    # Padding inside the conv, not a separate pad: XLA:CPU would fuse the pad into the conv and hand the
    # fusion to YNNPACK, which runs it several times slower.
    conv_padding = ((taps_h - 1, rows - out_h), (taps_w - 1, cols - out_w))
    if HOIST_KERNEL_FOLD:
      phases = -_conv(grad_out, -folded, conv_padding)
    else:
      phases = _conv(grad_out, folded, conv_padding)
  else:
    # Odd sizes: phases have different numbers of taps (2 and 1 for 3 taps). One conv over the
    # zero-padded taps would do 16 / 9 of the work for a 3x3 kernel; four convs do exactly the taps there are.
    outputs = []
    for row_phase in range(2):
      for col_phase in range(2):
        sub = kernel[row_phase::2, col_phase::2][::-1, ::-1].transpose(0, 1, 3, 2)
        outputs.append(_conv(grad_out, sub, ((sub.shape[0] - 1, rows - out_h), (sub.shape[1] - 1, cols - out_w))))
    phases = jnp.stack(outputs, axis=3)
  padded = phases.reshape(batch, rows, cols, 2, 2, in_channels).transpose(0, 1, 3, 2, 4, 5)
  padded = padded.reshape(batch, 2 * rows, 2 * cols, in_channels)
  return padded[:, top:top + height, left:left + width]


def _gradient_phase(parity: int, low: int, kernel_size: int, out_size: int, size: int):
  """One axis of dx[2j + parity]: (first tap, conv padding) of its correlation with dy.

  x[q] sits at padded position p = q + low = 2 (j + shift) + r, so dx[2j + parity] = sum_u k[r + 2u]
  dy[j + shift - u]: a correlation of dy with the reversed taps k[r::2], padded to give size / 2 outputs.
  """
  first, shift = (parity + low) % 2, (parity + low) // 2
  taps = len(range(first, kernel_size, 2))
  return first, (taps - 1 - shift, size // 2 + shift - out_size)


def _exact_phases_input_gradient(grad_out, kernel, padding, size):
  """`strided_input_gradient` for even height and width: one conv per phase of dx (even/odd rows and columns),
  each giving exactly its [batch, height / 2, width / 2, in_channels] (padding may crop), then interleaved."""
  batch, out_h, out_w, _ = grad_out.shape
  in_channels = kernel.shape[2]
  phases = []
  for row_parity in range(2):
    first_row, row_padding = _gradient_phase(row_parity, padding[0][0], kernel.shape[0], out_h, size[0])
    for col_parity in range(2):
      first_col, col_padding = _gradient_phase(col_parity, padding[1][0], kernel.shape[1], out_w, size[1])
      sub = kernel[first_row::2, first_col::2][::-1, ::-1].transpose(0, 1, 3, 2)
      if HOIST_KERNEL_FOLD:  # As in `strided_input_gradient`.
        phases.append(-_conv(grad_out, -sub, (row_padding, col_padding)))
      else:
        phases.append(_conv(grad_out, sub, (row_padding, col_padding)))
  interleaved = jnp.stack(phases, axis=3).reshape(batch, size[0] // 2, size[1] // 2, 2, 2, in_channels)
  return interleaved.transpose(0, 1, 3, 2, 4, 5).reshape(batch, size[0], size[1], in_channels)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def strided_conv2d(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  """Stride-2 convolution (NHWC/HWIO), the same function as `lax.conv_general_dilated`.

  Its input gradient is `strided_input_gradient` (an ordinary convolution) instead of JAX's lhs-dilated
  one, which XLA:CPU runs several times slower; the kernel gradient is JAX's own.
  """
  return _strided_conv(x, kernel, padding)


def _strided_forward(x, kernel, padding):
  return _strided_conv(x, kernel, padding), (x, kernel)


def _strided_backward(padding, residuals, grad_out):
  x, kernel = residuals
  grad_x = strided_input_gradient(grad_out, kernel, padding, x.shape)
  _, kernel_vjp = jax.vjp(lambda k: _strided_conv(x, k, padding), kernel)
  (grad_kernel,) = kernel_vjp(grad_out)
  return grad_x, grad_kernel


strided_conv2d.defvjp(_strided_forward, _strided_backward)


def _is_nhwc_hwio(dimension_numbers, lhs_shape, rhs_shape) -> bool:
  if dimension_numbers is None:
    return False
  wanted = lax.conv_dimension_numbers(lhs_shape, rhs_shape, NHWC_HWIO)
  given = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
  return given == wanted


def flax_conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                              padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                              feature_group_count: int = 1, precision=None, **kwargs) -> jax.Array:
  """`lax.conv_general_dilated`'s signature; undilated NHWC/HWIO 2-D convs of stride 1 use `conv2d`, of
  stride 2 `strided_conv2d`."""
  strides = tuple(window_strides)
  plain = strides in ((1, 1), (2, 2)) and not kwargs and precision is None
  plain &= all(d == 1 for d in (lhs_dilation or ())) and all(d == 1 for d in (rhs_dilation or ()))
  plain &= lhs.ndim == 4 and feature_group_count == 1
  if plain and _is_nhwc_hwio(dimension_numbers, lhs.shape, rhs.shape):
    if isinstance(padding, str):
      padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    padding = tuple((int(low), int(high)) for low, high in padding)
    if min(min(pair) for pair in padding) >= 0:
      return (conv2d if strides == (1, 1) else strided_conv2d)(lhs, rhs, padding)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                  rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                  feature_group_count=feature_group_count, precision=precision, **kwargs)


def conv_transpose2d(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  """`lax.conv_transpose(x, kernel, (2, 2), padding)` (NHWC/HWIO, transpose_kernel=False) without dilation.

  A stride-2 transposed convolution is the input gradient of a stride-2 convolution, so it is computed as
  `strided_input_gradient`: one stride-1 convolution over the input producing the four output phases,
  then depth-to-space. XLA:CPU runs the lhs-dilated form several times slower. Differentiating this
  function (plain JAX) needs no dilated convolution either.

  Args:
    x: float [batch, height, width, in_channels].
    kernel: float [kernel_height, kernel_width, in_channels, out_channels].
    padding: ((top, bottom), (left, right)) padding of the dilated input, as `lax.conv_transpose`; each
      at most kernel size - 1.

  Returns:
    float [batch, 2 (height - 1) + top + bottom - kernel_height + 2, ..., out_channels].
  """
  kernel_h, kernel_w = kernel.shape[:2]
  (top, bottom), (left, right) = padding
  if max(top, bottom) > kernel_h - 1 or max(left, right) > kernel_w - 1 or min(top, bottom, left, right) < 0:
    raise ValueError(f'conv_transpose2d: padding {padding} must lie in [0, kernel size - 1]')
  batch, height, width, _ = x.shape
  out_shape = (batch, 2 * (height - 1) + top + bottom - kernel_h + 2,
               2 * (width - 1) + left + right - kernel_w + 2, kernel.shape[3])
  # The transposed conv of `kernel` is the input gradient of the strided conv of `kernel` flipped in space
  # with in/out swapped, whose padding is kernel size - 1 - the transposed conv's.
  forward_kernel = kernel[::-1, ::-1].transpose(0, 1, 3, 2)
  forward_padding = ((kernel_h - 1 - top, kernel_h - 1 - bottom), (kernel_w - 1 - left, kernel_w - 1 - right))
  return strided_input_gradient(x, forward_kernel, forward_padding, out_shape)


def transpose_padding(kernel_size: int, padding) -> tuple[int, int]:
  """Explicit (low, high) padding that `lax.conv_transpose` uses for 'SAME' / 'VALID' at stride 2."""
  if not isinstance(padding, str):
    return tuple(padding)
  extra = kernel_size + (max(kernel_size - 2, 0) if padding == 'VALID' else 0)
  low = kernel_size - 1 if padding == 'VALID' or kernel_size <= 2 else -(-extra // 2)
  return low, extra - low


# `upsample_conv2d` computes the four output phases as one conv (outputs stacked in channels) when the conv
# has at most this many output channels, and as four smaller convs otherwise. One conv does the phases'
# zero taps too (2.25x the FLOPs of four for 3x3) but runs few-channel outputs far better (`python
# scripts/conv_speed.py`: a decoder's last conv to 3 channels 2.5x faster than upsample + conv; wider layers
# 1.6-2x with four convs).
UPSAMPLE_CONV_SINGLE_MAX_FEATURES = 8
# The four convs pad x each to their phase's window inside the conv. False: x padded once and every phase's
# window sliced from it, as before stop 24 (copies of x, and their gradients summed into a padded array;
# `python scripts/conv_speed.py --tables 17` compares).
UPSAMPLE_PHASE_PADDING = True


def upsample_conv2d(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  """conv2d(upsample_nearest_2x(x), kernel, padding) without building the upsampled map.

  Output pixel (2i + a, 2j + b) is a small conv of x at (i, j) with the kernel folded for phase (a, b): taps
  that read the same input pixel are summed (`tap_folding.phase_kernels`). The same function as upsampling then
  convolving, up to float rounding (taps are added before multiplying).

  Args:
    x: float [batch, height, width, in_channels].
    kernel: float [kernel_height, kernel_width, in_channels, out_channels].
    padding: ((top, bottom), (left, right)) of the conv on the upsampled map, non-negative, each pair summing
      to kernel size - 1 (the output keeps the upsampled size, as 'SAME' does).

  Returns:
    float [batch, 2 height, 2 width, out_channels].
  """
  kernel_h, kernel_w, in_channels, out_channels = kernel.shape
  (top, bottom), (left, right) = padding
  if top + bottom != kernel_h - 1 or left + right != kernel_w - 1 or min(top, bottom, left, right) < 0:
    raise ValueError(f'upsample_conv2d: padding {padding} must be non-negative and sum to kernel size - 1')
  taps_h, min_h = tap_folding.phase_taps(kernel_h, top)
  taps_w, min_w = tap_folding.phase_taps(kernel_w, left)
  window_h, window_w = taps_h.shape[1], taps_w.shape[1]
  batch, height, width, _ = x.shape
  pads = ((-min_h, window_h - 1 + min_h), (-min_w, window_w - 1 + min_w))
  if out_channels <= UPSAMPLE_CONV_SINGLE_MAX_FEATURES:
    whole = ((0, window_h), (0, window_w))
    kernels = tap_folding.phase_kernels(kernel, taps_h=taps_h, taps_w=taps_w, windows=(whole,) * 4)
    stacked = jnp.stack(kernels, axis=3).reshape(window_h, window_w, in_channels, 4 * out_channels)
    phases = conv2d(x, stacked, pads).reshape(batch, height, width, 2, 2, out_channels)
  else:
    # Each phase's own window of taps [first, end): the folded kernel is zero outside it.
    windows = tuple((tap_folding.used_window(taps_h, a), tap_folding.used_window(taps_w, b))
                    for a in range(2) for b in range(2))
    kernels = tap_folding.phase_kernels(kernel, taps_h=taps_h, taps_w=taps_w, windows=windows)
    padded = None if UPSAMPLE_PHASE_PADDING else jnp.pad(x, ((0, 0),) + pads + ((0, 0),))
    outputs = []
    for ((row0, row1), (col0, col1)), folded in zip(windows, kernels):
      # x padded to the phase's window, (1, 0) or (0, 1) per axis for 3x3 kernels: the first offset a phase
      # reads is at most 0 and the last at least 0 (0 <= padding <= kernel size - 1), so none is negative.
      phase_pads = ((pads[0][0] - row0, pads[0][1] - (window_h - row1)),
                    (pads[1][0] - col0, pads[1][1] - (window_w - col1)))
      if UPSAMPLE_PHASE_PADDING:
        outputs.append(conv2d(x, folded, phase_pads))
      else:
        window = padded[:, row0:row1 + height - 1, col0:col1 + width - 1]
        outputs.append(conv2d(window, folded, ((0, 0), (0, 0))))
    phases = jnp.stack(outputs, axis=3).reshape(batch, height, width, 2, 2, out_channels)
  return phases.transpose(0, 1, 3, 2, 4, 5).reshape(batch, 2 * height, 2 * width, out_channels)
