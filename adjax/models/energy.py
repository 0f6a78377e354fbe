"""The all-convolutional energy network of the EBM method (seed 004, Table 3).

  conv 3x3, stride 1, 'SAME'          -> first_features (32)   ELU
  conv 4x4, stride 2, padding 1 (x N) -> features (64, 128, 256, 256, 256)   ELU after each
  conv kh x kw, 'VALID'               -> 1 energy per image   (no activation)

At 128x128 the five stride-2 convs leave 4x4 and the last conv is the paper's 4x4 'VALID' conv. For
other sizes its kernel is whatever spatial size is left, so the net always returns one scalar per
image. The net has no normalisation layer, so images in a batch never interact: the energy of an
image, and its gradient w.r.t. that image, do not depend on the rest of the batch
(`adjax.scoring.gradient_map` relies on this).

Sign convention: low energy = likely, p(x) ∝ exp(-E(x)).

Speed: a 4x4 stride-2 conv runs, by default (`strided_impl='strided_vjp'`), as XLA's own strided conv
with `adjax.models.convolution.strided_conv2d`'s input gradient: one stride-1 conv giving the four phases
of dL/dx, then depth-to-space, instead of JAX's lhs-dilated conv that XLA:CPU runs slowly. The input
gradient is all an SGLD chain computes. `strided_impl='space_to_depth'` computes the conv itself as
space-to-depth + a 2x2 stride-1 conv over the phase channels (`space_to_depth_conv`; its input gradient
has the same form). It was the default until the phase transposes of every activation turned out to cost
more than XLA's strided forward conv (`python scripts/conv_speed.py --tables 9` compares all three);
`'direct'` is the plain strided conv with JAX's rule. The stride-1 convs use
`adjax.models.convolution.conv2d` (`conv_vjp='hwio'`, default), whose input gradient XLA:CPU keeps fast
inside the SGLD chain's `lax.scan`; `conv_vjp='lax'` uses JAX's own rule. All are the same function with
the same parameters.
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adjax import errors
from adjax.models import convolution

# Widths of the five stride-2 convs of seed 004, Table 3 (for 128x128 inputs).
TABLE3_FEATURES = (64, 128, 256, 256, 256)
# Spatial size left for the final conv in Table 3 (its 4x4 'VALID' kernel).
FINAL_KERNEL_SIZE = 4


def num_downsamplings_for(image_size: int) -> int:
  """Number of stride-2 convs that bring `image_size` down to 4, as Table 3 does for 128 (-> 5).

  Examples: 128 -> 5, 64 -> 4, 32 -> 3, 256 -> 6.
  Raises InputError unless image_size = 4 * 2**k with k >= 1.
  """
  ratio = image_size // FINAL_KERNEL_SIZE
  if (image_size % FINAL_KERNEL_SIZE or ratio < 2 or ratio & (ratio - 1)):
    raise errors.InputError(
        f'EBM image size must be 4 * 2**k (8, 16, 32, 64, 128, 256, ...), got {image_size}')
  return int(math.log2(ratio))


def features_for(image_size: int) -> tuple[int, ...]:
  """Table 3 stride-2 widths adapted to `image_size`: a prefix below 128, extra 256s above."""
  count = num_downsamplings_for(image_size)
  return (TABLE3_FEATURES + (TABLE3_FEATURES[-1],) * count)[:count]


# PyTorch's default Conv2d weight init (kaiming_uniform with a=sqrt(5)) is U(±1/sqrt(fan_in)). The
# reference short-run EBM code keeps it, and its SGLD step size 1 / noise 0.01 go with energies
# of that scale; Flax's lecun_normal is ~sqrt(3)x larger per layer.
_TORCH_KERNEL_INIT = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


@jax.custom_vjp
def elu(x: jax.Array) -> jax.Array:
  """ELU (alpha 1), x if x > 0 else exp(x) - 1, elementwise; equal to `jax.nn.elu`.

  Its VJP reads only the output y: the derivative is 1 where y > 0 and exp(x) = y + 1 elsewhere.
  JAX's rule keeps exp(x) - 1 as a separate array for the derivative and selects the output from it
  in another pass, so every ELU of an SGLD step cost three passes over the activation; this one costs
  two (forward, backward).
  """
  return jnp.where(x > 0, x, jnp.expm1(jnp.minimum(x, 0)))


def _elu_forward(x):
  y = elu(x)
  return y, y


def _elu_backward(y, grad):
  return (grad * jnp.where(y > 0, 1, y + 1).astype(grad.dtype),)


elu.defvjp(_elu_forward, _elu_backward)


CONV_VJPS = ('hwio', 'lax')
STRIDED_IMPLS = ('strided_vjp', 'space_to_depth', 'direct')


def _stride1_conv(x, kernel, padding, conv_vjp):
  if conv_vjp == 'hwio':
    return convolution.conv2d(x, kernel, padding)
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def space_to_depth_conv(x: jax.Array, kernel: jax.Array, *, conv_vjp: str = 'hwio') -> jax.Array:
  """4x4 stride-2 conv with padding 1 (PyTorch's Conv2d(k=4, s=2, p=1)) as space-to-depth + 2x2 conv.

  With xp = pad(x, 1), out[i] = sum_k w[k] xp[2i + k]; writing k = 2q + p gives
  out[i] = sum_{q, p} w[2q + p] z[i + q, p] with z[m, p] = xp[2m + p]: a 2x2 'VALID' stride-1 conv over
  z, whose channels are the 2x2 phases of xp. Same in both spatial axes.

  Args:
    x: float [batch, height, width, in_channels], height and width even.
    kernel: float [4, 4, in_channels, out_channels] (HWIO, as `nn.Conv`).
    conv_vjp: 'hwio' (`convolution.conv2d`, fast input gradient in loops) or 'lax'.

  Returns:
    float [batch, height / 2, width / 2, out_channels].
  """
  batch, height, width, channels = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  rows, cols = (height + 2) // 2, (width + 2) // 2
  phases = padded.reshape(batch, rows, 2, cols, 2, channels).transpose(0, 1, 3, 2, 4, 5)
  phases = phases.reshape(batch, rows, cols, 4 * channels)
  # kernel[2q + p, 2s + r, c, o] -> [q, s, (p, r, c), o], matching the phase channel order above.
  out_channels = kernel.shape[-1]
  folded = kernel.reshape(2, 2, 2, 2, channels, out_channels).transpose(0, 2, 1, 3, 4, 5)
  folded = folded.reshape(2, 2, 4 * channels, out_channels)
  return _stride1_conv(phases, folded.astype(phases.dtype), ((0, 0), (0, 0)), conv_vjp)


class DownConv(nn.Module):
  """4x4 stride-2 padding-1 conv; parameters `kernel [4, 4, in, out]`, `bias [out]` as `nn.Conv`'s."""
  features: int
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros
  impl: str = 'strided_vjp'
  dtype: Any = None
  conv_vjp: str = 'hwio'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', self.kernel_init, (4, 4, x.shape[-1], self.features))
    bias = self.param('bias', self.bias_init, (self.features,))
    dtype = self.dtype or jnp.result_type(x, kernel)
    x, kernel, bias = (value.astype(dtype) for value in (x, kernel, bias))
    if self.impl == 'strided_vjp':
      y = convolution.strided_conv2d(x, kernel, ((1, 1), (1, 1)))
    elif self.impl == 'space_to_depth':
      y = space_to_depth_conv(x, kernel, conv_vjp=self.conv_vjp)
    elif self.impl == 'direct':
      y = jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)),
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    else:
      raise errors.InputError(f'EnergyNet strided_impl must be one of {STRIDED_IMPLS}, got {self.impl!r}')
    return y + bias


