"""grain pipeline: determinism, resumption by step, process shards, padded eval batches, device layout."""

import jax
import numpy as np

from adjax.data import pipeline


class ToySource:
  """A random-access source like `tfds.data_source`: example i has every pixel equal to i."""

  def __init__(self, size=10):
    self.size = size

  def __len__(self):
    return self.size

  def __getitem__(self, index):
    image = np.full((4, 6, 3), index, np.uint8)
    mask = np.zeros((4, 6, 1), np.uint8)
    mask[0, 0] = 255 * (index % 2)
    return {'image': image, 'mask': mask, 'label': index % 2, 'has_mask': True,
            'defect_type': b'good' if index % 2 == 0 else b'blob', 'category': b'toy',
            'filename': f'{index}.png'.encode()}


def ids(batch):
  return [int(round(value * 255)) for value in batch['image'][:, 0, 0, 0]]


def test_train_batches_are_deterministic_and_cover_each_epoch():
  source = ToySource()
  dataset = pipeline.train_dataset(source, preprocess='', global_batch_size=5, seed=7)
  again = pipeline.train_dataset(source, preprocess='', global_batch_size=5, seed=7)
  first_epoch = ids(dataset[0]) + ids(dataset[1])
  assert sorted(first_epoch) == list(range(10))
  second_epoch = ids(dataset[2]) + ids(dataset[3])
  assert sorted(second_epoch) == list(range(10)) and second_epoch != first_epoch
  assert ids(again[3]) == ids(dataset[3])
  other_seed = pipeline.train_dataset(source, preprocess='', global_batch_size=5, seed=8)
  assert [ids(other_seed[k]) for k in range(4)] != [ids(dataset[k]) for k in range(4)]
  batch = dataset[0]
  assert batch['image'].dtype == np.float32 and batch['image'].shape == (5, 4, 6, 3)
  assert batch['mask'].shape == (5, 4, 6) and set(np.unique(batch['mask'])) <= {0.0, 1.0}
  assert set(batch) == set(pipeline.ARRAY_KEYS)


def test_process_shards_split_the_global_batch():
  source = ToySource(12)
  whole = pipeline.train_dataset(source, preprocess='', global_batch_size=4, seed=1)
  parts = [pipeline.train_dataset(source, preprocess='', global_batch_size=4, seed=1,
                                  process_index=i, process_count=2) for i in range(2)]
  for step in range(3):
    assert sorted(ids(parts[0][step]) + ids(parts[1][step])) == sorted(ids(whole[step]))
    assert not set(ids(parts[0][step])) & set(ids(parts[1][step]))


def test_random_preprocessing_is_seeded_per_example():
  source = ToySource()
  spec = 'gaussian_noise(std_fraction=0.5)'
  a = pipeline.train_dataset(source, preprocess=spec, global_batch_size=5, seed=3)[1]['image']
  b = pipeline.train_dataset(source, preprocess=spec, global_batch_size=5, seed=3)[1]['image']
  np.testing.assert_array_equal(a, b)


def test_device_iterator_resumes_at_a_step():
  source = ToySource()
  dataset = pipeline.train_dataset(source, preprocess='', global_batch_size=4, seed=2)
  sharding = pipeline.device_sharding()
  batches = pipeline.device_iterator(dataset, start_step=0, sharding=sharding)
  straight = [np.asarray(next(batches)['image']) for _ in range(5)]
  resumed = pipeline.device_iterator(dataset, start_step=3, sharding=sharding)
  np.testing.assert_array_equal(np.asarray(next(resumed)['image']), straight[3])
  assert straight[0].shape == (jax.local_device_count(), 4 // jax.local_device_count(), 4, 6, 3)


def test_eval_batches_pad_and_mark_valid():
  source = ToySource(7)
  batches = list(pipeline.eval_batches(source, preprocess='', batch_size=4, keep_text=True))
  assert len(batches) == 2
  assert [int(v) for v in batches[1]['valid']] == [1, 1, 1, 0]
  assert ids(batches[0]) + ids(batches[1])[:3] == list(range(7))
  assert batches[1]['filename'] == ['4.png', '5.png', '6.png']
  assert batches[0]['defect_type'][1] == 'blob'
  assert all(batch['image'].shape[0] == 4 for batch in batches)


def test_eval_shards_take_every_nth_example_with_unchanged_preprocessing():
  source = ToySource(8)
  spec = 'gaussian_noise(std_fraction=0.5)'  # Random: the per-example seed must follow the global index.
  whole = np.concatenate([b['image'][b['valid']] for b in pipeline.eval_batches(
      source, preprocess=spec, batch_size=3)])
  for shard in range(3):
    batches = list(pipeline.eval_batches(source, preprocess=spec, batch_size=2, keep_text=True,
                                         shard=(shard, 3)))
    images = np.concatenate([b['image'][b['valid']] for b in batches])
    np.testing.assert_array_equal(images, whole[shard::3])
    assert [name for b in batches for name in b['filename']] == [f'{i}.png' for i in range(shard, 8, 3)]
