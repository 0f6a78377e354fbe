"""Tests for adjax.metrics against scikit-learn, a slow AUPRO reference and hand-computed cases."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from sklearn import metrics as sk_metrics

from adjax import metrics
from adjax.errors import InputError


def reference_aupro(maps, masks, fpr_limit, structure=np.ones((3, 3))):
  """Slow MVTec AD AUPRO: a loop over every distinct threshold, then trapezoids cut at fpr_limit."""
  regions = []
  for index, mask in enumerate(masks):
    labels, count = ndimage.label(mask > 0, structure=structure)
    regions += [(index, labels == k) for k in range(1, count + 1)]
  normal = masks == 0
  fprs, pros = [0.0], [0.0]
  for threshold in np.unique(maps)[::-1]:
    predicted = maps >= threshold
    fprs.append((predicted & normal).sum() / normal.sum())
    pros.append(np.mean([predicted[index][region].mean() for index, region in regions]))
  area = 0.0
  for x0, x1, y0, y1 in zip(fprs[:-1], fprs[1:], pros[:-1], pros[1:]):
    if x1 <= fpr_limit:
      area += (x1 - x0) * (y0 + y1) / 2
    elif x0 < fpr_limit:
      y_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
      area += (fpr_limit - x0) * (y0 + y_limit) / 2
  return area / fpr_limit


def random_maps_and_masks(seed, *, num_images=5, size=12, levels=20):
  """Quantized maps (many ties) and 0/255 masks with several blobs, some touching only diagonally."""
  rng = np.random.default_rng(seed)
  masks = np.zeros((num_images, size, size), np.uint8)
  for index in range(1, num_images):
    for _ in range(rng.integers(1, 4)):
      row, col = rng.integers(0, size - 3, 2)
      height, width = rng.integers(1, 4, 2)
      masks[index, row:row + height, col:col + width] = 255
    masks[index, -1, -1] = masks[index, -2, -2] = 255  # A diagonal pair: one region only with 8-neighbours.
  maps = rng.integers(0, levels, masks.shape) + rng.integers(0, levels // 2, masks.shape) * (masks > 0)
  return (maps / levels).astype(np.float32), masks


@pytest.fixture(params=['one_run', 'many_runs'])
def blocks(request, monkeypatch):
  """Also runs the exact path with tiny blocks: several sorted runs and several image blocks."""
  if request.param == 'many_runs':
    monkeypatch.setattr(metrics, '_BLOCK', 100)
    monkeypatch.setattr(metrics, '_SORT_THREADS', 3)


# ------------------------------------------------------------------------------------ image metrics
@pytest.mark.parametrize('seed', range(5))
def test_image_auroc_matches_sklearn_with_ties(seed):
  rng = np.random.default_rng(seed)
  scores, labels = rng.integers(0, 6, 200).astype(np.float32), rng.integers(0, 2, 200)
  assert metrics.image_auroc(scores, labels) == pytest.approx(
      sk_metrics.roc_auc_score(labels, scores), abs=1e-12)


def test_image_auroc_hand_cases():
  labels = np.array([0, 0, 1, 1])
  assert metrics.image_auroc([0.1, 0.2, 0.8, 0.9], labels) == 1.0
  assert metrics.image_auroc([0.9, 0.8, 0.2, 0.1], labels) == 0.0
  assert metrics.image_auroc([0.5, 0.5, 0.5, 0.5], labels) == 0.5
  # Pairs (normal, anomalous): 0.1<0.2, 0.1<0.9, 0.5>0.2, 0.5<0.9 -> 3 of 4.
  assert metrics.image_auroc([0.1, 0.5, 0.2, 0.9], labels) == 0.75
  assert isinstance(metrics.image_auroc(jnp.array([0.1, 0.2, 0.8, 0.9]), labels), float)


def test_roc_curve_matches_sklearn():
  rng = np.random.default_rng(0)
  scores, labels = rng.integers(0, 9, 100).astype(np.float64), rng.integers(0, 2, 100)
  fpr, tpr, thresholds = metrics.roc_curve(scores, labels)
  expected = sk_metrics.roc_curve(labels, scores, drop_intermediate=False)
  for got, want in zip((fpr, tpr, thresholds), expected):
    np.testing.assert_allclose(got, want)


@pytest.mark.parametrize('seed', range(3))
def test_f1_max_is_the_best_over_all_thresholds(seed):
  rng = np.random.default_rng(seed)
  scores, labels = rng.integers(0, 15, 80).astype(np.float32), rng.integers(0, 2, 80)
  f1, threshold = metrics.f1_max(scores, labels)
  by_threshold = {t: sk_metrics.f1_score(labels, scores >= t) for t in np.unique(scores)}
  best = max(by_threshold.values())
  assert f1 == pytest.approx(best, abs=1e-12)
  assert threshold == max(t for t, value in by_threshold.items() if value == pytest.approx(best))
  assert metrics.precision_recall_f1(scores, labels, threshold=threshold)[2] == pytest.approx(f1)


def test_f1_max_hand_case():
  # Threshold 0.7 predicts [0, 0, 1, 1, 1] against [0, 0, 1, 1, 0]: P = 2/3, R = 1, F1 = 0.8;
  # threshold 0.8 predicts one of two positives: P = 1, R = 1/2, F1 = 2/3.
  f1, threshold = metrics.f1_max([0.1, 0.2, 0.7, 0.8, 0.75], [0, 0, 1, 1, 0])
  assert (f1, threshold) == (pytest.approx(0.8), pytest.approx(0.7))
  # F1 is 2/3 both at 0.9 (1 of 2 found, no false alarm) and at 0.6 (2 found, 2 false alarms).
  assert metrics.f1_max([0.9, 0.8, 0.7, 0.6], [1, 0, 0, 1]) == (pytest.approx(2 / 3), 0.9)


@pytest.mark.parametrize('threshold', [-1.0, 0.3, 0.5, 0.75, 2.0])
def test_precision_recall_f1_matches_sklearn(threshold):
  rng = np.random.default_rng(1)
  scores, labels = rng.random(60), rng.integers(0, 2, 60)
  predicted = scores >= threshold
  expected = (sk_metrics.precision_score(labels, predicted, zero_division=0),
              sk_metrics.recall_score(labels, predicted), sk_metrics.f1_score(labels, predicted))
  assert metrics.precision_recall_f1(scores, labels, threshold=threshold) == pytest.approx(expected)


# ------------------------------------------------------------------------------------- exact pixel
@pytest.mark.parametrize('seed', range(4))
def test_pixel_auroc_and_ap_match_sklearn(seed, blocks):
  maps, masks = random_maps_and_masks(seed)
  labels, scores = (masks > 0).ravel(), maps.ravel()
  assert metrics.pixel_auroc(maps, masks) == pytest.approx(
      sk_metrics.roc_auc_score(labels, scores), abs=1e-12)
  assert metrics.pixel_ap(maps, masks) == pytest.approx(
      sk_metrics.average_precision_score(labels, scores), abs=1e-12)


def test_pixel_hand_cases():
  masks = np.array([[[0, 1], [0, 1]]], np.uint8)
  assert metrics.pixel_auroc([[[0.1, 0.9], [0.2, 0.8]]], masks) == 1.0
  assert metrics.pixel_auroc([[[0.9, 0.1], [0.8, 0.2]]], masks) == 0.0
  assert metrics.pixel_auroc(np.full((1, 2, 2), 0.3), masks) == 0.5
  assert metrics.pixel_ap(np.full((1, 2, 2), 0.3), masks) == 0.5  # Precision 1/2 at the only threshold.
  # Descending: 0.9 (anomalous, P=1), 0.8 (normal), 0.7 (anomalous, P=2/3): AP = (1 + 2/3) / 2.
  assert metrics.pixel_ap([[[0.9, 0.8], [0.7, 0.1]]], [[[1, 0], [1, 0]]]) == pytest.approx(5 / 6)


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('fpr_limit', [0.05, 0.3, 0.5, 1.0])
def test_aupro_matches_slow_reference(seed, fpr_limit, blocks):
  maps, masks = random_maps_and_masks(seed)
  assert metrics.aupro(maps, masks, fpr_limit=fpr_limit) == pytest.approx(
      reference_aupro(maps, masks, fpr_limit), abs=1e-12)


@pytest.mark.parametrize('fpr_limit', [0.1, 0.3, 0.77])
def test_aupro_without_ties_matches_slow_reference(fpr_limit, blocks):
  maps, masks = random_maps_and_masks(11)
  maps = maps + np.random.default_rng(0).random(maps.shape, np.float32) / 100  # All distinct.
  assert len(np.unique(maps)) == maps.size
  assert metrics.aupro(maps, masks, fpr_limit=fpr_limit) == pytest.approx(
      reference_aupro(maps, masks, fpr_limit), abs=1e-12)


def test_aupro_uses_8_connectivity():
  maps, masks = random_maps_and_masks(7)
  four_connected = reference_aupro(maps, masks, 0.3, structure=None)
  assert metrics.aupro(maps, masks) != pytest.approx(four_connected, abs=1e-6)
  assert metrics.aupro(maps, masks) == pytest.approx(reference_aupro(maps, masks, 0.3), abs=1e-12)


def test_aupro_limit_between_thresholds():
  # Normals 0.9, 0.2, 0.1; region {0.5}. Curve (0,0) (1/3,0) (1/3,1) (2/3,1) (1,1): the limit 0.3 falls
  # inside the first segment, where PRO is 0; from 1/3 to 0.5 PRO is 1.
  maps, masks = np.array([[[0.9, 0.5, 0.2, 0.1]]]), np.array([[[0, 1, 0, 0]]])
  assert metrics.aupro(maps, masks, fpr_limit=0.3) == 0.0
  assert metrics.aupro(maps, masks, fpr_limit=0.5) == pytest.approx((0.5 - 1 / 3) / 0.5)
  assert metrics.aupro(maps, masks, fpr_limit=1.0) == pytest.approx(2 / 3)


def test_aupro_averages_regions_not_pixels():
  # Region A = {0.8} (size 1), region B = {0.6, 0.3} (size 2), normals 0.7, 0.2, 0.1. Curve:
  # (0,0) (0,.5) (1/3,.5) (1/3,.75) (1/3,1) (2/3,1) (1,1). Up to 0.3: 0.3 * 0.5 -> 0.5 (a pixel
  # average would give 1/3). Up to 0.5: (1/3 * .5 + (.5 - 1/3) * 1) / .5 = 2/3. Up to 1: 5/6.
  maps, masks = np.array([[[0.8, 0.7, 0.6, 0.3, 0.2, 0.1]]]), np.array([[[1, 0, 1, 1, 0, 0]]])
  assert metrics.aupro(maps, masks) == pytest.approx(0.5)
  assert metrics.aupro(maps, masks, fpr_limit=0.5) == pytest.approx(2 / 3)
  assert metrics.aupro(maps, masks, fpr_limit=1.0) == pytest.approx(5 / 6)


def test_aupro_tie_between_normal_and_anomalous():
  # One threshold takes the curve from (0,0) straight to (1,1): PRO(0.3) = 0.3, area 0.045.
  maps, masks = np.full((1, 1, 2), 0.5), np.array([[[1, 0]]])
  assert metrics.aupro(maps, masks) == pytest.approx(0.15)
  assert metrics.aupro(maps, masks, fpr_limit=1.0) == pytest.approx(0.5)


def test_pixel_metrics_and_pro_curve_agree_with_single_metrics(blocks):
  maps, masks = random_maps_and_masks(3)
  together = metrics.pixel_metrics(maps, masks, fpr_limit=0.2)
  assert together == {'pixel_auroc': metrics.pixel_auroc(maps, masks),
                      'pixel_ap': metrics.pixel_ap(maps, masks),
                      'pixel_aupro': metrics.aupro(maps, masks, fpr_limit=0.2)}
  fpr, pro, thresholds = metrics.pro_curve(maps, masks)
  assert fpr[0] == pro[0] == 0 and fpr[-1] == 1 and thresholds[0] == np.inf
  assert pro[-1] == pytest.approx(1.0)
  assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= -1e-12)
  inside = fpr <= 0.2
  interpolated = np.interp(0.2, fpr, pro)
  area = np.trapezoid(np.r_[pro[inside], interpolated], np.r_[fpr[inside], 0.2])
  assert area / 0.2 == pytest.approx(together['pixel_aupro'], abs=1e-12)


def test_accepts_jax_arrays_bool_masks_and_channel_axis():
  maps, masks = random_maps_and_masks(2)
  expected = metrics.pixel_metrics(maps, masks)
  assert metrics.pixel_metrics(jnp.asarray(maps), jnp.asarray(masks > 0)) == expected
  assert metrics.pixel_metrics(maps[..., None], masks[..., None] // 255) == expected
  assert all(isinstance(value, float) for value in expected.values())


# ------------------------------------------------------------------------------------ binned pixel
def structured(seed, *, num_images=12, size=48):
  rng = np.random.default_rng(seed)
  masks = np.zeros((num_images, size, size), np.uint8)
  for index in range(0, num_images, 2):
    for _ in range(rng.integers(1, 4)):
      row, col = rng.integers(0, size - 8, 2)
      masks[index, row:row + rng.integers(2, 8), col:col + rng.integers(2, 8)] = 1
  maps = masks * rng.uniform(0.5, 2.0, masks.shape) + rng.standard_normal(masks.shape)
  return maps.astype(np.float32), masks


@pytest.mark.parametrize('seed', range(3))
def test_binned_close_to_exact(seed):
  maps, masks = structured(seed)
  exact = metrics.pixel_metrics(maps, masks)
  binned = metrics.pixel_metrics(maps, masks, num_bins=10_000)
  for name in exact:
    assert binned[name] == pytest.approx(exact[name], abs=1e-3)
  assert metrics.pixel_auroc(maps, masks, num_bins=10_000) == binned['pixel_auroc']
  assert metrics.pixel_ap(maps, masks, num_bins=10_000) == binned['pixel_ap']
  assert metrics.aupro(maps, masks, num_bins=10_000) == binned['pixel_aupro']


@pytest.mark.parametrize('fpr_limit', [0.1, 0.3, 1.0])
def test_binned_equals_exact_when_bins_separate_the_values(fpr_limit):
  # Integer scores 0..top with one bin per integer: nothing is merged, so binned is exact.
  maps, masks = random_maps_and_masks(5, levels=50)
  maps = np.round(maps * 50)
  top = int(maps.max())
  exact = metrics.pixel_metrics(maps, masks, fpr_limit=fpr_limit)
  histograms = metrics.pixel_histograms(maps, masks, num_bins=top + 1, value_range=(-0.5, top + 0.5))
  binned = metrics.binned_metrics(histograms, fpr_limit=fpr_limit)
  assert binned == pytest.approx(exact, abs=1e-12)
  # Over the default range [0, top] the bins are a bit wider than 1, still one integer per bin.
  assert metrics.pixel_metrics(maps, masks, fpr_limit=fpr_limit, num_bins=top + 1) == pytest.approx(
      exact, abs=1e-12)
  assert binned['pixel_aupro'] == pytest.approx(reference_aupro(maps, masks, fpr_limit), abs=1e-12)


def test_streaming_equals_one_shot():
  maps, masks = structured(4)
  value_range = (float(maps.min()), float(maps.max()))
  one_shot = metrics.pixel_histograms(maps, masks, num_bins=500, value_range=value_range)
  state = metrics.init_pixel_histograms(value_range=value_range, num_bins=500)
  for start in range(0, len(maps), 5):
    state = metrics.update_pixel_histograms(state, maps[start:start + 5], masks[start:start + 5])
  np.testing.assert_array_equal(state.normal, one_shot.normal)
  np.testing.assert_array_equal(state.anomalous, one_shot.anomalous)
  np.testing.assert_allclose(state.region_overlap, one_shot.region_overlap)
  assert state.num_regions == one_shot.num_regions == sum(
      ndimage.label(mask, structure=np.ones((3, 3)))[1] for mask in masks)
  assert metrics.binned_metrics(state) == pytest.approx(metrics.binned_metrics(one_shot), abs=1e-12)
  # Scores outside the range count in the end bins.
  clipped = metrics.update_pixel_histograms(state, maps[:1] + 100, masks[:1])
  assert clipped.normal[-1] == state.normal[-1] + np.sum(masks[0] == 0)


def test_binned_curves():
  maps, masks = structured(1)
  histograms = metrics.pixel_histograms(maps, masks, num_bins=300)
  fpr, tpr, thresholds = metrics.binned_roc_curve(histograms)
  assert len(fpr) == len(tpr) == len(thresholds) == 301
  assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
  assert np.all(np.diff(thresholds[1:]) < 0) and thresholds[-1] == maps.min()
  assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.binned_metrics(histograms)['pixel_auroc'])
  fpr, pro, _ = metrics.binned_pro_curve(histograms)
  assert pro[-1] == pytest.approx(1.0) and np.all(np.diff(pro) >= -1e-12)


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize('call, message', [
    (lambda: metrics.image_auroc([0.1, 0.2], [0, 1, 1]), 'shape'),
    (lambda: metrics.image_auroc([0.1, 0.2], [0, 0]), 'no anomalous'),
    (lambda: metrics.image_auroc([0.1, 0.2], [1, 1]), 'no normal'),
    (lambda: metrics.image_auroc([0.1, np.nan], [0, 1]), 'NaN or infinite'),
    (lambda: metrics.f1_max([0.1, np.inf], [0, 1]), 'NaN or infinite'),
    (lambda: metrics.image_auroc([], []), 'empty'),
    (lambda: metrics.image_auroc([0.1, 0.2], [0, 2]), '0 \\(normal\\) or 1'),
    (lambda: metrics.f1_max([0.1, 0.2], [0, 0]), 'no anomalous'),
    (lambda: metrics.pixel_auroc(np.zeros((2, 4, 4)), np.zeros((2, 4, 5))), 'shape'),
    (lambda: metrics.pixel_auroc(np.zeros((4, 4)), np.zeros((4, 4))), 'num_images, height, width'),
    (lambda: metrics.pixel_ap(np.zeros((2, 4, 4)), np.zeros((2, 4, 4))), 'no anomalous pixel'),
    (lambda: metrics.aupro(np.zeros((2, 4, 4)), np.ones((2, 4, 4))), 'no normal pixel'),
    (lambda: metrics.aupro(np.full((1, 2, 2), np.nan), np.eye(2)[None]), 'NaN or infinite'),
    (lambda: metrics.aupro(np.zeros((0, 4, 4)), np.zeros((0, 4, 4))), 'empty'),
    (lambda: metrics.aupro(np.zeros((1, 2, 2)), np.eye(2)[None], fpr_limit=0), 'fpr_limit'),
    (lambda: metrics.pixel_auroc(np.zeros((1, 2, 2)), np.eye(2)[None], num_bins=0), 'num_bins'),
    (lambda: metrics.pixel_auroc(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), num_bins=9), 'no anomalous'),
    (lambda: metrics.init_pixel_histograms(value_range=(1, 0)), 'value_range'),
    (lambda: metrics.pixel_auroc(np.array([[['a']]]), np.ones((1, 1, 1))), 'numeric'),
])
def test_bad_input_raises_input_error(call, message):
  with pytest.raises(InputError, match=message):
    call()
