"""Tests for adjax.data.defects: exact masks, determinism, areas, and what each defect does to pixels."""

import numpy as np
import pytest
from scipy import ndimage
from skimage import data as skimage_data

from adjax.data import defects


def _crop(name='brick', top=176, left=100, size=96):
  return getattr(skimage_data, name)()[top:top + size, left:left + size]


def _apply(kind, image, rng, **kwargs):
  if kind == 'foreign_patch':
    source = skimage_data.gravel()
    if image.ndim == 3:
      source = np.repeat(source[..., None], image.shape[-1], axis=-1)
    if image.dtype != np.uint8:
      source = source.astype(image.dtype) / 255
    return defects.foreign_patch(image, source, rng=rng, **kwargs)
  return getattr(defects, kind)(image, rng=rng, **kwargs)


def _images():
  gray = _crop()
  rgb = skimage_data.coffee()[100:196, 400:496]
  return {'gray_uint8': gray, 'rgb_uint8': rgb, 'gray_float': gray.astype(np.float32) / 255}


@pytest.mark.parametrize('kind', defects.DEFECT_TYPES)
@pytest.mark.parametrize('image_name', ['gray_uint8', 'rgb_uint8', 'gray_float'])
def test_mask_marks_exactly_the_changed_region(kind, image_name):
  image = _images()[image_name]
  for seed in range(4):
    defective, mask = _apply(kind, image, np.random.default_rng(seed))
    assert defective.shape == image.shape and defective.dtype == image.dtype
    assert mask.shape == image.shape[:2] and mask.dtype == bool and mask.any()
    # Bit for bit identical outside the mask ...
    np.testing.assert_array_equal(defective[~mask], image[~mask])
    # ... and nearly every pixel inside it changed (a pasted pixel can equal the one it covers).
    changed = (defective != image).reshape(*mask.shape, -1).any(-1)
    assert changed[mask].mean() > 0.8, (kind, image_name, seed, changed[mask].mean())
    if image.dtype != np.uint8:  # Float results stay within the input's own range.
      assert defective.min() >= image.min() and defective.max() <= image.max()


@pytest.mark.parametrize('kind', defects.DEFECT_TYPES)
def test_same_seed_same_defect_other_seed_other_defect(kind):
  image = _crop()
  first = _apply(kind, image, np.random.default_rng(7))
  again = _apply(kind, image, np.random.default_rng(7))
  other = _apply(kind, image, np.random.default_rng(8))
  np.testing.assert_array_equal(first[0], again[0])
  np.testing.assert_array_equal(first[1], again[1])
  assert not np.array_equal(first[1], other[1])


def test_blob_area_within_range_and_blob_is_one_piece():
  rng = np.random.default_rng(0)
  for low, high in [(0.01, 0.03), (0.04, 0.08), (0.1, 0.2)]:
    areas = []
    for _ in range(40):
      mask = defects.blob_mask(128, 160, rng=rng, area_range=(low, high))
      areas.append(mask.mean())
      assert ndimage.label(mask)[1] == 1
    # Rasterising changes the area by a few border pixels only.
    assert low * 0.93 <= min(areas) and max(areas) <= high * 1.07, (low, high, min(areas), max(areas))
    assert max(areas) - min(areas) > 0.5 * (high - low)  # The area is drawn, not fixed.


def test_round_blob_matches_circle_area_and_center():
  mask = defects.blob_mask(101, 101, rng=np.random.default_rng(0), area_range=(0.1, 0.1), roughness=0.0,
                           center=(50.0, 50.0))
  assert abs(mask.sum() - 0.1 * 101 * 101) < 0.02 * 0.1 * 101 * 101
  np.testing.assert_allclose(np.argwhere(mask).mean(0), (50, 50), atol=0.5)
  radius = np.sqrt(0.1 * 101 * 101 / np.pi)
  assert mask[50, 50] and mask[50, int(50 + radius - 1)] and not mask[50, int(50 + radius + 2)]


def test_foreign_patch_pastes_one_crop_of_the_source_unchanged():
  # Source values encode their own position, so the pasted pixels reveal where they came from.
  rows, cols = np.mgrid[0:300, 0:400]
  source = (rows * 1000 + cols).astype(np.float64)
  image = np.random.default_rng(0).uniform(0, 1e6, size=(96, 128))
  defective, mask = defects.foreign_patch(image, source, rng=np.random.default_rng(3), match_moments=False)
  image_rows, image_cols = np.nonzero(mask)
  offsets = defective[mask] - (image_rows * 1000 + image_cols)
  np.testing.assert_allclose(offsets, offsets[0])
  top, left = divmod(int(round(offsets[0])), 1000)
  assert 0 <= top <= 300 - 96 and 0 <= left <= 400 - 128


