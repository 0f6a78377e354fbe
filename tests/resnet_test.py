"""ResNet backbones: shapes at 224, truncation and numerical equivalence with torch."""

import jax
import jax.numpy as jnp
import pytest

from adjax.models import resnet
from adjax.models import weights

# Parameter counts torchvision documents for its ImageNet models.
TORCHVISION_PARAMETERS = {'resnet18': 11_689_512, 'resnet50': 25_557_032, 'resnet152': 60_192_808,
                          'wide_resnet50_2': 68_883_240}


def _abstract_features(model, size, outputs):
  return jax.eval_shape(lambda: model.init_with_output(
      jax.random.PRNGKey(0), jnp.zeros((2, size, size, 3)), outputs=outputs))


@pytest.mark.parametrize('arch', list(resnet.ARCHITECTURES))
def test_feature_shapes_and_parameter_count_at_224(arch):
  features, variables = _abstract_features(weights.create_model(arch), 224, resnet.FEATURE_NAMES)
  expansion = 1 if arch == 'resnet18' else 4
  assert features['stem'].shape == (2, 112, 112, 64)
  assert features['maxpool'].shape == (2, 56, 56, 64)
  for k, (size, planes) in enumerate(zip((56, 28, 14, 7), (64, 128, 256, 512)), start=1):
    assert features[f'layer{k}'].shape == (2, size, size, planes * expansion)
  assert features['penultimate'].shape == (2, 512 * expansion)
  assert features['logits'].shape == (2, 1000)
  count = sum(leaf.size for leaf in jax.tree.leaves(variables['params']))
  assert count == TORCHVISION_PARAMETERS[arch]


def test_wide_resnet_layers_used_by_occ():
  features, _ = _abstract_features(weights.create_model('wide_resnet50_2'), 224,
                                   ('layer2', 'layer3', 'layer4'))
  assert {name: value.shape[1:] for name, value in features.items()} == {
      'layer2': (28, 28, 512), 'layer3': (14, 14, 1024), 'layer4': (7, 7, 2048)}


def test_wide_resnet_doubles_only_the_bottleneck_width():
  _, wide = _abstract_features(weights.create_model('wide_resnet50_2'), 32, ('layer1',))
  _, plain = _abstract_features(weights.create_model('resnet50'), 32, ('layer1',))
  block_wide, block_plain = wide['params']['layer1_0'], plain['params']['layer1_0']
  assert block_wide['conv2']['kernel'].shape == (3, 3, 128, 128)
  assert block_plain['conv2']['kernel'].shape == (3, 3, 64, 64)
  assert block_wide['conv3']['kernel'].shape == (1, 1, 128, 256)  # Same block output width (256).
  assert block_plain['conv3']['kernel'].shape == (1, 1, 64, 256)


def test_requested_outputs_cut_the_network():
  _, variables = _abstract_features(weights.create_model('resnet152'), 64, ('layer2',))
  assert sorted(variables['params']) == ['bn1', 'conv1'] + [f'layer1_{i}' for i in range(3)] + [
      f'layer2_{i}' for i in range(8)]
  # Stride 2 sits on the 3x3 conv of the first bottleneck of layer2 (torchvision v1.5).
  block = variables['params']['layer2_0']
  assert set(block) == {'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3', 'downsample_conv', 'downsample_bn'}


# Basic blocks, and bottlenecks with the doubled width of the net OCC uses (same code path as
# ResNet-50/152, whose layouts weights_test checks key by key against the torch reference).
@pytest.mark.parametrize('arch,size', [('resnet18', 64), ('wide_resnet50_2', 32)])
def test_every_feature_matches_torch(reference, arch, size, tmp_path):
  feature_errors = reference.feature_errors(arch, directory=tmp_path, image_size=size)
  assert set(feature_errors) == set(resnet.FEATURE_NAMES)
  assert max(feature_errors.values()) < 1e-4, feature_errors


def test_odd_input_size_matches_torch(reference, tmp_path):
  # 45 -> 23 -> 12 -> 6 -> 3 -> 2: odd sizes exercise padding of stride-2 convs and the max-pool.
  feature_errors = reference.feature_errors('resnet18', directory=tmp_path, image_size=45)
  assert max(feature_errors.values()) < 1e-4, feature_errors
