"""Tests for the folder builder: user trees in MVTec layout, optional masks and test split, staleness."""

import logging
import re

import numpy as np
from PIL import Image
import pytest

from adjax.data import sources
from adjax.data.builders import folder
from adjax.errors import InputError


def _save(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)


def _user_tree(category_dir, *, masks):
  """Mixed png/jpg/bmp/tif, grayscale and RGB, odd 15x21 size; returns {relative path: (image, mask)}."""
  rng = np.random.default_rng(3)
  expected = {}
  files = {'train/good/a.png': 3, 'train/good/b.JPG': 3, 'train/good/c.bmp': 1, 'train/good/d.tif': 1,
           'test/good/e.jpeg': 1, 'test/scratch/f.png': 3, 'test/dent/g.jpg': 3}
  for key, channels in files.items():
    pixels = rng.integers(0, 256, (15, 21, channels) if channels == 3 else (15, 21), dtype=np.uint8)
    _save(category_dir / key, pixels)
    decoded = np.asarray(Image.open(category_dir / key))  # what PIL decodes (JPEG is lossy)
    image = decoded if decoded.ndim == 3 else np.repeat(decoded[..., None], 3, -1)
    mask = np.zeros((15, 21), np.uint8)
    if masks and '/good/' not in key:
      mask[3:9, 2:11] = 255
      stem = key.split('/')[2].split('.')[0]
      _save(category_dir / 'ground_truth' / key.split('/')[1] / f'{stem}_mask.png', mask)
    expected[key] = (image, mask)
  return expected


def _by_filename(source):
  return {source[i]['filename'].decode(): source[i] for i in range(len(source))}


def _check(source, expected, *, has_mask):
  examples = _by_filename(source)
  assert set(examples) <= set(expected)
  for key, example in examples.items():
    image, mask = expected[key]
    np.testing.assert_array_equal(example['image'], image)
    np.testing.assert_array_equal(example['mask'][..., 0], mask)
    assert example['label'] == int('/good/' not in key)
    assert example['defect_type'].decode() == key.split('/')[1]
    assert example['has_mask'] == has_mask
  return examples


def test_folder_without_masks(tmp_path):
  expected = _user_tree(tmp_path / 'user/widget', masks=False)
  args = dict(name='folder', category='widget', data_dir=tmp_path / 'data', manual_dir=tmp_path / 'user')
  train, info = sources.load_split(split='train', **args)
  assert sorted(_check(train, expected, has_mask=False)) == [f'train/good/{n}' for n in
                                                             ('a.png', 'b.JPG', 'c.bmp', 'd.tif')]
  assert not info['has_masks'] and info['num_examples'] == 4
  test, info = sources.load_split(split='test', **args)
  assert len(_check(test, expected, has_mask=False)) == 3
  assert re.search(r'folder/widget-[0-9a-f]{12}/1\.0\.0$', info['data_dir'])


def test_folder_with_masks_and_a_grey_mask(tmp_path, caplog):
  expected = _user_tree(tmp_path / 'user/widget', masks=True)
  grey = expected['test/dent/g.jpg'][1] // 255 * 180  # 0/180 mask: converted to 0/255 with a warning
  _save(tmp_path / 'user/widget/ground_truth/dent/g_mask.png', grey)
  with caplog.at_level(logging.WARNING):
    test, info = sources.load_split(name='folder', category='widget', split='test',
                                    data_dir=tmp_path / 'data', manual_dir=tmp_path / 'user')
  assert 'not 0/255' in caplog.text and 'g_mask.png' in caplog.text
  assert info['has_masks'] and len(_check(test, expected, has_mask=True)) == 3


def test_defective_image_without_mask_is_named(tmp_path):
  _user_tree(tmp_path / 'user/widget', masks=True)
  (tmp_path / 'user/widget/ground_truth/scratch/f_mask.png').unlink()
  with pytest.raises(InputError, match=r'widget/test/scratch/f\.png: defective test image has no mask'):
    sources.load_split(name='folder', category='widget', split='train', data_dir=tmp_path / 'data',
                       manual_dir=tmp_path / 'user')


def test_train_only_folder_and_staleness(tmp_path):
  root = tmp_path / 'parts'  # manual_dir is the category folder itself
  _save(root / 'train/good/0.png', np.full((6, 9), 7, np.uint8))
  args = dict(name='folder', category='parts', data_dir=tmp_path / 'data', manual_dir=root)
  train, info = sources.load_split(split='train', **args)
  assert len(train) == 1 and not info['has_masks']
  with pytest.raises(InputError, match=r"no 'test' split; available: train"):
    sources.load_split(split='test', **args)
  first_dir = info['data_dir']
  assert sources.load_split(split='train', **args)[1]['data_dir'] == first_dir  # unchanged: reused
  _save(root / 'train/good/1.png', np.full((6, 9), 9, np.uint8))
  train, info = sources.load_split(split='train', **args)
  assert info['data_dir'] != first_dir and len(train) == 2
  assert sorted(int(train[i]['image'][0, 0, 0]) for i in range(2)) == [7, 9]


def test_builder_config_name_is_portable(tmp_path):
  _save(tmp_path / 'my parts/train/good/0.png', np.zeros((4, 4), np.uint8))
  config = folder.builder_config(manual_dir=tmp_path, category='my parts')
  assert re.fullmatch(r'my_parts-[0-9a-f]{12}', config.name) and config.category == 'my parts'