def test_foreign_patch_matches_mean_and_std_of_covered_pixels():
  image = _crop('brick')
  for seed in range(3):
    defective, mask = defects.foreign_patch(image, skimage_data.grass(), rng=np.random.default_rng(seed),
                                            area_range=(0.05, 0.08))
    covered, pasted = image[mask].astype(float), defective[mask].astype(float)
    assert abs(pasted.mean() - covered.mean()) < 1.0
    assert abs(pasted.std() - covered.std()) < 0.05 * covered.std() + 1.0


def test_rotated_patch_turns_stripes_by_the_angle():
  rows = np.arange(128)[:, None] * np.ones((1, 128))
  stripes = ((rows // 8) % 2 * 200 + 20).astype(np.uint8)  # Horizontal stripes: vary along rows only.
  for angle, varies_along in [(90.0, 1), (0.0, 0)]:
    defective, mask = defects.rotated_patch(stripes, rng=np.random.default_rng(1), area_range=(0.1, 0.1),
                                            angle_range=(angle, angle))
    values = defective.astype(float)
    inner = ndimage.binary_erosion(mask, iterations=2)
    along_rows = np.abs(np.diff(values, axis=0))[inner[1:] & inner[:-1]].mean()
    along_cols = np.abs(np.diff(values, axis=1))[inner[:, 1:] & inner[:, :-1]].mean()
    changes, still = (along_cols, along_rows) if varies_along == 1 else (along_rows, along_cols)
    assert still < 1.0 and changes > 10.0, (angle, along_rows, along_cols)


def test_rotated_patch_magnifies_structure():
  # A scale of 4 stretches stripes of period 16 to period 64: far fewer edges inside the blob.
  stripes = (((np.arange(128)[:, None] // 8) % 2) * np.ones((1, 128)) * 200).astype(np.uint8)
  defective, mask = defects.rotated_patch(stripes, rng=np.random.default_rng(2), area_range=(0.15, 0.15),
                                          angle_range=(0.0, 0.0), scale_range=(4.0, 4.0))
  inner = mask[1:] & mask[:-1]
  edges_before = (np.abs(np.diff(stripes.astype(float), axis=0)) > 50)[inner].mean()
  edges_after = (np.abs(np.diff(defective.astype(float), axis=0)) > 50)[inner].mean()
  assert edges_after < 0.5 * edges_before


def test_rotated_patch_min_change_makes_the_defect_visible():
  image = _crop('brick')
  for seed in range(8):
    defective, mask = defects.rotated_patch(image, rng=np.random.default_rng(seed), area_range=(0.01, 0.03),
                                            min_change=0.06)
    assert np.abs(defective.astype(float) - image)[mask].mean() >= 0.06 * 255


def test_scratch_is_a_thin_connected_curve_blended_to_an_extreme():
  image = np.full((128, 128), 100, np.uint8)
  for seed in range(6):
    defective, mask = defects.scratch(image, rng=np.random.default_rng(seed), length_range=(0.4, 0.6),
                                      width_range=(2.0, 3.0), contrast_range=(0.5, 0.5))
    assert ndimage.label(mask, structure=np.ones((3, 3)))[1] == 1
    # Area is about length * width: length 51-77 px, width 2-3 px.
    assert 0.4 * 128 * 2 * 0.8 <= mask.sum() <= 0.6 * 128 * 3 * 1.3, mask.sum()
    # Half way from 100 to white (255) or black (0).
    assert set(np.unique(defective[mask])) <= {50, 178}
    assert len(np.unique(defective[mask])) == 1


def test_stain_blends_towards_the_tone_by_the_documented_weight():
  image = _crop('gravel').astype(np.float64) / 255
  strength = 0.6
  defective, mask = defects.stain(image, rng=np.random.default_rng(0), strength_range=(strength, strength),
                                  tone_range=(0.0, 0.0))
  # Towards black: value * (1 - w) with w in [strength / 2, strength], strongest at the middle.
  kept = defective[mask] / image[mask]
  assert kept.min() >= 1 - strength - 1e-9 and kept.max() <= 1 - strength / 2 + 1e-9
  center = tuple(np.round(np.argwhere(mask).mean(0)).astype(int))
  edge = mask & ~ndimage.binary_erosion(mask)
  assert defective[center] / image[center] < (defective[edge] / image[edge]).mean()


def test_bad_arguments_raise():
  image = _crop()
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match='area_range'):
    defects.stain(image, rng=rng, area_range=(0.1, 0.05))
  with pytest.raises(ValueError, match='channels'):
    defects.foreign_patch(image, skimage_data.coffee(), rng=rng)
  with pytest.raises(ValueError, match='smaller'):
    defects.foreign_patch(image, image[:50], rng=rng)
  with pytest.raises(ValueError, match='uint8 or float'):
    defects.scratch(image.astype(np.int32), rng=rng)
  with pytest.raises(ValueError, match='length_range'):
    defects.scratch(image, rng=rng, length_range=(0.5, 0.9))
