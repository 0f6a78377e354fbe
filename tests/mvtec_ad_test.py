"""Tests for the mvtec_ad builder on a generated one-category tree (real MVTec AD is not available here)."""

import logging

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from adjax.data.builders import mvtec_ad
from adjax.errors import InputError


def _save(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)


def _mvtec_tree(root):
  """`<root>/bottle` with RGB and grayscale 16x20 images; returns {relative path: expected image, mask}."""
  rng = np.random.default_rng(0)
  expected = {}
  shapes = {'train/good/000.png': (16, 20, 3), 'train/good/001.png': (16, 20),
            'test/good/000.png': (16, 20), 'test/broken_large/000.png': (16, 20, 3),
            'test/contamination/000.png': (16, 20)}
  for key, shape in shapes.items():
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    _save(root / 'bottle' / key, image)
    mask = np.zeros((16, 20), np.uint8)
    if '/good/' not in key:
      mask[rng.integers(0, 8):12, rng.integers(0, 10):15] = 255
      defect = key.split('/')[1]
      _save(root / 'bottle/ground_truth' / defect / '000_mask.png', mask)
    expected[key] = (image if image.ndim == 3 else np.repeat(image[..., None], 3, -1), mask)
  return expected


def _builder(tmp_path, category='bottle'):
  return mvtec_ad.MvtecAd(data_dir=str(tmp_path / 'data'), config=category, file_format='array_record')


def _prepare(builder, manual_dir):
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))


def test_categories_and_paper_counts():
  assert len(mvtec_ad.CATEGORIES) == 15
  assert set(mvtec_ad.CATEGORIES) == {c.name for c in mvtec_ad.MvtecAd.BUILDER_CONFIGS}
  train, good, defective = np.sum(list(mvtec_ad.PAPER_COUNTS.values()), axis=0)
  assert (train, good + defective, good, defective) == (3629, 1725, 467, 1258)


def test_build_round_trips_pixels_labels_and_masks(tmp_path, caplog):
  expected = _mvtec_tree(tmp_path / 'mvtec')
  builder = _builder(tmp_path)
  with caplog.at_level(logging.WARNING):
    _prepare(builder, tmp_path / 'mvtec')
  # The generated tree is far smaller than the real category: a warning reports both counts.
  assert 'found 2 train, 1 good test, 2 defective test images; the paper lists 209, 20, 63' in caplog.text
  sources = builder.as_data_source()
  assert (len(sources['train']), len(sources['test'])) == (2, 3)
  seen = set()
  for split in ('train', 'test'):
    for index in range(len(sources[split])):
      example = sources[split][index]
      key = example['filename'].decode()
      image, mask = expected[key]
      np.testing.assert_array_equal(example['image'], image)
      np.testing.assert_array_equal(example['mask'][..., 0], mask)
      defect_type = key.split('/')[1]
      assert example['defect_type'].decode() == defect_type
      assert example['label'] == int(defect_type != 'good')
      assert example['category'] == b'bottle' and example['has_mask']
      seen.add(key)
  assert seen == set(expected)


def test_missing_mask_fails_before_writing(tmp_path):
  _mvtec_tree(tmp_path / 'mvtec')
  (tmp_path / 'mvtec/bottle/ground_truth/contamination/000_mask.png').unlink()
  builder = _builder(tmp_path)
  with pytest.raises(InputError,
                     match=r'bottle/test/contamination/000\.png: defective test image has no mask'):
    _prepare(builder, tmp_path / 'mvtec')
  assert not builder.data_path.exists()


def test_missing_category_or_manual_dir(tmp_path):
  _mvtec_tree(tmp_path / 'mvtec')
  with pytest.raises(InputError,
                     match=r"mvtec/cable: no such category folder \(folders found: \['bottle'\]\)"):
    _prepare(_builder(tmp_path, 'cable'), tmp_path / 'mvtec')
  with pytest.raises(InputError, match='manual_dir missing or empty'):
    _prepare(_builder(tmp_path), tmp_path / 'nowhere')
