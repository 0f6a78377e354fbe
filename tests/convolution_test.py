"""adjax.models.convolution: the same function and gradients as lax, and the kernel layout XLA keeps in loops."""

import re

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from adjax.models import convolution

PADDINGS = [((1, 1), (1, 1)), ((0, 0), (0, 0)), ((2, 0), (1, 3)), ((3, 3), (3, 3))]


def _lax_conv(x, kernel, padding):
  return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=convolution.NHWC_HWIO)


def _inputs(kernel_size=(3, 2), shape=(2, 7, 6, 3), out_channels=5):
  x = jax.random.normal(jax.random.key(0), shape)
  kernel = jax.random.normal(jax.random.key(1), kernel_size + (shape[-1], out_channels))
  return x, kernel


def _assert_same_function(ours, ref, x, kernel, *, grad_atol):
  """ours(x, kernel) equals ref(x, kernel), and so do their VJPs w.r.t. x and kernel for a random cotangent."""
  cotangent = jax.random.normal(jax.random.key(2), jax.eval_shape(ref, x, kernel).shape)

  def value_and_vjp(fn, x, kernel, cotangent):
    out, vjp = jax.vjp(fn, x, kernel)
    return out, vjp(cotangent)

  # One program per function (jit): op-by-op dispatch of the phase slicing is slow.
  (ours_out, ours_grads), (ref_out, ref_grads) = (
      jax.jit(value_and_vjp, static_argnums=0)(fn, x, kernel, cotangent) for fn in (ours, ref))
  np.testing.assert_allclose(ours_out, ref_out, rtol=1e-5, atol=1e-5)
  for got, want in zip(ours_grads, ref_grads):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=grad_atol)


@pytest.fixture(name='conv_path', params=['conv', 'im2col', 'shifted_matmul'])
def conv_path_fixture(request, monkeypatch):
  """Runs a test through XLA's convolution, the patches @ kernel matmul (small outputs) and the shifted
  matmul (few output channels), each for every stride-1 conv."""
  monkeypatch.setattr(convolution, 'IM2COL_MAX_OUTPUT_PIXELS', 10**9 if request.param == 'im2col' else 0)
  monkeypatch.setattr(convolution, 'SHIFTED_MATMUL_MAX_OUT_CHANNELS',
                      10**9 if request.param == 'shifted_matmul' else 0)
  monkeypatch.setattr(convolution, 'SHIFTED_MATMUL_MIN_IN_CHANNELS', 0)
  return request.param


@pytest.mark.parametrize('padding', PADDINGS)
def test_forward_and_gradients_equal_lax(padding, conv_path):
  del conv_path
  x, kernel = _inputs()
  _assert_same_function(lambda x, k: convolution.conv2d(x, k, padding), lambda x, k: _lax_conv(x, k, padding),
                        x, kernel, grad_atol=1e-5)


def test_input_gradient_matches_finite_differences():
  x, kernel = _inputs(shape=(1, 5, 5, 2), out_channels=3)
  with jax.enable_x64():
    x, kernel = x.astype(jnp.float64), kernel.astype(jnp.float64)
    loss = lambda x: jnp.sum(jnp.sin(convolution.conv2d(x, kernel, ((1, 0), (0, 1)))))
    grad = jax.grad(loss)(x)
    direction = jax.random.normal(jax.random.key(3), x.shape, jnp.float64)
    eps = 1e-6
    numeric = (loss(x + eps * direction) - loss(x - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(grad, direction), numeric, rtol=1e-7)


def test_second_order_gradient_equals_lax(conv_path):
  """Reverse over reverse (e.g. a gradient penalty on dE/dx) goes through the custom VJP's backward."""
  del conv_path
  x, kernel = _inputs()
  padding = PADDINGS[0]

  def penalty(conv):
    grad_x = jax.grad(lambda x, k: jnp.sum(jnp.tanh(conv(x, k, padding))))
    return lambda k: jnp.sum(grad_x(x, k) ** 2)

  np.testing.assert_allclose(jax.grad(penalty(convolution.conv2d))(kernel), jax.grad(penalty(_lax_conv))(kernel),
                             rtol=1e-4, atol=1e-5)


def _scan_chain_hlo(conv):
  x, kernel = _inputs(shape=(2, 8, 8, 4), out_channels=6)

  def chain(x, k):
    step = lambda x, _: (x - jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, k, PADDINGS[0]))))(x), None)
    return lax.scan(step, x, None, length=3)[0]

  return jax.jit(chain).lower(x, kernel).compile().as_text()


