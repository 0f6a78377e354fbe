"""The train loop with a tiny method defined here: devices, resume, divergence, results contract."""

import gc
import json
import weakref

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from adjax import train
from adjax.errors import InputError
from adjax.methods import Method


def mean_image_method(*, learning_rate=0.25, poison_at_step=None) -> Method:
  """Learns the mean training image; anomaly map = squared distance to it (a Gaussian with unit variance).

  `poison_at_step` makes the loss NaN from that optimizer step on, to test the divergence guard.
  """

  def init(rng, images):
    del rng
    return {'params': {'mean': jnp.zeros(images.shape[1:])}, 'counter': {'steps': jnp.zeros(())}}

  def loss_fn(params, model_state, batch, rng):
    del rng
    per_example = jnp.sum((batch["image"] - params["mean"]) ** 2, axis=(1, 2, 3))
    steps = model_state['counter']['steps'] + 1
    if poison_at_step is not None:
      per_example = jnp.where(steps >= poison_at_step, jnp.nan, per_example)
    return per_example, ({'counter': {'steps': steps}}, {'mean_pixel': jnp.mean(batch['image'])})

  def score(variables, statistics, images):
    maps = jnp.sum((images - variables['params']['mean']) ** 2, axis=-1) / statistics['scale']
    return {'distance': maps}, {'mean': jnp.mean(maps, axis=(1, 2)), 'max': jnp.max(maps, axis=(1, 2))}

  def fit(variables, make_batches):
    del variables
    count = sum(int(batch['valid'].sum()) for batch in make_batches())
    return {'scale': jnp.float32(1.0), 'num_train_images': count}

  return Method(name='mean_image', init=init, loss_fn=loss_fn, fit=fit, score=score,
                optimizer=optax.sgd(learning_rate))


def digits_config(data_dir, **train_overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.method = 'mean_image'
  config.seed = 3
  config.data = ml_collections.ConfigDict(dict(
      name='digits', category='0', data_dir=str(data_dir), manual_dir='', image_size=8,
      train_preprocess='value_range(0, 1)', eval_preprocess='value_range(0, 1)'))
  config.train = ml_collections.ConfigDict(dict(
      batch_size=8, num_steps=6, num_devices=0, log_every=2, checkpoint_every=3, checkpoints_to_keep=5))
  config.train.update(train_overrides)
  config.eval = ml_collections.ConfigDict(dict(batch_size=64, map='distance', score='mean', fpr_limit=0.3,
                                               num_bins=0))
  return config


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


def _final_params(workdir, method, config):
  """Restores the newest checkpoint's parameters from `workdir`."""
  state = train.create_train_state(method, seed=config.seed, sample_images=np.zeros((1, 8, 8, 3)))
  manager = train._checkpoint_manager(workdir, config)  # pylint: disable=protected-access
  restored, _ = train._restore(manager, state, method.name)  # pylint: disable=protected-access
  return restored


def test_results_contract(tmp_path, data_dir):
  config = digits_config(data_dir)
  results = train.train_and_evaluate(config, tmp_path, method=mean_image_method())
  written = json.loads((tmp_path / 'results.json').read_text())
  for key in ('method', 'dataset', 'category', 'seed', 'image_auroc', 'pixel_auroc', 'pixel_ap',
              'pixel_aupro', 'image_f1_max', 'threshold', 'num_train_steps', 'num_train_images', 'train_seconds',
              'train_images_per_second', 'eval_seconds', 'config'):
    assert key in written, key
  # Digits have no masks: pixel metrics are null, never 0 or missing.
  assert written['pixel_auroc'] is None and written['pixel_aupro'] is None and written['pixel_ap'] is None
  assert written['method'] == 'mean_image' and written['num_train_steps'] == 6
  assert written['config']['train']['batch_size'] == 8
  assert 0.0 <= written['image_auroc'] <= 1.0
  assert results['image_auroc'] == pytest.approx(written['image_auroc'])
  # The distance to the mean '0' separates other digits from zeros well even after 6 SGD steps.
  assert written['image_auroc'] > 0.8
  assert (tmp_path / 'figures' / 'examples.png').stat().st_size > 1000
  assert any(p.name.startswith('events.out.tfevents') for p in tmp_path.iterdir())


def test_one_and_two_devices_agree(tmp_path, data_dir):
  assert jax.local_device_count() == 2
  method = mean_image_method()
  params = []
  for num_devices in (1, 2):
    config = digits_config(data_dir, num_devices=num_devices, num_steps=4)
    workdir = tmp_path / f'devices{num_devices}'
    train.train_and_evaluate(config, workdir, method=method)
    params.append(_final_params(workdir, method, config).params['mean'])
  np.testing.assert_allclose(params[0], params[1], rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(params[0]).max()) > 0.01  # Something was learned.


def test_resume_equals_uninterrupted(tmp_path, data_dir):
  method = mean_image_method()
  straight = train.train_and_evaluate(digits_config(data_dir), tmp_path / 'straight', method=method)
  resumed_dir = tmp_path / 'resumed'
  train.train_and_evaluate(digits_config(data_dir, num_steps=3), resumed_dir, method=method)
  resumed = train.train_and_evaluate(digits_config(data_dir), resumed_dir, method=method)
  a = _final_params(tmp_path / 'straight', method, digits_config(data_dir))
  b = _final_params(resumed_dir, method, digits_config(data_dir))
  np.testing.assert_array_equal(a.params['mean'], b.params['mean'])
  assert int(b.model_state['counter']['steps']) == 6
  assert straight['image_auroc'] == resumed['image_auroc']


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path, data_dir):
  method = mean_image_method(poison_at_step=5)
  with pytest.raises(train.TrainingDiverged, match='step 6'):
    train.train_and_evaluate(digits_config(data_dir), tmp_path, method=method)
  state = _final_params(tmp_path, method, digits_config(data_dir))
  assert int(state.step) == 3
  assert np.all(np.isfinite(state.params['mean']))
  assert not (tmp_path / 'results.json').exists()


