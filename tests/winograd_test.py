"""Winograd convolution: exact transforms, the same function as lax's convolution (values, gradients), where it runs."""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from adjax.models import convolution
from adjax.models import vgg
from adjax.models import winograd


def _lax_conv(x, kernel, padding):
  return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=convolution.NHWC_HWIO,
                                  precision=lax.Precision.HIGHEST)


def _random(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


# Rounding error relative to the output's largest value, per (output tile, kernel size); F(4x4, 3x3)
# amplifies it through its ±8 entries.
TOLERANCE = {(2, 3): 5e-6, (4, 3): 1e-4, (2, 2): 5e-6, (3, 2): 5e-6}


def _value_and_gradients(conv, x, kernel, grad_out):
  """conv(x, kernel) and its gradients w.r.t. x and kernel for `grad_out`, in one compiled program."""
  value, vjp = jax.vjp(conv, x, kernel)
  return (value, *vjp(grad_out))


@pytest.mark.parametrize('output_tile, kernel_size', [(m, r) for r in (2, 3) for m in range(1, 8) if m + r <= 9])
def test_transforms_compute_the_1d_correlation_exactly(output_tile, kernel_size):
  """A^T [(G g) ⊙ (B^T d)] = (sum_k g_k d_(i + k))_i for any g, d; B^T holds integers (the input transform adds)."""
  input_t, kernel_t, output_t = winograd.transforms(output_tile, kernel_size)
  size = output_tile + kernel_size - 1
  assert input_t.shape == (size, size) and kernel_t.shape == (size, kernel_size)
  assert output_t.shape == (output_tile, size)
  np.testing.assert_array_equal(input_t, np.round(input_t))
  rng = np.random.default_rng(output_tile * 10 + kernel_size)
  for _ in range(3):
    d, g = rng.standard_normal(size), rng.standard_normal(kernel_size)
    np.testing.assert_allclose(output_t @ ((kernel_t @ g) * (input_t @ d)), np.correlate(d, g, 'valid'),
                               rtol=0, atol=1e-11)


def test_f2x2_3x3_transforms_are_lavin_and_grays_up_to_row_signs():
  input_t, kernel_t, output_t = winograd.transforms(2, 3)
  published = (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
               np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]),
               np.array([[1, 1, 1, 0], [0, 1, -1, -1]]))
  signs = np.array([1, 1, 1, -1])  # The point at infinity's row.
  np.testing.assert_array_equal(input_t, signs[:, None] * published[0])
  np.testing.assert_array_equal(kernel_t, published[1])
  np.testing.assert_array_equal(output_t, published[2] * signs)


@pytest.mark.parametrize('output_tile, kernel_size, height, width, padding', [
    (2, 3, 8, 8, ((1, 1), (1, 1))), (2, 3, 7, 10, ((1, 1), (1, 1))), (2, 3, 9, 6, ((0, 0), (0, 0))),
    (2, 3, 6, 5, ((2, 0), (1, 2))), (2, 3, 3, 3, ((1, 1), (1, 1))),
    (4, 3, 11, 9, ((1, 1), (1, 1))), (4, 3, 6, 5, ((2, 0), (1, 2))),
    (3, 2, 9, 9, ((0, 0), (0, 0))), (3, 2, 8, 11, ((1, 1), (1, 1))), (3, 2, 5, 7, ((1, 0), (0, 1))),
    (2, 2, 7, 6, ((0, 0), (1, 1)))])
