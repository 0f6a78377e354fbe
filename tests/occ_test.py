"""OCC method (seed 002): center, encoder, maps and scores vs numpy/scipy/skimage, frozen encoder, feature
cache, protocol C without revisiting, and a smoke run through the train loop."""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from skimage import transform

from adjax import train
from adjax.data import pipeline
from adjax.errors import InputError
from adjax.methods import occ
from adjax.models import weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configs import occ as occ_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from scripts import occ_experiment  # pylint: disable=g-import-not-at-top,wrong-import-position

LAYERS = ('layer1', 'layer2', 'layer3')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture(scope='module')
def smoke_method():
  config = occ_config.get_config('smoke')
  return config, occ.make(config, train_size=8)


def fake_batch(num_images=4, size=32, seed=0):
  images = np.random.default_rng(seed).normal(size=(num_images, size, size, 3)).astype(np.float32)
  return {'image': images, 'mask': np.zeros(images.shape[:3], np.float32),
          'label': np.zeros(num_images, np.int32), 'has_mask': np.zeros(num_images, bool)}


@pytest.mark.parametrize('distribution', ['normal', 'uniform', 'ones'])
@pytest.mark.parametrize('norm', [1.0, 4.5])
def test_center_has_the_norm_and_comes_from_the_seed(distribution, norm):
  center = occ.make_center(dimension=64, distribution=distribution, norm=norm, seed=1024)
  assert center.shape == (64,) and center.dtype == np.float32
  assert np.linalg.norm(center) == pytest.approx(norm, rel=1e-6)
  np.testing.assert_array_equal(center, occ.make_center(dimension=64, distribution=distribution, norm=norm,
                                                        seed=1024))
  draw = {'normal': lambda rng: rng.standard_normal(64), 'uniform': lambda rng: rng.uniform(0, 1, 64),
          'ones': lambda rng: np.ones(64)}[distribution](np.random.default_rng(1024))
  np.testing.assert_allclose(center, draw / np.linalg.norm(draw) * norm, rtol=1e-6)
  other_seed = occ.make_center(dimension=64, distribution=distribution, norm=norm, seed=7)
  assert np.array_equal(other_seed, center) == (distribution == 'ones')


def test_feature_mean_center_and_bad_centers():
  mean = np.arange(1.0, 9.0)
  center = occ.make_center(dimension=8, distribution='feature_mean', norm=2.0, feature_mean=mean)
  np.testing.assert_allclose(center, mean / np.linalg.norm(mean) * 2.0, rtol=1e-6)
  with pytest.raises(InputError, match='center_norm'):
    occ.make_center(dimension=8, norm=0.0)
  with pytest.raises(InputError, match='center_distribution'):
    occ.make_center(dimension=8, distribution='cauchy')


def test_bad_config_is_refused_before_loading_weights():
  with pytest.raises(InputError, match='feature_layers'):
    occ.check_layers(('layer2', 'penultimate'))
  with pytest.raises(InputError, match='feature_layers'):
    occ.check_layers(('layer9',))
  assert occ.check_layers(('layer3', 'layer1')) == ('layer1', 'layer3')
  config = occ_config.get_config('smoke')
  config.model.projector = 'mlp'
  with pytest.raises(InputError, match='model.projector'):
    occ.make(config)


def test_encode_concatenates_layers_on_the_shallowest_grid():
  backbone = weights.create_model('resnet18')
  variables = weights.load_backbone_variables('resnet18', '', outputs=('layer4',))
  images = jnp.asarray(fake_batch(2)['image'])
  outputs = backbone.apply(variables, images, outputs=('layer1', 'layer2', 'layer3', 'layer4'))
  features = np.asarray(occ.encode(backbone, variables, images, layers=LAYERS))
  assert features.shape == (2, 8, 8, 64 + 128 + 256)
  np.testing.assert_allclose(features[..., :64], outputs['layer1'], rtol=1e-6)
  for name, channels in (('layer2', slice(64, 192)), ('layer3', slice(192, 448))):
    layer = np.asarray(outputs[name])
    expected = np.stack([transform.resize(image, (8, 8, layer.shape[-1]), order=1, mode='edge',
                                          anti_aliasing=False) for image in layer])
    np.testing.assert_allclose(features[..., channels], expected, rtol=1e-4, atol=1e-5)
  pooled = np.asarray(occ.encode(backbone, variables, images, layers=('penultimate',)))
  assert pooled.shape == (2, 1, 1, 512)
  np.testing.assert_allclose(pooled[:, 0, 0], np.asarray(outputs['layer4']).mean((1, 2)), rtol=1e-5)


