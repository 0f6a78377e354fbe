"""torchvision's ResNets rebuilt in plain PyTorch (benchmark and tests only; needs torch).

torchvision cannot be installed beside the local torch wheel. Same module names as torchvision, so
`state_dict()` keys equal its own (`layer1.0.downsample.1.running_var`, `fc.weight`, ...): the backbone
equivalence tests load these weights into `adjax.models.resnet`, and `python -m adjax.bench --torch` times
OCC's encoder with them.
"""

import torch
from torch import nn

RESNET_LAYERS = {'resnet18': ('basic', (2, 2, 2, 2), 64), 'resnet50': ('bottleneck', (3, 4, 6, 3), 64),
                 'resnet152': ('bottleneck', (3, 8, 36, 3), 64),
                 'wide_resnet50_2': ('bottleneck', (3, 4, 6, 3), 128)}


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride, downsample, base_width):
    del base_width
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU()
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
  """torchvision's Bottleneck (v1.5: stride on conv2)."""
  expansion = 4

  def __init__(self, inplanes, planes, stride, downsample, base_width):
    super().__init__()
    width = planes * base_width // 64
    self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU()
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
  """torchvision.models.ResNet (groups 1, no zero-init of the last BN)."""

  def __init__(self, block, layers, base_width=64, num_classes=1000):
    super().__init__()
    self.inplanes = 64
    self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU()
    self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    for index, (planes, count) in enumerate(zip((64, 128, 256, 512), layers), start=1):
      setattr(self, f'layer{index}', self._make_layer(block, planes, count, 1 if index == 1 else 2,
                                                      base_width))
    self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(512 * block.expansion, num_classes)

  def _make_layer(self, block, planes, count, stride, base_width):
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(
          nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
          nn.BatchNorm2d(planes * block.expansion))
    blocks = [block(self.inplanes, planes, stride, downsample, base_width)]
    self.inplanes = planes * block.expansion
    blocks += [block(self.inplanes, planes, 1, None, base_width) for _ in range(1, count)]
    return nn.Sequential(*blocks)

  def forward(self, x):
    return resnet_features(self, x)['logits']


def resnet(arch, **kwargs):
  kind, layers, base_width = RESNET_LAYERS[arch]
  return ResNet(BasicBlock if kind == 'basic' else Bottleneck, layers, base_width, **kwargs)


FEATURE_NAMES = ('stem', 'maxpool', 'layer1', 'layer2', 'layer3', 'layer4', 'penultimate', 'logits')


def resnet_features(net, x, *, last: str = 'logits'):
  """{name: output} of `net` on x [batch, 3, H, W] at every point of FEATURE_NAMES up to `last`."""
  outputs = {'stem': net.relu(net.bn1(net.conv1(x)))}
  x = outputs['maxpool'] = net.maxpool(outputs['stem'])
  for index in range(1, 5):
    if last in outputs:
      return outputs
    x = outputs[f'layer{index}'] = getattr(net, f'layer{index}')(x)
  if last != 'layer4':
    outputs['penultimate'] = torch.flatten(net.avgpool(x), 1)
  if last == 'logits':
    outputs['logits'] = net.fc(outputs['penultimate'])
  return outputs