def test_values_and_gradients_equal_lax(output_tile, kernel_size, height, width, padding):
  x, kernel = _random((2, height, width, 5), 0), _random((kernel_size, kernel_size, 5, 4), 1)
  grad_out = _random((2, height + sum(padding[0]) - kernel_size + 1, width + sum(padding[1]) - kernel_size + 1, 4),
                     2)
  expected = jax.jit(_value_and_gradients, static_argnums=0)(
      lambda x, k: _lax_conv(x, k, padding), x, kernel, grad_out)
  actual = jax.jit(_value_and_gradients, static_argnums=0)(
      lambda x, k: winograd.conv(x, k, padding, output_tile=output_tile), x, kernel, grad_out)
  tolerance = TOLERANCE[output_tile, kernel_size]
  for mine, reference in zip(actual, expected):  # Value, then the gradients w.r.t. x and kernel.
    assert mine.shape == reference.shape
    np.testing.assert_allclose(mine, reference, atol=tolerance * float(jnp.max(jnp.abs(reference))), rtol=0)


@pytest.mark.parametrize('output_tile', (2, 4))
def test_second_order_gradients_equal_lax(output_tile):
  """d/d(x, kernel) of ||input gradient||^2 (what a contractive penalty differentiates): reverse over reverse."""
  padding = ((1, 1), (0, 2))
  x, kernel, grad_out = _random((1, 6, 7, 3), 8), _random((3, 3, 3, 4), 9), _random((1, 6, 7, 4), 10)

  def penalty(conv):
    def value(x, k):
      _, vjp = jax.vjp(conv, x, k)
      grad_x, grad_k = vjp(grad_out)
      return jnp.sum(grad_x ** 2) + jnp.sum(grad_k * x[0, :3, :3, :, None])
    return jax.jit(jax.grad(value, argnums=(0, 1)))(x, kernel)

  expected = penalty(lambda x, k: _lax_conv(x, k, padding))
  actual = penalty(lambda x, k: winograd.conv(x, k, padding, output_tile=output_tile))
  for mine, reference in zip(actual, expected):
    np.testing.assert_allclose(mine, reference, atol=TOLERANCE[output_tile, 3] * float(jnp.max(jnp.abs(reference))),
                               rtol=0)


def test_transformed_kernel_of_f2_is_g_g_gt_by_hand():
  kernel = _random((3, 3, 1, 1), 3)[..., 0, 0]
  g = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
  expected = g @ np.asarray(kernel, np.float64) @ g.T
  actual = winograd.transformed_kernel(kernel[..., None, None], output_tile=2).reshape(4, 4)
  np.testing.assert_allclose(actual, expected, rtol=1e-6)


def test_rejects_other_kernels_tiles_and_paddings():
  x = jnp.zeros((1, 8, 8, 2))
  with pytest.raises(ValueError, match='not square'):
    winograd.conv(x, jnp.zeros((3, 2, 2, 2)), ((1, 1), (0, 0)), output_tile=2)
  with pytest.raises(ValueError, match=r'no F\(8, 3\)'):
    winograd.conv(x, jnp.zeros((3, 3, 2, 2)), ((1, 1), (1, 1)), output_tile=8)
  with pytest.raises(ValueError, match=r'must lie in \[0, 2\]'):
    winograd.conv(x, jnp.zeros((3, 3, 2, 2)), ((3, 1), (1, 1)), output_tile=2)
  with pytest.raises(ValueError, match=r'must lie in \[0, 1\]'):
    winograd.conv(x, jnp.zeros((2, 2, 2, 2)), ((2, 0), (0, 0)), output_tile=3)
  assert convolution.winograd_tile((1, 32, 32, 128), (3, 3, 128, 128), ((3, 3), (1, 1))) is None


def _primitives(fn, *args) -> list[str]:
  """Names of the primitives of fn's jaxpr, nested jaxprs (custom VJPs, jit) included."""
  names = []

  def visit(jaxpr):
    for equation in jaxpr.eqns:
      names.append(str(equation.primitive))
      for sub in jax.core.jaxprs_in_params(equation.params):
        visit(sub)

  visit(jax.make_jaxpr(fn)(*args).jaxpr)
  return names


def _compiled_convolutions(fn, *args) -> int:
  """Convolutions left in XLA's optimized program of jit(fn) (dead code removed)."""
  return jax.jit(fn).lower(*args).compile().as_text().count(' convolution(')


