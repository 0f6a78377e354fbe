"""The reconstruction method (LAMP / CAE family) in the train loop: results, loss assembly, thresholds."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adjax import train
from adjax.data import pipeline
from adjax.data import sources
from adjax.errors import InputError
from adjax.losses import reconstruction as rec_losses
from adjax.methods import reconstruction

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configs import cae as cae_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import lamp as lamp_config  # pylint: disable=g-import-not-at-top,wrong-import-position


def tiny_config(module=lamp_config, **sections):
  config = module.get_config('smoke')
  config.data.image_size = 8
  if config.model.architecture == 'cae':
    config.model.features = (4,)
  else:
    config.model.features = (4, 8)
  for section, values in sections.items():
    config[section].update(values)
  return config


def fake_batch(size=8, count=4, seed=0, categories=None):
  rng = np.random.default_rng(seed)
  images = rng.uniform(-1, 1, (count, size, size, 3)).astype(np.float32)
  batch = {'image': images, 'mask': np.zeros(images.shape[:3], np.float32),
           'label': np.zeros(count, np.int32), 'has_mask': np.zeros(count, bool)}
  if categories is not None:
    batch['category_index'] = np.asarray(categories, np.int32)
  return batch


def init(method, images):
  variables = dict(jax.jit(method.init)(jax.random.PRNGKey(0), jnp.asarray(images[:1])))
  params = variables.pop('params')
  return params, variables


def ema_reference(scores, *, alpha, beta, initial, updates):
  threshold = initial
  for _ in range(updates):
    threshold = (1 - alpha) * threshold + alpha * (scores.mean() + beta * scores.std())
  return threshold


def test_smoke_run_writes_sane_results_and_fits_on_training_data_only(tmp_path):
  config = lamp_config.get_config('smoke')
  config.data.update(name='digits', category='3', data_dir=str(tmp_path / 'tfds'))
  train_source, _ = sources.load_split(name='digits', category='3', split='train',
                                       data_dir=config.data.data_dir)
  method = reconstruction.make(config, train_size=len(train_source))
  seen = {}

  def spying_fit(variables, make_batches):
    batches = list(make_batches())
    seen['labels'] = np.concatenate([b['label'][b['valid']] for b in batches])
    seen['scores'] = np.concatenate([np.asarray(method.score(variables, {'class_thresholds': {
        'l2': jnp.zeros(1)}}, jnp.asarray(b['image']))[1]['l2'])[b['valid']] for b in batches])
    return method.fit(variables, lambda: iter(batches))

  results = train.train_and_evaluate(config, tmp_path / 'run', method=method._replace(fit=spying_fit))
  assert results['method'] == 'reconstruction' and results['num_train_steps'] == 4
  assert results['num_test_images'] == 719 and 0.0 <= results['image_auroc'] <= 1.0
  assert results['pixel_auroc'] is None  # digits have no masks
  assert set(results['image_auroc_by_score']) == {'l2', 'l1', 'ssim', 'l2_max', 'l1_max', 'ssim_max', 'mixer'}
  # The threshold came from the training split (all normal, every image once), by Eq. 6.
  assert len(seen['labels']) == len(train_source) and not seen['labels'].any()
  updates = reconstruction.num_threshold_updates(config, len(train_source))
  assert updates == int(np.ceil(4 * 4 / len(train_source)))
  expected = ema_reference(seen['scores'].astype(np.float64), alpha=0.65, beta=0.3, initial=0.5,
                           updates=updates)
  assert results['threshold_source'] == 'training_statistics'
  assert results['threshold'] == pytest.approx(expected, rel=1e-5)
  assert 0.0 <= results['image_precision'] <= 1.0 and 0.0 <= results['image_recall'] <= 1.0
  assert (tmp_path / 'run' / 'results.json').exists()


def test_two_category_run_reports_per_category_precision_recall_f1(tmp_path):
  config = cae_config.get_config('smoke')
  config.data.update(name='digits', category='3+5', data_dir=str(tmp_path / 'tfds'))
  config.optim.plateau_factor = 0.5  # Its state (fed the loss) must stay replicated under pmap.
  results = train.train_and_evaluate(config, tmp_path / 'run')
  by_category = results['by_category']
  assert list(by_category) == ['3', '5'] and len(results['thresholds_by_category']) == 2
  assert sum(entry['num_test_images'] for entry in by_category.values()) == results['num_test_images']
  for entry in by_category.values():
    assert entry['num_anomalous_test_images'] < entry['num_test_images']
    assert entry['anomalous_accuracy'] == entry['image_recall']
    assert 0.0 <= entry['normal_accuracy'] <= 1.0 and 0.0 <= entry['image_auroc'] <= 1.0
  assert results['image_f1_category_mean'] == pytest.approx(
      np.mean([entry['image_f1'] for entry in by_category.values()]))
  with np.load(tmp_path / 'run' / 'image_scores.npz') as saved:  # What scripts/ensemble.py votes with.
    assert list(saved['categories']) == ['3', '5'] and saved['labels'].sum() > 0
    anomalous, labels = saved['anomalous'], saved['labels'].astype(bool)
    f1 = 2 * np.sum(anomalous & labels) / (np.sum(anomalous) + np.sum(labels))
    assert results['image_f1'] == pytest.approx(f1)


@pytest.mark.parametrize('module,sections,categories', [
    (lamp_config, dict(loss=dict(base='l2'), lamp=dict(enabled=True)), None),
    (cae_config, dict(loss=dict(base='ssim'), contractive=dict(method='exact', weight=1e-3),
                      mixer=dict(num_categories=3), optim=dict(name='rmsprop', learning_rate=3e-3),
                      data=dict(category='brick+grass+gravel')),
     [0, 1, 2, 1]),
])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(module, sections, categories):
  config = tiny_config(module, **sections)
  config.optim.learning_rate = sections.get('optim', {}).get('learning_rate', 1e-2)
  method = reconstruction.make(config)
  batch = fake_batch(categories=categories)
  state = train.create_train_state(method, seed=0, sample_images=batch['image'][:1])
  step = train.make_train_step(method)
  sharding = pipeline.device_sharding()
  state = pipeline.replicate(state, sharding)
  device_batch = pipeline.shard(batch, sharding)
  if categories is not None:
    device_batch['category_index'] = jax.device_put(batch['category_index'].reshape(2, -1), sharding)
  losses = []
  for _ in range(25):
    state, metrics = step(state, device_batch)
    losses.append(float(metrics['loss']))
  assert bool(metrics['finite'])
  assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
  if categories is not None:
    assert 'cross_entropy' in metrics and 'contractive_penalty' in metrics


def test_loss_is_lamp_of_the_base_map_plus_weighted_terms():
  config = tiny_config(cae_config, lamp=dict(enabled=True, epsilon=0.01),
                       contractive=dict(method='exact', weight=0.5), denoising=dict(scale=0.0))
  method = reconstruction.make(config)
  batch = fake_batch()
  params, model_state = init(method, batch['image'])
  per_example, (new_state, metrics) = jax.jit(method.loss_fn)(params, model_state, batch,
                                                              jax.random.PRNGKey(3))
  model = reconstruction.build_model(config)
  (recon, _, _), _ = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(
      {'params': params, **model_state}, batch['image'])
  error = np.square(np.asarray(batch['image'], np.float64) - np.asarray(recon, np.float64))
  normalized = error / error.max() * (1 - 0.01)  # max over the batch (paper)
  expected_lamp = -np.log(1 - normalized).sum(axis=(1, 2, 3)) / error[0].size
  np.testing.assert_allclose(metrics['reconstruction_loss'], expected_lamp, rtol=1e-4)
  # Contractive term: squared Frobenius norm of each image's encoder Jacobian (running-average BN).
  encode = lambda x: model.apply({'params': params, **model_state}, x[None], train=False,
                                 method='encode')[0]
  jacobian_norms = jax.jit(jax.vmap(lambda image: jnp.sum(jnp.square(jax.jacrev(encode)(image)))))(
      batch['image'])
  np.testing.assert_allclose(metrics['contractive_penalty'], jacobian_norms, rtol=1e-4)
  np.testing.assert_allclose(per_example, expected_lamp + 0.5 * np.asarray(jacobian_norms), rtol=1e-4)
  assert not np.allclose(new_state['batch_stats']['encoder']['BatchNorm_0']['mean'],
                         model_state['batch_stats']['encoder']['BatchNorm_0']['mean'])


def test_denoising_corrupts_training_inputs_only():
  config = tiny_config(denoising=dict(scale=0.3), lamp=dict(enabled=False))
  method = reconstruction.make(config)
  batch = fake_batch()
  params, model_state = init(method, batch['image'])
  loss_fn = jax.jit(method.loss_fn)
  first = loss_fn(params, model_state, batch, jax.random.PRNGKey(1))[0]
  second = loss_fn(params, model_state, batch, jax.random.PRNGKey(2))[0]
  assert not np.allclose(first, second)  # Training sees freshly corrupted inputs.
  variables = {'params': params, **model_state}
  statistics = {'class_thresholds': {'l2': jnp.array([0.25])}}
  maps, scores = method.score(variables, statistics, jnp.asarray(batch['image']))
  model = reconstruction.build_model(config)
  recon, _, _ = jax.jit(model.apply)(variables, batch['image'])
  images, recon = np.asarray(batch['image'], np.float64), np.asarray(recon, np.float64)
  np.testing.assert_allclose(maps['l2'], np.square(images - recon).mean(-1), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(maps['l1'], np.abs(images - recon).mean(-1), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(scores['l2'], np.square(images - recon).mean((1, 2, 3)), rtol=1e-5)
  np.testing.assert_allclose(scores['l2_max'], np.square(images - recon).mean(-1).max((1, 2)), rtol=1e-5)
  np.testing.assert_allclose(scores['mixer'], scores['l2'] - 0.25, rtol=1e-6)
  assert maps['ssim'].shape == (4, 8, 8)
  again = method.score(variables, statistics, jnp.asarray(batch['image']))[1]['l2']
  np.testing.assert_array_equal(scores['l2'], again)


def test_mixer_thresholds_per_category_from_training_batches():
  config = tiny_config(mixer=dict(num_categories=2, score='l1'), threshold=dict(alpha=0.5, beta=-0.2))
  config.eval.score = 'mixer'
  config.data.category = 'brick+grass'
  method = reconstruction.make(config, train_size=8)  # 4 steps x 4 images / 8 = 2 epochs, 2 updates
  batches = [fake_batch(categories=[0, 1, 1, 0], seed=1), fake_batch(categories=[1, 0, 1, 1], seed=2)]
  batches[1]['valid'] = np.array([True, True, True, False])  # The last row is padding.
  batches[0]['valid'] = np.ones(4, bool)
  params, model_state = init(method, batches[0]['image'])
  variables = {'params': params, **model_state}
  statistics = method.fit(variables, lambda: iter(batches))
  scores = np.concatenate([np.asarray(method.score(variables, statistics, b['image'])[1]['l1'])[b['valid']]
                           for b in batches]).astype(np.float64)
  classes = np.array([0, 1, 1, 0, 1, 0, 1])
  for category in (0, 1):
    expected = ema_reference(scores[classes == category], alpha=0.5, beta=-0.2, initial=0.5, updates=2)
    assert float(statistics['class_thresholds']['l1'][category]) == pytest.approx(expected, rel=1e-5)
  assert method.thresholds(statistics) == {'image': 0.0, 'pixel': None}
  maps, image_scores = method.score(variables, statistics, batches[0]['image'])
  model = reconstruction.build_model(config)
  _, _, logits = jax.jit(model.apply)(variables, batches[0]['image'])
  predicted = np.argmax(np.asarray(logits), axis=-1)
  np.testing.assert_allclose(image_scores['mixer'], np.asarray(image_scores['l1']) -
                             np.asarray(statistics['class_thresholds']['l1'])[predicted], rtol=1e-6)
  anomalous = rec_losses.threshold_predictions(image_scores['l1'], jnp.asarray(predicted),
                                               statistics['class_thresholds']['l1'])
  np.testing.assert_array_equal(anomalous, np.asarray(image_scores['mixer']) > 0)
  with pytest.raises(InputError, match='category_index'):
    batch = fake_batch()
    method.loss_fn(params, model_state, batch, jax.random.PRNGKey(0))


def test_without_mixer_thresholds_are_per_true_category():
  config = tiny_config(threshold=dict(alpha=0.5, beta=0.1))
  config.data.category = 'brick+grass'
  method = reconstruction.make(config, train_size=16)  # 4 steps x 4 images / 16 = 1 update.
  batch = fake_batch(categories=[0, 1, 1, 0], seed=4)
  batch['valid'] = np.ones(4, bool)
  params, model_state = init(method, batch['image'])
  variables = {'params': params, **model_state}
  statistics = method.fit(variables, lambda: iter([batch]))
  scores = np.asarray(method.score(variables, statistics, batch['image'])[1]['l2'], np.float64)
  expected = [ema_reference(scores[[0, 3]], alpha=0.5, beta=0.1, initial=0.5, updates=1),
              ema_reference(scores[[1, 2]], alpha=0.5, beta=0.1, initial=0.5, updates=1)]
  thresholds = method.thresholds(statistics)
  assert thresholds['image'] is None
  np.testing.assert_allclose(thresholds['image_by_category'], expected, rtol=1e-5)
  config.mixer.num_categories = 3
  with pytest.raises(InputError, match='mixer.num_categories'):
    reconstruction.make(config)


def test_reduce_on_plateau_lowers_the_rate_after_patience_epochs_without_progress():
  optim = cae_config.get_config('smoke').optim
  optim.update(name='sgd', momentum=0.0, learning_rate=0.5, plateau_factor=0.1, plateau_patience=2)
  optimizer = optax.with_extra_args_support(reconstruction.make_optimizer(optim, steps_per_epoch=3))
  params = {'w': jnp.zeros(2)}
  grads = {'w': jnp.ones(2)}
  state = optimizer.init(params)
  sizes = []
  for step in range(15):  # A flat loss: every 3-step average fails to improve.
    updates, state = optimizer.update(grads, state, params, value=jnp.float32(1.0))
    sizes.append(float(-updates['w'][0]))
  # Epoch 1 sets the best; epochs 2 and 3 do not improve: the update of step 9, whose loss completes
  # epoch 3, is already x0.1; epochs 4 and 5 do not improve either -> x0.01 from step 15.
  np.testing.assert_allclose(sizes, [0.5] * 8 + [0.05] * 6 + [0.005], rtol=1e-6)
  with pytest.raises(InputError, match='plateau_factor'):
    reconstruction.make_optimizer(optax_config(plateau_factor=2.0))


def optax_config(**values):
  optim = cae_config.get_config('smoke').optim
  optim.update(values)
  return optim


def test_presets_build_and_bad_keys_raise_input_error():
  for module in (lamp_config, cae_config):
    for preset in module.PRESETS:
      config = module.get_config(preset)
      method = reconstruction.make(config, train_size=100)
      assert isinstance(method.optimizer, optax.GradientTransformation)
  assert cae_config.get_config('paper').model.architecture == 'fully_conv'
  for section, key, value in [('loss', 'base', 'ms'), ('optim', 'name', 'lbfgs'), ('model', 'architecture', 'vae'),
                              ('eval', 'score', 'energy'), ('contractive', 'method', 'approx')]:
    config = tiny_config()
    config[section][key] = value
    with pytest.raises(InputError, match=f'{section}.{key}'):
      reconstruction.make(config)