def test_input_gradient_in_a_scan_keeps_the_hwio_kernel_layout(monkeypatch):
  """The reason for the module: inside a while body JAX's rule leaves an `01oi` kernel (slow on CPU)."""
  if jax.default_backend() != 'cpu':
    pytest.skip('XLA:CPU layout check')
  monkeypatch.setattr(convolution, 'IM2COL_MAX_OUTPUT_PIXELS', 0)  # XLA convolutions, not matmuls.
  ours, ref = _scan_chain_hlo(convolution.conv2d), _scan_chain_hlo(_lax_conv)
  assert 'convolution(' in ours and '_01oi->' not in ours
  # Guard the test itself: if XLA ever stops producing 01oi for lax's rule, this test no longer shows anything.
  assert '_01oi->' in ref


@pytest.mark.parametrize('padding', ['SAME', 'VALID', ((1, 2), (0, 1))])
def test_flax_conv_with_custom_vjp_equals_default_conv(padding):
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  fast = nn.Conv(4, (3, 3), padding=padding, conv_general_dilated=convolution.flax_conv_general_dilated)
  plain = nn.Conv(4, (3, 3), padding=padding)
  params = plain.init(jax.random.key(1), x)
  np.testing.assert_allclose(fast.apply(params, x), plain.apply(params, x), rtol=1e-5, atol=1e-5)
  grads = [jax.grad(lambda p, x: jnp.sum(m.apply(p, x) ** 2), (0, 1))(params, x) for m in (fast, plain)]
  for got, want in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_flax_adapter_falls_back_to_lax_for_strides_and_dilations():
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 2))
  for kwargs in (dict(strides=2), dict(kernel_dilation=2), dict(input_dilation=2), dict(feature_group_count=2)):
    kwargs['padding'] = ((1, 1), (1, 1))
    fast = nn.Conv(2, (3, 3), conv_general_dilated=convolution.flax_conv_general_dilated, **kwargs)
    plain = nn.Conv(2, (3, 3), **kwargs)
    params = plain.init(jax.random.key(1), x)
    np.testing.assert_allclose(fast.apply(params, x), plain.apply(params, x), rtol=1e-6, err_msg=str(kwargs))


STRIDED_CASES = [((8, 8), 4, ((1, 1), (1, 1))), ((8, 8), 3, ((0, 1), (0, 1))), ((9, 7), 3, ((1, 1), (1, 1))),
                 ((10, 10), 4, ((2, 2), (2, 2))), ((8, 8), 2, ((0, 0), (0, 0))), ((9, 9), 5, ((0, 0), (0, 0))),
                 ((9, 8), (3, 4), ((1, 1), (1, 2))), ((8, 8), 2, ((1, 1), (2, 2))), ((8, 6), 4, ((3, 3), (1, 2)))]
# Odd kernel sizes take one conv per phase; so do even ones on small maps, each phase on its exact grid
# (the last two cases crop: negative conv padding).


@pytest.mark.parametrize('per_phase_min_channels', [0, 10**9])
@pytest.mark.parametrize('size, kernel_size, padding', STRIDED_CASES)
def test_strided_conv_and_its_gradients_equal_lax(size, kernel_size, padding, conv_path, per_phase_min_channels,
                                                   monkeypatch):
  del conv_path
  monkeypatch.setattr(convolution, 'PER_PHASE_MIN_CHANNELS', per_phase_min_channels)
  kernel_size = kernel_size if isinstance(kernel_size, tuple) else (kernel_size,) * 2
  x, kernel = _inputs(kernel_size=kernel_size, shape=(2,) + size + (3,))
  strided = lambda x, k: lax.conv_general_dilated(x, k, (2, 2), padding, dimension_numbers=convolution.NHWC_HWIO)
  _assert_same_function(lambda x, k: convolution.strided_conv2d(x, k, padding), strided, x, kernel, grad_atol=1e-4)