def test_gaussian_smooth_matches_scipy():
  maps = np.random.default_rng(0).uniform(size=(2, 20, 24)).astype(np.float32)
  smoothed = occ.gaussian_smooth(jnp.asarray(maps), sigma=1.5)
  expected = np.stack([ndimage.gaussian_filter(m.astype(np.float64), 1.5, mode='reflect') for m in maps])
  np.testing.assert_allclose(smoothed, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(occ.gaussian_smooth(jnp.asarray(maps), sigma=0.0), maps)


def test_mean_cosine_similarity_matches_numpy():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(5, 7)), rng.normal(size=(3, 7))
  expected = np.mean([[x @ y / np.linalg.norm(x) / np.linalg.norm(y) for y in b] for x in a])
  assert occ.mean_cosine_similarity(a, b) == pytest.approx(expected, rel=1e-9)
  assert occ.mean_cosine_similarity(a, 3 * a[:1]) == pytest.approx(np.mean(a @ a[0] / np.linalg.norm(
      a, axis=1) / np.linalg.norm(a[0])))


def test_maps_and_scores_match_numpy(smoke_method):
  config, method = smoke_method
  images = fake_batch(3)['image']
  variables = jax.jit(method.init)(jax.random.PRNGKey(0), images[:1])
  center = np.asarray(variables['center']['center'], np.float64)
  np.testing.assert_array_equal(center, occ.make_center(dimension=448, seed=1024))
  backbone = weights.create_model('resnet18')
  features = np.asarray(occ.encode(backbone, variables['backbone'], jnp.asarray(images), layers=LAYERS),
                        np.float64)
  dense = variables['params']['conv1x1']
  projected = features @ np.asarray(dense['kernel'], np.float64) + np.asarray(dense['bias'], np.float64)
  low = np.maximum(((projected - center) ** 2).sum(-1) - config.occ.radius ** 2, 0.0)  # [3, 8, 8]
  expected = np.stack([transform.resize(m, (32, 32), order=1, mode='edge', anti_aliasing=False)
                       for m in low])
  maps, scores = method.score(variables, {}, jnp.asarray(images))
  np.testing.assert_allclose(maps['distance'], expected, rtol=1e-4)
  np.testing.assert_allclose(scores['max'], expected.max((1, 2)), rtol=1e-4)
  np.testing.assert_allclose(scores['mean'], expected.mean((1, 2)), rtol=1e-4)
  # The training loss is the same quantity averaged over positions (a cache miss, then a hit).
  batch = jax.tree_util.tree_map(jnp.asarray, fake_batch(3))
  model_state = {k: v for k, v in variables.items() if k != 'params'}
  for _ in range(2):
    loss, (_, metrics) = method.loss_fn(variables['params'], model_state, batch, jax.random.PRNGKey(0))
    np.testing.assert_allclose(loss, low.mean((1, 2)), rtol=1e-4)
    np.testing.assert_allclose(metrics['distance'], np.sqrt(((projected - center) ** 2).sum(-1)).mean((1, 2)),
                               rtol=1e-4)


@pytest.mark.parametrize('image_size, layers, use_bias', [(32, LAYERS, True), (40, LAYERS, False),
                                                       (32, ('layer2',), True), (32, ('penultimate',), False)])
