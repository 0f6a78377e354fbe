"""Tests for adjax.data.transforms: the example-level ops and the spec parser."""

import numpy as np
import pytest

from adjax.data import image_ops
from adjax.data import transforms
from adjax.errors import InputError

FCDD_SPEC = ('resize(240)|one_of(["resize(224)", "random_crop(224)"])'
             '|one_of(["color_jitter(0.04, 0.04, 0.04, 0.04)", "color_jitter(0.0005, 0.0005, 0.0005, 0.0005)"])'
             '|gaussian_noise(std_fraction=0.1, pixel_fraction=0.5)|local_contrast_normalization|min_max')


def _pattern(rows, cols):
  return ((rows // 3 + cols // 5) % 2).astype(np.float32)


def _coordinate_example(height=24, width=32):
  """Channels 0 and 1 hold each pixel's row and column; the mask is a known function of them."""
  rows, cols = np.mgrid[:height, :width]
  image = np.stack([rows, cols, (7 * rows + cols) % 256], -1).astype(np.uint8)
  mask = (255 * _pattern(rows, cols)).astype(np.uint8)[..., None]
  return {'image': image, 'mask': mask, 'label': 1, 'has_mask': True, 'filename': b'000.png'}


def _coordinates(image):
  return np.rint(image[..., 0] * 255).astype(int), np.rint(image[..., 1] * 255).astype(int)


def _photo(shape=(20, 28, 3), seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize('spec', [
    'random_crop(20)', 'center_crop((10, 14))', 'flip_lr(p=1.0)', 'flip_ud(p=1.0)', 'rot90', 'rot90(k=3)',
    'resize((48, 40), method="nearest")', 'resize(11, method="nearest")', 'resize_short(12, method="nearest")',
    'resize_short(30, method="nearest")|random_crop((17, 23))|flip_lr|flip_ud|rot90',
    'to_float|flip_lr|resize((48, 40), method="nearest")|rot90',  # float image, float [h, w] mask
    'crop_or_resize((20, 30), method="nearest")', 'crop_or_resize(16, crop_probability=1.0)',
])
def test_mask_follows_image_through_geometric_ops(spec):
  preprocess = transforms.parse(spec)
  for seed in range(6):
    out = preprocess(_coordinate_example(), np.random.default_rng(seed))
    rows, cols = _coordinates(out['image'])
    assert out['mask'].shape == out['image'].shape[:2]
    np.testing.assert_array_equal(out['mask'], _pattern(rows, cols))
    assert set(np.unique(out['mask'])) <= {0.0, 1.0}


def test_geometric_ops_match_numpy():
  example = _coordinate_example()
  image = example['image'] / np.float32(255)
  rng = np.random.default_rng(0)
  run = lambda spec: transforms.parse(spec)(example, rng)['image']
  np.testing.assert_array_equal(run('flip_lr(p=1.0)'), image[:, ::-1])
  np.testing.assert_array_equal(run('flip_ud(p=1.0)'), image[::-1])
  np.testing.assert_array_equal(run('flip_lr(p=0.0)'), image)
  np.testing.assert_array_equal(run('flip_lr(p=1.0)|flip_lr(p=1.0)|flip_ud(p=1.0)|flip_ud(p=1.0)'), image)
  np.testing.assert_array_equal(run('rot90(k=1)'), np.rot90(image))
  np.testing.assert_array_equal(run('rot90(k=1)|rot90(k=1)|rot90(k=1)|rot90(k=1)'), image)
  np.testing.assert_array_equal(run('center_crop((10, 14))'), image[7:17, 9:23])
  np.testing.assert_array_equal(transforms.center_crop(example['image'], 10), example['image'][7:17, 11:21])
  assert run('resize_short(15)').shape == (15, 20, 3)
  assert transforms.parse('resize_short(15)')(dict(example, image=np.zeros((40, 30, 3), np.uint8),
                                                   mask=np.zeros((40, 30, 1), np.uint8)), rng)['mask'].shape == (20, 15)


def test_random_ops_use_every_outcome():
  example = _coordinate_example()
  tops, flips, turns = set(), [], set()
  for seed in range(200):
    rng = np.random.default_rng(seed)
    rows, cols = _coordinates(transforms.parse('random_crop((20, 30))')(example, rng)['image'])
    np.testing.assert_array_equal(rows, rows[0, 0] + np.mgrid[:20, :30][0])  # a contiguous window
    np.testing.assert_array_equal(cols, cols[0, 0] + np.mgrid[:20, :30][1])
    tops.add((rows[0, 0], cols[0, 0]))
    flipped = transforms.parse('flip_lr')(example, rng)['image']
    flips.append(_coordinates(flipped)[1][0, 0] != 0)
    rows, cols = _coordinates(transforms.parse('rot90')(example, rng)['image'])
    turns.add((rows[0, 0], cols[0, 0]))  # which corner of the original ended up top-left
  assert tops == {(top, left) for top in range(5) for left in range(3)}
  assert 70 < sum(flips) < 130
  assert turns == {(0, 0), (0, 31), (23, 31), (23, 0)}


def test_bilinear_image_and_nearest_mask_stay_aligned():
  block = np.zeros((40, 40), np.uint8)
  block[8:24, 10:30] = 255
  example = {'image': np.repeat(block[..., None], 3, -1), 'mask': block[..., None]}
  out = transforms.parse('resize(20)')(example, np.random.default_rng(0))
  assert set(np.unique(out['mask'])) == {0.0, 1.0}
  np.testing.assert_array_equal(out['image'][..., 0] > 0.5, out['mask'] > 0.5)


def test_grayscale_op_keeps_mask():
  out = transforms.parse('grayscale(channels=1)')(_coordinate_example(), np.random.default_rng(0))
  assert out['image'].shape == (24, 32, 1)
  np.testing.assert_array_equal(out['mask'], _pattern(*np.mgrid[:24, :32]))


def test_color_jitter_zero_is_identity_and_image_only():
  example = _coordinate_example()
  out = transforms.OPS['color_jitter']()(example, np.random.default_rng(0))
  assert out is example
  out = transforms.parse('color_jitter(0.4, 0.4, 0.4, 0.1)')(example, np.random.default_rng(0))
  np.testing.assert_array_equal(out['mask'], _pattern(*np.mgrid[:24, :32]))
  assert not np.allclose(out['image'], example['image'] / 255)


def test_color_jitter_samples_like_torchvision():
  """A random order of the four adjustments, factors in [1 - x, 1 + x], hue shift in [-hue, hue]."""
  image = _photo()
  op = transforms.OPS['color_jitter'](brightness=0.3, contrast=0.2, saturation=0.5, hue=0.05)
  adjusters = (transforms.adjust_brightness, transforms.adjust_contrast, transforms.adjust_saturation,
               transforms.adjust_hue)
  orders = set()
  for seed in range(20):
    rng = np.random.default_rng(seed)
    order = rng.permutation(4)
    factors = [rng.uniform(0.7, 1.3), rng.uniform(0.8, 1.2), rng.uniform(0.5, 1.5), rng.uniform(-0.05, 0.05)]
    expected = image
    for index in order:
      expected = adjusters[index](expected, factors[index])
    np.testing.assert_allclose(op({'image': image}, np.random.default_rng(seed))['image'], expected, atol=1e-6)
    orders.add(tuple(order))
  assert len(orders) > 5
  brightness = transforms.OPS['color_jitter'](brightness=0.3)
  gray = np.full((4, 4, 3), 0.5, np.float32)
  ratios = [brightness({'image': gray}, np.random.default_rng(s))['image'][0, 0, 0] / 0.5 for s in range(300)]
  assert 0.7 <= min(ratios) < 0.72 and 1.28 < max(ratios) <= 1.3


def test_gaussian_noise_fraction_and_std():
  rng = np.random.default_rng(0)
  image = rng.uniform(0.25, 0.75, (64, 64, 3)).astype(np.float32)
  op = transforms.OPS['gaussian_noise'](std_fraction=0.5, pixel_fraction=0.3, clip=False)
  out = op({'image': image, 'mask': np.zeros((64, 64, 1), np.uint8)}, rng)
  change = out['image'] - image
  touched = np.any(change != 0, axis=-1)
  assert abs(touched.mean() - 0.3) < 0.03
  assert np.all(change[touched] != 0)  # every channel of a chosen pixel gets noise
  assert abs(change[touched].std() / (0.5 * image.std()) - 1) < 0.05
  assert abs(change[touched].mean()) < 0.01
  clipped = transforms.OPS['gaussian_noise'](std_fraction=5.0)({'image': image}, rng)['image']
  assert clipped.min() == 0 and clipped.max() == 1
  never = transforms.OPS['gaussian_noise'](p=0.0)
  assert never({'image': image}, rng)['image'] is image
  half = transforms.OPS['gaussian_noise'](p=0.5)
  applied = sum(not np.array_equal(half({'image': image}, rng)['image'], image) for _ in range(200))
  assert 70 < applied < 130


def test_min_max_op_with_fixed_range():
  image = transforms.local_contrast_normalization(_photo())
  low, high = (-2.0, -1.0, -3.0), (4.0, 2.0, 3.0)
  fixed = transforms.parse(f'min_max(low={low}, high={high})')({'image': image}, np.random.default_rng(0))
  np.testing.assert_allclose(fixed['image'], (image - np.array(low)) / (np.array(high) - np.array(low)),
                             atol=1e-6)


def test_normalize_op():
  rng = np.random.default_rng(0)
  mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  photo = _photo()
  out = transforms.parse('normalize("imagenet")')({'image': photo}, rng)['image']
  np.testing.assert_allclose(out, (photo / 255 - mean) / std, atol=1e-5)
  out = transforms.parse('normalize(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))')({'image': photo}, rng)
  np.testing.assert_allclose(out['image'], (photo / 255 - 0.5) / 0.25, atol=1e-5)


def test_to_float_is_automatic_and_idempotent():
  example = _coordinate_example()
  out = transforms.parse('')(example, np.random.default_rng(0))
  assert out['image'].dtype == np.float32 and out['mask'].dtype == np.float32
  assert out['mask'].shape == (24, 32)
  np.testing.assert_array_equal(out['image'], example['image'] / np.float32(255))
  np.testing.assert_array_equal(out['mask'], _pattern(*np.mgrid[:24, :32]))
  again = transforms.to_float(out)
  np.testing.assert_array_equal(again['image'], out['image'])
  np.testing.assert_array_equal(again['mask'], out['mask'])
  assert out['filename'] == b'000.png' and out['label'] == 1 and out['has_mask']
  soft_mask = np.array([[[0], [100], [128], [255]]], np.uint8)
  soft = transforms.to_float({'image': example['image'][:1, :4], 'mask': soft_mask})
  np.testing.assert_array_equal(soft['mask'], [[0, 0, 1, 1]])  # uint8 masks binarised at > 127


def test_full_pipeline_shapes_determinism_and_no_mutation():
  example = _coordinate_example(250, 260)
  example['image'] = _photo((250, 260, 3))
  original = {key: np.copy(value) for key, value in example.items()}
  for spec in (FCDD_SPEC, 'resize(64)|random_crop(56)|flip_lr|color_jitter(brightness=0.04, contrast=0.04, '
               'saturation=0.04, hue=0.0005)|gaussian_noise(std_fraction=0.1, pixel_fraction=0.5)'
               '|local_contrast_normalization|min_max|value_range(-1, 1)'):
    preprocess = transforms.parse(spec)
    first = preprocess(example, np.random.default_rng(3))
    second = preprocess(example, np.random.default_rng(3))
    other = preprocess(example, np.random.default_rng(4))
    np.testing.assert_array_equal(first['image'], second['image'])
    assert not np.array_equal(first['image'], other['image'])
    assert first['image'].dtype == np.float32 and first['mask'].dtype == np.float32
    assert first['image'].shape[:2] == first['mask'].shape
    assert set(np.unique(first['mask'])) <= {0.0, 1.0}
  assert first['image'].shape == (56, 56, 3) and first['image'].min() == -1 and first['image'].max() == 1
  for key, value in original.items():
    np.testing.assert_array_equal(example[key], value)


def test_one_of():
  example = {'image': _photo((30, 30, 3))}
  always_first = transforms.parse('one_of(["flip_lr(p=1.0)", "flip_ud(p=1.0)"], weights=[1, 0])')
  for seed in range(10):
    np.testing.assert_array_equal(always_first(example, np.random.default_rng(seed))['image'],
                                  example['image'][:, ::-1] / np.float32(255))
  either = transforms.parse('one_of(["resize(20)", "random_crop(20)|rot90(k=2)"])')
  outputs = {either(example, np.random.default_rng(seed))['image'].tobytes() for seed in range(20)}
  assert 2 < len(outputs)  # one resize result plus several crops


def test_crop_or_resize_crops_or_resizes_half_the_time():
  example = _coordinate_example()
  resized = transforms.parse('resize((20, 30))')(example, np.random.default_rng(0))
  crops = 0
  for seed in range(200):
    out = transforms.parse('crop_or_resize((20, 30))')(example, np.random.default_rng(seed))
    assert out['image'].shape == (20, 30, 3) and out['mask'].shape == (20, 30)
    if np.array_equal(out['image'], resized['image']):
      np.testing.assert_array_equal(out['mask'], resized['mask'])
      continue
    crops += 1
    rows, cols = _coordinates(out['image'])
    np.testing.assert_array_equal(rows, rows[0, 0] + np.mgrid[:20, :30][0])  # a window of the original
    np.testing.assert_array_equal(out['mask'], _pattern(rows, cols))
  assert 75 < crops < 125
  always = transforms.parse('crop_or_resize((20, 30), crop_probability=0)')
  np.testing.assert_array_equal(always(example, np.random.default_rng(1))['image'], resized['image'])


def test_seed_000_noise_setting_hits_half_the_pixels_at_a_tenth_of_the_std():
  rng = np.random.default_rng(1)
  image = rng.uniform(0.3, 0.7, (96, 96, 3)).astype(np.float32)
  out = transforms.parse('gaussian_noise(0.1, 0.5)')({'image': image}, rng)['image']
  change = out - image
  touched = np.any(change != 0, axis=-1)
  assert abs(touched.mean() - 0.5) < 0.03
  np.testing.assert_allclose(change[touched].std(), 0.1 * image.std(), rtol=0.05)


def _normal_example(size=64, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(40, 200, (size, size, 3), dtype=np.uint8),
          'mask': np.zeros((size, size, 1), np.uint8), 'label': np.int64(0), 'has_mask': np.False_}


def test_confetti_replaces_half_the_images_and_labels_them():
  example = _normal_example()
  original = example['image'] / np.float32(255)
  op = transforms.parse('confetti')  # probability 0.5, mode malformed_normal
  modified = 0
  for seed in range(200):
    out = op(example, np.random.default_rng(seed))
    assert out['has_mask'] and out['mask'].shape == (64, 64) and out['image'].dtype == np.float32
    changed = not np.array_equal(out['image'], original)
    assert out['label'] == int(changed) and out['label'].dtype == np.int64
    np.testing.assert_array_equal(out['mask'], np.full((64, 64), float(changed)))
    modified += changed
  assert 75 < modified < 125
  np.testing.assert_array_equal(example['image'], _normal_example()['image'])  # input untouched


def test_confetti_pixels_mode_masks_exactly_the_changed_pixels():
  for seed in range(20):
    example = _normal_example(48, seed)
    out = transforms.parse('confetti(1.0, "pixels")')(example, np.random.default_rng(seed))
    changed = np.any(out['image'] != example['image'] / np.float32(255), axis=-1)
    assert out['label'] == 1 and out['has_mask'] and changed.any()
    np.testing.assert_array_equal(out['mask'], changed.astype(np.float32))
    assert 0 <= out['image'].min() and out['image'].max() <= 1
  # Deterministic for a seed; different seeds give different noise.
  runs = [transforms.parse('confetti(1.0, "pixels")')(_normal_example(), np.random.default_rng(s))['image']
          for s in (3, 3, 4)]
  np.testing.assert_array_equal(runs[0], runs[1])
  assert not np.array_equal(runs[0], runs[2])


def test_confetti_without_mask_and_placement_checks():
  out = transforms.parse('confetti(0.0)')({'image': _photo(), 'label': np.int64(0)}, np.random.default_rng(0))
  assert out['has_mask'] and out['label'] == 0 and not out['mask'].any() and out['mask'].shape == (20, 28)
  with pytest.raises(InputError, match='before'):
    transforms.parse('local_contrast_normalization|confetti')({'image': _photo()}, np.random.default_rng(0))
  on_float = transforms.parse('to_float|confetti(1.0, "pixels")')(_normal_example(), np.random.default_rng(0))
  assert on_float['label'] == 1 and on_float['mask'].any()


def test_fcdd_training_spec_with_confetti():
  spec = ('resize(80)|confetti(1.0, "pixels")|crop_or_resize(64)'
          '|one_of(["color_jitter(0.04, 0.04, 0.04, 0.04)", "color_jitter(0.0005, 0.0005, 0.0005, 0.0005)"])'
          '|gaussian_noise(0.1, 0.5)|local_contrast_normalization|min_max')
  preprocess = transforms.parse(spec)
  example = _normal_example(100)
  first = preprocess(example, np.random.default_rng(7))
  np.testing.assert_array_equal(first['image'], preprocess(example, np.random.default_rng(7))['image'])
  assert first['image'].shape == (64, 64, 3) and first['mask'].shape == (64, 64)
  assert first['image'].min() == 0 and first['image'].max() == 1
  assert first['label'] == 1 and first['has_mask'] and 0 < first['mask'].mean() < 1


@pytest.mark.parametrize('spec, words', [
    ('resize(8)|blur(3)', ['blur', 'resize(8)|blur(3)', 'known ops', 'color_jitter']),
    ('resize(8, antialias=True)', ['resize', 'antialias']),
    ('flip_lr(0.5, 1)', ['flip_lr', 'too many']),
    ('resize(size)', ['resize', 'literal']),
    ('resize(8', ['resize(8']),
    ('color_jitter(hue=0.7)', ['color_jitter', 'hue']),
    ('resize(-3)', ['resize', 'size']),
    ('resize(8, size=9)', ['twice']),
    ('normalize("cifar")', ['normalize', 'preset']),
    ('min_max(low=1, high=0)', ['min_max', 'high > low']),
    ('one_of(["resize(8)", "nope"])', ['one_of', 'nope']),
    ('gaussian_noise(pixel_fraction=2)', ['pixel_fraction']),
    ('resize(8).x', ['resize(8).x']),
    ('confetti(mode="gt")', ['confetti', 'mode']),
    ('confetti(probability=1.5)', ['confetti', 'probability']),
    ('confetti(min_side=9, max_side=8)', ['confetti', 'min_side']),
    ('crop_or_resize(8, crop_probability=-1)', ['crop_or_resize', 'crop_probability']),
])
def test_parse_errors_name_op_and_spec(spec, words):
  with pytest.raises(InputError) as error:
    transforms.parse(spec)
  for word in words:
    assert word in str(error.value)


def test_runtime_errors_are_input_errors():
  with pytest.raises(InputError, match='random_crop'):
    transforms.parse('random_crop(50)')({'image': _photo()}, np.random.default_rng(0))
  with pytest.raises(InputError, match='spec'):
    transforms.parse(None)


def test_array_functions_are_reexported():
  for name in ('resize', 'center_crop', 'grayscale', 'adjust_brightness', 'adjust_contrast',
               'adjust_saturation', 'adjust_hue', 'local_contrast_normalization', 'min_max', 'value_range',
               'normalize', 'confetti_noise', 'malform', 'LUMA_WEIGHTS', 'NORMALIZE_PRESETS'):
    assert getattr(transforms, name) is getattr(image_ops, name), name
