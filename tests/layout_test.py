"""Tests for adjax.data.layout: scanning, validation and encoding of MVTec-layout trees (no tfds builds)."""

import io
import logging
import os

import numpy as np
from PIL import Image
import pytest

from adjax.data import layout
from adjax.errors import InputError


def _save(path, array, **kwargs):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path, **kwargs)
  return path


def _tree(root, *, masks=True):
  """A small category folder: 2 train, 1 good test, 2 defective test images (16x20), masks optional."""
  rng = np.random.default_rng(0)
  _save(root / 'train/good/000.png', rng.integers(0, 256, (16, 20, 3), dtype=np.uint8))
  _save(root / 'train/good/001.PNG', rng.integers(0, 256, (16, 20), dtype=np.uint8))
  _save(root / 'test/good/000.png', rng.integers(0, 256, (16, 20, 3), dtype=np.uint8))
  _save(root / 'test/crack/000.png', rng.integers(0, 256, (16, 20, 3), dtype=np.uint8))
  _save(root / 'test/hole/004.jpg', rng.integers(0, 256, (16, 20, 3), dtype=np.uint8))
  (root / 'train/good/.hidden.png').write_bytes(b'not an image')
  (root / 'train/good/notes.txt').write_text('ignored')
  if masks:
    mask = np.zeros((16, 20), np.uint8)
    mask[2:5, 3:9] = 255
    _save(root / 'ground_truth/crack/000_mask.png', mask)
    _save(root / 'ground_truth/hole/004.png', 255 - mask)  # plain-stem naming is accepted too
  return root


def test_scan_lists_images_and_pairs_masks(tmp_path):
  root = _tree(tmp_path / 'cat')
  tree = layout.scan(root, category='cat', require_test=True, require_masks=True)
  assert tree.has_masks
  assert [e.key for e in tree.splits['train']] == ['train/good/000.png', 'train/good/001.PNG']
  test = {e.key: e for e in tree.splits['test']}
  assert sorted(test) == ['test/crack/000.png', 'test/good/000.png', 'test/hole/004.jpg']
  assert test['test/good/000.png'].mask_path is None
  assert test['test/crack/000.png'].mask_path == root / 'ground_truth/crack/000_mask.png'
  assert test['test/hole/004.jpg'].mask_path == root / 'ground_truth/hole/004.png'
  assert test['test/hole/004.jpg'].defect_type == 'hole'
  layout.validate(tree)


def test_examples_carry_labels_masks_and_pixels(tmp_path):
  root = _tree(tmp_path / 'cat')
  tree = layout.scan(root, category='cat', require_test=True, require_masks=True)
  examples = dict(layout.examples(tree, 'test'))
  crack = examples['test/crack/000.png']
  assert (crack['label'], crack['defect_type'], crack['category']) == (1, 'crack', 'cat')
  assert crack['has_mask']
  decoded_mask = np.asarray(Image.open(io.BytesIO(crack['mask'])))
  mask_file = np.asarray(Image.open(root / 'ground_truth/crack/000_mask.png'))
  np.testing.assert_array_equal(decoded_mask, mask_file)
  good = examples['test/good/000.png']
  assert good['label'] == 0 and good['has_mask']
  assert not np.asarray(Image.open(io.BytesIO(good['mask']))).any()
  # The JPEG is stored losslessly as the pixels PIL decodes from the file.
  jpeg = np.asarray(Image.open(io.BytesIO(examples['test/hole/004.jpg']['image'])))
  np.testing.assert_array_equal(jpeg, np.asarray(Image.open(root / 'test/hole/004.jpg')))


def test_without_ground_truth_has_mask_is_false(tmp_path):
  tree = layout.scan(_tree(tmp_path / 'cat', masks=False), category='cat', require_test=False,
                     require_masks=False)
  assert not tree.has_masks
  examples = dict(layout.examples(tree, 'test'))
  assert not any(example['has_mask'] for example in examples.values())
  assert examples['test/crack/000.png']['label'] == 1
  with pytest.raises(InputError, match='ground_truth'):
    layout.scan(tmp_path / 'cat', category='cat', require_test=True, require_masks=True)


def test_missing_mask_names_the_image(tmp_path):
  root = _tree(tmp_path / 'cat')
  os.remove(root / 'ground_truth/crack/000_mask.png')
  with pytest.raises(InputError, match=r'test/crack/000\.png.*no mask'):
    layout.scan(root, category='cat', require_test=True, require_masks=True)


def test_mask_of_wrong_size_names_both_files(tmp_path):
  root = _tree(tmp_path / 'cat')
  _save(root / 'ground_truth/crack/000_mask.png', np.zeros((20, 16), np.uint8))
  tree = layout.scan(root, category='cat', require_test=True, require_masks=True)
  with pytest.raises(InputError, match=r'000_mask\.png: mask is 16x20.*test/crack/000\.png is 20x16'):
    layout.validate(tree)