def test_checkpoint_of_another_method_is_refused(tmp_path, data_dir):
  train.train_and_evaluate(digits_config(data_dir, num_steps=3), tmp_path, method=mean_image_method())
  other = mean_image_method()._replace(name='other_method')
  with pytest.raises(InputError, match='mean_image'):
    train.train_and_evaluate(digits_config(data_dir), tmp_path, method=other)


def test_train_only_folder_trains_and_writes_null_metrics(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  good = tmp_path / 'data' / 'parts' / 'train' / 'good'
  good.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for index in range(8):
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(good / f'{index}.png')
  config = digits_config(tmp_path / 'tfds', num_steps=2, batch_size=4)
  config.data.update(name='folder', category='parts', manual_dir=str(tmp_path / 'data'))
  results = train.train_and_evaluate(config, tmp_path / 'run', method=mean_image_method())
  written = json.loads((tmp_path / 'run' / 'results.json').read_text())
  assert written['num_train_steps'] == 2 and written['num_test_images'] == 0
  for key in ('image_auroc', 'pixel_auroc', 'pixel_ap', 'pixel_aupro', 'image_f1_max', 'threshold'):
    assert key in written and written[key] is None
  assert results['image_auroc'] is None


def test_num_epochs_sets_the_number_of_steps():
  config = ml_collections.ConfigDict({'train': {'num_steps': 7, 'batch_size': 4, 'num_epochs': 0}})
  assert train.num_train_steps(config, train_size=10) == 7
  config.train.num_epochs = 3  # 30 images in batches of 4 -> 8 steps (the last one wraps around).
  assert train.num_train_steps(config, train_size=10) == 8
  config.train.num_epochs = -1
  with pytest.raises(InputError, match='num_epochs'):
    train.num_train_steps(config, train_size=10)


def test_every_method_module_is_known_and_unknown_names_are_refused():
  from adjax import methods
  assert 'ebm' in methods.known_methods()
  with pytest.raises(InputError, match="unknown method 'nope'"):
    methods.get_method(ml_collections.ConfigDict({'method': 'nope'}))


def test_a_finished_run_releases_its_method(tmp_path, data_dir):
  """JAX's caches would keep every run's jitted closures (and executables) alive: in-process runs grow."""
  method = mean_image_method()
  alive = weakref.ref(method.loss_fn)
  train.train_and_evaluate(digits_config(data_dir), tmp_path, method=method)
  del method
  gc.collect()
  assert alive() is None
