"""PyTorch counterparts of the benchmark cases, timed by `python -m adjax.bench --torch` (benchmark only).

Eager PyTorch, float32, channels-last tensors and modules, written after the seeds' reference code:
  ebm            seed 004 Table 3 net (3x3 conv, 4x4 stride-2 convs, ELU, 'VALID' conv to one energy);
                 sgld_chain: T steps x <- clamp(x - dE/dx + 0.01 N(0, I)) with torch.autograd.grad w.r.t.
                 x only; train_step: chain + contrastive-divergence update (Adam); score: energy and dE/dx
                 standardised per pixel, L2 over channels and pixels.
  fcdd           VGG11-BN `features` up to the 4th max-pool + 1x1 conv to one channel, pseudo-Huber,
                 separable Gaussian upsampling (adjax's matrices), FCDD loss, SGD Nesterov with weight
                 decay; the first 15 modules (to pool3) frozen with requires_grad=False, BatchNorm in
                 training mode; `fcdd_unfrozen` trains everything. score: eval forward + upsampling.
  lamp           seed 001 conv AE (conv 3x3 stride 2 + BN + LeakyReLU blocks, nearest upsampling + conv
                 decoder, tanh), L2-LAMP loss, Adam; score: L2, L1 and Gaussian-window SSIM maps.
  occ            WRN-50-2 (`adjax.bench.torch_networks`, frozen, eval mode, no_grad) to layer3, layer2/3
                 resized bilinearly to layer1's grid and concatenated, 1x1 conv projector, soft-boundary loss
                 to a fixed unit-norm center, Adam with L2 weight decay; score: distances upsampled bilinearly.
  cae            seed 003 Table 2 fully convolutional AE (adjax's reading of its decoder), denoising input
                 (clamped Gaussian noise), L2 + lambda ||J_E^T u||^2 with one Rademacher probe u (the
                 Hutchinson contractive penalty, encoder BatchNorm on running statistics, differentiated
                 twice), Adam; score as lamp.
Other variants have no reference here (`make_case` returns None). Stride-2 'SAME' convs use torch's
symmetric padding 1 (XLA pads 0/1): same FLOPs, shifted by a pixel. Weights are torch's default init;
speed does not depend on them.
"""

import math

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from adjax.bench import torch_networks

CHANNELS_LAST = torch.channels_last


def _images(config, *, seed: int = 0) -> torch.Tensor:
  generator = torch.Generator().manual_seed(seed)
  size, batch = config.data.image_size, config.train.batch_size
  images = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
  return images.contiguous(memory_format=CHANNELS_LAST)


def energy_net(config) -> nn.Module:
  """seed 004 Table 3 with `config.model` widths: E(x) [batch] of x [batch, 3, H, W]."""
  size = config.data.image_size
  layers, channels = [nn.Conv2d(3, config.model.first_features, 3, padding=1), nn.ELU()], None
  channels = config.model.first_features
  for width in config.model.features:
    layers += [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.ELU()]
    channels = width
  final = size // 2 ** len(config.model.features)
  layers += [nn.Conv2d(channels, 1, final), nn.Flatten(0)]
  return nn.Sequential(*layers).to(memory_format=CHANNELS_LAST)


def sgld_chain(net: nn.Module, start: torch.Tensor, *, steps: int, step_size: float, noise_scale: float,
               value_range) -> torch.Tensor:
  x = start
  for _ in range(steps):
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(x).sum(), [x])
    x = x.detach() - step_size * grad + noise_scale * torch.randn_like(x)
    if value_range:
      x = x.clamp_(*value_range)
  return x.detach()


def ebm_case(case: str, config):
  net, images, hp = energy_net(config), _images(config), config.ebm
  chain = lambda start: sgld_chain(net, start, steps=hp.sgld_steps, step_size=hp.step_size,
                                   noise_scale=hp.noise_scale, value_range=tuple(hp.value_range or ()))
  uniform = lambda: (torch.rand_like(images) * 2 - 1).contiguous(memory_format=CHANNELS_LAST)
  if case == 'sgld_chain':
    return lambda: chain(uniform())
  if case == 'train_step':
    optimizer = torch.optim.Adam(net.parameters(), lr=config.optim.learning_rate)

    def step():
      negatives = chain(uniform())
      positives = images + hp.data_noise * torch.randn_like(images)
      loss = (net(positives) - net(negatives)).mean()
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      optimizer.step()
    return step
  if case == 'score':
    mean, std = torch.zeros_like(images[0]), torch.ones_like(images[0])

    def score():
      x = images.detach().requires_grad_(True)
      energies = net(x)
      (grad,) = torch.autograd.grad(energies.sum(), [x])
      pixel = torch.linalg.vector_norm((-grad - mean) / std, dim=1)
      return energies.detach(), pixel, torch.linalg.vector_norm(pixel.flatten(1), dim=1)
    return score
  return None


