"""Convolutional autoencoders of the reconstruction methods (seeds 001 and 003).

  LampEncoder / LampDecoder     seed 001: blocks conv(stride 2) -> BatchNorm -> LeakyReLU and
                                upsample -> conv -> BatchNorm -> LeakyReLU, no skips (6 blocks; 4 for
                                small images such as digits).
  CaeEncoder / CaeDecoder       seed 003 Table 1: 4x4 stride-2 convs 16..512, a 4x4 'VALID' conv to 1024,
                                a dense layer to the latent (128); the decoder mirrors it with transposed
                                convs; LeakyReLU(0.2) + BatchNorm; tanh output for inputs in [-1, 1].
  FullyConvEncoder / ...Decoder seed 003 Table 2: conv triplets (3x3, 3x3, 2x2 max-pool), no dense layer.
  MixerHead                     seed 003 latent classifier: MLP with dropout (Table 1), optionally after
                                one 3x3 'VALID' conv and a global mean (Table 2).
  Autoencoder                   composes an encoder, a decoder, an optional head and optional patch-wise
                                reconstruction; `encode`, `decode`, `classify` are separate methods so
                                the contractive penalty can differentiate the encoder alone.

Seed 003 initialises every conv / transposed conv / dense kernel from N(0, 0.02) (`init_std`); biases
start at zero and BatchNorm at scale 1, offset 0. Images are NHWC.

Speed (same functions, tested equal to Flax's layers): convs go through
`adjax.models.convolution.flax_conv_general_dilated`, whose stride-2 input gradient is an ordinary
convolution; stride-2 transposed convs are `ConvTranspose` below (sub-pixel form, no dilated convolution);
nearest 2x upsampling is a broadcast (its gradient a sum, not a scatter).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adjax import errors
from adjax.models import convolution
from adjax.models import pooling

CAE_TABLE1_FEATURES = (16, 32, 64, 128, 256, 512)  # Conv1..Conv6 (4x4 / 2 / 1) at 256x256 input.
CAE_TABLE1_BOTTLENECK = 1024  # Conv7 (4x4 / 1 / 0).
CAE_TABLE1_LATENT = 128  # l_d, "128 produced the best result".
FULLY_CONV_TABLE2_FEATURES = (64, 128, 256, 512, 1024)  # Table 2 triplet widths at 224x224 input.
LAMP_FEATURES = (32, 64, 128, 256, 256, 256)  # Seed 001 gives no widths; these are adjax's.
LEAKY_SLOPE = 0.2
BATCH_NORM_MOMENTUM = 0.9  # PyTorch's momentum 0.1 in Flax's convention.


def cae_features_for(image_size: int) -> tuple[int, ...]:
  """Table 1 stride-2 widths adapted to `image_size`: as many convs as bring it down to 4 (256 -> 6).

  Smaller inputs keep the first widths (64 -> 16, 32, 64, 128); larger ones repeat 512.
  Raises InputError unless image_size = 4 * 2**k with k >= 1.
  """
  ratio = image_size // 4
  if image_size % 4 or ratio < 2 or ratio & (ratio - 1):
    raise errors.InputError(f'data.image_size: the CAE needs 4 * 2**k (8, 16, ..., 256), got {image_size}')
  count = ratio.bit_length() - 1
  return (CAE_TABLE1_FEATURES + (CAE_TABLE1_FEATURES[-1],) * count)[:count]


def check_divisible(image_size: int, num_downsamplings: int, *, what: str):
  if image_size % (2 ** num_downsamplings):
    raise errors.InputError(f'data.image_size: {what} halves the image {num_downsamplings} times, so '
                            f'the size must be divisible by {2 ** num_downsamplings}; got {image_size}')


def _normal(std: float):
  return nn.initializers.normal(std)


def Conv(*args, **kwargs):  # pylint: disable=invalid-name  A layer, named like one.
  """`nn.Conv` with `convolution.flax_conv_general_dilated` (the same function, faster gradients on CPU)."""
  return nn.Conv(*args, conv_general_dilated=convolution.flax_conv_general_dilated, **kwargs)


def _conv_parameters(module: nn.Module, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`kernel [kh, kw, in, out]` and `bias [out]` of `module`, declared as `nn.Conv` declares them."""
  kernel = module.param('kernel', module.kernel_init, tuple(module.kernel_size) + (x.shape[-1], module.features))
  return kernel, module.param('bias', module.bias_init, (module.features,))


