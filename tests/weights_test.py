"""Weight import: key layout vs torchvision, file formats, timm names, truncation, errors, Flax files."""

import logging
import subprocess
import sys

import flax
import jax
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy

from adjax import convert_weights
from adjax import errors
from adjax.models import weights


def _fake_state_dict(arch, *, seed=0, **model_kwargs):
  """Random arrays under the torchvision keys and shapes the architecture expects (no torch)."""
  rng = np.random.default_rng(seed)
  layout = weights.torch_layout(weights.create_model(arch, **model_kwargs))
  arrays = {key: rng.normal(size=shape).astype(np.float32) for key, (_, shape) in layout.items()}
  arrays.update({key.replace('running_mean', 'num_batches_tracked'): np.array(7, np.int64)
                 for key in layout if key.endswith('running_mean')})
  return arrays


def _save(tmp_path, arrays, name='weights.safetensors'):
  path = tmp_path / name
  safetensors_numpy.save_file(arrays, str(path))
  return path


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize('arch', list(weights.ARCHITECTURES))
def test_layout_equals_torchvision_state_dict(reference, arch):
  torch = reference.torch
  with torch.device('meta'):  # Shapes only: ResNet-152 and VGG16 cost no memory here.
    net = reference.build(arch)
  expected = {key: tuple(value.shape) for key, value in net.state_dict().items()
              if not key.endswith('num_batches_tracked')}
  layout = weights.torch_layout(weights.create_model(arch))
  assert {key: shape for key, (_, shape) in layout.items()} == expected


def test_conversion_rules_on_known_values(tmp_path):
  arrays = _fake_state_dict('resnet18')
  variables = weights.load_backbone_variables('resnet18', _save(tmp_path, arrays))
  params, stats = variables['params'], variables['batch_stats']
  conv = arrays['layer2.0.downsample.0.weight']  # [out, in, kh, kw]
  np.testing.assert_array_equal(params['layer2_0']['downsample_conv']['kernel'][0, 0, 3, 5],
                                conv[5, 3, 0, 0])
  conv = arrays['layer1.1.conv2.weight']
  np.testing.assert_array_equal(params['layer1_1']['conv2']['kernel'][2, 1, 7, 9], conv[9, 7, 2, 1])
  np.testing.assert_array_equal(params['fc']['kernel'][17, 3], arrays['fc.weight'][3, 17])
  np.testing.assert_array_equal(params['layer2_0']['downsample_bn']['scale'],
                                arrays['layer2.0.downsample.1.weight'])
  np.testing.assert_array_equal(stats['layer4_1']['bn2']['var'], arrays['layer4.1.bn2.running_var'])
  np.testing.assert_array_equal(stats['bn1']['mean'], arrays['bn1.running_mean'])


def test_pth_and_safetensors_give_the_same_variables(reference, tmp_path):
  torch = reference.torch
  net = reference.randomize_(reference.build('resnet18'), seed=0, image_size=32)
  from_safetensors = weights.load_backbone_variables(
      'resnet18', reference.export_safetensors(net, tmp_path / 'resnet18.safetensors'))
  torch.save(net.state_dict(), tmp_path / 'resnet18-f37072fd.pth')
  from_pth = weights.load_backbone_variables('resnet18', tmp_path / 'resnet18-f37072fd.pth')
  _assert_trees_equal(from_pth, from_safetensors)
  torch.save({'epoch': 3, 'state_dict': net.state_dict()}, tmp_path / 'checkpoint.pt')
  _assert_trees_equal(weights.load_backbone_variables('resnet18', tmp_path / 'checkpoint.pt'),
                      from_safetensors)


def test_timm_vgg_head_and_dataparallel_prefix(tmp_path):
  arrays = _fake_state_dict('vgg11_bn', classifier_width=16)
  expected = weights.load_backbone_variables('vgg11_bn', _save(tmp_path, arrays), classifier_width=16)
  timm = {key: value for key, value in arrays.items() if not key.startswith('classifier.')}
  # timm's VGG head: fc1 a 7x7 conv over [512, 7, 7], fc2 a 1x1 conv, then head.fc.
  timm['pre_logits.fc1.weight'] = arrays['classifier.0.weight'].reshape(16, 512, 7, 7)
  timm['pre_logits.fc1.bias'] = arrays['classifier.0.bias']
  timm['pre_logits.fc2.weight'] = arrays['classifier.3.weight'].reshape(16, 16, 1, 1)
  timm['pre_logits.fc2.bias'] = arrays['classifier.3.bias']
  timm['head.fc.weight'], timm['head.fc.bias'] = arrays['classifier.6.weight'], arrays['classifier.6.bias']
  loaded = weights.load_backbone_variables('vgg11_bn', _save(tmp_path, timm, 'timm.safetensors'),
                                           classifier_width=16)
  _assert_trees_equal(loaded, expected)
  parallel = {f'module.{key}': value for key, value in arrays.items()}
  loaded = weights.load_backbone_variables('vgg11_bn', _save(tmp_path, parallel, 'dp.safetensors'),
                                           classifier_width=16)
  _assert_trees_equal(loaded, expected)


