"""Tests for the `textures` builder: counts, labels, masks, disjoint regions, determinism, tfds round trip."""

import collections

import numpy as np
import pytest

from adjax import errors
from adjax.data import defects
from adjax.data.builders import textures


@pytest.fixture(scope='module')
def gravel():
  return {split: textures.make_examples('gravel', split) for split in ('train', 'test')}


def _source_crop(photo, origin):
  top, left, flip = origin
  crop = photo[top:top + textures.IMAGE_SIZE, left:left + textures.IMAGE_SIZE]
  return crop[:, ::-1] if flip else crop


def test_counts_and_labels(gravel):
  train, test = gravel['train'], gravel['test']
  assert len(train) == textures.NUM_TRAIN
  assert all(e['label'] == 0 and e['defect_type'] == 'good' and not e['mask'].any() for e in train)
  kinds = collections.Counter(e['defect_type'] for e in test)
  types = list(textures.DEFECT_PARAMETERS['gravel'])
  per_type = textures.NUM_TEST_DEFECTIVE // len(types)
  assert kinds == {'good': textures.NUM_TEST_GOOD, **{t: per_type for t in types}}
  assert set(types) <= set(defects.DEFECT_TYPES)
  for example in test:
    assert example['label'] == int(example['defect_type'] != 'good')
    assert example['mask'].any() == bool(example['label'])
    assert example['image'].shape == (textures.IMAGE_SIZE,) * 2 and example['image'].dtype == np.uint8
  # The filename records the defect type and the crop's place in the photo.
  names = [e['filename'] for e in train + test]
  assert len(set(names)) == len(names)
  top, left, flip = test[-1]['origin']
  assert test[-1]['filename'].startswith(f'test/{test[-1]["defect_type"]}/')
  assert f'_r{top}_c{left}' in test[-1]['filename'] and test[-1]['filename'].endswith(
      '_flip.png' if flip else f'_c{left}.png')


def test_images_are_photo_crops_from_disjoint_row_bands(gravel):
  photo = textures.photo('gravel')
  (test_top, test_bottom), = textures.row_ranges('test')
  train_rows, test_rows = set(), set()
  for split, rows in (('train', train_rows), ('test', test_rows)):
    for example in gravel[split]:
      top, _, _ = example['origin']
      rows.update(range(top, top + textures.IMAGE_SIZE))
      crop = _source_crop(photo, example['origin'])
      # Defects change pixels inside their mask only: the rest is the photo.
      outside = ~example['mask']
      np.testing.assert_array_equal(example['image'][outside], crop[outside])
  assert not train_rows & test_rows
  assert test_rows <= set(range(test_top, test_bottom))
  assert train_rows <= set(range(textures.PHOTO_SIZE)) - set(range(test_top, test_bottom))
  # Crops come from both train bands and from varied places, some of them flipped.
  assert min(train_rows) < 20 and max(train_rows) > textures.PHOTO_SIZE - 20
  origins = [e['origin'] for e in gravel['train']]
  assert len(set(origins)) > 0.9 * len(origins)
  assert 0.35 < np.mean([flip for _, _, flip in origins]) < 0.65


def test_defect_masks_are_changed_regions_of_documented_size(gravel):
  photo = textures.photo('gravel')
  for example in gravel['test']:
    if example['label'] == 0:
      np.testing.assert_array_equal(example['image'], _source_crop(photo, example['origin']))
      continue
    mask = example['mask']
    changed = example['image'] != _source_crop(photo, example['origin'])
    assert changed[mask].mean() > 0.8
    area_range = textures.DEFECT_PARAMETERS['gravel'][example['defect_type']].get('area_range')
    if area_range is not None:
      assert area_range[0] * 0.93 <= mask.mean() <= area_range[1] * 1.07


def test_build_is_deterministic(gravel):
  again = textures.make_examples('gravel', 'test')
  for first, second in zip(gravel['test'], again, strict=True):
    assert first['filename'] == second['filename']
    np.testing.assert_array_equal(first['image'], second['image'])
    np.testing.assert_array_equal(first['mask'], second['mask'])


def test_categories_differ_and_unknown_category_is_an_input_error():
  assert [c.name for c in textures.Textures.BUILDER_CONFIGS] == list(textures.CATEGORIES)
  assert set(textures.DEFECT_PARAMETERS) == set(textures.CATEGORIES)
  brick = textures.make_examples('brick', 'test')
  assert {e['defect_type'] for e in brick} == {'good', *defects.DEFECT_TYPES}
  with pytest.raises(errors.InputError, match='carpet'):
    textures.make_examples('carpet', 'train')


def test_tfds_round_trip(tmp_path, gravel):
  builder = textures.Textures(config='gravel', data_dir=str(tmp_path), file_format='array_record')
  builder.download_and_prepare()
  source = builder.as_data_source()
  expected = {e['filename']: e for split in ('train', 'test') for e in gravel[split]}
  for split in ('train', 'test'):
    assert len(source[split]) == len(gravel[split])
    for index in range(len(source[split])):
      read = source[split][index]
      example = expected[read['filename'].decode()]
      assert read['image'].shape == (textures.IMAGE_SIZE, textures.IMAGE_SIZE, 3)
      for channel in range(3):  # Gray is stored once and read back as three equal channels.
        np.testing.assert_array_equal(read['image'][..., channel], example['image'])
      np.testing.assert_array_equal(read['mask'][..., 0], example['mask'].astype(np.uint8) * 255)
      assert read['label'] == example['label'] and bool(read['has_mask'])
      assert read['defect_type'].decode() == example['defect_type']
      assert read['category'] == b'gravel'