class ConvTranspose(nn.Module):
  """`nn.ConvTranspose` (same parameters `kernel [kh, kw, in, out]`, `bias`, same function and auto-name)
  computed without a dilated convolution when the stride is 2 (`convolution.conv_transpose2d`)."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: Any = 'SAME'
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    kernel, bias = _conv_parameters(self, x)
    if tuple(self.strides) == (2, 2):
      padding = tuple(convolution.transpose_padding(size, self.padding if isinstance(self.padding, str)
                                                    else self.padding[axis])
                      for axis, size in enumerate(self.kernel_size))
      y = convolution.conv_transpose2d(x, kernel, padding)
    else:
      y = jax.lax.conv_transpose(x, kernel, tuple(self.strides), self.padding,
                                 dimension_numbers=convolution.NHWC_HWIO)
    return y + bias


def upsample_nearest_2x(x: jax.Array) -> jax.Array:
  """[batch, h, w, c] -> [batch, 2h, 2w, c], each pixel repeated 2x2 (`jax.image.resize` 'nearest')."""
  batch, height, width, channels = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (batch, height, 2, width, 2, channels))
  return x.reshape(batch, 2 * height, 2 * width, channels)


class UpsampleConv(nn.Module):
  """`upsample_nearest_2x` then `nn.Conv(features, kernel_size, padding='SAME')`, computed on the small map
  (`convolution.upsample_conv2d`); the same parameters (`kernel [kh, kw, in, out]`, `bias`) and function."""
  features: int
  kernel_size: tuple[int, int]
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    kernel, bias = _conv_parameters(self, x)
    padding = tuple(((size - 1) // 2, size // 2) for size in self.kernel_size)  # 'SAME' at stride 1.
    return convolution.upsample_conv2d(x, kernel, padding) + bias


def _norm_act(x, *, train: bool):
  x = nn.BatchNorm(use_running_average=not train, momentum=BATCH_NORM_MOMENTUM)(x)
  return nn.leaky_relu(x, LEAKY_SLOPE)


def _output_activation(x, name: str):
  if name == 'tanh':
    return jnp.tanh(x)
  if name == 'sigmoid':
    return jax.nn.sigmoid(x)
  if name == 'none':
    return x
  raise errors.InputError(f"model.output_activation: 'tanh', 'sigmoid' or 'none', got {name!r}")


class LampEncoder(nn.Module):
  """Seed 001 encoder: per width, conv (kernel_size, stride 2, SAME) -> BatchNorm -> LeakyReLU.

  `[batch, H, W, C]` -> `[batch, H / 2**n, W / 2**n, features[-1]]` with n = len(features).
  """
  features: Sequence[int] = LAMP_FEATURES
  kernel_size: int = 3
  init_std: float = 0.02

  @nn.compact
  def __call__(self, x, *, train: bool):
    for width in self.features:
      x = Conv(width, (self.kernel_size,) * 2, strides=2, padding='SAME',
                  kernel_init=_normal(self.init_std))(x)
      x = _norm_act(x, train=train)
    return x


class LampDecoder(nn.Module):
  """Seed 001 decoder: per block, 2x nearest upsampling -> conv -> BatchNorm -> LeakyReLU.

  Upsampling and conv run as one `UpsampleConv` (the same function without building the upsampled map).

  Widths mirror the encoder's; the last block's conv outputs the image channels followed by
  `output_activation` instead of BatchNorm + LeakyReLU (an image cannot come out of a LeakyReLU of
  normalised values).
  """
  features: Sequence[int] = LAMP_FEATURES
  channels: int = 3
  kernel_size: int = 3
  output_activation: str = 'tanh'
  init_std: float = 0.02

  @nn.compact
  def __call__(self, z, *, train: bool):
    widths = tuple(reversed(self.features))[1:] + (self.channels,)
    for index, width in enumerate(widths):
      # Named as the nn.Conv it replaces was, so parameters and checkpoints keep their names.
      z = UpsampleConv(width, (self.kernel_size,) * 2, kernel_init=_normal(self.init_std), name=f'Conv_{index}')(z)
      if index < len(widths) - 1:
        z = _norm_act(z, train=train)
    return _output_activation(z, self.output_activation)


class CaeEncoder(nn.Module):
  """Seed 003 Table 1 encoder: 4x4/2/1 convs, a 4x4/1/0 conv to `bottleneck`, dense to `latent_dim`.

  `[batch, S, S, C]` with S = 4 * 2**len(features) -> `[batch, latent_dim]`.
  """
  features: Sequence[int] = CAE_TABLE1_FEATURES
  bottleneck: int = CAE_TABLE1_BOTTLENECK
  latent_dim: int = CAE_TABLE1_LATENT
  init_std: float = 0.02

  @nn.compact
  def __call__(self, x, *, train: bool):
    for width in self.features:
      x = Conv(width, (4, 4), strides=2, padding=((1, 1), (1, 1)), kernel_init=_normal(self.init_std))(x)
      x = _norm_act(x, train=train)
    x = Conv(self.bottleneck, (4, 4), padding='VALID', kernel_init=_normal(self.init_std))(x)
    x = _norm_act(x, train=train)
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.latent_dim, kernel_init=_normal(self.init_std))(x)


class CaeDecoder(nn.Module):
  """Mirror of `CaeEncoder`: dense to `bottleneck`, 4x4/1/0 transposed conv to 4x4, then 4x4/2/1
  transposed convs (PyTorch padding 1 = Flax padding 2 on the dilated input) back to the image; tanh.
  """
  features: Sequence[int] = CAE_TABLE1_FEATURES
  bottleneck: int = CAE_TABLE1_BOTTLENECK
  channels: int = 3
  output_activation: str = 'tanh'
  init_std: float = 0.02

  @nn.compact
  def __call__(self, z, *, train: bool):
    z = nn.Dense(self.bottleneck, kernel_init=_normal(self.init_std))(z)
    z = _norm_act(z, train=train).reshape(z.shape[0], 1, 1, self.bottleneck)
    widths = tuple(reversed(self.features))
    z = ConvTranspose(widths[0], (4, 4), padding='VALID', kernel_init=_normal(self.init_std))(z)
    z = _norm_act(z, train=train)
    for index, width in enumerate(widths[1:] + (self.channels,)):
      z = ConvTranspose(width, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                        kernel_init=_normal(self.init_std))(z)
      if index < len(widths) - 1:
        z = _norm_act(z, train=train)
    return _output_activation(z, self.output_activation)


class FullyConvEncoder(nn.Module):
  """Seed 003 Table 2 encoder: per width, conv 3x3/1/1 -> conv 3x3/1/1 -> 2x2 max-pool (no pool last).

  `[batch, H, W, C]` -> `[batch, H / 2**(n-1), W / 2**(n-1), features[-1]]`; BatchNorm + LeakyReLU after
  every conv.
  """
  features: Sequence[int] = FULLY_CONV_TABLE2_FEATURES
  init_std: float = 0.02

  @nn.compact
  def __call__(self, x, *, train: bool):
    for index, width in enumerate(self.features):
      for _ in range(2):
        x = Conv(width, (3, 3), padding=((1, 1), (1, 1)), kernel_init=_normal(self.init_std))(x)
        x = _norm_act(x, train=train)
      if index < len(self.features) - 1:
        x = pooling.max_pool_2x2(x)
    return x


class FullyConvDecoder(nn.Module):
  """Mirror of `FullyConvEncoder`: per step, 2x2 stride-2 transposed conv -> two 3x3/1/1 convs.

  Table 2 prints the decoder convs as 4x4/2/1 and the transposed conv as 2x2/2/1, which would shrink the
  map instead of restoring 224x224; adjax reads it as the encoder's mirror (size-preserving convs, exact
  2x upsampling), the only reading that returns the input size. The last step has no transposed conv and
  ends in a conv to the image channels with `output_activation`.
  """
  features: Sequence[int] = FULLY_CONV_TABLE2_FEATURES
  channels: int = 3
  output_activation: str = 'tanh'
  init_std: float = 0.02

  @nn.compact
  def __call__(self, z, *, train: bool):
    widths = tuple(reversed(self.features))  # e.g. 1024, 512, 256, 128, 64
    for index, width in enumerate(widths):
      last = index == len(widths) - 1
      if not last:
        z = ConvTranspose(width, (2, 2), strides=(2, 2), padding='VALID',
                          kernel_init=_normal(self.init_std))(z)
        z = _norm_act(z, train=train)
      out_width = self.channels if last else widths[index + 1]
      z = Conv(out_width, (3, 3), padding=((1, 1), (1, 1)), kernel_init=_normal(self.init_std))(z)
      z = _norm_act(z, train=train)
      z = Conv(out_width, (3, 3), padding=((1, 1), (1, 1)), kernel_init=_normal(self.init_std))(z)
      if not last:
        z = _norm_act(z, train=train)
    return _output_activation(z, self.output_activation)


class MixerHead(nn.Module):
  """Seed 003 Mixer classifier: category logits from the latent code.

  A `[batch, D]` latent goes through the MLP (ReLU, dropout between layers). A `[batch, h, w, C]` latent
  (Table 2) first goes through one 3x3 'VALID' conv + ReLU and a spatial mean (adjax's choice: the paper
  does not say how the map becomes a vector; a mean keeps the head under 1M parameters).
  Returns `[batch, num_classes]` logits.
  """
  num_classes: int
  hidden: Sequence[int] = (256, 128)
  conv_features: int = 64
  dropout_rate: float = 0.3
  init_std: float = 0.02

  @nn.compact
  def __call__(self, latent, *, train: bool):
    x = latent
    if x.ndim == 4:
      x = nn.relu(nn.Conv(self.conv_features, (3, 3), padding='VALID', kernel_init=_normal(self.init_std))(x))
      x = jnp.mean(x, axis=(1, 2))
    for width in self.hidden:
      x = nn.relu(nn.Dense(width, kernel_init=_normal(self.init_std))(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, kernel_init=_normal(self.init_std))(x)


def to_patches(images: jax.Array, patches_per_side: int) -> jax.Array:
  """`[B, H, W, C]` -> `[B * p * p, H / p, W / p, C]` non-overlapping patches, row-major per image."""
  batch, height, width, channels = images.shape
  p = patches_per_side
  if height % p or width % p:
    raise errors.InputError(f'model.patches_per_side: {p} does not divide the image size {height}x{width}')
  x = images.reshape(batch, p, height // p, p, width // p, channels).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(batch * p * p, height // p, width // p, channels)


def from_patches(patches: jax.Array, patches_per_side: int) -> jax.Array:
  """Inverse of `to_patches`: `[B * p * p, h, w, C]` -> `[B, p * h, p * w, C]`."""
  p = patches_per_side
  count, height, width, channels = patches.shape
  x = patches.reshape(count // (p * p), p, p, height, width, channels).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(count // (p * p), p * height, p * width, channels)


class Autoencoder(nn.Module):
  """encoder + decoder (+ optional `head` on the latent), with optional patch-wise reconstruction.

  With `patches_per_side = p > 1` every image is cut into p x p patches that are encoded and decoded
  independently (seed 001, "number of patches" hyperparameter) and `decode` reassembles the image;
  the latent then has `B * p * p` rows.
  `__call__(images, train=...)` returns `(reconstruction [B, H, W, C], latent, logits or None)`.
  """
  encoder: nn.Module
  decoder: nn.Module
  head: Any = None
  patches_per_side: int = 1

  def encode(self, images, *, train: bool = False):
    if self.patches_per_side > 1:
      images = to_patches(images, self.patches_per_side)
    return self.encoder(images, train=train)

  def decode(self, latent, *, train: bool = False):
    reconstruction = self.decoder(latent, train=train)
    if self.patches_per_side > 1:
      reconstruction = from_patches(reconstruction, self.patches_per_side)
    return reconstruction

  def classify(self, latent, *, train: bool = False):
    return self.head(latent, train=train)

  def __call__(self, images, *, train: bool = False):
    latent = self.encode(images, train=train)
    reconstruction = self.decode(latent, train=train)
    logits = self.classify(latent, train=train) if self.head is not None else None
    return reconstruction, latent, logits


def init_variables(model: nn.Module, rng: jax.Array, images: jax.Array, *, init_std: float) -> dict:
  """The variables `model.init` would give (same tree, same distributions), drawn with one random call.

  Every kernel of these models is N(0, init_std), biases 0, BatchNorm scale 1 / offset 0 / mean 0 /
  var 1. `model.init` makes one threefry call per kernel, and with jax 0.10's partitionable threefry
  each call costs ~1.5 s of XLA:CPU compile (measured here: 20 kernels ≈ 30 s); one call for all
  kernels compiles once.
  """
  shapes = jax.eval_shape(lambda: model.init({'params': rng, 'dropout': rng}, images))
  flat, tree = jax.tree_util.tree_flatten_with_path(shapes)
  is_kernel = [path[-1].key == 'kernel' for path, _ in flat]
  sizes = [leaf.size for (_, leaf), kernel in zip(flat, is_kernel) if kernel]
  normals = init_std * jax.random.normal(rng, (sum(sizes),))
  offsets = [0]
  for size in sizes:
    offsets.append(offsets[-1] + size)
  leaves, kernel_index = [], 0
  for (path, leaf), kernel in zip(flat, is_kernel):
    if kernel:
      start = offsets[kernel_index]
      leaves.append(normals[start:start + leaf.size].reshape(leaf.shape).astype(leaf.dtype))
      kernel_index += 1
    else:
      fill = 1.0 if path[-1].key in ('scale', 'var') else 0.0
      leaves.append(jnp.full(leaf.shape, fill, leaf.dtype))
  return jax.tree_util.tree_unflatten(tree, leaves)


def build(*, architecture: str, image_size: int, channels: int = 3, features: Sequence[int] | None = None,
          num_blocks: int | None = None, kernel_size: int = 3, latent_dim: int = CAE_TABLE1_LATENT,
          bottleneck: int = CAE_TABLE1_BOTTLENECK, output_activation: str = 'tanh', init_std: float = 0.02,
          patches_per_side: int = 1, num_classes: int = 0, head_hidden: Sequence[int] = (256, 128),
          head_dropout: float = 0.3) -> Autoencoder:
  """The `Autoencoder` of `architecture` ('lamp' | 'cae' | 'fully_conv') checked against `image_size`.

  `features=None` picks each paper's widths (LAMP: the first `num_blocks` of `LAMP_FEATURES`; CAE:
  `cae_features_for(patch size)`; fully_conv: Table 2's). `num_classes > 0` adds a `MixerHead`.
  """
  patch_size = image_size // max(patches_per_side, 1)
  if patches_per_side < 1 or image_size % patches_per_side:
    raise errors.InputError(f'model.patches_per_side: must divide data.image_size {image_size}, got '
                            f'{patches_per_side}')
  if architecture == 'lamp':
    widths = tuple(features) if features else LAMP_FEATURES[:num_blocks or len(LAMP_FEATURES)]
    check_divisible(patch_size, len(widths), what='the LAMP autoencoder')
    encoder = LampEncoder(widths, kernel_size=kernel_size, init_std=init_std)
    decoder = LampDecoder(widths, channels=channels, kernel_size=kernel_size,
                          output_activation=output_activation, init_std=init_std)
  elif architecture == 'cae':
    widths = tuple(features) if features else cae_features_for(patch_size)
    if patch_size != 4 * 2 ** len(widths):
      raise errors.InputError(f'model.features: {len(widths)} stride-2 convs need a {4 * 2 ** len(widths)}'
                              f'-pixel input (patch), got {patch_size}')
    encoder = CaeEncoder(widths, bottleneck=bottleneck, latent_dim=latent_dim, init_std=init_std)
    decoder = CaeDecoder(widths, bottleneck=bottleneck, channels=channels,
                         output_activation=output_activation, init_std=init_std)
  elif architecture == 'fully_conv':
    widths = tuple(features) if features else FULLY_CONV_TABLE2_FEATURES
    check_divisible(patch_size, len(widths) - 1, what='the fully convolutional autoencoder')
    encoder = FullyConvEncoder(widths, init_std=init_std)
    decoder = FullyConvDecoder(widths, channels=channels, output_activation=output_activation,
                               init_std=init_std)
  else:
    raise errors.InputError(f"model.architecture: 'lamp', 'cae' or 'fully_conv', got {architecture!r}")
  head = (MixerHead(num_classes, hidden=tuple(head_hidden), dropout_rate=head_dropout, init_std=init_std)
          if num_classes > 0 else None)
  return Autoencoder(encoder=encoder, decoder=decoder, head=head, patches_per_side=patches_per_side)