def test_outputs_select_the_needed_variables(tmp_path):
  arrays = _fake_state_dict('vgg11_bn', classifier_width=16)  # Only its features.* keys are used.
  trunk = {key: value for key, value in arrays.items() if key.startswith('features.')}
  path = _save(tmp_path, trunk, 'trunk.safetensors')
  variables = weights.load_backbone_variables('vgg11_bn', path, outputs=('block4',))
  assert sorted(variables['params']) == sorted(f'{kind}{name}' for kind in ('conv', 'bn')
                                               for name in ('1_1', '2_1', '3_1', '3_2', '4_1', '4_2'))
  # features: conv, bn, relu per conv and one index per max-pool: conv4_2 is features.18.
  np.testing.assert_array_equal(variables['params']['conv4_2']['bias'], arrays['features.18.bias'])
  with pytest.raises(errors.InputError, match=r'trunk\.safetensors.*6 missing keys \(classifier\.0\.bias'):
    weights.load_backbone_variables('vgg11_bn', path)


def test_mismatch_lists_missing_unexpected_and_misshaped_keys(tmp_path):
  arrays = _fake_state_dict('resnet18')
  del arrays['layer3.1.bn2.running_var']
  arrays['layer9.0.conv1.weight'] = np.zeros((1,), np.float32)
  arrays['fc.weight'] = np.zeros((10, 512), np.float32)
  del arrays['layer1.0.conv1.weight'], arrays['layer1.1.conv2.weight']
  path = _save(tmp_path, arrays, 'resnet18.safetensors')
  with pytest.raises(errors.InputError) as raised:
    weights.load_backbone_variables('resnet18', path)
  message = str(raised.value)
  assert message.startswith(f'{path}: weights do not fit resnet18: 3 missing keys (')
  for key in ('layer3.1.bn2.running_var', 'layer1.0.conv1.weight', 'layer1.1.conv2.weight'):
    assert key in message
  assert '1 unexpected key (layer9.0.conv1.weight)' in message
  assert '1 mis-shaped key (fc.weight (10, 512) instead of (1000, 512))' in message


def test_classifier_size_matters_only_for_logits(tmp_path):
  arrays = _fake_state_dict('resnet18', num_classes=10)
  path = _save(tmp_path, arrays, 'ten_classes.safetensors')
  features = weights.load_backbone_variables('resnet18', path, outputs=('penultimate',))
  assert 'fc' not in features['params']
  with pytest.raises(errors.InputError, match=r'2 mis-shaped keys \(fc\.bias \(10,\) instead of \(1000,\)'):
    weights.load_backbone_variables('resnet18', path)
  logits = weights.load_backbone_variables('resnet18', path, num_classes=10)
  np.testing.assert_array_equal(logits['params']['fc']['kernel'], arrays['fc.weight'].T)


def test_long_listings_are_cut(tmp_path):
  arrays = _fake_state_dict('resnet50')
  path = _save(tmp_path, arrays, 'resnet50.safetensors')
  resnet_keys = [key for key in arrays if not key.endswith('num_batches_tracked')]
  vgg_keys = list(weights.torch_layout(weights.create_model('vgg11')))  # 8 convs + 3 linears.
  assert len(vgg_keys) == 22
  with pytest.raises(errors.InputError) as raised:
    weights.load_backbone_variables('vgg11', path)
  shown = ', '.join(vgg_keys[:5])
  assert str(raised.value) == (
      f'{path}: weights do not fit vgg11: 22 missing keys ({shown}, ... (17 more)); '
      f'{len(resnet_keys)} unexpected keys ({", ".join(sorted(resnet_keys)[:5])}, ... '
      f'({len(resnet_keys) - 5} more))')


def test_bad_files_raise_input_error(tmp_path, monkeypatch):
  with pytest.raises(errors.InputError, match='nothing.safetensors: backbone weights file not found'):
    weights.load_backbone_variables('resnet18', tmp_path / 'nothing.safetensors')
  (tmp_path / 'weights.npz').write_bytes(b'x')
  with pytest.raises(errors.InputError, match=r"unknown weights file type '\.npz'"):
    weights.load_backbone_variables('resnet18', tmp_path / 'weights.npz')
  (tmp_path / 'broken.safetensors').write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": 1')
  with pytest.raises(errors.InputError, match='broken.safetensors: cannot read as safetensors'):
    weights.load_backbone_variables('resnet18', tmp_path / 'broken.safetensors')
  (tmp_path / 'broken.msgpack').write_bytes(b'\xc1\xc1')
  with pytest.raises(errors.InputError, match='broken.msgpack: cannot read as a Flax msgpack file'):
    weights.load_backbone_variables('resnet18', tmp_path / 'broken.msgpack')
  (tmp_path / 'other.msgpack').write_bytes(flax.serialization.msgpack_serialize({'a': np.zeros(2)}))
  with pytest.raises(errors.InputError, match='other.msgpack: not a backbone file written by'):
    weights.load_backbone_variables('resnet18', tmp_path / 'other.msgpack')
  with pytest.raises(errors.InputError, match="unknown backbone 'resnet19'"):
    weights.load_backbone_variables('resnet19', '')
  (tmp_path / 'resnet18.pth').write_bytes(b'not a pickle')
  monkeypatch.setitem(sys.modules, 'torch', None)  # As if torch were not installed.
  with pytest.raises(errors.InputError, match=r'resnet18\.pth: reading torch files needs torch'):
    weights.load_backbone_variables('resnet18', tmp_path / 'resnet18.pth')


