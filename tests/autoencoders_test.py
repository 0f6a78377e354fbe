"""Autoencoders of seeds 001/003: shapes, Table 1/2 layer widths, N(0, 0.02) init, patch-wise reconstruction."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjax.errors import InputError
from adjax.models import autoencoders as ae


def shapes_of(model, images):
  rngs = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}
  variables = jax.eval_shape(lambda: model.init(rngs, images, train=False))
  outputs = jax.eval_shape(lambda v: model.apply(v, images, train=False), variables)
  return variables, outputs


@pytest.mark.parametrize('architecture,size,kwargs,latent_shape', [
    ('lamp', 16, dict(num_blocks=4), (1, 1, 256)),
    ('lamp', 64, dict(num_blocks=4), (4, 4, 256)),
    ('lamp', 256, {}, (4, 4, 256)),  # Seed 001: six blocks at full size.
    ('cae', 16, {}, (128,)),
    ('cae', 64, {}, (128,)),
    ('cae', 256, {}, (128,)),
    ('fully_conv', 32, dict(features=(8, 16, 32)), (8, 8, 32)),
    ('fully_conv', 224, {}, (14, 14, 1024)),  # Table 2: 224 -> 14 after four max-pools.
])
def test_reconstruction_has_input_shape(architecture, size, kwargs, latent_shape):
  model = ae.build(architecture=architecture, image_size=size, **kwargs)
  _, (reconstruction, latent, logits) = shapes_of(model, jnp.zeros((2, size, size, 3)))
  assert reconstruction.shape == (2, size, size, 3)
  assert latent.shape == (2,) + latent_shape
  assert logits is None


def test_cae_table1_widths_and_latent():
  model = ae.build(architecture='cae', image_size=256)
  variables, (_, latent, _) = shapes_of(model, jnp.zeros((1, 256, 256, 3)))
  encoder = variables['params']['encoder']
  kernels = [encoder[f'Conv_{i}']['kernel'].shape for i in range(7)]
  assert kernels == [(4, 4, 3, 16), (4, 4, 16, 32), (4, 4, 32, 64), (4, 4, 64, 128), (4, 4, 128, 256),
                     (4, 4, 256, 512), (4, 4, 512, 1024)]
  assert encoder['Dense_0']['kernel'].shape == (1024, 128) and latent.shape == (1, 128)
  decoder = variables['params']['decoder']
  assert decoder['Dense_0']['kernel'].shape == (128, 1024)
  transposed = [decoder[f'ConvTranspose_{i}']['kernel'].shape[2:] for i in range(7)]
  assert transposed == [(1024, 512), (512, 256), (256, 128), (128, 64), (64, 32), (32, 16), (16, 3)]
  # BatchNorm after every conv but the output one: 7 in the encoder, 1 (dense) + 6 in the decoder.
  assert sum(key.startswith('BatchNorm') for key in variables['batch_stats']['encoder']) == 7
  assert sum(key.startswith('BatchNorm') for key in variables['batch_stats']['decoder']) == 7


def test_cae_output_is_tanh_bounded_and_features_adapt():
  assert ae.cae_features_for(256) == (16, 32, 64, 128, 256, 512)
  assert ae.cae_features_for(64) == (16, 32, 64, 128)
  assert ae.cae_features_for(512) == (16, 32, 64, 128, 256, 512, 512)
  model = ae.build(architecture='cae', image_size=16)
  images = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 16, 3)) * 50
  variables = fast_init(model, images)
  reconstruction, _, _ = jax.jit(model.apply)(variables, images)
  assert float(jnp.max(jnp.abs(reconstruction))) <= 1.0


def fast_init(model, images, seed=1):
  return jax.jit(lambda rng, x: ae.init_variables(model, rng, x, init_std=0.02))(
      jax.random.PRNGKey(seed), images)


def check_normal_0_02(variables):
  flat = jax.tree_util.tree_flatten_with_path(variables['params'])[0]
  kernels = np.concatenate([np.ravel(v) for path, v in flat if path[-1].key == 'kernel'])
  biases = np.concatenate([np.ravel(v) for path, v in flat if path[-1].key == 'bias'
                           and 'BatchNorm' not in str(path)])
  assert kernels.size > 500_000
  assert abs(kernels.mean()) < 1e-3
  assert kernels.std() == pytest.approx(0.02, rel=0.01)
  np.testing.assert_array_equal(biases, 0.0)


def test_weights_start_from_normal_0_02():
  model = ae.build(architecture='cae', image_size=64, num_classes=4)
  images = jnp.zeros((1, 64, 64, 3))
  variables = fast_init(model, images)
  check_normal_0_02(variables)
  # Flax's own init gives the same tree and distributions (traced only: compiling it takes ~30 s).
  reference = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images))
  assert jax.tree_util.tree_structure(reference) == jax.tree_util.tree_structure(variables)
  assert all(a.shape == b.shape for a, b in zip(jax.tree_util.tree_leaves(reference),
                                                 jax.tree_util.tree_leaves(variables)))
  encoder = ae.CaeEncoder(features=(), bottleneck=256, latent_dim=8)  # One conv and one dense kernel.
  flax_init = jax.jit(encoder.init, static_argnames='train')(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 8)),
                                                             train=False)
  kernel = np.asarray(flax_init['params']['Conv_0']['kernel'])
  assert kernel.shape == (4, 4, 8, 256) and kernel.std() == pytest.approx(0.02, rel=0.05)
  scales = [v for path, v in jax.tree_util.tree_flatten_with_path(variables)[0] if path[-1].key in ('scale', 'var')]
  assert scales and all(np.all(np.asarray(v) == 1.0) for v in scales)


def test_patchwise_reconstruction_equals_reconstructing_each_patch():
  images = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3), minval=-1, maxval=1)
  patched = ae.build(architecture='lamp', image_size=16, num_blocks=2, patches_per_side=2)
  variables = fast_init(patched, images)
  whole, latent, _ = jax.jit(patched.apply)(variables, images)
  assert latent.shape == (8, 2, 2, 64)
  single = ae.build(architecture='lamp', image_size=8, num_blocks=2)  # Same parameters, one patch.
  apply_single = jax.jit(single.apply)
  top_right, _, _ = apply_single(variables, images[:, :8, 8:])
  np.testing.assert_allclose(whole[:, :8, 8:], top_right, atol=1e-6)
  bottom_left, _, _ = apply_single(variables, images[:, 8:, :8])
  np.testing.assert_allclose(whole[:, 8:, :8], bottom_left, atol=1e-6)


def test_patches_round_trip_and_order():
  images = np.arange(2 * 4 * 6 * 1, dtype=np.float32).reshape(2, 4, 6, 1)
  with pytest.raises(InputError, match='patches_per_side'):
    ae.to_patches(images, 4)  # 4 does not divide 6
  square = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6, 1)
  patches = np.asarray(ae.to_patches(square, 3))
  assert patches.shape == (18, 2, 2, 1)
  np.testing.assert_array_equal(patches[1], square[0, 0:2, 2:4])  # row-major within an image
  np.testing.assert_array_equal(patches[9 + 3], square[1, 2:4, 0:2])
  np.testing.assert_array_equal(ae.from_patches(patches, 3), square)


def test_encode_decode_classify_compose_to_call():
  model = ae.build(architecture='fully_conv', image_size=16, features=(4, 8), num_classes=3)
  images = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3))
  variables = fast_init(model, images)
  reconstruction, latent, logits = jax.jit(model.apply)(variables, images)
  apply = jax.jit(model.apply, static_argnames='method')
  encoded = apply(variables, images, method='encode')
  np.testing.assert_allclose(encoded, latent, atol=1e-6)
  np.testing.assert_allclose(apply(variables, encoded, method='decode'), reconstruction, atol=1e-6)
  np.testing.assert_allclose(apply(variables, encoded, method='classify'), logits, atol=1e-6)
  assert logits.shape == (2, 3)


def test_training_mode_updates_batch_statistics():
  model = ae.build(architecture='lamp', image_size=8, num_blocks=2, num_classes=2)
  images = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 3))
  variables = fast_init(model, images)
  _, new_state = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats'],
                                                  rngs={'dropout': jax.random.PRNGKey(2)}))(variables, images)
  before = variables['batch_stats']['encoder']['BatchNorm_0']['mean']
  after = new_state['batch_stats']['encoder']['BatchNorm_0']['mean']
  assert not np.allclose(before, after)


@pytest.mark.parametrize('architecture,size,kwargs', [
    ('lamp', 20, dict(num_blocks=4)), ('cae', 48, {}), ('cae', 64, dict(features=(8, 16))),
    ('fully_conv', 20, {}), ('unet', 32, {}), ('lamp', 32, dict(patches_per_side=3))])
def test_bad_sizes_and_names_raise_input_error(architecture, size, kwargs):
  with pytest.raises(InputError):
    ae.build(architecture=architecture, image_size=size, **kwargs)


@pytest.mark.parametrize('kernel_size, strides, padding', [((4, 4), (2, 2), ((2, 2), (2, 2))),
                                                           ((2, 2), (2, 2), 'VALID'), ((3, 3), (2, 2), 'SAME'),
                                                           ((4, 4), (1, 1), 'VALID')])
def test_conv_transpose_equals_flax_with_the_same_parameters(kernel_size, strides, padding):
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3))
  ours = ae.ConvTranspose(4, kernel_size, strides=strides, padding=padding)
  ref = nn.ConvTranspose(4, kernel_size, strides=strides, padding=padding)
  params = jax.tree.map(lambda a: jax.random.normal(jax.random.key(2), a.shape), ref.init(jax.random.key(1), x))
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == jax.tree.map(jnp.shape, params)
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)
  grads = [jax.grad(lambda p, x, m=m: jnp.sum(m.apply(p, x) ** 2), (0, 1))(params, x) for m in (ours, ref)]
  for got, want in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_upsample_nearest_2x_equals_image_resize():
  x = jax.random.normal(jax.random.key(0), (2, 4, 3, 5))
  np.testing.assert_array_equal(ae.upsample_nearest_2x(x), jax.image.resize(x, (2, 8, 6, 5), 'nearest'))


@pytest.mark.parametrize('kernel_size, features', [((3, 3), 3), ((5, 3), 12)])
def test_upsample_conv_equals_upsampling_then_flax_conv(kernel_size, features):
  # 3 features take the one-conv path (phases stacked in channels), 12 the four-conv path; more kernel sizes
  # and paddings in convolution_test.py.
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 4))
  ours = ae.UpsampleConv(features, kernel_size)
  ref = nn.Conv(features, kernel_size, padding='SAME')
  params = ref.init(jax.random.key(1), ae.upsample_nearest_2x(x))
  params = jax.tree.map(lambda a: jax.random.normal(jax.random.key(2), a.shape), params)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == jax.tree.map(jnp.shape, params)
  run_ref = lambda p, x: ref.apply(p, ae.upsample_nearest_2x(x))
  np.testing.assert_allclose(jax.jit(ours.apply)(params, x), run_ref(params, x), rtol=1e-5, atol=1e-4)
  grads = [jax.jit(jax.grad(lambda p, x, f=f: jnp.sum(f(p, x) ** 2), (0, 1)))(params, x)
           for f in (ours.apply, run_ref)]
  for got, want in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-2)


def test_lamp_decoder_parameters_keep_the_names_of_plain_convs():
  z = jnp.zeros((1, 2, 2, 8))
  decoder = ae.LampDecoder(features=(4, 8))
  variables = decoder.init(jax.random.key(0), z, train=False)
  assert sorted(variables['params']) == ['BatchNorm_0', 'Conv_0', 'Conv_1']
  assert variables['params']['Conv_1']['kernel'].shape == (3, 3, 4, 3)
