"""Tests of adjax.models.energy: shapes, parameter count of Table 3, a numpy forward reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjax import errors
from adjax import sampling
from adjax.models import energy
from jaxpr_helpers import equations  # pylint: disable=g-bad-import-order
from jaxpr_helpers import primitive_names  # pylint: disable=g-bad-import-order


def _num_params(params):
  return sum(leaf.size for leaf in jax.tree.leaves(params))


def _shapes(net, shape):
  """Parameter shapes without running anything (no 128² compute, no compile)."""
  return jax.eval_shape(net.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


def _random_params(net, shape, seed=0):
  """Parameters drawn with numpy: avoids compiling flax's PRNG init (seconds on this CPU)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.uniform(-0.3, 0.3, s.shape), jnp.float32),
                      _shapes(net, shape))



def test_table3_parameter_count_and_shape_at_128():
  net = energy.EnergyNet()  # Table 3 defaults
  params = _shapes(net, (2, 128, 128, 3))
  images = jax.ShapeDtypeStruct((2, 128, 128, 3), jnp.float32)
  assert jax.eval_shape(net.apply, params, images).shape == (2,)
  # Table 3, RGB input: (k*k*f_in + 1) * f_out per conv.
  expected = ((3 * 3 * 3 + 1) * 32 + (4 * 4 * 32 + 1) * 64 + (4 * 4 * 64 + 1) * 128
              + (4 * 4 * 128 + 1) * 256 + (4 * 4 * 256 + 1) * 256 * 2 + (4 * 4 * 256 + 1) * 1)
  assert _num_params(params) == expected
  assert params['params']['conv_out']['kernel'].shape == (4, 4, 256, 1)


@pytest.mark.parametrize('size, widths', [(64, (64, 128, 256, 256)), (32, (64, 128, 256)),
                                          (256, (64, 128, 256, 256, 256, 256))])
def test_features_for_other_sizes(size, widths):
  assert energy.features_for(size) == widths
  assert energy.num_downsamplings_for(size) == len(widths)


@pytest.mark.parametrize('size', [64, 32])
def test_fewer_downsamplings_end_in_4x4_kernel(size):
  net = energy.EnergyNet(first_features=4, features=(8,) * energy.num_downsamplings_for(size))
  params = _shapes(net, (3, size, size, 1))
  images = jax.ShapeDtypeStruct((3, size, size, 1), jnp.float32)
  assert jax.eval_shape(net.apply, params, images).shape == (3,)
  assert params['params']['conv_out']['kernel'].shape == (4, 4, 8, 1)


def test_final_kernel_is_the_remaining_size():
  net = energy.EnergyNet(first_features=4, features=(8, 8))
  params = _random_params(net, (2, 24, 16, 3))  # 24x16 / 4 -> 6x4 left
  assert params['params']['conv_out']['kernel'].shape == (6, 4, 8, 1)
  assert jax.jit(net.apply)(params, jnp.ones((2, 24, 16, 3))).shape == (2,)


@pytest.mark.parametrize('shape', [(2, 100, 100, 3), (2, 16, 16, 3), (2, 128, 80, 3),
                                   (128, 128, 3)])
def test_bad_input_shape_raises(shape):
  net = energy.EnergyNet()  # 5 stride-2 convs need multiples of 32
  with pytest.raises(errors.InputError):
    _shapes(net, shape)


@pytest.mark.parametrize('size', [100, 2, 4, 48])
def test_num_downsamplings_rejects_unsupported_sizes(size):
  with pytest.raises(errors.InputError):
    energy.num_downsamplings_for(size)


def test_bad_initialization_raises():
  with pytest.raises(errors.InputError):
    _shapes(energy.EnergyNet(initialization='he'), (1, 32, 32, 3))


def _numpy_conv(x, kernel, bias, stride, pad):
  """Cross-correlation as PyTorch's Conv2d: x [h, w, cin], kernel [kh, kw, cin, cout]."""
  x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
  kh, kw = kernel.shape[:2]
  out_h = (x.shape[0] - kh) // stride + 1
  out_w = (x.shape[1] - kw) // stride + 1
  out = np.empty((out_h, out_w, kernel.shape[3]))
  for i in range(out_h):
    for j in range(out_w):
      window = x[i * stride:i * stride + kh, j * stride:j * stride + kw]
      out[i, j] = np.tensordot(window, kernel, axes=3) + bias
  return out