def test_corrupt_pth_raises_input_error(reference, tmp_path):
  del reference
  (tmp_path / 'resnet18.pth').write_bytes(b'not a pickle')
  with pytest.raises(errors.InputError, match='resnet18.pth: cannot read as a torch state dict'):
    weights.load_backbone_variables('resnet18', tmp_path / 'resnet18.pth')


def test_converted_flax_file_round_trip(tmp_path):
  arrays = _fake_state_dict('resnet18')
  source = _save(tmp_path, arrays, 'resnet18.safetensors')
  converted = convert_weights.convert('resnet18', source, tmp_path / 'resnet18.msgpack')
  _assert_trees_equal(weights.load_backbone_variables('resnet18', tmp_path / 'resnet18.msgpack'),
                      converted)
  _assert_trees_equal(converted, weights.load_backbone_variables('resnet18', source))
  trunk = weights.load_backbone_variables('resnet18', tmp_path / 'resnet18.msgpack', outputs=('layer1',))
  assert sorted(trunk['params']) == ['bn1', 'conv1', 'layer1_0', 'layer1_1']
  with pytest.raises(errors.InputError, match='holds resnet18 weights, but the backbone is resnet50'):
    weights.load_backbone_variables('resnet50', tmp_path / 'resnet18.msgpack')
  with pytest.raises(errors.InputError, match=r'2 mis-shaped keys \(params/fc/bias \(1000,\) '
                     r'instead of \(10,\), params/fc/kernel \(512, 1000\) instead of \(512, 10\)\)'):
    weights.load_backbone_variables('resnet18', tmp_path / 'resnet18.msgpack', num_classes=10)


def test_convert_command(tmp_path):
  arrays = _fake_state_dict('vgg11_bn', classifier_width=16)  # Only its features.* keys are used.
  trunk = {key: value for key, value in arrays.items() if key.startswith('features.')}
  source = _save(tmp_path, trunk, 'vgg11_bn-6002323d.safetensors')
  command = [sys.executable, '-m', 'adjax.convert_weights', '--arch=vgg11_bn', f'--input={source}']
  failed = subprocess.run(command, capture_output=True, text=True, check=False)
  assert failed.returncode == 2
  assert failed.stderr.strip().splitlines() == [failed.stderr.strip()]
  assert failed.stderr.startswith(f'adjax: error: {source}: weights do not fit vgg11_bn: 6 missing keys')
  done = subprocess.run(command + ['--outputs=block4'], capture_output=True, text=True, check=True)
  output = tmp_path / 'vgg11_bn-6002323d.msgpack'
  assert f'wrote {output}' in done.stdout
  loaded = weights.load_backbone_variables('vgg11_bn', output, outputs=('pool3',))
  np.testing.assert_array_equal(loaded['params']['conv3_2']['kernel'],
                                arrays['features.11.weight'].transpose(2, 3, 1, 0))


def test_empty_path_warns_and_initialises_randomly(caplog):
  with caplog.at_level(logging.WARNING):
    first = weights.load_backbone_variables('resnet18', '', outputs=('stem',))
  assert 'backbone resnet18 is RANDOMLY initialised' in caplog.text
  again = weights.load_backbone_variables('resnet18', None, outputs=('stem',))
  other = weights.load_backbone_variables('resnet18', '', outputs=('stem',), rng=jax.random.PRNGKey(1))
  assert sorted(first['params']) == ['bn1', 'conv1']
  _assert_trees_equal(first, again)
  assert not np.allclose(first['params']['conv1']['kernel'], other['params']['conv1']['kernel'])
  # torchvision's init: kaiming normal (fan_out) convs, BatchNorm scale 1, running var 1.
  kernel = np.asarray(first['params']['conv1']['kernel'])
  assert abs(kernel.std() - (2 / (7 * 7 * 64)) ** 0.5) < 0.1 * (2 / (7 * 7 * 64)) ** 0.5
  np.testing.assert_array_equal(first['batch_stats']['bn1']['var'], np.ones(64))
