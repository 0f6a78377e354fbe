"""The FCDD network (seed 000, Fig. 1): a convolutional trunk, a 1x1 conv to one channel, Gaussian upsampling.

    a = conv1x1(trunk(x))                      low-res output [batch, h, w] (the center is in the bias)
    A = upsample(h(a))                         FCDD's heatmap (`order='huber_then_upsample'`, seed 000 Sec. 3)
    A = sqrt(upsample(a^2) + 1) - 1            the pixel-wise HSC code's order (`order='upsample_then_huber'`)
with h(a) = sqrt(a^2 + 1) - 1 (pseudo-Huber).

Trunks
  'vgg11_bn'   torchvision's VGG11-BN features cut before the 4th max-pool (`adjax.models.vgg`, feature
               `block4`): 28x28x512 at 224. Its params sit under `backbone` (for `adjax.models.freezing`).
  'cnn'        a small from-scratch trunk for small images and runs without ImageNet weights: a VGG-style
               layer list, e.g. (32, 'M', 64, 'M', 128, 128): an int is a 3x3 conv (pad 1) + BatchNorm +
               leaky ReLU, 'M' a 2x2 max-pool.

Upsampling (FCDD's receptive-field upsampling): every low-res pixel spreads a Gaussian (peak 1, std
`std`) over its receptive field: a transposed conv with a Gaussian kernel of size r and stride j, cropped
so that low-res pixel i lands on its receptive field's centre s + i*j. The kernel is separable, so the
transposed conv is computed exactly as two small matrix products (`upsampling_matrix`).
"""

import functools
import math
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adjax import errors
from adjax.losses import fcdd as fcdd_losses
from adjax.models import pooling
from adjax.models import vgg

TRUNKS = ('vgg11_bn', 'cnn')
ORDERS = ('huber_then_upsample', 'upsample_then_huber')
VGG_ARCH = 'vgg11_bn'
VGG_CUT = 'block4'  # Output of the 512-512 convs before the 4th max-pool.
VGG_FROZEN_UNTIL = 'pool3'  # "Frozen up to the third max-pooling" (torchvision's features[0:15]).
DEFAULT_CNN_LAYERS = (32, 'M', 64, 'M', 128, 128)

Layer = tuple[int, int, int]  # (kernel, stride, padding) of one conv or pool, square.


class ReceptiveField(NamedTuple):
  """Where the output pixels of a conv stack look, in input pixel coordinates (0 = first pixel's centre).

  output_size: output side for the given input side; jump: input pixels between neighbouring outputs;
  size: receptive field side r; start: centre of output pixel 0's receptive field (pixel i: start + i*jump).
  """
  output_size: int
  jump: int
  size: int
  start: float


def receptive_field(layers: Sequence[Layer], *, input_size: int) -> ReceptiveField:
  """Receptive-field bookkeeping over `layers` [(kernel, stride, padding), ...] in order.

  r += (k - 1) * j;  s += ((k - 1) / 2 - pad) * j;  j *= stride;  n = floor((n + 2 pad - k) / stride) + 1.
  """
  size, jump, start, n = 1, 1, 0.0, input_size
  for kernel, stride, pad in layers:
    size += (kernel - 1) * jump
    start += ((kernel - 1) / 2 - pad) * jump
    jump *= stride
    n = (n + 2 * pad - kernel) // stride + 1
  return ReceptiveField(output_size=n, jump=jump, size=size, start=start)


def _vgg_layers() -> list[Layer]:
  convs_per_block = vgg.ARCHITECTURES[VGG_ARCH].keywords['convs_per_block']
  cut_block = int(VGG_CUT.removeprefix('block'))
  layers = []
  for block in range(1, cut_block + 1):
    layers += [(3, 1, 1)] * convs_per_block[block - 1]
    if block < cut_block:
      layers.append((2, 2, 0))
  return layers


def _cnn_layers(cnn_layers: Sequence[Any]) -> list[Layer]:
  return [(2, 2, 0) if layer == 'M' else (3, 1, 1) for layer in cnn_layers]


def trunk_layers(trunk: str, *, cnn_layers: Sequence[Any] = DEFAULT_CNN_LAYERS) -> list[Layer]:
  """The (kernel, stride, padding) list of the whole network, trunk then the 1x1 conv."""
  check_options(trunk=trunk, cnn_layers=cnn_layers)
  layers = _vgg_layers() if trunk == VGG_ARCH else _cnn_layers(cnn_layers)
  return layers + [(1, 1, 0)]


def default_std(kernel_size: int) -> float:
  """FCDD's default Gaussian std for a kernel of side `kernel_size` (its MVTec runs use 12)."""
  return math.log10(0.45 * kernel_size + 1) + 0.25 if kernel_size < 32 else 10.0


def upsampling_matrix(field: ReceptiveField, *, output_size: int, std: float) -> np.ndarray:
  """float32 [output_size, low_res_size]: column i is row i's Gaussian along one axis.

  Equals the transposed conv (kernel side r = field.size, stride j = field.jump) of a one-hot input,
  cropped by `offset = floor((r - 1) / 2 - s)` so pixel i's peak sits at s + i*j: kernel tap t covers
  output x = i*j + t - offset with weight exp(-(x - s - i*j)^2 / (2 std^2)), for 0 <= t < r.
  """
  offset = math.floor((field.size - 1) / 2 - field.start)
  x = np.arange(output_size, dtype=np.float64)[:, None]
  centres = field.start + field.jump * np.arange(field.output_size, dtype=np.float64)[None, :]
  tap = x - field.jump * np.arange(field.output_size)[None, :] + offset
  weights = np.exp(-np.square(x - centres) / (2 * std ** 2))
  return np.where((tap >= 0) & (tap < field.size), weights, 0.0).astype(np.float32)


