"""ResNet-18/50/152 and Wide-ResNet-50-2 as torchvision builds them (v1.5), NHWC, with named features.

  stem      conv 7x7 stride 2 pad 3, BatchNorm, ReLU                 feature `stem`     [b, H/2, W/2, 64]
  maxpool   max-pool 3x3 stride 2 pad 1                              feature `maxpool`  [b, H/4, W/4, 64]
  layer1-4  residual blocks; the first block of layers 2-4 has stride 2   features `layer1` .. `layer4`
  global average pool                                               feature `penultimate` [b, channels]
  fc                                                                feature `logits` [b, num_classes]

Blocks: basic (ResNet-18: two 3x3 convs) or bottleneck (1x1, 3x3, 1x1 with 4x expansion; the stride sits
on the 3x3 conv, torchvision's "v1.5"). Wide-ResNet-50-2 is ResNet-50 with bottleneck width doubled
(width_per_group=128). Channels at 224: ResNet-18 layer1-4 = 64, 128, 256, 512 at 56, 28, 14, 7; the
bottleneck nets 256, 512, 1024, 2048.

Parameter names follow torchvision with `layer{k}.{i}` written `layer{k}_{i}` and `downsample.0/.1` written
`downsample_conv`/`downsample_bn`. The network stops after the last requested feature. BatchNorm: epsilon
1e-5, momentum 0.9 (torch's 0.1); in training Flax updates the running variance with the biased batch
variance, torch with the unbiased one.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adjax.models import convolution
from adjax.models import vgg

FEATURE_NAMES = ('stem', 'maxpool', 'layer1', 'layer2', 'layer3', 'layer4', 'penultimate', 'logits')
LAYER_PLANES = (64, 128, 256, 512)

# torchvision's ResNet init: kaiming_normal (fan_out, relu) convs; torch's default Linear for fc
# (U(±1/sqrt(fan_in)) kernel; zero bias here).
_CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
_FC_INIT = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


class ResidualBlock(nn.Module):
  """torchvision's BasicBlock or Bottleneck: [b, h, w, c] -> [b, h / stride, w / stride, out_channels].

  Attributes:
    planes: 64, 128, 256 or 512; the block outputs planes (basic) or 4 * planes (bottleneck) channels.
    width: channels inside a bottleneck (planes * width_per_group / 64); unused by basic blocks.
    stride: stride of the first 3x3 conv and of the downsampling shortcut.
    bottleneck: Bottleneck instead of BasicBlock.
    use_running_average: BatchNorm in eval mode.
  """
  planes: int
  width: int
  stride: int
  bottleneck: bool
  use_running_average: bool
  bn_axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(nn.Conv, use_bias=False, kernel_init=_CONV_INIT, dtype=self.dtype,
                             conv_general_dilated=convolution.flax_conv_general_dilated)
    norm = functools.partial(nn.BatchNorm, use_running_average=self.use_running_average, momentum=0.9,
                             epsilon=1e-5, axis_name=self.bn_axis_name, dtype=self.dtype)
    pad1 = ((1, 1), (1, 1))
    strides = (self.stride, self.stride)
    if self.bottleneck:
      out_channels = 4 * self.planes
      y = nn.relu(norm(name='bn1')(conv(self.width, (1, 1), name='conv1')(x)))
      y = nn.relu(norm(name='bn2')(conv(self.width, (3, 3), strides, pad1, name='conv2')(y)))
      y = norm(name='bn3')(conv(out_channels, (1, 1), name='conv3')(y))
    else:
      out_channels = self.planes
      y = nn.relu(norm(name='bn1')(conv(self.planes, (3, 3), strides, pad1, name='conv1')(x)))
      y = norm(name='bn2')(conv(self.planes, (3, 3), padding=pad1, name='conv2')(y))
    shortcut = x
    if self.stride != 1 or x.shape[-1] != out_channels:
      shortcut = conv(out_channels, (1, 1), strides, name='downsample_conv')(x)
      shortcut = norm(name='downsample_bn')(shortcut)
    return nn.relu(y + shortcut)


class ResNet(nn.Module):
  """ResNet trunk and classifier; call with `outputs=(...)` to get a dict of named features.

  Attributes:
    blocks_per_layer: residual blocks in layer1..layer4 ((2, 2, 2, 2) = ResNet-18).
    bottleneck: bottleneck blocks (ResNet-50 and deeper) instead of basic blocks.
    width_per_group: 64, or 128 for Wide-ResNet-50-2 (bottleneck width = planes * width_per_group / 64).
    num_classes: width of fc.
    bn_axis_name: pmap/shard_map axis over which BatchNorm averages batch statistics (None: per device).
    dtype: compute dtype (None: from inputs and params).
  """
  blocks_per_layer: Sequence[int]
  bottleneck: bool
  width_per_group: int = 64
  num_classes: int = 1000
  bn_axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False, outputs: Sequence[str] = ('logits',),
               frozen_until: str | None = None, frozen_bn_eval: bool = False) -> dict[str, jax.Array]:
    """Named features of images float [batch, height, width, 3] (height, width >= 32 for `layer4`).

    Args:
      images: ImageNet-normalised images (`normalize("imagenet")` in adjax.data.transforms).
      train: BatchNorm uses batch statistics and updates `batch_stats` (which must be mutable).
      outputs: feature names from FEATURE_NAMES; nothing after the last of them is computed.
      frozen_until: a feature name; the gradient stops there (`stop_gradient`). Pair it with
        `freezing.freeze` so the optimizer leaves that part unchanged.
      frozen_bn_eval: with `train`, BatchNorm layers up to `frozen_until` use and keep their running
        statistics.

    Returns:
      {name: array} for the requested names (shapes in the module docstring).
    """
    wanted = vgg.check_feature_request(outputs, frozen_until, FEATURE_NAMES)
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

    def running_average():
      return not train or (in_frozen_part and frozen_bn_eval)

    x = nn.Conv(64, (7, 7), (2, 2), ((3, 3), (3, 3)), use_bias=False, kernel_init=_CONV_INIT,
                dtype=self.dtype, name='conv1')(images)
    x = nn.BatchNorm(use_running_average=running_average(), momentum=0.9, epsilon=1e-5,
                     axis_name=self.bn_axis_name, dtype=self.dtype, name='bn1')(x)
    x, done = reached('stem', nn.relu(x))
    if done:
      return features
    # Flax pads max-pool windows with -inf, as torch does.
    x, done = reached('maxpool', nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))))
    if done:
      return features

    for layer, (planes, count) in enumerate(zip(LAYER_PLANES, self.blocks_per_layer), start=1):
      for index in range(count):
        x = ResidualBlock(planes=planes, width=planes * self.width_per_group // 64,
                          stride=2 if layer > 1 and index == 0 else 1, bottleneck=self.bottleneck,
                          use_running_average=running_average(), bn_axis_name=self.bn_axis_name,
                          dtype=self.dtype, name=f'layer{layer}_{index}')(x)
      x, done = reached(f'layer{layer}', x)
      if done:
        return features

    x, done = reached('penultimate', jnp.mean(x, axis=(1, 2)))
    if done:
      return features
    x = nn.Dense(self.num_classes, kernel_init=_FC_INIT, dtype=self.dtype, name='fc')(x)
    reached('logits', x)
    return features


ARCHITECTURES = {
    'resnet18': functools.partial(ResNet, blocks_per_layer=(2, 2, 2, 2), bottleneck=False),
    'resnet50': functools.partial(ResNet, blocks_per_layer=(3, 4, 6, 3), bottleneck=True),
    'resnet152': functools.partial(ResNet, blocks_per_layer=(3, 8, 36, 3), bottleneck=True),
    'wide_resnet50_2': functools.partial(ResNet, blocks_per_layer=(3, 4, 6, 3), bottleneck=True,
                                         width_per_group=128),
}
