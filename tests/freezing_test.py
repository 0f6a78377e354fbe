"""Freezing a backbone prefix: optax labels, zero updates, stop_gradient and eval-mode BatchNorm."""

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adjax.models import freezing
from adjax.models import weights

IMAGES = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
VGG11_BN_TRUNK = ('conv1_1', 'bn1_1', 'conv2_1', 'bn2_1', 'conv3_1', 'bn3_1', 'conv3_2', 'bn3_2',
                  'conv4_1', 'bn4_1', 'conv4_2', 'bn4_2')


def _variables(model, outputs, seed=0):
  """Variables for `outputs` like torchvision's init (numpy: faster here than model.init)."""
  rng = np.random.default_rng(seed)
  flat = {}
  for path, shape in weights.variable_shapes(model, outputs=outputs).items():
    if path[-1] == 'kernel':
      value = rng.normal(size=shape) * np.sqrt(2 / np.prod(shape[:-1]))
    elif path[-1] in ('scale', 'var'):
      value = rng.uniform(0.5, 1.5, size=shape)
    else:
      value = rng.normal(size=shape) * 0.1
    flat[path] = jnp.asarray(value, jnp.float32)
  return traverse_util.unflatten_dict(flat)


def _top_level_labels(labels):
  by_module = {}
  for path, label in traverse_util.flatten_dict(labels).items():
    by_module.setdefault(path[0], set()).add(label)
  assert all(len(found) == 1 for found in by_module.values()), by_module
  return {name: found.pop() for name, found in by_module.items()}


def test_fcdd_prefix_is_torchvisions_first_15_modules():
  model = weights.create_model('vgg11_bn', classifier_width=16)
  params = _variables(model, None)['params']
  labels = freezing.label_function(model, frozen_until='pool3')(params)
  frozen = {name for name, label in _top_level_labels(labels).items() if label == freezing.FROZEN}
  assert frozen == set(VGG11_BN_TRUNK[:8])
  # FCDD's reference freezes torchvision's features[0:15] (up to and including the 3rd max-pool).
  for key, (path, _) in weights.torch_layout(model).items():
    if path[0] == 'params':
      first_15 = key.startswith('features.') and int(key.split('.')[1]) < 15
      assert first_15 == (path[1] in frozen), key


def test_labels_for_a_nested_resnet_backbone():
  model = weights.create_model('resnet18')
  backbone = _variables(model, ('layer3',))['params']
  params = {'backbone': backbone, 'projector': {'kernel': jnp.ones((1, 1, 256, 256))}}
  labels = freezing.label_function(model, frozen_until='layer2', backbone_path=('backbone',))(params)
  assert labels['projector'] == {'kernel': freezing.TRAINABLE}
  assert _top_level_labels(labels['backbone']) == {
      'conv1': 'frozen', 'bn1': 'frozen', 'layer1_0': 'frozen', 'layer1_1': 'frozen',
      'layer2_0': 'frozen', 'layer2_1': 'frozen', 'layer3_0': 'trainable', 'layer3_1': 'trainable'}
  nothing = freezing.label_function(model, frozen_until=None)(backbone)
  assert set(jax.tree.leaves(nothing)) == {freezing.TRAINABLE}


def _trunk_loss(model, *, frozen_until, frozen_bn_eval=False):
  def loss(params, batch_stats):
    features, updates = model.apply({'params': params, 'batch_stats': batch_stats}, IMAGES, train=True,
                                    outputs=('block4',), frozen_until=frozen_until,
                                    frozen_bn_eval=frozen_bn_eval, mutable=['batch_stats'])
    return jnp.mean(features['block4']**2), updates['batch_stats']
  return loss


def test_frozen_params_get_zero_updates_and_the_rest_train():
  model = weights.create_model('vgg11_bn')
  variables = _variables(model, ('block4',))
  # Weight decay and momentum would move frozen params even with zero gradients; freeze() must not.
  optimizer = freezing.freeze(optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(0.1, momentum=0.9)),
                              model=model, frozen_until='pool3')
  loss = _trunk_loss(model, frozen_until='pool3')

  @jax.jit
  def step(params, batch_stats, opt_state):
    grads, batch_stats = jax.grad(loss, has_aux=True)(params, batch_stats)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state

  params, batch_stats = variables['params'], variables['batch_stats']
  opt_state = optimizer.init(params)
  for _ in range(2):
    params, batch_stats, opt_state = step(params, batch_stats, opt_state)
  for name in VGG11_BN_TRUNK:
    for leaf, before in variables['params'][name].items():
      after = params[name][leaf]
      if name in VGG11_BN_TRUNK[:8]:
        np.testing.assert_array_equal(after, before, err_msg=f'{name}/{leaf}')
      else:
        changed = np.mean(np.asarray(after) != np.asarray(before))
        assert changed > 0.99, f'{name}/{leaf}: {changed:.1%} changed'  # A few round to no change.


def test_stop_gradient_at_the_cut():
  model = weights.create_model('vgg11_bn')
  variables = _variables(model, ('block4',))
  args = variables['params'], variables['batch_stats']
  frozen_grads, _ = jax.jit(jax.grad(_trunk_loss(model, frozen_until='pool3'), has_aux=True))(*args)
  free_grads, _ = jax.jit(jax.grad(_trunk_loss(model, frozen_until=None), has_aux=True))(*args)
  for name in VGG11_BN_TRUNK:
    for leaf in frozen_grads[name]:
      if name in VGG11_BN_TRUNK[:8]:
        assert not np.any(frozen_grads[name][leaf]), f'{name}/{leaf}'
        assert np.any(free_grads[name][leaf]), f'{name}/{leaf}'
      else:  # The unfrozen part gets the same gradient either way.
        np.testing.assert_allclose(frozen_grads[name][leaf], free_grads[name][leaf], rtol=1e-5,
                                   atol=1e-7)


@pytest.mark.parametrize('arch,frozen_until,frozen_modules', [
    ('vgg11_bn', 'pool3', ('bn1_1', 'bn2_1', 'bn3_1', 'bn3_2')),
    ('resnet18', 'layer1', ('bn1', 'layer1_0', 'layer1_1')),
])
def test_eval_mode_batch_norm_in_the_frozen_part(arch, frozen_until, frozen_modules):
  model = weights.create_model(arch)
  last = 'block4' if arch.startswith('vgg') else 'layer2'
  variables = _variables(model, (last,))

  def run(**kwargs):
    features, updates = model.apply(variables, IMAGES, train=True, outputs=(frozen_until, last),
                                    frozen_until=frozen_until, mutable=['batch_stats'], **kwargs)
    return features, updates['batch_stats']

  features, stats = run(frozen_bn_eval=True)
  _, stats_updating = run(frozen_bn_eval=False)
  for name, before in variables['batch_stats'].items():
    for path, value in traverse_util.flatten_dict(before).items():
      kept = traverse_util.flatten_dict(stats[name])[path]
      updated = traverse_util.flatten_dict(stats_updating[name])[path]
      assert not np.array_equal(updated, value), (name, path)  # Train mode updates all by default.
      assert np.array_equal(kept, value) == (name in frozen_modules), (name, path)
  # The frozen part then computes exactly what eval mode computes.
  evaluated = model.apply(variables, IMAGES, outputs=(frozen_until,))
  np.testing.assert_array_equal(features[frozen_until], evaluated[frozen_until])
