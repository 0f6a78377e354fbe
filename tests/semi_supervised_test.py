"""Semi-supervised split: one real anomaly per defect type moves from test to train, not kept in test."""

import collections

import jax.numpy as jnp
import ml_collections
import pytest

from adjax import train
from adjax.data import semi_supervised
from adjax.data import sources
from adjax.errors import InputError
from adjax.methods import Method
import optax


def _example(name, label, defect_type):
  return {'filename': name.encode(), 'label': label, 'defect_type': defect_type.encode()}


def fake_sources():
  train_source = [_example(f'train/good/{i}', 0, 'good') for i in range(10)]
  test_source = ([_example(f'test/good/{i}', 0, 'good') for i in range(6)] +
                 [_example(f'test/scratch/{i}', 1, 'scratch') for i in range(3)] +
                 [_example(f'test/stain/{i}', 1, 'stain') for i in range(2)] +
                 [_example('test/hole/0', 1, 'hole')])
  return train_source, test_source


def names(source):
  return [source[i]['filename'].decode() for i in range(len(source))]


def test_one_anomaly_per_type_moves_and_leaves_the_test_split():
  train_source, test_source = fake_sources()
  new_train, new_test, moved = semi_supervised.move_labeled_anomalies(
      train_source, test_source, per_type=1, seed=3)
  moved_names = {test_source[i]['filename'].decode() for i in moved}
  assert sorted(name.split('/')[1] for name in moved_names) == ['hole', 'scratch', 'stain']
  assert not moved_names & set(names(new_test))
  assert sorted(names(new_test) + list(moved_names)) == sorted(names(test_source))
  # Every normal image once, then as many anomaly slots (anomaly_fraction 0.5) cycling through the moved.
  counts = collections.Counter(names(new_train))
  assert len(new_train) == 20
  assert all(counts[f'train/good/{i}'] == 1 for i in range(10))
  assert sorted(counts[name] for name in moved_names) == [3, 3, 4]
  assert sum(new_train[i]['label'] for i in range(len(new_train))) == 10


def test_choice_is_seeded_and_varies_with_the_seed():
  train_source, test_source = fake_sources()
  runs = {seed: semi_supervised.move_labeled_anomalies(train_source, test_source, per_type=1, seed=seed)[2]
          for seed in range(8)}
  assert runs[5] == semi_supervised.move_labeled_anomalies(train_source, test_source, per_type=1, seed=5)[2]
  assert len({tuple(moved) for moved in runs.values()}) > 1


def test_more_than_available_moves_all_and_bad_values_raise():
  train_source, test_source = fake_sources()
  _, new_test, moved = semi_supervised.move_labeled_anomalies(
      train_source, test_source, per_type=2, seed=0, anomaly_fraction=0.0)
  assert len(moved) == 5 and len(new_test) == 7  # hole has one image only: it moves, none stays.
  with pytest.raises(InputError, match='labeled_anomalies_per_type'):
    semi_supervised.move_labeled_anomalies(train_source, test_source, per_type=-1, seed=0)
  with pytest.raises(InputError, match='no anomalous images'):
    semi_supervised.move_labeled_anomalies(train_source, test_source[:6], per_type=1, seed=0)


@pytest.fixture(name='data_dir', scope='module')
def data_dir_fixture(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


def test_textures_split_without_leaks(data_dir):
  kwargs = dict(name='textures', category='brick', data_dir=str(data_dir))
  train_source, _ = sources.load_split(split='train', **kwargs)
  test_source, _ = sources.load_split(split='test', **kwargs)
  metadata = semi_supervised.labels_and_defect_types(test_source)  # tfds path: images not decoded
  assert metadata == [(int(test_source[i]['label']), test_source[i]['defect_type'].decode())
                      for i in range(len(test_source))]
  new_train, new_test, moved = semi_supervised.move_labeled_anomalies(
      train_source, test_source, per_type=1, seed=0)
  assert len(moved) == 4 and len(new_test) == len(test_source) - 4
  assert not set(names(new_test)) & {names(test_source)[i] for i in moved}
  assert len(new_train) == 2 * len(train_source)
  example = new_train[len(train_source)]
  assert example['label'] == 1 and example['has_mask'] and example['mask'].max() == 255


def _constant_method() -> Method:
  """Scores every pixel by its grey level; trains one unused scalar."""

  def loss_fn(params, model_state, batch, rng):
    del rng
    return jnp.square(params['w'] - batch['label'].astype(jnp.float32)), (model_state, {})

  def score(variables, statistics, images):
    del variables, statistics
    maps = jnp.mean(images, axis=-1)
    return {'grey': maps}, {'grey': jnp.mean(maps, axis=(1, 2))}

  return Method(name='constant', init=lambda rng, images: {'params': {'w': jnp.zeros(())}},
                loss_fn=loss_fn, fit=lambda variables, make_batches: {}, score=score,
                optimizer=optax.sgd(0.1))


def test_train_loop_evaluates_without_the_moved_images(tmp_path, data_dir):
  config = ml_collections.ConfigDict({
      'method': 'constant', 'seed': 0,
      'data': {'name': 'textures', 'category': 'brick', 'data_dir': str(data_dir), 'manual_dir': '',
               'image_size': 16, 'train_preprocess': 'resize({image_size})',
               'eval_preprocess': 'resize({image_size})', 'labeled_anomalies_per_type': 1,
               'anomaly_fraction': 0.5},
      'train': {'batch_size': 4, 'num_steps': 2, 'log_every': 1, 'checkpoint_every': 2},
      'eval': {'batch_size': 32, 'map': 'grey', 'score': 'grey'}})
  results = train.train_and_evaluate(config, tmp_path, method=_constant_method())
  # brick's test split: 60 good + 60 defective images of 4 defect types.
  assert results['num_test_images'] == 116 and results['num_anomalous_test_images'] == 56