def _numpy_elu(x):
  return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def test_forward_matches_numpy_reference_with_elu_and_padding_1():
  net = energy.EnergyNet(first_features=3, features=(4, 5))
  images = np.asarray(jax.random.normal(jax.random.key(2), (2, 16, 16, 2)))
  params = _random_params(net, images.shape)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params['params'])
  expected = []
  for image in images.astype(np.float64):
    x = _numpy_elu(_numpy_conv(image, p['conv_in']['kernel'], p['conv_in']['bias'], 1, 1))
    for name in ('down_0', 'down_1'):
      x = _numpy_elu(_numpy_conv(x, p[name]['kernel'], p[name]['bias'], 2, 1))
    assert x.shape == (4, 4, 5)
    x = _numpy_conv(x, p['conv_out']['kernel'], p['conv_out']['bias'], 1, 0)  # no activation
    expected.append(x.item())
  np.testing.assert_allclose(jax.jit(net.apply)(params, images), expected, rtol=1e-4, atol=1e-5)


def test_elu_follows_every_conv_but_the_last():
  # conv_vjp='lax': every conv is one lax convolution ('hwio' may run small ones as matmuls, same function).
  net = energy.EnergyNet(first_features=4, features=(8, 8, 8), conv_vjp='lax')
  params = _random_params(net, (1, 32, 32, 3))
  primitives = primitive_names(jax.make_jaxpr(net.apply)(params, jnp.ones((1, 32, 32, 3))))
  assert primitives.count('conv_general_dilated') == 5
  assert primitives.count('expm1') == 4  # energy.elu uses expm1; the final conv has no activation
  assert primitives[-1] != 'expm1'


def test_elu_equals_jax_nn_elu_values_and_first_and_second_order_gradients():
  x = jnp.asarray([-90., -20., -3., -1., -1e-3, 0., 1e-3, 0.5, 2., 80.], jnp.float32)
  np.testing.assert_array_equal(energy.elu(x), jax.nn.elu(x))
  np.testing.assert_allclose(energy.elu(x), _numpy_elu(np.asarray(x)), rtol=1e-6)
  weights = jnp.linspace(-2., 3., x.size)
  grad = lambda f: jax.grad(lambda v: jnp.sum(weights * f(v)))
  # The custom VJP's derivative exp(x) is computed as elu(x) + 1: within float32 rounding of 1.
  np.testing.assert_allclose(grad(energy.elu)(x), grad(jax.nn.elu)(x), rtol=0, atol=1e-7)
  np.testing.assert_array_equal(grad(energy.elu)(x)[x >= 0], weights[x >= 0])  # derivative 1 at 0, as JAX's
  second = lambda f: jax.grad(lambda v: jnp.sum(jnp.sin(grad(f)(v))))
  np.testing.assert_allclose(second(energy.elu)(x), second(jax.nn.elu)(x), rtol=1e-6, atol=1e-7)
  # Under jit (the fused form the SGLD chain runs) and in bfloat16.
  np.testing.assert_allclose(jax.jit(grad(energy.elu))(x), grad(jax.nn.elu)(x), rtol=0, atol=1e-7)
  half = x.astype(jnp.bfloat16)
  np.testing.assert_array_equal(energy.elu(half), jax.nn.elu(half))
  assert jax.grad(lambda v: jnp.sum(energy.elu(v)))(half).dtype == jnp.bfloat16


def test_pytorch_initialization_bounds():
  net = energy.EnergyNet(first_features=32, features=(64,))
  params = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))['params']
  for name, fan_in in [('conv_in', 27), ('down_0', 16 * 32), ('conv_out', 4 * 4 * 64)]:
    for leaf in ('kernel', 'bias'):
      values = np.asarray(params[name][leaf])
      assert np.abs(values).max() <= 1 / np.sqrt(fan_in)
      if values.size > 100:  # uniform on ±1/sqrt(fan_in): std = bound / sqrt(3)
        np.testing.assert_allclose(values.std(), 1 / np.sqrt(3 * fan_in), rtol=0.1)