def test_small_even_kernel_input_gradient_computes_only_the_input_grid(monkeypatch):
  """An EBM-like 4x4 stride-2 layer at 8x8: four exact phase convs give 8x8 values per channel, one conv 10x10."""
  monkeypatch.setattr(convolution, 'IM2COL_MAX_OUTPUT_PIXELS', 0)
  x, kernel = _inputs(kernel_size=(4, 4), shape=(2, 8, 8, 16), out_channels=8)
  grad_out = jax.random.normal(jax.random.key(3), (2, 4, 4, 8))
  _, vjp = jax.vjp(lambda x: lax.conv_general_dilated(x, kernel, (2, 2), PADDINGS[0],
                                                        dimension_numbers=convolution.NHWC_HWIO), x)
  outputs = []
  for max_pixels in (256, 0):  # Default (exact phases), then the one-conv form.
    monkeypatch.setattr(convolution, 'PER_PHASE_MAX_EVEN_OUTPUT_PIXELS', max_pixels)
    fn = lambda g, k: convolution.strided_input_gradient(g, k, PADDINGS[0], x.shape)
    np.testing.assert_allclose(jax.jit(fn)(grad_out, kernel), vjp(grad_out)[0], rtol=1e-5, atol=1e-5)
    convs = [eqn for eqn in jax.make_jaxpr(fn)(grad_out, kernel).eqns if eqn.primitive.name == 'conv_general_dilated']
    outputs.append(sum(np.prod(eqn.outvars[0].aval.shape) for eqn in convs))
  assert outputs == [2 * 8 * 8 * 16, 2 * 5 * 5 * 4 * 16]


def test_strided_input_gradient_has_no_dilated_convolution():
  x, kernel = _inputs(kernel_size=(3, 3), shape=(2, 8, 8, 3))
  grad = jax.grad(lambda x: jnp.sum(convolution.strided_conv2d(x, kernel, ((0, 1), (0, 1))) ** 2))
  convs = [eqn for eqn in jax.make_jaxpr(grad)(x).eqns if eqn.primitive.name == 'conv_general_dilated']
  assert convs and all(set(eqn.params['lhs_dilation']) == {1} for eqn in convs)


def _while_body_results(hlo_text):
  """Shapes of what the while bodies of a compiled HLO module compute (their non-trivial instructions)."""
  bodies = set(re.findall(r'\bwhile\(.*?body=(%[\w.-]+)', hlo_text))
  shapes = []
  for block in hlo_text.split('\n\n'):
    header = block.lstrip().split(' ', 1)[0]
    if header in bodies or header.lstrip('ENTRY ') in bodies:
      shapes += re.findall(r'= (\w+\[[\d,]*\])\S* (?!get-tuple-element|parameter|bitcast|tuple)\w', block)
  assert bodies and shapes, 'no while body found in the compiled module'
  return shapes


@pytest.mark.parametrize('in_channels, folded_shape', [(8, 'f32[2,2,12,32]'),  # One conv: [taps, taps, out, 4 in].
                                                        (16, 'f32[2,2,12,16]')])  # Exact phases: [.., out, in].
def test_strided_input_gradient_kernel_fold_is_hoisted_out_of_a_scan(in_channels, folded_shape, monkeypatch):
  """The kernel's phase fold is computed once per chain, not once per SGLD step."""
  if jax.default_backend() != 'cpu':
    pytest.skip('XLA:CPU loop-invariant code motion check')
  monkeypatch.setattr(convolution, 'IM2COL_MAX_OUTPUT_PIXELS', 0)
  x, kernel = _inputs(kernel_size=(4, 4), shape=(2, 16, 16, in_channels), out_channels=12)

  def chain(input_gradient):
    def run(x, k):
      step = lambda x, _: (x - input_gradient(jnp.tanh(convolution.strided_conv2d(x, k, PADDINGS[0])), k), None)
      return lax.scan(step, x, None, length=3)[0]
    return jax.jit(run).lower(x, kernel).compile().as_text()

  input_gradient = lambda y, k: convolution.strided_input_gradient(y, k, PADDINGS[0], x.shape)
  assert folded_shape not in _while_body_results(chain(input_gradient))
  # The reason: XLA does not hoist reshapes and transposes alone; without the negation the fold stays in.
  monkeypatch.setattr(convolution, 'HOIST_KERNEL_FOLD', False)
  assert folded_shape in _while_body_results(chain(input_gradient))


@pytest.mark.parametrize('kernel_size, padding', [(4, ((2, 2), (2, 2))), (2, 'VALID'), (3, 'SAME'), (4, 'SAME'),
                                                  (3, 'VALID'), (3, ((0, 2), (1, 0)))])