def _torch_bias_init(fan_in: int):
  """PyTorch's default Conv2d bias init, U(±1/sqrt(fan_in)); Flax bias inits do not see fan_in."""
  bound = 1 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class EnergyNet(nn.Module):
  """Energy E(x) per image; seed 004 Table 3 with the default widths.

  Attributes:
    first_features: width of the first 3x3 conv.
    features: widths of the 4x4 stride-2 convs (one downsampling each). Height and width of the
      input must be divisible by 2**len(features); see `features_for(image_size)`.
    initialization: 'pytorch' (default; PyTorch's Conv2d init, as in the reference code) or 'flax'
      (lecun_normal kernels, zero biases).
    dtype: compute dtype of the convs (None = from the inputs/params); energies come back in at
      least float32.
    strided_impl: the stride-2 convs: 'strided_vjp' (default; strided conv, phase-wise input gradient),
      'space_to_depth' or 'direct' (module docstring); the same function and parameters.
    conv_vjp: 'hwio' (default; `convolution.conv2d` for the stride-1 convs) or 'lax' (JAX's rule).
  """
  first_features: int = 32
  features: Sequence[int] = TABLE3_FEATURES
  initialization: str = 'pytorch'
  dtype: Any = None
  strided_impl: str = 'strided_vjp'
  conv_vjp: str = 'hwio'

  def _inits(self, fan_in):
    if self.initialization == 'pytorch':
      return dict(kernel_init=_TORCH_KERNEL_INIT, bias_init=_torch_bias_init(fan_in))
    return {}

  def _conv(self, features, kernel_size, strides, padding, fan_in, name):
    conv = convolution.flax_conv_general_dilated if self.conv_vjp == 'hwio' else None
    return nn.Conv(features, kernel_size, strides=strides, padding=padding, dtype=self.dtype,
                   name=name, conv_general_dilated=conv, **self._inits(fan_in))

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """Energies of images float [batch, height, width, channels] -> float32 (float64) [batch]."""
    if images.ndim != 4:
      raise errors.InputError(
          f'EnergyNet expects images [batch, height, width, channels], got shape {images.shape}')
    if self.initialization not in ('pytorch', 'flax'):
      raise errors.InputError(
          f"EnergyNet initialization must be 'pytorch' or 'flax', got {self.initialization!r}")
    if self.conv_vjp not in CONV_VJPS:
      raise errors.InputError(f"EnergyNet conv_vjp must be one of {CONV_VJPS}, got {self.conv_vjp!r}")
    _, height, width, channels = images.shape
    factor = 2**len(self.features)
    if height % factor or width % factor:
      raise errors.InputError(
          f'EnergyNet with {len(self.features)} stride-2 convs needs height and width divisible by '
          f'{factor}, got {height}x{width}; choose features=features_for(image_size)')
    final_kernel = (height // factor, width // factor)

    x = self._conv(self.first_features, (3, 3), 1, 'SAME', 9 * channels, 'conv_in')(images)
    x = elu(x)
    fan_in = 16 * self.first_features
    for index, width_out in enumerate(self.features):
      # Padding 1 on each side, as PyTorch's Conv2d(k=4, s=2, p=1): exactly halves even sizes.
      x = DownConv(width_out, impl=self.strided_impl, dtype=self.dtype, conv_vjp=self.conv_vjp,
                   name=f'down_{index}',
                   **self._inits(fan_in))(x)
      x = elu(x)
      fan_in = 16 * width_out
    fan_in = final_kernel[0] * final_kernel[1] * x.shape[-1]
    x = self._conv(1, final_kernel, 1, 'VALID', fan_in, 'conv_out')(x)
    # Energies at least float32 even when computing in bfloat16 (float64 stays float64).
    return x.reshape(x.shape[0]).astype(jnp.promote_types(x.dtype, jnp.float32))
