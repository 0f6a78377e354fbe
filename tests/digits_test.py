"""Tests for the digits builder: scikit-learn digits as a one-vs-rest one-class benchmark."""

import numpy as np
from sklearn import datasets

from adjax.data import sources
from adjax.data.builders import digits


def test_to_uint8_hand_values():
  np.testing.assert_array_equal(digits.to_uint8(np.array([0, 1, 8, 15, 16])), [0, 16, 128, 239, 255])


def test_split_is_stratified_disjoint_and_deterministic():
  target = datasets.load_digits().target
  train, test = digits.split_indices(target)
  assert len(test) == 719 and len(train) == 1797 - 719
  np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
  for digit in range(10):
    assert abs(np.sum(target[test] == digit) - 0.4 * np.sum(target == digit)) <= 1
  again = digits.split_indices(target)
  np.testing.assert_array_equal(again[0], train)
  np.testing.assert_array_equal(again[1], test)


def test_build_one_vs_rest(tmp_path):
  data = datasets.load_digits()
  train_indices, test_indices = digits.split_indices(data.target)
  train, info = sources.load_split(name='digits', category=3, split='train', data_dir=tmp_path)
  assert info['num_examples'] == np.sum(data.target[train_indices] == 3) and not info['has_masks']
  test, info = sources.load_split(name='digits', category='3', split='test', data_dir=tmp_path)
  assert info['num_examples'] == 719
  for source, indices, split in ((train, train_indices, 'train'), (test, test_indices, 'test')):
    seen = []
    for i in range(len(source)):
      example = source[i]
      index = int(example['filename'].decode().split('/')[1])
      seen.append(index)
      expected = np.rint(data.images[index] * 255 / 16).astype(np.uint8)
      np.testing.assert_array_equal(example['image'], np.repeat(expected[..., None], 3, -1))
      assert example['label'] == int(data.target[index] != 3)
      assert example['defect_type'].decode() == str(data.target[index])
      assert not example['has_mask'] and not example['mask'].any() and example['mask'].shape == (8, 8, 1)
      assert example['category'] == b'3'
    if split == 'train':
      np.testing.assert_array_equal(sorted(seen), indices[data.target[indices] == 3])
    else:
      np.testing.assert_array_equal(sorted(seen), indices)