@pytest.mark.parametrize('per_phase_min_channels', [16, 0])  # One conv for 3 channels; per phase.
def test_conv_transpose_equals_lax(kernel_size, padding, per_phase_min_channels, conv_path, monkeypatch):
  del conv_path
  monkeypatch.setattr(convolution, 'PER_PHASE_MIN_CHANNELS', per_phase_min_channels)
  x, kernel = _inputs(kernel_size=(kernel_size,) * 2, shape=(2, 5, 6, 3))
  explicit = tuple(convolution.transpose_padding(kernel_size, padding if isinstance(padding, str) else pair)
                   for pair in ((padding,) * 2 if isinstance(padding, str) else padding))
  ref = lax.conv_transpose(x, kernel, (2, 2), padding, dimension_numbers=convolution.NHWC_HWIO)
  np.testing.assert_allclose(convolution.conv_transpose2d(x, kernel, explicit), ref, rtol=1e-5, atol=1e-5)


def test_a_kernel_covering_the_whole_input_is_a_dense_layer(conv_path):
  del conv_path
  x, kernel = _inputs(kernel_size=(4, 3), shape=(2, 4, 3, 5))
  ref = _lax_conv(x, kernel, ((0, 0), (0, 0)))
  assert ref.shape == (2, 1, 1, 5)
  np.testing.assert_allclose(convolution.conv2d(x, kernel, ((0, 0), (0, 0))), ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(convolution.im2col_conv(x, kernel, ((0, 0), (0, 0)))[:, 0, 0],
                             x.reshape(2, -1) @ kernel.reshape(-1, 5), rtol=1e-6)


def test_small_outputs_use_the_matmul_and_large_ones_the_convolution():
  small, _ = _inputs(kernel_size=(3, 3), shape=(2, 2, 2, 3))  # 2x2 = 4 output pixels with SAME padding.
  large, kernel = _inputs(kernel_size=(3, 3), shape=(2, 3, 2, 3))  # 6 output pixels.
  names = lambda x: {eqn.primitive.name for eqn in jax.make_jaxpr(
      lambda x: convolution.conv2d(x, kernel, PADDINGS[0]))(x).eqns[0].params['call_jaxpr'].eqns}
  assert convolution.IM2COL_MAX_OUTPUT_PIXELS == 4
  assert 'dot_general' in names(small) and 'conv_general_dilated' not in names(small)
  assert 'conv_general_dilated' in names(large)


def test_few_output_channels_use_the_shifted_matmul():
  x, few = _inputs(kernel_size=(3, 3), shape=(2, 6, 6, 8), out_channels=3)
  _, many = _inputs(kernel_size=(3, 3), shape=(2, 6, 6, 8), out_channels=5)
  _, thin_input = _inputs(kernel_size=(3, 3), shape=(2, 6, 6, 3), out_channels=3)
  names = lambda x, kernel: {eqn.primitive.name for eqn in jax.make_jaxpr(
      lambda x: convolution.conv2d(x, kernel, PADDINGS[0]))(x).eqns[0].params['call_jaxpr'].eqns}
  assert 'dot_general' in names(x, few) and 'conv_general_dilated' not in names(x, few)
  assert 'conv_general_dilated' in names(x, many)
  assert 'conv_general_dilated' in names(x[..., :3], thin_input)


def _upsample_nearest_2x(x):
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


@pytest.mark.parametrize('kernel_size, padding, out_channels', [
    ((3, 3), ((1, 1), (1, 1)), 3), ((3, 3), ((1, 1), (1, 1)), 11), ((4, 2), ((1, 2), (1, 0)), 2),
    ((4, 2), ((2, 1), (0, 1)), 9), ((1, 1), ((0, 0), (0, 0)), 10)])
@pytest.mark.parametrize('phase_padding', [True, False])
def test_upsample_conv_and_its_gradients_equal_upsampling_then_lax(kernel_size, padding, out_channels, phase_padding,
                                                                   monkeypatch):
  monkeypatch.setattr(convolution, 'UPSAMPLE_PHASE_PADDING', phase_padding)
  x, kernel = _inputs(kernel_size, shape=(2, 4, 5, 3), out_channels=out_channels)
  _assert_same_function(lambda x, k: convolution.upsample_conv2d(x, k, padding),
                        lambda x, k: _lax_conv(_upsample_nearest_2x(x), k, padding), x, kernel, grad_atol=1e-4)


def test_upsample_conv_needs_size_preserving_padding():
  x, kernel = _inputs((3, 3))
  with pytest.raises(ValueError, match='sum to kernel size - 1'):
    convolution.upsample_conv2d(x, kernel, ((1, 1), (0, 0)))
