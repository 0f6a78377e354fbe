"""VGG backbones: shapes at 224, truncation, adaptive pooling and numerical equivalence with torch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjax import errors
from adjax.models import vgg
from adjax.models import weights

# Parameter counts torchvision documents for its ImageNet models.
TORCHVISION_PARAMETERS = {'vgg11': 132_863_336, 'vgg11_bn': 132_868_840, 'vgg16': 138_357_544,
                          'vgg16_bn': 138_365_992}


def _abstract_features(model, size, outputs):
  return jax.eval_shape(lambda: model.init_with_output(
      jax.random.PRNGKey(0), jnp.zeros((2, size, size, 3)), outputs=outputs))


def _random_variables(model, *, seed):
  """Variables of the full model filled from numpy (model.init compiles a random kernel per shape)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
  return jax.tree.map(lambda leaf: jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), jnp.float32), shapes)


@pytest.mark.parametrize('arch', list(vgg.ARCHITECTURES))
def test_feature_shapes_and_parameter_count_at_224(arch):
  features, variables = _abstract_features(weights.create_model(arch), 224, vgg.FEATURE_NAMES)
  widths = (64, 128, 256, 512, 512)
  for k, width in enumerate(widths, start=1):
    assert features[f'block{k}'].shape == (2, 448 // 2**k, 448 // 2**k, width)
    assert features[f'pool{k}'].shape == (2, 224 // 2**k, 224 // 2**k, width)
  assert features['block4'].shape == (2, 28, 28, 512)  # FCDD's trunk output.
  assert features['penultimate'].shape == (2, 4096)
  assert features['logits'].shape == (2, 1000)
  count = sum(leaf.size for leaf in jax.tree.leaves(variables['params']))
  assert count == TORCHVISION_PARAMETERS[arch]
  assert ('batch_stats' in variables) == arch.endswith('_bn')


def test_requested_outputs_cut_the_network():
  model = weights.create_model('vgg11_bn', classifier_width=16)
  features, variables = _abstract_features(model, 64, ('pool1', 'block4'))
  assert set(features) == {'pool1', 'block4'}
  assert sorted(variables['params']) == ['bn1_1', 'bn2_1', 'bn3_1', 'bn3_2', 'bn4_1', 'bn4_2', 'conv1_1',
                                         'conv2_1', 'conv3_1', 'conv3_2', 'conv4_1', 'conv4_2']
  # Applying full variables with a short request runs only the trunk: same values as the trunk alone.
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
  full = _random_variables(model, seed=0)
  trunk = {collection: {name: tree[name] for name in variables[collection]}
           for collection, tree in full.items()}
  np.testing.assert_array_equal(model.apply(full, images, outputs=('block4',))['block4'],
                                model.apply(trunk, images, outputs=('block4',))['block4'])


def test_unknown_output_and_frozen_point_raise_input_error():
  model = weights.create_model('vgg11')
  images = jnp.zeros((1, 32, 32, 3))
  with pytest.raises(errors.InputError, match="unknown backbone outputs \\['layer2'\\]"):
    model.init(jax.random.PRNGKey(0), images, outputs=('layer2',))
  with pytest.raises(errors.InputError, match='unknown frozen_until'):
    model.init(jax.random.PRNGKey(0), images, outputs=('pool5',), frozen_until='pool9')


def test_adaptive_average_pool_properties():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 14, 14, 3))
  two_by_two = x.reshape(2, 7, 2, 7, 2, 3).mean(axis=(2, 4))
  np.testing.assert_allclose(vgg.adaptive_average_pool(x, (7, 7)), two_by_two, rtol=1e-6, atol=1e-6)
  single = x[:, :1, :1]
  np.testing.assert_allclose(vgg.adaptive_average_pool(single, (7, 7)),
                             np.broadcast_to(single, (2, 7, 7, 3)))
  np.testing.assert_array_equal(vgg.adaptive_average_pool(x[:, :7, :7], (7, 7)), x[:, :7, :7])


@pytest.mark.parametrize('size', [10, 3, 9])
def test_adaptive_average_pool_matches_torch(reference, size):
  torch = reference.torch
  x = np.random.default_rng(size).normal(size=(2, 4, size, size + 2)).astype(np.float32)
  expected = torch.nn.AdaptiveAvgPool2d((7, 7))(torch.from_numpy(x)).numpy()
  actual = vgg.adaptive_average_pool(x.transpose(0, 2, 3, 1), (7, 7))
  np.testing.assert_allclose(actual, expected.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('arch', list(vgg.ARCHITECTURES))
def test_every_feature_matches_torch(reference, arch, tmp_path):
  # classifier_width 64 instead of 4096 keeps the test small; fc6 still reads the 7x7x512 NCHW flattening.
  feature_errors = reference.feature_errors(arch, directory=tmp_path, image_size=32,
                                            classifier_width=64)
  assert set(feature_errors) == set(vgg.FEATURE_NAMES)
  assert max(feature_errors.values()) < 1e-4, feature_errors


def test_odd_input_size_floors_pools_like_torch(reference, tmp_path):
  feature_errors = reference.feature_errors('vgg11', directory=tmp_path, image_size=45,
                                            classifier_width=32)
  assert max(feature_errors.values()) < 1e-4, feature_errors


def test_training_mode_batch_norm_matches_torch(reference, tmp_path):
  """Train mode: batch statistics in the forward pass; running mean as torch; running var biased."""
  torch = reference.torch
  net = reference.randomize_(reference.build('vgg11_bn', classifier_width=16), seed=3, image_size=32)
  path = reference.export_safetensors(net, tmp_path / 'vgg11_bn.safetensors')
  variables = weights.load_backbone_variables('vgg11_bn', path, outputs=('block2',))
  images = torch.randn((2, 3, 32, 32), generator=torch.Generator().manual_seed(4))
  net.train()
  with torch.no_grad():
    expected = reference.vgg_features(net, images)['block2']
  actual, updates = weights.create_model('vgg11_bn').apply(
      variables, reference.to_nhwc(images), train=True, outputs=('block2',), mutable=['batch_stats'])
  assert reference.relative_error(actual['block2'], reference.to_nhwc(expected)) < 1e-4
  torch_bn, old = net.features[5], variables['batch_stats']['bn2_1']  # bn2_1 = features.5.
  new = updates['batch_stats']['bn2_1']
  np.testing.assert_allclose(new['mean'], torch_bn.running_mean.numpy(), rtol=1e-4, atol=1e-6)
  count = 2 * 16 * 16  # Values per channel that BatchNorm saw: batch x height x width.
  old_var = np.asarray(old['var'])
  biased_update = (torch_bn.running_var.numpy() - 0.9 * old_var) * (count - 1) / count
  np.testing.assert_allclose(new['var'], 0.9 * old_var + biased_update, rtol=1e-4)
