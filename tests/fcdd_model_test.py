"""FCDD network: receptive-field bookkeeping, Gaussian upsampling against a numpy transposed conv, shapes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjax import errors
from adjax.models import fcdd


def test_vgg11_trunk_receptive_field_at_224():
  field = fcdd.receptive_field(fcdd.trunk_layers('vgg11_bn'), input_size=224)
  assert field == fcdd.ReceptiveField(output_size=28, jump=8, size=62, start=3.5)
  assert fcdd.default_std(62) == 10.0
  assert fcdd.default_std(18) == pytest.approx(math.log10(0.45 * 18 + 1) + 0.25)


def test_network_output_sizes_match_the_bookkeeping():
  for trunk, size in (('vgg11_bn', 224), ('vgg11_bn', 100), ('cnn', 36)):
    model = fcdd.FCDDNet(trunk=trunk)
    shapes = jax.eval_shape(lambda x, m=model: m.init_with_output(jax.random.PRNGKey(0), x)[0],
                            jnp.zeros((2, size, size, 3)))
    field = fcdd.receptive_field(fcdd.trunk_layers(trunk), input_size=size)
    assert shapes.shape == (2, field.output_size, field.output_size), trunk


def _input_support(model, variables, size, row, column, num_images=12):
  """Rows and columns of input pixels whose value changes output pixel (row, column) of `model`."""
  images = jax.random.normal(jax.random.PRNGKey(1), (num_images, size, size, 3))
  grads = jax.jit(jax.grad(lambda x: jnp.sum(model.apply(variables, x)[:, row, column])))(images)
  touched = np.abs(np.asarray(grads)).sum(axis=(0, 3)) > 0
  rows, columns = np.nonzero(touched.any(1))[0], np.nonzero(touched.any(0))[0]
  return rows, columns


def test_receptive_field_is_where_the_gradient_reaches():
  # A CNN trunk with the VGG trunk's kinds of layers (3x3 pad-1 convs, 2x2 pools); the VGG numbers above
  # come from the same bookkeeping.
  layers, size, pixel = (8, 'M', 8, 8, 'M', 8), 40, 4
  model = fcdd.FCDDNet(trunk='cnn', cnn_layers=layers)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
  field = fcdd.receptive_field(fcdd.trunk_layers('cnn', cnn_layers=layers), input_size=size)
  assert field == fcdd.ReceptiveField(output_size=10, jump=4, size=22, start=1.5)
  centre = field.start + pixel * field.jump
  low, high = centre - (field.size - 1) / 2, centre + (field.size - 1) / 2
  assert low >= 0 and high <= size - 1  # An interior pixel: its field is not clipped by the border.
  rows, columns = _input_support(model, variables, size, pixel, pixel)
  for found in (rows, columns):
    assert found.min() == low and found.max() == high  # Exactly the predicted r x r window.


def _numpy_transposed_conv_upsample(low_res, *, field, output_size, std):
  """Scatter-adds an r x r Gaussian (peak at its centre (r-1)/2) with stride j, then crops."""
  r, j = field.size, field.jump
  taps = np.arange(r) - (r - 1) / 2
  kernel_1d = np.exp(-taps ** 2 / (2 * std ** 2))
  kernel = np.outer(kernel_1d, kernel_1d)
  n = low_res.shape[-1]
  full = np.zeros((low_res.shape[0], (n - 1) * j + r, (n - 1) * j + r))
  for i in range(n):
    for k in range(n):
      full[:, i * j:i * j + r, k * j:k * j + r] += low_res[:, i, k, None, None] * kernel
  offset = int((r - 1) / 2 - field.start)
  return full[:, offset:offset + output_size, offset:offset + output_size]


def test_upsampling_equals_transposed_conv_and_centres_a_hot_pixel():
  field = fcdd.receptive_field(fcdd.trunk_layers('vgg11_bn'), input_size=224)
  matrix = fcdd.upsampling_matrix(field, output_size=224, std=12.0)
  low_res = np.random.default_rng(0).uniform(0, 2, (2, 28, 28))
  expected = _numpy_transposed_conv_upsample(low_res, field=field, output_size=224, std=12.0)
  got = fcdd.gaussian_upsample(jnp.asarray(low_res, jnp.float32), rows=matrix, columns=matrix)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)

  hot = np.zeros((1, 28, 28))
  hot[0, 10, 17] = 1.0
  up = np.asarray(fcdd.gaussian_upsample(jnp.asarray(hot, jnp.float32), rows=matrix, columns=matrix))[0]
  grid_rows, grid_columns = np.mgrid[:224, :224]
  centroid = ((up * grid_rows).sum() / up.sum(), (up * grid_columns).sum() / up.sum())
  np.testing.assert_allclose(centroid, (3.5 + 8 * 10, 3.5 + 8 * 17), atol=1e-4)
  # The peak 1 sits between pixels 83 and 84 (row) and 139 and 140 (column): the four nearest pixels
  # share the maximum exp(-0.5^2 / (2 std^2))^2.
  maxima = np.argwhere(np.isclose(up, up.max()))
  assert sorted(map(tuple, maxima)) == [(83, 139), (83, 140), (84, 139), (84, 140)]
  assert up.max() == pytest.approx(math.exp(-0.25 / (2 * 144)) ** 2, rel=1e-6)
  assert np.count_nonzero(up > 0) == 62 * 62  # Support: exactly the r x r kernel.


@pytest.mark.parametrize('trunk,size', [('vgg11_bn', 224), ('cnn', 20)])
def test_heatmap_orders_and_shapes(trunk, size):
  low = fcdd.receptive_field(fcdd.trunk_layers(trunk), input_size=size).output_size
  a = jax.random.normal(jax.random.PRNGKey(0), (3, low, low))
  field = fcdd.receptive_field(fcdd.trunk_layers(trunk), input_size=size)
  std = fcdd.default_std(field.size)
  m = np.asarray(fcdd.upsampling_matrix(field, output_size=size, std=std), np.float64)
  a64 = np.asarray(a, np.float64)
  huber = np.sqrt(a64 ** 2 + 1) - 1
  first = fcdd.make_heatmap_fn(trunk=trunk, image_size=(size, size), order='huber_then_upsample')
  second = fcdd.make_heatmap_fn(trunk=trunk, image_size=(size, size), order='upsample_then_huber')
  heat, low_heat = first(a)
  assert heat.shape == (3, size, size) and low_heat.shape == (3, low, low)
  np.testing.assert_allclose(heat, np.einsum('Hh,bhw,Ww->bHW', m, huber, m), rtol=1e-4, atol=1e-5)
  heat2, _ = second(a)
  expected2 = np.sqrt(np.einsum('Hh,bhw,Ww->bHW', m, a64 ** 2, m) + 1) - 1
  np.testing.assert_allclose(heat2, expected2, rtol=1e-4, atol=1e-5)
  assert np.all(np.asarray(heat2) >= 0) and not np.allclose(heat, heat2)


def test_bad_options_raise_input_error():
  with pytest.raises(errors.InputError, match='config.model.trunk'):
    fcdd.trunk_layers('resnet')
  with pytest.raises(errors.InputError, match='cnn_layers'):
    fcdd.trunk_layers('cnn', cnn_layers=(32, 'X'))
  with pytest.raises(errors.InputError, match='heatmap_order'):
    fcdd.make_heatmap_fn(trunk='cnn', image_size=(16, 16), order='sideways')
