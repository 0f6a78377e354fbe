"""Tests for adjax.data.image_ops: every array function against numpy / PIL / colorsys references."""

import colorsys

import numpy as np
from PIL import Image, ImageEnhance
import pytest
import scipy.ndimage

from adjax.data import image_ops


def _photo(shape=(20, 28, 3), seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_bilinear_resize_antialiases_like_a_1331_filter():
  image = np.random.default_rng(0).random((32, 32, 1)).astype(np.float32)
  kernel = np.array([1, 3, 3, 1], np.float32) / 8  # bilinear (triangle) filter widened 2x for a 2x shrink

  def shrink(a):
    return np.stack([kernel @ a[2 * i - 1:2 * i + 3] for i in range(1, a.shape[0] // 2 - 1)])

  reference = shrink(shrink(image[..., 0]).T).T
  resized = image_ops.resize(image, 16)
  assert resized.shape == (16, 16, 1) and resized.dtype == np.float32
  np.testing.assert_allclose(resized[1:-1, 1:-1, 0], reference, atol=1e-6)
  as_uint8 = image_ops.resize((image * 255).astype(np.uint8), 16)
  assert as_uint8.dtype == np.uint8
  np.testing.assert_allclose(as_uint8, image_ops.resize((image * 255).astype(np.uint8).astype(np.float32), 16),
                             atol=1.0)


def test_grayscale_matches_pil():
  image = _photo()
  expected = np.asarray(Image.fromarray(image).convert('L'), np.float32) / 255
  gray = image_ops.grayscale(image)
  assert gray.shape == (20, 28, 3)
  np.testing.assert_allclose(gray, np.repeat(expected[..., None], 3, -1), atol=0.6 / 255)


@pytest.mark.parametrize('factor', [0.6, 1.3])
def test_brightness_contrast_saturation_match_pil(factor):
  image = (_photo() * np.array([1.0, 0.3, 0.6])).astype(np.uint8)  # unequal channel means
  pil = Image.fromarray(image)
  for ours, enhancer in ((image_ops.adjust_brightness, ImageEnhance.Brightness),
                         (image_ops.adjust_contrast, ImageEnhance.Contrast),
                         (image_ops.adjust_saturation, ImageEnhance.Color)):
    expected = np.asarray(enhancer(pil).enhance(factor), np.float32) / 255
    # PIL rounds its gray reference and its output to uint8.
    np.testing.assert_allclose(ours(image, factor), expected, atol=1.5 / 255)


@pytest.mark.parametrize('shift', [0.3, -0.45, 0.0005])
def test_hue_matches_colorsys(shift):
  image = _photo((6, 7, 3)).astype(np.float32) / 255
  image[0, 0] = image[0, 0, 0]  # a gray pixel: hue undefined, must stay gray
  expected = np.array([[colorsys.hsv_to_rgb((h + shift) % 1, s, v)
                        for h, s, v in (colorsys.rgb_to_hsv(*pixel) for pixel in row)]
                       for row in image.astype(np.float64)])
  np.testing.assert_allclose(image_ops.adjust_hue(image, shift), expected, atol=1e-6)


def test_local_contrast_normalization():
  image = _photo()
  out = image_ops.local_contrast_normalization(image)
  assert out.dtype == np.float32
  assert abs(out.mean()) < 1e-6 and abs(np.abs(out).mean() - 1) < 1e-6
  reference = image - image.astype(np.float64).mean()
  np.testing.assert_allclose(out, reference / np.abs(reference).mean(), atol=1e-5)
  np.testing.assert_allclose(image_ops.local_contrast_normalization(image / 255.0), out, atol=1e-5)
  np.testing.assert_array_equal(image_ops.local_contrast_normalization(np.full((4, 4, 3), 9.0)), 0)


def test_min_max():
  image = image_ops.local_contrast_normalization(_photo())
  out = image_ops.min_max(image)
  assert out.min() == 0 and out.max() == 1
  np.testing.assert_allclose(out, (image - image.min()) / (image.max() - image.min()), atol=1e-6)
  np.testing.assert_array_equal(image_ops.min_max(np.full((3, 3, 3), 7, np.uint8)), 0)


def test_value_range():
  image = np.array([[[0, 255, 51]]], np.uint8)
  out = image_ops.value_range(image, -1, 1)
  assert out.dtype == np.float32 and out[0, 0, 0] == -1 and out[0, 0, 1] == 1  # exact endpoints
  np.testing.assert_allclose(out[0, 0, 2], -0.6, atol=1e-7)
  np.testing.assert_array_equal(image_ops.value_range(np.array([0.0, 1.0]), 2, 6), [2, 6])


def _components(noise):
  """Bounding boxes and areas of the connected non-zero regions of noise [height, width, channels]."""
  labels, _ = scipy.ndimage.label(np.any(noise != 0, axis=-1))
  boxes = scipy.ndimage.find_objects(labels)
  return [(box, int(np.sum(labels[box] == index + 1))) for index, box in enumerate(boxes)]


def _inside(box, shape):
  return all(s.start > 0 and s.stop < size for s, size in zip(box, shape))


def test_confetti_squares_have_the_drawn_sides():
  squares = 0
  for seed in range(8):
    noise = image_ops.confetti_noise((200, 200, 3), np.random.default_rng(seed), min_side=9, max_side=9,
                                     max_rotation=0, blur_sigma=0, coloured_probability=1e-4,
                                     grey_probability=1e-4, reference_size=200)
    assert noise.dtype == np.float32 and noise.min() == 0 and noise.max() <= 510
    grey = np.all(noise >= 255, axis=-1)  # grey squares add 255 to every channel
    assert grey.sum() >= 81 or not _inside(scipy.ndimage.find_objects(grey.astype(int))[0], (200, 200))
    for box, area in _components(noise):
      if _inside(box, (200, 200)) and area == 81:
        squares += 1
        assert [s.stop - s.start for s in box] == [9, 9]
        assert len(np.unique(noise[box].reshape(-1, 3), axis=0)) == 1  # one colour per square
  assert squares >= 16  # at least one coloured and one grey square per image


def test_confetti_rotated_squares_keep_their_area():
  areas = []
  for seed in range(6):
    noise = image_ops.confetti_noise((160, 160, 1), np.random.default_rng(seed), min_side=21, max_side=21,
                                     blur_sigma=0, reference_size=160)
    areas += [area for box, area in _components(noise) if _inside(box, (160, 160))]
  assert areas and all(abs(area - 441) < 0.12 * 441 for area in areas if area < 600)  # overlaps are larger


def test_confetti_blur_and_small_image_scaling():
  options = dict(min_side=10, max_side=10, max_rotation=0, reference_size=120)
  sharp = image_ops.confetti_noise((120, 120, 3), np.random.default_rng(5), blur_sigma=0, **options)
  blurred = image_ops.confetti_noise((120, 120, 3), np.random.default_rng(5), **options)
  reference = scipy.ndimage.gaussian_filter(sharp, sigma=(5, 5, 0), truncate=2.4, mode='mirror')
  np.testing.assert_allclose(blurred, reference, atol=1e-3)
  (row_sharp, col_sharp), (row_blur, col_blur) = (np.nonzero(np.any(n > 0, -1)) for n in (sharp, blurred))
  if row_sharp.min() >= 12 and col_sharp.min() >= 12:
    assert row_sharp.min() - row_blur.min() == 12 and col_sharp.min() - col_blur.min() == 12  # 25-tap kernel
  # A 56-pixel image is 1/4 of the 224 reference: sides 8..54 become 2..14, blur sigma 1.25.
  boxes = []
  for seed in range(10):
    small = image_ops.confetti_noise((56, 56, 3), np.random.default_rng(seed), max_rotation=0, blur_sigma=0)
    boxes += [s.stop - s.start for box, area in _components(small) if _inside(box, (56, 56)) for s in box]
  assert boxes and max(boxes) <= 28 and min(boxes) >= 2
  np.testing.assert_array_equal(image_ops.confetti_noise((56, 56, 3), np.random.default_rng(1)),
                                image_ops.confetti_noise((56, 56, 3), np.random.default_rng(1)))


def test_confetti_has_at_least_one_square_per_layer_and_binomial_counts():
  rng = np.random.default_rng(0)
  for trials, p in ((224 * 224, 1.8e-5), (64, 1e-3), (100, 0.5)):
    counts = np.array([image_ops._zero_truncated_binomial(rng, trials, p) for _ in range(3000)])
    at_least_one = 1 - (1 - p) ** trials
    assert counts.min() >= 1 and counts.max() <= trials
    np.testing.assert_allclose(counts.mean(), trials * p / at_least_one, rtol=0.03)  # E[X | X >= 1]
    np.testing.assert_allclose(np.mean(counts == 1), trials * p * (1 - p) ** (trials - 1) / at_least_one,
                               atol=0.03)


def test_malform_adds_rounded_noise_and_flips_its_sign_like_fcdd():
  noise = np.zeros((4, 4, 1), np.float32)
  noise[1, 2] = 10
  noise[3, 3] = 0.4  # rounds to 0: unchanged
  noise[0, 0] = 0.6  # rounds to 1
  grey = np.full((4, 4, 1), 100, np.uint8)
  out, changed = image_ops.malform(grey, noise)
  expected = grey / np.float32(255)
  expected[1, 2] = 110 / 255
  expected[0, 0] = 101 / 255
  np.testing.assert_allclose(out, expected, atol=1e-7)
  np.testing.assert_array_equal(changed, np.any(out != grey / np.float32(255), -1))
  assert changed.sum() == 2 and changed[1, 2] and changed[0, 0]
  # White image: adding changes nothing (clamped), so the noise is negated (FCDD's invert rule).
  out, changed = image_ops.malform(np.full((4, 4, 1), 255, np.uint8), noise)
  assert out[1, 2, 0] == np.float32(245 / 255) and out[0, 0, 0] == np.float32(254 / 255) and changed.sum() == 2
  # 250 + 10 clamps to 255: mean change 5 / 16 ≈ 0.31 grey levels; flipped only above that threshold.
  almost = np.full((4, 4, 1), 250 / 255, np.float32)
  noise[0, 0] = noise[3, 3] = 0
  assert image_ops.malform(almost, noise)[0][1, 2, 0] == 1
  np.testing.assert_allclose(image_ops.malform(almost, noise, invert_threshold=0.4)[0][1, 2, 0], 240 / 255)
  np.testing.assert_allclose(image_ops.malform(almost, noise, invert_threshold=0.4)[0][0, 0, 0], 250 / 255)