def test_conv2d_uses_winograd_for_wide_3x3_convs_forward_and_input_gradient(monkeypatch):
  rule = convolution.WINOGRAD_RULES[3]
  channels, side = rule.min_channels, rule.min_side
  padding = ((1, 1), (1, 1))
  x, kernel = _random((1, side, side, channels), 4), _random((3, 3, channels, channels), 5) / 30
  assert convolution.winograd_tile(x.shape, kernel.shape, padding) == rule.output_tile
  forward = lambda x, k: convolution.conv2d(x, k, padding)
  assert 'conv_general_dilated' not in _primitives(forward, x, kernel)
  grad_out = _random(x.shape, 6)
  # The kernel gradient is the one direct convolution left (Winograd's was slower there); without
  # Winograd, forward and input gradient are two more.
  value_and_gradients = lambda x, k: _value_and_gradients(forward, x, k, grad_out)
  assert _compiled_convolutions(value_and_gradients, x, kernel) == 1
  with monkeypatch.context() as patch:
    patch.setattr(convolution, 'WINOGRAD_RULES', {})
    # A new function: jit's cache would return the program traced with Winograd on.
    assert _compiled_convolutions(lambda x, k: _value_and_gradients(forward, x, k, grad_out), x, kernel) == 3
  expected = jax.jit(_value_and_gradients, static_argnums=0)(
      lambda x, k: _lax_conv(x, k, padding), x, kernel, grad_out)
  actual = jax.jit(_value_and_gradients, static_argnums=0)(forward, x, kernel, grad_out)
  for mine, reference in zip(actual, expected):
    np.testing.assert_allclose(mine, reference, atol=TOLERANCE[2, 3] * float(jnp.max(jnp.abs(reference))))


@pytest.mark.parametrize('shape, padding', [
    ((1, 16, 16, 64), ((1, 1), (1, 1))),  # Too few channels.
    ((1, 8, 8, 128), ((1, 1), (1, 1))),  # Too small a map.
])
def test_narrow_or_small_convs_stay_direct(shape, padding):
  kernel_shape = (3, 3, shape[-1], shape[-1])
  assert convolution.winograd_tile(shape, kernel_shape, padding) is None
  assert 'conv_general_dilated' in _primitives(lambda x, k: convolution.conv2d(x, k, padding),
                                               jnp.zeros(shape), jnp.zeros(kernel_shape))


def test_bfloat16_stays_direct():
  shape, kernel_shape = (1, 16, 16, 128), (3, 3, 128, 128)
  primitives = _primitives(lambda x, k: convolution.conv2d(x, k, ((1, 1), (1, 1))),
                           jnp.zeros(shape, jnp.bfloat16), jnp.zeros(kernel_shape, jnp.bfloat16))
  assert 'conv_general_dilated' in primitives


def test_vgg_features_equal_the_direct_convolutions(monkeypatch):
  """VGG11 at 56² (block3 and block4 are wide enough for Winograd) equals itself with Winograd off."""
  model = vgg.VGG(convs_per_block=(1, 1, 2, 2, 2), batch_norm=False)
  images = _random((1, 56, 56, 3), 7)
  variables = model.init(jax.random.key(0), images, outputs=('block4',))
  apply = jax.jit(lambda v, x: model.apply(v, x, outputs=('block3', 'block4')))
  with_winograd = apply(variables, images)
  assert 'dot_general' in _primitives(lambda v, x: model.apply(v, x, outputs=('block4',)), variables, images)
  monkeypatch.setattr(convolution, 'WINOGRAD_RULES', {})
  direct = jax.jit(lambda v, x: model.apply(v, x, outputs=('block3', 'block4')))(variables, images)
  for name in ('block3', 'block4'):
    scale = float(jnp.max(jnp.abs(direct[name])))
    np.testing.assert_allclose(with_winograd[name], direct[name], atol=1e-5 * scale, rtol=0)