def test_truncated_png_names_the_file(tmp_path):
  root = _tree(tmp_path / 'cat')
  path = root / 'test/good/000.png'
  path.write_bytes(path.read_bytes()[:60])
  tree = layout.scan(root, category='cat', require_test=True, require_masks=True)
  with pytest.raises(InputError, match=r'test/good/000\.png: cannot decode image'):
    layout.validate(tree)


def test_garbage_file_with_image_suffix_names_the_file(tmp_path):
  root = _tree(tmp_path / 'cat')
  (root / 'train/good/002.bmp').write_bytes(b'\x00' * 50)
  tree = layout.scan(root, category='cat', require_test=True, require_masks=True)
  with pytest.raises(InputError, match=r'train/good/002\.bmp: cannot decode image'):
    layout.validate(tree)


def test_empty_or_missing_train_split_is_an_error(tmp_path):
  root = _tree(tmp_path / 'cat')
  for path in (root / 'train/good').iterdir():
    path.unlink()
  with pytest.raises(InputError, match=r'train/good: no training images'):
    layout.scan(root, category='cat', require_test=False, require_masks=False)
  (root / 'train/good').rmdir()
  with pytest.raises(InputError, match=r'train/good: missing folder'):
    layout.scan(root, category='cat', require_test=False, require_masks=False)


def test_missing_test_split_warns_or_fails(tmp_path, caplog):
  root = tmp_path / 'cat'
  _save(root / 'train/good/a.png', np.zeros((5, 7), np.uint8))
  with caplog.at_level(logging.WARNING):
    tree = layout.scan(root, category='cat', require_test=False, require_masks=False)
  assert list(tree.splits) == ['train'] and not tree.has_masks
  assert 'no test images' in caplog.text
  with pytest.raises(InputError, match=r'cat/test: missing or empty'):
    layout.scan(root, category='cat', require_test=True, require_masks=False)


@pytest.mark.parametrize('values, expected', [
    ((0, 255), (0, 255)),
    ((0, 1), (0, 255)),  # 0/1 masks are scaled
    ((0, 100, 200), (0, 0, 255)),  # grey levels are thresholded at 127
])
def test_read_mask_binarises(tmp_path, values, expected):
  mask = np.array([values], np.uint8)
  path = _save(tmp_path / 'm.png', mask)
  binary, was_binary = layout.read_mask(path)
  np.testing.assert_array_equal(binary, np.array([expected], np.uint8))
  assert was_binary == (values == (0, 255))


def test_non_binary_mask_is_converted_with_a_warning(tmp_path, caplog):
  root = _tree(tmp_path / 'cat')
  grey = np.zeros((16, 20), np.uint8)
  grey[4:9, 5:12] = 200
  grey[4, 5:12] = 90  # anti-aliased edge, below the threshold
  _save(root / 'ground_truth/crack/000_mask.png', grey)
  tree = layout.scan(root, category='cat', require_test=True, require_masks=True)
  with caplog.at_level(logging.WARNING):
    layout.validate(tree)
  assert '1 mask(s)' in caplog.text and '000_mask.png' in caplog.text
  stored = dict(layout.examples(tree, 'test'))['test/crack/000.png']['mask']
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(stored))), np.where(grey > 127, 255, 0))


def test_encode_image_canonical_png(tmp_path):
  rng = np.random.default_rng(1)
  gray = rng.integers(0, 256, (9, 13), dtype=np.uint8)
  png = _save(tmp_path / 'g.png', gray)
  data, size = layout.encode_image(png)
  assert data == png.read_bytes() and size == (9, 13)  # 8-bit PNGs pass through untouched
  rgba = rng.integers(0, 256, (9, 13, 4), dtype=np.uint8)
  data, _ = layout.encode_image(_save(tmp_path / 'a.tif', rgba))
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), rgba[..., :3])
  deep = (rng.integers(0, 65536, (9, 13))).astype(np.uint16)
  Image.fromarray(deep).save(tmp_path / 'd.png')
  data, _ = layout.encode_image(tmp_path / 'd.png')
  expected = np.rint(deep.astype(np.float64) * 255 / 65535).astype(np.uint8)
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), expected)


def test_fingerprint_follows_file_changes(tmp_path):
  root = _tree(tmp_path / 'cat')
  first = layout.fingerprint(root)
  assert layout.fingerprint(root) == first and len(first) == 12
  path = root / 'test/good/000.png'
  os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
  second = layout.fingerprint(root)
  assert second != first
  _save(root / 'train/good/new.png', np.zeros((16, 20), np.uint8))
  assert layout.fingerprint(root) not in (first, second)


def test_category_dir(tmp_path):
  root = _tree(tmp_path / 'cat')
  assert layout.category_dir(tmp_path, 'cat') == root
  assert layout.category_dir(root, 'cat') == root  # the category folder itself
  with pytest.raises(InputError, match=r'cat/dog: no such category folder'):
    layout.category_dir(root, 'dog')  # a category folder of another name is not taken for 'dog'
  with pytest.raises(InputError, match=r"dog: no such category folder \(folders found: \['cat'\]\)"):
    layout.category_dir(tmp_path, 'dog')
  with pytest.raises(InputError, match='does not exist'):
    layout.category_dir(tmp_path / 'nowhere', 'cat')