def test_projector_on_per_layer_features_equals_the_dense_layer_on_their_concatenation(image_size, layers, use_bias):
  """The same parameters as `nn.Dense` and the same function of the concatenated features, also when the
  grids are no integer multiples of each other (40²: 10, 5 and 3 positions)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  backbone = weights.create_model('resnet18')
  images = jnp.asarray(fake_batch(2, size=image_size)['image'])
  variables = backbone.init(jax.random.key(0), images, train=False, outputs=layers)
  parts = occ.encode_layers(backbone, variables, images, layers=layers)
  concatenated = occ.encode(backbone, variables, images, layers=layers)
  assert [part.shape[-1] for part in parts] == [{'layer1': 64, 'layer2': 128, 'layer3': 256, 'penultimate': 512}[name]
                                                for name in layers]
  channels = concatenated.shape[-1]
  projector = occ.Projector(use_bias=use_bias)
  params = projector.init(jax.random.key(3), parts)
  reference = nn.Dense(channels, use_bias=use_bias, name='conv1x1',
                       kernel_init=nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform'),
                       bias_init=lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -channels**-0.5,
                                                                              channels**-0.5))
  wrapped = lambda p, x: reference.apply({'params': p['params']['conv1x1']}, x)
  expected_shapes = {'kernel': (channels, channels)} | ({'bias': (channels,)} if use_bias else {})
  assert jax.tree.map(jnp.shape, params) == {'params': {'conv1x1': expected_shapes}}
  scale = float(jnp.max(jnp.abs(wrapped(params, concatenated))))
  np.testing.assert_allclose(projector.apply(params, parts), wrapped(params, concatenated), rtol=0, atol=2e-5 * scale)
  loss = lambda apply, x: lambda p: jnp.sum(jnp.sin(apply(p, x)))
  grads = [jax.grad(loss(projector.apply, parts))(params), jax.grad(loss(wrapped, concatenated))(params)]
  for got, want in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * float(jnp.max(jnp.abs(want))))


def test_projector_initialisation_is_nn_dense_s():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  parts = [jnp.ones((1, 4, 4, 3)), jnp.ones((1, 2, 2, 5))]
  ours = occ.Projector().init(jax.random.key(5), parts)['params']['conv1x1']
  bound = 8**-0.5
  dense = nn.Dense(8, kernel_init=nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform'),
                   bias_init=lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound))

  class Wrapper(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(8, kernel_init=dense.kernel_init, bias_init=dense.bias_init, name='conv1x1')(x)

  theirs = Wrapper().init(jax.random.key(5), jnp.ones((1, 4, 4, 8)))['params']['conv1x1']
  for name in ('kernel', 'bias'):
    np.testing.assert_array_equal(ours[name], theirs[name])


def test_feature_cache_hits_only_exact_images_and_respects_capacity():
  lookup, store, stats = occ.make_feature_cache(capacity=3)
  images = np.arange(4 * 2 * 2, dtype=np.float32).reshape(4, 2, 2, 1)
  features = images.reshape(4, -1) * 10
  layers = [features, features[:, :2] - 1]  # Two layers' features per image.
  shapes = [(4,), (2,)]
  cached, hit = lookup(images[:2], shapes, np.float32)
  assert not hit and not any(part.any() for part in cached) and [part.shape for part in cached] == [(2, 4), (2, 2)]
  store(images[:2], [part[:2] for part in layers], hit)
  cached, hit = lookup(images[:2], shapes, np.float32)
  assert hit
  for got, want in zip(cached, layers):
    np.testing.assert_array_equal(got, want[:2])
  changed = images[:2].copy()
  changed[1, 0, 0, 0] += 1e-3  # One changed pixel is another image.
  assert not lookup(changed, shapes, np.float32)[1]
  store(images, layers, False)
  assert stats()['entries'] == 3 and stats()['hits'] == 2 and stats()['misses'] == 4


def test_encoder_gets_no_gradient_and_is_not_updated(smoke_method):
  _, method = smoke_method
  batch = fake_batch(4)
  state = train.create_train_state(method, seed=0, sample_images=batch['image'][:1])
  initial = jax.device_get(state)
  batch_on_device = jax.tree_util.tree_map(jnp.asarray, batch)

  def mean_loss(model_state):
    return jnp.mean(method.loss_fn(state.params, model_state, batch_on_device, jax.random.PRNGKey(0))[0])

  grads = jax.grad(mean_loss)(state.model_state)
  assert all(not np.any(np.asarray(g)) for g in jax.tree_util.tree_leaves(grads))
  devices = jax.local_devices()[:1]  # The smoke config's one device (feature cache on).
  step = train.make_train_step(method, devices)
  sharding = pipeline.device_sharding(devices)
  state = pipeline.replicate(state, sharding)
  losses = []
  for _ in range(3):
    state, metrics = step(state, pipeline.shard(batch, sharding))
    losses.append(float(metrics['loss']))
  final = jax.device_get(state)
  for before, after in zip(jax.tree_util.tree_leaves(initial.model_state),
                           jax.tree_util.tree_leaves(final.model_state)):
    np.testing.assert_array_equal(before, after)  # Backbone and center bit for bit.
  moved = [np.abs(a - b).max() for a, b in zip(jax.tree_util.tree_leaves(initial.params),
                                                jax.tree_util.tree_leaves(final.params))]
  assert max(moved) > 0 and losses[-1] < losses[0]


def test_protocol_c_never_sees_a_training_image_twice(tmp_path, data_dir):
  config = occ_config.get_config('paper_c')
  spec = 'resize(32)|normalize("imagenet")'
  config.data.update(name='digits', category='0', data_dir=str(data_dir), image_size=32,
                     train_preprocess=spec, eval_preprocess=spec)
  config.model.update(backbone='resnet18', feature_layers=LAYERS)
  config.eval.batch_size = 256
  config.occ.threshold = 'none'  # No fit pass: the test is about the training stream.
  method = occ.make(config, train_size=107)
  seen = []

  def recording_loss(params, model_state, batch, rng):
    jax.debug.callback(lambda images: seen.extend(occ._digest(x) for x in np.asarray(images)),  # pylint: disable=protected-access
                       batch['image'])
    return method.loss_fn(params, model_state, batch, rng)

  curve = occ_experiment.online_curve(config, tmp_path, chunk=60,
                                      method=method._replace(loss_fn=recording_loss))
  from adjax.data import sources  # pylint: disable=g-import-not-at-top
  source, _ = sources.load_split(name='digits', category='0', split='train', data_dir=str(data_dir))
  expected = [occ._digest(x) for b in pipeline.eval_batches(source, preprocess=spec, batch_size=64)  # pylint: disable=protected-access
              for x in b['image'][b['valid']]]
  assert len(source) == 107 and [point['steps'] for point in curve] == [60, 107]
  assert len(seen) == 107 and len(set(seen)) == 107 and set(seen) == set(expected)
  assert all(0.0 <= point['image_auroc'] <= 1.0 for point in curve)
  assert json.loads((tmp_path / 'results.json').read_text())['num_train_steps'] == 107


def test_smoke_run_writes_sane_results(tmp_path, data_dir):
  config = occ_config.get_config('smoke')
  config.data.data_dir = str(data_dir)
  results = train.train_and_evaluate(config, tmp_path)
  written = json.loads((tmp_path / 'results.json').read_text())
  assert written['method'] == 'occ' and written['dataset'] == 'textures' and written['num_train_steps'] == 4
  assert 0.0 <= written['image_auroc'] <= 1.0 and 0.0 <= written['pixel_auroc'] <= 1.0
  assert written['pixel_aupro'] is not None and np.isfinite(written['threshold'])
  assert written['threshold_source'] == 'training_statistics'
  assert set(written['image_auroc_by_score']) == {'max', 'mean'}
  assert results['image_auroc'] == pytest.approx(written['image_auroc'])
  assert (tmp_path / 'figures' / 'examples.png').is_file()