VGG11_WIDTHS = (64, 'M', 128, 'M', 256, 256, 'M', 512, 512)  # To the 4th max-pool (FCDD's cut).


def fcdd_net() -> nn.Module:
  layers, channels = [], 3
  for width in VGG11_WIDTHS:
    if width == 'M':
      layers.append(nn.MaxPool2d(2, 2))
    else:
      layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
      channels = width
  return nn.Sequential(nn.Sequential(*layers), nn.Conv2d(channels, 1, 1)).to(memory_format=CHANNELS_LAST)


def fcdd_case(case: str, config, *, frozen: bool):
  from adjax.models import fcdd as fcdd_models  # pylint: disable=g-import-not-at-top
  size = config.data.image_size
  layers = fcdd_models.trunk_layers(fcdd_models.VGG_ARCH, cnn_layers=())
  field = fcdd_models.receptive_field(layers, input_size=size)
  matrix = torch.from_numpy(np.asarray(fcdd_models.upsampling_matrix(
      field, output_size=size, std=config.fcdd.get('upsample_std') or fcdd_models.default_std(field.size)),
      np.float32))
  net, images = fcdd_net(), _images(config)

  def heatmap(x):
    low = net(x)[:, 0]
    huber = torch.sqrt(low * low + 1) - 1
    return torch.einsum('Hh,bhw,Ww->bHW', matrix, huber, matrix), huber

  if case == 'train_step':
    if frozen:
      for module in list(net[0])[:15]:  # VGG features[:15]: through the 3rd max-pool.
        for parameter in module.parameters():
          parameter.requires_grad_(False)
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-3, momentum=0.9,
                                nesterov=True, weight_decay=config.optim.weight_decay)
    masks = torch.zeros(images.shape[0], size, size)
    net.train()

    def step():
      heat, _ = heatmap(images)
      normal = ((1 - masks) * heat).mean(dim=(1, 2))
      anomalous = (masks * heat).mean(dim=(1, 2))
      loss = (normal - torch.log(-torch.expm1(-anomalous) + 1e-31)).mean()
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      optimizer.step()
    return step
  if case == 'score':
    net.eval()

    @torch.no_grad()
    def score():
      heat, low = heatmap(images)
      return heat, low.mean(dim=(1, 2)), heat.amax(dim=(1, 2))
    return score
  return None


def lamp_autoencoder(config) -> nn.Module:
  from adjax.models import autoencoders  # pylint: disable=g-import-not-at-top
  widths = tuple(config.model.features) or autoencoders.LAMP_FEATURES[:config.model.num_blocks]
  kernel, pad = config.model.kernel_size, config.model.kernel_size // 2
  block = lambda c_in, c_out, stride: [nn.Conv2d(c_in, c_out, kernel, stride, pad), nn.BatchNorm2d(c_out),
                                       nn.LeakyReLU(0.2)]
  layers, channels = [], 3
  for width in widths:
    layers += block(channels, width, 2)
    channels = width
  for width in tuple(reversed(widths))[1:]:
    layers += [nn.Upsample(scale_factor=2, mode='nearest')] + block(channels, width, 1)
    channels = width
  layers += [nn.Upsample(scale_factor=2, mode='nearest'), nn.Conv2d(channels, 3, kernel, 1, pad), nn.Tanh()]
  return nn.Sequential(*layers).to(memory_format=CHANNELS_LAST)