def test_compute_dtype_bfloat16_returns_float32():
  net = energy.EnergyNet(first_features=4, features=(8,), dtype=jnp.bfloat16)
  params = _random_params(net, (2, 8, 8, 3))
  energies = jax.jit(net.apply)(params, jnp.ones((2, 8, 8, 3)))
  assert energies.dtype == jnp.float32
  reference = jax.jit(energy.EnergyNet(first_features=4, features=(8,)).apply)(
      params, jnp.ones((2, 8, 8, 3)))
  np.testing.assert_allclose(energies, reference, rtol=0.05, atol=0.05)


@pytest.mark.parametrize('height,width', [(8, 8), (6, 10)])
def test_space_to_depth_conv_equals_strided_conv(height, width):
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, height, width, 3)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(4, 4, 3, 5)), jnp.float32)
  direct = jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)),
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(energy.space_to_depth_conv(x, kernel), direct, rtol=1e-5, atol=1e-5)


def test_strided_impls_give_same_energies_and_gradients_with_same_params():
  """All implementations share parameters (checkpoints load in any) and compute the same E, dE/dx, dE/dparams."""
  nets = {impl: energy.EnergyNet(first_features=4, features=(6, 8), strided_impl=impl)
          for impl in energy.STRIDED_IMPLS}
  images = jax.random.normal(jax.random.key(4), (3, 16, 16, 3))
  params = _random_params(nets['direct'], images.shape)
  results = {}
  for impl, net in nets.items():
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, _shapes(net, images.shape))
    total = lambda p, x, net=net: jnp.sum(net.apply(p, x))
    results[impl] = jax.value_and_grad(total, argnums=(0, 1))(params, images)
    # Only JAX's own rule ('direct') differentiates w.r.t. the input with lhs-dilated convolutions.
    jaxpr = jax.make_jaxpr(jax.grad(total, argnums=1))(params, images)
    dilated = [eqn for eqn in equations(jaxpr) if eqn.primitive.name == 'conv_general_dilated'
               and any(d != 1 for d in eqn.params['lhs_dilation'])]
    assert bool(dilated) == (impl == 'direct'), impl
  reference = jax.tree.leaves(results.pop('direct'))
  for impl, result in results.items():
    for value, expected in zip(jax.tree.leaves(result), reference, strict=True):
      np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-5, err_msg=impl)


def test_unknown_strided_impl_raises():
  with pytest.raises(errors.InputError, match='strided_impl'):
    energy.EnergyNet(features=(4,), strided_impl='fft').init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


def test_conv_vjps_give_same_energies_and_gradients_and_hwio_sgld_has_no_01oi_kernel():
  """conv_vjp='hwio' (default) and 'lax' are the same function; in an SGLD scan only 'lax' leaves `01oi`."""
  nets = {impl: energy.EnergyNet(first_features=4, features=(6, 8), conv_vjp=impl) for impl in energy.CONV_VJPS}
  images = jax.random.normal(jax.random.key(5), (3, 16, 16, 3))
  params = _random_params(nets['hwio'], images.shape)
  results = {impl: jax.value_and_grad(lambda p, x: jnp.sum(net.apply(p, x) ** 2), (0, 1))(params, images)
             for impl, net in nets.items()}
  for got, want in zip(jax.tree.leaves(results['hwio']), jax.tree.leaves(results['lax'])):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
  if jax.default_backend() == 'cpu':
    for impl, net in nets.items():
      chain = jax.jit(lambda x: sampling.sgld(lambda y: net.apply(params, y), x, jax.random.key(0), num_steps=2,
                                              step_size=1., noise_scale=0.01))
      assert ('_01oi->' in chain.lower(images).compile().as_text()) == (impl == 'lax'), impl


def test_unknown_conv_vjp_raises():
  with pytest.raises(errors.InputError, match='conv_vjp'):
    energy.EnergyNet(features=(4,), conv_vjp='fft').init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