def gaussian_upsample(low_res: jax.Array, *, rows: np.ndarray, columns: np.ndarray) -> jax.Array:
  """[batch, h, w] -> [batch, H, W] with `rows` [H, h] and `columns` [W, w] from `upsampling_matrix`."""
  return jnp.einsum('Hh,bhw,Ww->bHW', jnp.asarray(rows, low_res.dtype), low_res,
                    jnp.asarray(columns, low_res.dtype))


def make_heatmap_fn(*, trunk: str, image_size: Sequence[int], order: str = 'huber_then_upsample',
                    std: float | None = None, cnn_layers: Sequence[Any] = DEFAULT_CNN_LAYERS):
  """`heatmap(a [batch, h, w]) -> (A [batch, H, W], h(a) [batch, h, w])` for input side `image_size`.

  `std=None` uses `default_std(r)`. `order` picks where the pseudo-Huber step goes (module docstring).
  """
  if order not in ORDERS:
    raise errors.InputError(f'config.fcdd.heatmap_order: {order!r} is not one of {", ".join(ORDERS)}')
  layers = trunk_layers(trunk, cnn_layers=cnn_layers)
  height, width = image_size
  fields = [receptive_field(layers, input_size=side) for side in (height, width)]
  std = default_std(fields[0].size) if not std else float(std)
  rows, columns = (upsampling_matrix(field, output_size=side, std=std)
                   for field, side in zip(fields, (height, width)))
  upsample = functools.partial(gaussian_upsample, rows=rows, columns=columns)

  def heatmap(low_res):
    huber = fcdd_losses.pseudo_huber(low_res)
    if order == 'huber_then_upsample':
      return upsample(huber), huber
    # h as a function of the squared value u = upsample(a^2): sqrt(u + 1) - 1 = u / (sqrt(u + 1) + 1),
    # the cancellation-free form (pseudo_huber(sqrt(u)) would have an infinite gradient at u = 0).
    squared = upsample(jnp.square(low_res))
    return squared / (jnp.sqrt(squared + 1) + 1), huber

  return heatmap


def check_options(*, trunk: str, cnn_layers: Sequence[Any]):
  if trunk not in TRUNKS:
    raise errors.InputError(f'config.model.trunk: {trunk!r} is not one of {", ".join(TRUNKS)}')
  if trunk == 'cnn' and (not cnn_layers or any(
      layer != 'M' and not (isinstance(layer, int) and layer > 0) for layer in cnn_layers)):
    raise errors.InputError(f'config.model.cnn_layers: expected positive ints (3x3 convs) and "M" '
                            f'(max-pools), got {cnn_layers!r}')


class CNNTrunk(nn.Module):
  """Small from-scratch trunk: 3x3 conv + BatchNorm + leaky ReLU per int in `layers`, 2x2 max-pool per 'M'."""
  layers: Sequence[Any] = DEFAULT_CNN_LAYERS
  dtype: Any = None  # Compute dtype (None: from inputs and params).

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    x = images
    for index, layer in enumerate(self.layers):
      if layer == 'M':
        x = pooling.max_pool_2x2(x)
        continue
      # No conv bias: BatchNorm's own bias follows (FCDD's small nets also drop it).
      x = nn.Conv(layer, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, dtype=self.dtype, name=f'conv{index}')(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-4, dtype=self.dtype,
                       name=f'bn{index}')(x)
      x = nn.leaky_relu(x, 0.01)
    return x


class FCDDNet(nn.Module):
  """Trunk + trainable 1x1 conv with bias to one channel: images [batch, H, W, C] -> a [batch, h, w].

  Attributes:
    trunk: 'vgg11_bn' (params under `backbone`) or 'cnn' (params under `trunk`).
    cnn_layers: layer list of the 'cnn' trunk.
    dtype: compute dtype of the convs (None: from inputs and params); the map comes back in float32.
  """
  trunk: str = VGG_ARCH
  cnn_layers: Sequence[Any] = DEFAULT_CNN_LAYERS
  dtype: Any = None

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False, frozen_until: str | None = None,
               frozen_bn_eval: bool = False) -> jax.Array:
    """`frozen_until`, `frozen_bn_eval`: passed to the VGG trunk (see `adjax.models.vgg.VGG`)."""
    if self.trunk == VGG_ARCH:
      backbone = vgg.ARCHITECTURES[VGG_ARCH](dtype=self.dtype, name='backbone')
      features = backbone(images, train=train, outputs=(VGG_CUT,), frozen_until=frozen_until,
                          frozen_bn_eval=frozen_bn_eval)[VGG_CUT]
    else:
      features = CNNTrunk(layers=tuple(self.cnn_layers), dtype=self.dtype, name='trunk')(images, train=train)
    low_res = nn.Conv(1, (1, 1), use_bias=True, dtype=self.dtype, name='head')(features)[..., 0]
    return low_res.astype(jnp.promote_types(low_res.dtype, jnp.float32))
