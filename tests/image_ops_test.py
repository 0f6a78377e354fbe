"""Tests for adjax.data.image_ops: every array function against numpy / PIL / colorsys references."""

import colorsys

import numpy as np
from PIL import Image, ImageEnhance
import pytest

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