def _ssim_map(x, y, *, data_range: float, window: int = 11, sigma: float = 1.5):
  offsets = torch.arange(window, dtype=torch.float32) - window // 2
  taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
  taps = taps / taps.sum()
  stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
  groups = stacked.shape[1]
  blur = F.conv2d(F.pad(stacked, (window // 2,) * 4, mode='reflect'),
                  taps.view(1, 1, 1, -1).repeat(groups, 1, 1, 1), groups=groups)
  blur = F.conv2d(blur, taps.view(1, 1, -1, 1).repeat(groups, 1, 1, 1), groups=groups)
  mx, my, xx, yy, xy = blur.chunk(5, dim=1)
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  vx, vy, cov = xx - mx * mx, yy - my * my, xy - mx * my
  return ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def lamp_case(case: str, config):
  net, images = lamp_autoencoder(config), _images(config)
  if case == 'train_step':
    optimizer = torch.optim.Adam(net.parameters(), lr=config.optim.learning_rate)
    epsilon, pixels = config.lamp.epsilon, math.prod(images.shape[1:])
    net.train()

    def step():
      base = (net(images) - images) ** 2
      normalized = base / base.max()
      loss = (-torch.log1p(-normalized * (1 - epsilon))).sum(dim=(1, 2, 3)) / pixels
      optimizer.zero_grad(set_to_none=True)
      loss.mean().backward()
      optimizer.step()
    return step
  if case == 'score':
    net.eval()
    return lambda: _reconstruction_score(net, images, data_range=config.loss.data_range)
  return None


@torch.no_grad()
def _reconstruction_score(net, images, *, data_range: float):
  """The reconstruction method's maps (L2, L1, 1 - SSIM, channel means) and their image means."""
  reconstruction = net(images)
  maps = {'l2': ((reconstruction - images) ** 2).mean(dim=1),
          'l1': (reconstruction - images).abs().mean(dim=1),
          'ssim': (1 - _ssim_map(images, reconstruction, data_range=data_range)).mean(dim=1)}
  return maps, {name: value.mean(dim=(1, 2)) for name, value in maps.items()}


def occ_case(case: str, config):
  layers = sorted(config.model.feature_layers, key=torch_networks.FEATURE_NAMES.index)
  net = torch_networks.resnet(config.model.backbone).to(memory_format=CHANNELS_LAST).eval()
  net.requires_grad_(False)
  images, radius = _images(config), config.occ.radius

  @torch.no_grad()
  def features(x):
    outputs = torch_networks.resnet_features(net, x, last=layers[-1])
    if layers == ['penultimate']:
      return outputs['penultimate'][:, :, None, None]
    grid = outputs[layers[0]].shape[-2:]
    return torch.cat([F.interpolate(outputs[name], size=grid, mode='bilinear', align_corners=False)
                      for name in layers], dim=1)

  channels = features(images[:1]).shape[1]
  projector = nn.Conv2d(channels, channels, 1, bias=config.model.projector == 'conv1x1')
  projector = projector.to(memory_format=CHANNELS_LAST)
  center = torch.randn(channels, generator=torch.Generator().manual_seed(config.occ.center_seed))
  center = (center * config.occ.center_norm / center.norm())[:, None, None]

  def distances(x):
    squared = (projector(features(x)) - center).square().sum(dim=1)
    return squared, (squared - radius ** 2).clamp_min(0)

  if case == 'train_step':
    optimizer = torch.optim.Adam(projector.parameters(), lr=config.optim.learning_rate,
                                 weight_decay=config.optim.weight_decay)

    def step():
      squared, per_position = distances(images)
      loss = per_position.mean(dim=(1, 2))
      squared.detach().sqrt().mean(dim=(1, 2))  # The logged distance, as adjax's step computes it.
      optimizer.zero_grad(set_to_none=True)
      loss.mean().backward()
      optimizer.step()
    return step
  if case == 'score' and not config.eval.get('smoothing_sigma', 0.0):

    @torch.no_grad()
    def score():
      maps = F.interpolate(distances(images)[1][:, None], size=images.shape[-2:], mode='bilinear',
                           align_corners=False)[:, 0]
      return maps, maps.amax(dim=(1, 2)), maps.mean(dim=(1, 2))
    return score
  return None


class FullyConvAutoencoder(nn.Module):
  """seed 003 Table 2 as `adjax.models.autoencoders.FullyConv{Encoder,Decoder}`; every BatchNorm uses batch
  (`batch_statistics=True`) or running statistics, as adjax's contractive term needs."""

  def __init__(self, widths, channels: int = 3):
    super().__init__()
    conv = lambda c_in, c_out: nn.Conv2d(c_in, c_out, 3, padding=1)
    encoder, width_in = [], channels
    for width in widths:
      encoder.append(nn.ModuleList([conv(width_in, width), nn.BatchNorm2d(width), conv(width, width),
                                    nn.BatchNorm2d(width)]))
      width_in = width
    decoder, reversed_widths = [], tuple(reversed(widths))
    for index, width in enumerate(reversed_widths):
      last = index == len(widths) - 1
      out = channels if last else reversed_widths[index + 1]
      up = [] if last else [nn.ConvTranspose2d(width, width, 2, stride=2), nn.BatchNorm2d(width)]
      decoder.append(nn.ModuleList(up + [conv(width, out), nn.BatchNorm2d(out), conv(out, out)] +
                                   ([] if last else [nn.BatchNorm2d(out)])))
    self.encoder, self.decoder = nn.ModuleList(encoder), nn.ModuleList(decoder)

  @staticmethod
  def _run(modules, x, batch_statistics):
    for module in modules:
      if isinstance(module, nn.BatchNorm2d):
        x = F.leaky_relu(F.batch_norm(x, module.running_mean, module.running_var, module.weight, module.bias,
                                      training=batch_statistics, momentum=module.momentum, eps=module.eps),
                         0.2)
      else:
        x = module(x)
    return x

  def encode(self, x, *, batch_statistics: bool):
    for index, block in enumerate(self.encoder):
      x = self._run(block, x, batch_statistics)
      if index < len(self.encoder) - 1:
        x = F.max_pool2d(x, 2)
    return x

  def forward(self, x, *, batch_statistics: bool = False):
    z = self.encode(x, batch_statistics=batch_statistics)
    for block in self.decoder:
      z = self._run(block, z, batch_statistics)
    return torch.tanh(z)


def cae_case(case: str, config):
  from adjax.models import autoencoders  # pylint: disable=g-import-not-at-top
  widths = tuple(config.model.features) or autoencoders.FULLY_CONV_TABLE2_FEATURES
  net = FullyConvAutoencoder(widths).to(memory_format=CHANNELS_LAST)
  images = _images(config)
  if case == 'train_step':
    optimizer = torch.optim.Adam(net.parameters(), lr=config.optim.learning_rate, eps=config.optim.eps)
    (low, high), scale, weight = config.denoising.value_range, config.denoising.scale, config.contractive.weight

    def step():
      inputs = (images + scale * torch.randn_like(images)).clamp_(low, high) if scale > 0 else images
      per_example = (net(inputs, batch_statistics=True) - images).square().mean(dim=(1, 2, 3))
      if weight > 0:
        x = inputs.detach().requires_grad_(True)
        codes = net.encode(x, batch_statistics=False)
        probes = torch.empty_like(codes).bernoulli_(0.5).mul_(2).sub_(1)  # Rademacher.
        (rows,) = torch.autograd.grad(codes, x, probes, create_graph=True)
        per_example = per_example + weight * rows.square().sum(dim=(1, 2, 3))
      optimizer.zero_grad(set_to_none=True)
      per_example.mean().backward()
      optimizer.step()
    return step
  if case == 'score':
    return lambda: _reconstruction_score(net, images, data_range=config.loss.data_range)
  return None


def make_case(variant: str, case: str, *, config):
  """A no-argument callable running one `case` step of `variant` synchronously, or None without one."""
  if variant == 'ebm':
    return ebm_case(case, config)
  if variant in ('fcdd', 'fcdd_unfrozen') and config.model.trunk == 'vgg11_bn':
    return fcdd_case(case, config, frozen=variant == 'fcdd' and bool(config.model.frozen_until))
  if variant == 'lamp' and config.model.architecture == 'lamp':
    return lamp_case(case, config)
  if variant == 'occ' and config.model.backbone in torch_networks.RESNET_LAYERS:
    return occ_case(case, config)
  plain_cae = (config.loss.base == 'l2' and config.loss.pixel_reduction == 'mean' and not config.lamp.enabled
               and config.model.patches_per_side == 1 and config.mixer.num_categories <= 1
               and config.contractive.method == 'hutchinson' and config.contractive.num_projections == 1)
  if variant == 'cae' and config.model.architecture == 'fully_conv' and plain_cae:
    return cae_case(case, config)
  return None
