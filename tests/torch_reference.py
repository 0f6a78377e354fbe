"""Test-only torch reference networks with torchvision's definitions and state-dict names.

torchvision itself cannot be installed beside the local torch wheel, so VGG is rebuilt here (ResNet in
`adjax.bench.torch_networks`, shared with the PyTorch benchmark) from torchvision's definitions: same
module names, so `state_dict()` keys equal torchvision's (`features.0.weight`, `classifier.6.bias`, ...).
`*_features` run a network and collect the same named points as the Flax backbones, computed the torch
way (NCHW). `randomize_` gives a network seeded random weights and non-trivial BatchNorm statistics.
"""

import numpy as np
import torch
from torch import nn

from adjax.bench.torch_networks import resnet, resnet_features

VGG_CONVS_PER_BLOCK = {'vgg11': (1, 1, 2, 2, 2), 'vgg16': (2, 2, 3, 3, 3)}


class VGG(nn.Module):
  """torchvision.models.VGG with `make_layers`; classifier_width 4096 in torchvision."""

  def __init__(self, convs_per_block, batch_norm, num_classes=1000, classifier_width=4096):
    super().__init__()
    layers, channels = [], 3
    for width, count in zip((64, 128, 256, 512, 512), convs_per_block):
      for _ in range(count):
        layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=1))
        if batch_norm:
          layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU())
        channels = width
      layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    self.features = nn.Sequential(*layers)
    self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    self.classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, classifier_width), nn.ReLU(), nn.Dropout(),
        nn.Linear(classifier_width, classifier_width), nn.ReLU(), nn.Dropout(),
        nn.Linear(classifier_width, num_classes))

  def forward(self, x):
    return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg(arch, **kwargs):
  name, _, suffix = arch.partition('_')
  return VGG(VGG_CONVS_PER_BLOCK[name], suffix == 'bn', **kwargs)


def vgg_features(net, x):
  """{'block{k}': input of the k-th max-pool, 'pool{k}': its output, 'penultimate', 'logits'}."""
  outputs, pools = {}, 0
  for module in net.features:
    if isinstance(module, nn.MaxPool2d):
      pools += 1
      outputs[f'block{pools}'] = x
    x = module(x)
    if isinstance(module, nn.MaxPool2d):
      outputs[f'pool{pools}'] = x
  x = torch.flatten(net.avgpool(x), 1)
  outputs['penultimate'] = net.classifier[:-1](x)
  outputs['logits'] = net.classifier(x)
  return outputs


def build(arch, **kwargs):
  return vgg(arch, **kwargs) if arch.startswith('vgg') else resnet(arch, **kwargs)


def features(net, x):
  return vgg_features(net, x) if isinstance(net, VGG) else resnet_features(net, x)


def randomize_(net, *, seed, image_size):
  """Seeded random weights; BatchNorm running stats from a random batch, then perturbed; eval mode.

  Running statistics measured on data keep activations of deep nets at unit scale in eval mode (torch's
  default init would otherwise shrink or blow them up layer by layer); the perturbation and random
  affine parameters make every BatchNorm term matter.
  """
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in net.modules():
      if isinstance(module, (nn.Conv2d, nn.Linear)):
        fan_in = module.weight[0].numel()
        module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2 / fan_in) ** 0.5)
        if module.bias is not None:
          module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
      elif isinstance(module, nn.BatchNorm2d):
        module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
        module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
        module.momentum = 1.0  # The calibration pass below sets running stats = batch stats.
    net.train()
    net(torch.randn((4, 3, image_size, image_size), generator=generator))
    for module in net.modules():
      if isinstance(module, nn.BatchNorm2d):
        module.momentum = 0.1
        module.running_mean.add_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
        module.running_var.mul_(0.75 + 0.5 * torch.rand(module.running_var.shape, generator=generator))
  return net.eval()


def state_dict_arrays(net):
  """{torchvision key: numpy array} including num_batches_tracked, as torchvision files hold them."""
  return {key: value.detach().numpy().copy() for key, value in net.state_dict().items()}


def to_nhwc(array):
  array = np.asarray(array.detach().numpy() if torch.is_tensor(array) else array)
  return array.transpose(0, 2, 3, 1) if array.ndim == 4 else array


def relative_error(actual, expected) -> float:
  """||actual - expected|| / ||expected|| (Frobenius), robust to the scale of a feature map."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30))


def export_safetensors(net, path):
  """Writes the torch network's state dict as a .safetensors file (numpy API, as users' files are)."""
  from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
  safetensors_numpy.save_file(state_dict_arrays(net), str(path))
  return path


def feature_errors(arch, *, directory, image_size, seed=0, **model_kwargs):
  """{feature: relative error} of the Flax backbone against this torch network from the same weights.

  Builds the torch network with seeded random weights, exports them to safetensors, imports them with
  `adjax.models.weights` and runs both on the same random images [2, 3, size, size] (NHWC for Flax).
  """
  from adjax.models import weights  # pylint: disable=g-import-not-at-top
  net = randomize_(build(arch, **model_kwargs), seed=seed, image_size=image_size)
  path = export_safetensors(net, directory / f'{arch}.safetensors')
  variables = weights.load_backbone_variables(arch, path, **model_kwargs)
  images = torch.randn((2, 3, image_size, image_size), generator=torch.Generator().manual_seed(seed + 1))
  with torch.no_grad():
    expected = features(net, images)
  actual = weights.create_model(arch, **model_kwargs).apply(variables, to_nhwc(images),
                                                            outputs=tuple(expected))
  assert actual.keys() == expected.keys()
  return {name: relative_error(actual[name], to_nhwc(expected[name])) for name in expected}
