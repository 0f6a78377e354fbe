"""VGG as torchvision builds it (`vgg11`, `vgg11_bn`, `vgg16`, `vgg16_bn`), NHWC, with named features.

  block k  [conv 3x3 pad 1 (+ BatchNorm) + ReLU] x convs_per_block[k]   feature `block{k}`
  pool k   max-pool 2x2 stride 2 (floor)                                feature `pool{k}`     (k = 1..5)
  adaptive average pool to 7x7, flatten (NCHW order, as torch), fc6 ReLU Dropout, fc7 ReLU Dropout
                                                                        feature `penultimate` [batch, 4096]
  fc8                                                                   feature `logits` [batch, classes]

`block{k}` is the output of the last conv(+BN)+ReLU before the k-th max-pool. FCDD's trunk ("VGG11-BN cut
before the 4th max-pool", 28x28x512 at 224) is `outputs=('block4',)`; its "frozen up to the 3rd max-pool"
(torchvision's first 15 modules) is `frozen_until='pool3'`.

Parameter names: `conv{k}_{i}`, `bn{k}_{i}` (i-th conv of block k), `fc6`, `fc7`, `fc8`. The network stops
after the last requested feature, so `init` with `outputs=('block4',)` creates only the trunk's variables.
BatchNorm: epsilon 1e-5, momentum 0.9 (torch's momentum 0.1). One difference from torch in training mode:
Flax updates the running variance with the biased batch variance, torch with the unbiased one.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adjax import errors
from adjax.models import convolution
from adjax.models import pooling

BLOCK_WIDTHS = (64, 128, 256, 512, 512)
FEATURE_NAMES = tuple(f'{kind}{k}' for k in range(1, 6) for kind in ('block', 'pool')) + (
    'penultimate', 'logits')
POOLED_SIZE = (7, 7)  # torchvision's AdaptiveAvgPool2d((7, 7)) before the classifier.

# torchvision's VGG init: kaiming_normal (fan_out, relu) convs, N(0, 0.01) linears, zero biases.
_CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
_DENSE_INIT = nn.initializers.normal(0.01)


def check_feature_request(outputs: Sequence[str], frozen_until: str | None,
                          names: Sequence[str]) -> frozenset[str]:
  """The requested feature names as a set; InputError for unknown names (VGG and ResNet use it)."""
  if isinstance(outputs, str):
    outputs = (outputs,)
  unknown = [name for name in outputs if name not in names]
  if unknown or not outputs:
    raise errors.InputError(
        f'unknown backbone outputs {unknown or list(outputs)}; known: {", ".join(names)}')
  if frozen_until is not None and frozen_until not in names:
    raise errors.InputError(f'unknown frozen_until {frozen_until!r}; known: {", ".join(names)}')
  return frozenset(outputs)


def adaptive_average_pool(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
  """torch's AdaptiveAvgPool2d on NHWC: [batch, height, width, channels] -> [batch, *output_size, channels].

  Output cell i averages input rows floor(i * n / m) .. ceil((i + 1) * n / m) - 1, as torch does; the
  windows are rectangles, so pooling is one averaging matrix per axis.
  """
  if x.shape[1:3] == tuple(output_size):
    return x

  def averaging_matrix(size_in, size_out):
    matrix = np.zeros((size_out, size_in), np.float32)
    for i in range(size_out):
      start, stop = (i * size_in) // size_out, -((-(i + 1) * size_in) // size_out)
      matrix[i, start:stop] = 1 / (stop - start)
    return matrix

  rows = jnp.asarray(averaging_matrix(x.shape[1], output_size[0]), x.dtype)
  columns = jnp.asarray(averaging_matrix(x.shape[2], output_size[1]), x.dtype)
  return jnp.einsum('oh,pw,bhwc->bopc', rows, columns, x)


class VGG(nn.Module):
  """VGG trunk and classifier; call with `outputs=(...)` to get a dict of named features.

  Attributes:
    convs_per_block: number of 3x3 convs in each of the five blocks ((1, 1, 2, 2, 2) = VGG11).
    batch_norm: BatchNorm after every conv (the `_bn` variants).
    num_classes: width of fc8.
    classifier_width: width of fc6 and fc7 (4096 in torchvision; smaller only for tests).
    dropout_rate: dropout after fc6 and fc7 in training mode (needs a 'dropout' rng then).
    bn_axis_name: pmap/shard_map axis over which BatchNorm averages batch statistics (None: per device).
    dtype: compute dtype (None: from inputs and params).
  """
  convs_per_block: Sequence[int]
  batch_norm: bool
  num_classes: int = 1000
  classifier_width: int = 4096
  dropout_rate: float = 0.5
  bn_axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False, outputs: Sequence[str] = ('logits',),
               frozen_until: str | None = None, frozen_bn_eval: bool = False) -> dict[str, jax.Array]:
    """Named features of images float [batch, height, width, 3] (height, width >= 32).

    Args:
      images: ImageNet-normalised images (`normalize("imagenet")` in adjax.data.transforms).
      train: BatchNorm uses batch statistics (and updates `batch_stats`, which must be mutable) and
        dropout is active.
      outputs: feature names from FEATURE_NAMES; nothing after the last of them is computed.
      frozen_until: a feature name; the gradient stops there (`stop_gradient`), so no backward pass runs
        through the part up to it. Pair it with `freezing.freeze` so the optimizer leaves it unchanged.
      frozen_bn_eval: with `train`, BatchNorm layers up to `frozen_until` use and keep their running
        statistics (False, FCDD's reference behaviour: they still update).

    Returns:
      {name: array} for the requested names: `block{k}`/`pool{k}` [batch, h, w, channels],
      `penultimate` [batch, classifier_width], `logits` [batch, num_classes].
    """
    wanted = check_feature_request(outputs, frozen_until, FEATURE_NAMES)
    features = {}
    in_frozen_part = frozen_until is not None

    def reached(name, x):
      nonlocal in_frozen_part
      if name in wanted:
        features[name] = x
      if name == frozen_until:
        in_frozen_part = False
        x = jax.lax.stop_gradient(x)
      return x, features.keys() == wanted

    x = images
    for block, (width, count) in enumerate(zip(BLOCK_WIDTHS, self.convs_per_block), start=1):
      for index in range(1, count + 1):
        x = nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), kernel_init=_CONV_INIT, dtype=self.dtype,
                    conv_general_dilated=convolution.flax_conv_general_dilated, name=f'conv{block}_{index}')(x)
        if self.batch_norm:
          x = nn.BatchNorm(use_running_average=not train or (in_frozen_part and frozen_bn_eval),
                           momentum=0.9, epsilon=1e-5, axis_name=self.bn_axis_name, dtype=self.dtype,
                           name=f'bn{block}_{index}')(x)
        x = nn.relu(x)
      x, done = reached(f'block{block}', x)
      if done:
        return features
      x = pooling.max_pool_2x2(x)
      x, done = reached(f'pool{block}', x)
      if done:
        return features

    x = adaptive_average_pool(x, POOLED_SIZE)
    # torch flattens [batch, channels, 7, 7]; flattening in that order keeps fc6 = torchvision's weight.T.
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    dense = functools.partial(nn.Dense, kernel_init=_DENSE_INIT, dtype=self.dtype)
    for name in ('fc6', 'fc7'):
      x = nn.relu(dense(self.classifier_width, name=name)(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x, done = reached('penultimate', x)
    if done:
      return features
    x = dense(self.num_classes, name='fc8')(x)
    reached('logits', x)
    return features


ARCHITECTURES = {
    'vgg11': functools.partial(VGG, convs_per_block=(1, 1, 2, 2, 2), batch_norm=False),
    'vgg11_bn': functools.partial(VGG, convs_per_block=(1, 1, 2, 2, 2), batch_norm=True),
    'vgg16': functools.partial(VGG, convs_per_block=(2, 2, 3, 3, 3), batch_norm=False),
    'vgg16_bn': functools.partial(VGG, convs_per_block=(2, 2, 3, 3, 3), batch_norm=True),
}
