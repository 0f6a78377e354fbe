"""Image and pixel metrics for anomaly detection: AUROC, AP, AUPRO, F1.

Inputs are numpy or jax arrays; results are Python floats.
  scores  [num_images]                  higher = more anomalous
  labels  [num_images]                  0 = normal, 1 = anomalous
  maps    [num_images, height, width]   anomaly maps, higher = more anomalous
  masks   [num_images, height, width]   ground truth; any value > 0 is anomalous (0/1 or 0/255 both work)
A trailing channel axis of size 1 on maps or masks is dropped.

Exact mode (`num_bins=None`) is tie-aware and equals scikit-learn's `roc_auc_score` and
`average_precision_score` up to float rounding. It sorts one copy of the scores in their own dtype (in a
few runs, one thread each) and ranks the anomalous pixels among them with `searchsorted` (normal counts
are all counts minus anomalous counts), so the extra memory is about one copy of the maps rather than
argsort indices and float64 cumulative sums over every pixel.

Binned mode (`num_bins=k`) histograms the scores into k equal bins over a value range and treats scores
in one bin as tied: the result is the exact metric of the bin-quantized maps. Its state, `PixelHistograms`,
is small and can be fed batch by batch (`init_pixel_histograms`, `update_pixel_histograms`,
`binned_metrics`), so an evaluator need not keep all maps.

AUPRO follows the MVTec AD definition: regions are the 8-connected components of each ground-truth mask;
the false positive rate is over all normal pixels of the test set; PRO is the mean over all regions of
the fraction of the region's pixels at or above the threshold; the PRO-vs-FPR curve (one point per
distinct threshold, starting at (0, 0)) is integrated up to `fpr_limit` with linear interpolation there
and divided by `fpr_limit`.
"""

from concurrent.futures import ThreadPoolExecutor
import math
import os
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from adjax.errors import InputError

# Work in blocks of about this many pixels, so temporaries stay small next to the maps.
_BLOCK = 1 << 22
_SORT_THREADS = min(4, os.cpu_count() or 1)
# 8-connectivity inside each image and none across the stacked image axis.
_STACKED_8_CONNECTIVITY = np.zeros((3, 3, 3), bool)
_STACKED_8_CONNECTIVITY[1] = True


# ---------------------------------------------------------------------------------------------- inputs
def _as_float_array(values, name: str, fn: str) -> np.ndarray:
  values = np.asarray(values)
  if values.dtype not in (np.float32, np.float64):
    # Small floats (float16, bfloat16) and ints convert exactly to float32; wider ones go to float64.
    exact32 = values.dtype.itemsize <= 2 or values.dtype == bool
    if values.dtype.kind not in 'biufV':
      raise InputError(f'{fn}: {name} must be numeric, got dtype {values.dtype}')
    try:
      values = values.astype(np.float32 if exact32 else np.float64)
    except (TypeError, ValueError) as error:
      raise InputError(f'{fn}: {name} must be numeric, got dtype {values.dtype}') from error
  if values.size == 0:
    raise InputError(f'{fn}: {name} is empty')
  low, high = values.min(), values.max()  # NaN propagates through min and max.
  if not (np.isfinite(low) and np.isfinite(high)):
    raise InputError(f'{fn}: {name} contain NaN or infinite values')
  return values


def _scores_and_labels(scores, labels, fn: str, *, need_normal: bool = True):
  scores = _as_float_array(scores, 'scores', fn)
  labels = np.asarray(labels)
  if scores.ndim != 1 or labels.shape != scores.shape:
    raise InputError(f'{fn}: scores and labels must both have shape [num_images], got '
                     f'{scores.shape} and {labels.shape}')
  if not np.isin(labels, (0, 1)).all():
    raise InputError(f'{fn}: labels must be 0 (normal) or 1 (anomalous), got values '
                     f'{np.unique(labels)[:5].tolist()}')
  labels = labels.astype(bool)
  if not labels.any():
    raise InputError(f'{fn}: labels has no anomalous (1) image, the metric is undefined')
  if need_normal and labels.all():
    raise InputError(f'{fn}: labels has no normal (0) image, the metric is undefined')
  return scores, labels


def _maps_and_masks(maps, masks, fn: str):
  maps = _as_float_array(maps, 'maps', fn)
  masks = np.asarray(masks)
  maps = maps[..., 0] if maps.ndim == 4 and maps.shape[-1] == 1 else maps
  masks = masks[..., 0] if masks.ndim == 4 and masks.shape[-1] == 1 else masks
  if maps.ndim != 3 or masks.shape != maps.shape:
    raise InputError(f'{fn}: maps and masks must both have shape [num_images, height, width], got '
                     f'{maps.shape} and {masks.shape}')
  return maps, masks


def _check_fpr_limit(fpr_limit: float, fn: str):
  if not 0 < fpr_limit <= 1:
    raise InputError(f'{fn}: fpr_limit must be in (0, 1], got {fpr_limit}')


def _check_pixel_counts(num_normal: int, num_anomalous: int, num_regions: int | None, fn: str):
  if num_anomalous == 0 or num_regions == 0:
    raise InputError(f'{fn}: masks have no anomalous pixel (value > 0), the metric is undefined')
  if num_normal == 0:
    raise InputError(f'{fn}: masks have no normal pixel (value 0), the metric is undefined')


def _image_blocks(num_images: int, image_size: int):
  step = max(1, _BLOCK // max(image_size, 1))
  return [slice(start, start + step) for start in range(0, num_images, step)]


# ------------------------------------------------------------------------------------ curve helpers
def _cumulative_by_threshold(scores: np.ndarray, *weights: np.ndarray):
  """Distinct thresholds (descending) and, per weight, its sum over the scores >= each threshold."""
  order = np.argsort(scores, kind='stable')[::-1]
  ordered = scores[order]
  last = np.r_[np.flatnonzero(np.diff(ordered)), ordered.size - 1]
  return ordered[last], [np.cumsum(weight[order])[last] for weight in weights]


def _area_to_limit(x: np.ndarray, y: np.ndarray, limit: float) -> float:
  """Trapezoidal area under y(x) for x in [0, limit], x non-decreasing from 0, interpolating at limit."""
  inside = int(np.searchsorted(x, limit, side='right'))
  area = float(np.sum(np.diff(x[:inside]) * (y[1:inside] + y[:inside - 1]) / 2))
  if inside < x.size and x[inside - 1] < limit:
    fraction = (limit - x[inside - 1]) / (x[inside] - x[inside - 1])
    y_limit = y[inside - 1] + fraction * (y[inside] - y[inside - 1])
    area += (limit - x[inside - 1]) * (y[inside - 1] + y_limit) / 2
  return float(area)


# ------------------------------------------------------------------------------------- image metrics
def roc_curve(scores, labels):
  """Exact ROC curve: (fpr, tpr, thresholds), one point per distinct score plus (0, 0) at +inf.

  Predicts anomalous when score >= threshold. For pixel ROC curves of big test sets use
  `binned_roc_curve`, which needs no sort of every pixel.
  """
  scores, labels = _scores_and_labels(scores, labels, 'roc_curve')
  thresholds, (tps, fps) = _cumulative_by_threshold(scores, labels.astype(np.int64),
                                                    (~labels).astype(np.int64))
  return (np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]],
          np.r_[np.inf, thresholds])


def image_auroc(scores, labels) -> float:
  """Area under the ROC curve of image scores `[num_images]` against labels `[num_images]`."""
  scores, labels = _scores_and_labels(scores, labels, 'image_auroc')
  return _rank_metrics(scores.copy(), scores[labels], names=('auroc',))['auroc']


def f1_max(scores, labels) -> tuple[float, float]:
  """Best F1 over all thresholds and the threshold reaching it (anomalous when score >= threshold).

  When several thresholds reach the same best F1 the highest one is returned.
  """
  scores, labels = _scores_and_labels(scores, labels, 'f1_max', need_normal=False)
  thresholds, (tps, fps) = _cumulative_by_threshold(scores, labels.astype(np.int64),
                                                    (~labels).astype(np.int64))
  f1 = 2 * tps / (tps + fps + labels.sum())
  best = int(np.argmax(f1))
  return float(f1[best]), float(thresholds[best])


def precision_recall_f1(scores, labels, *, threshold: float) -> tuple[float, float, float]:
  """Precision, recall and F1 when predicting anomalous for score >= threshold.

  Precision is 0.0 when no image is predicted anomalous.
  """
  scores, labels = _scores_and_labels(scores, labels, 'precision_recall_f1', need_normal=False)
  predicted = scores >= threshold
  true_positives = int(np.sum(predicted & labels))
  false_positives = int(np.sum(predicted & ~labels))
  false_negatives = int(np.sum(~predicted & labels))
  precision = true_positives / (true_positives + false_positives) if predicted.any() else 0.0
  recall = true_positives / (true_positives + false_negatives)
  f1 = 2 * true_positives / (2 * true_positives + false_positives + false_negatives)
  return float(precision), float(recall), float(f1)


# ------------------------------------------------------------------------------ exact pixel metrics
def _anomalous_pixels(maps: np.ndarray, masks: np.ndarray, *, with_regions: bool):
  """Anomalous scores [num_anomalous] (C order) [with region index [num_anomalous], region sizes].

  Regions are numbered over the whole test set; block by block, so temporaries stay small.
  """
  values, regions, sizes, num_regions = [], [], [], 0
  for block in _image_blocks(maps.shape[0], maps[0].size):
    is_anomalous = masks[block] > 0
    if not is_anomalous.any():
      continue
    values.append(maps[block][is_anomalous])
    if with_regions:
      labels, count = ndimage.label(is_anomalous, structure=_STACKED_8_CONNECTIVITY)
      regions.append((labels[is_anomalous] - 1 + num_regions).astype(np.int32))
      sizes.append(np.bincount(labels.ravel(), minlength=count + 1)[1:])
      num_regions += count
  anomalous = np.concatenate(values) if values else np.zeros(0, maps.dtype)
  if not with_regions:
    return anomalous, None, None
  return anomalous, np.concatenate(regions or [[]]).astype(np.int32), np.concatenate(sizes or [[]])


def _sort_in_runs(values: np.ndarray) -> list[np.ndarray]:
  """Sorts `values` in place as a few contiguous runs, in parallel threads (numpy releases the GIL)."""
  runs = np.array_split(values, _SORT_THREADS) if values.size >= _BLOCK else [values]
  with ThreadPoolExecutor(len(runs)) as pool:
    list(pool.map(np.ndarray.sort, runs))
  return runs


def _normal_count(runs, anomalous: np.ndarray, queries, side: str):
  """Number of normal scores < (side='left') or <= (side='right') each query: all minus anomalous."""
  return (sum(np.searchsorted(run, queries, side) for run in runs)
          - np.searchsorted(anomalous, queries, side))


def _top_normal_threshold(runs, anomalous: np.ndarray, num_normal: int, count: int):
  """The largest normal score t with at least `count` normal scores >= t (a binary search per run)."""
  def enough(value):
    return num_normal - _normal_count(runs, anomalous, value, 'left') >= count
  candidates = []
  for run in runs:
    low, high = 0, run.size - 1
    while low < high:
      middle = (low + high + 1) // 2
      low, high = (middle, high) if enough(run[middle]) else (low, middle - 1)
    if enough(run[low]):
      candidates.append(run[low])
  return max(candidates)


def _rank_metrics(values: np.ndarray, anomalous: np.ndarray, weights: np.ndarray | None = None,
                  num_regions: int = 0, *, names: tuple[str, ...], fpr_limit: float = 0.3) -> dict:
  """Exact AUROC, AP and AUPRO by ranking the anomalous scores among the normal ones.

  values [n]: every score, normal and anomalous (sorted here, in place). anomalous [num_anomalous]:
  the anomalous scores. For AUPRO, weights [num_anomalous]: 1 / (size of the pixel's region), and
  num_regions. Returns {name: value} for names among 'auroc', 'ap', 'aupro'.
  AUROC counts, per anomalous score, the normal scores below it plus half of those equal to it.
  AP is the mean over anomalous scores of the precision at that score (as scikit-learn's step sum).
  AUPRO: let t be the normal score where the FPR reaches fpr_limit. Each full segment of the curve
  above t (one per distinct normal score s) has width count(s) / num_normal and height
  (PRO(> s) + PRO(>= s)) / 2; summed over normal pixels this is the same as summing, over anomalous
  pixels weighted by 1 / (num_regions * region size), the normal scores in (t, score) plus half of
  those equal to the score. The segment at t is cut at fpr_limit by linear interpolation.
  """
  runs = _sort_in_runs(values)
  order = np.argsort(anomalous, kind='stable')
  anomalous = anomalous[order]
  num_anomalous, num_normal = anomalous.size, values.size - anomalous.size
  if weights is not None:
    weights = weights[order]
    top_size = min(num_normal, max(1, math.ceil(fpr_limit * num_normal)))
    threshold = _top_normal_threshold(runs, anomalous, num_normal, top_size)
    at_most = int(_normal_count(runs, anomalous, threshold, 'right'))
    fpr_a = (num_normal - at_most) / num_normal
    fpr_b = (num_normal - int(_normal_count(runs, anomalous, threshold, 'left'))) / num_normal
    pro_a = float(weights[np.searchsorted(anomalous, threshold, 'right'):].sum()) / num_regions
    pro_b = float(weights[np.searchsorted(anomalous, threshold, 'left'):].sum()) / num_regions
  del order
  twice_wins, precision_sum, twice_overlap = 0, 0.0, 0.0
  for start in range(0, num_anomalous, _BLOCK):
    block = anomalous[start:start + _BLOCK]
    below = _normal_count(runs, anomalous, block, 'left')
    at_most_block = _normal_count(runs, anomalous, block, 'right')
    twice_wins += int(below.sum()) + int(at_most_block.sum())
    true_positives = num_anomalous - np.searchsorted(anomalous, block, 'left')
    precision_sum += float(np.sum(true_positives / (true_positives + num_normal - below)))
    if weights is not None:
      between = np.maximum(below - at_most, 0) + np.maximum(at_most_block - at_most, 0)
      twice_overlap += float(np.dot(weights[start:start + _BLOCK], between))
  results = {'auroc': twice_wins / (2 * num_normal * num_anomalous),
             'ap': precision_sum / num_anomalous}
  if weights is not None:
    width = max(0.0, min(fpr_limit, fpr_b) - fpr_a)
    area = twice_overlap / (2 * num_normal * num_regions)
    area += width * (pro_a + width / (fpr_b - fpr_a) * (pro_b - pro_a) / 2)
    results['aupro'] = area / fpr_limit
  return {name: results[name] for name in names}


def _exact_pixel_metrics(maps, masks, *, names: tuple[str, ...], fpr_limit: float, fn: str) -> dict:
  with_regions = 'aupro' in names
  anomalous, region, sizes = _anomalous_pixels(maps, masks, with_regions=with_regions)
  _check_pixel_counts(maps.size - anomalous.size, anomalous.size, None, fn)
  weights, num_regions = ((1.0 / sizes)[region], sizes.size) if with_regions else (None, 0)
  del region
  values = np.array(maps, copy=True, order='C').reshape(-1)
  return _rank_metrics(values, anomalous, weights, num_regions, names=names, fpr_limit=fpr_limit)


def pixel_metrics(maps, masks, *, fpr_limit: float = 0.3, num_bins: int | None = None) -> dict:
  """{'pixel_auroc', 'pixel_ap', 'pixel_aupro'} of maps/masks `[num_images, height, width]`.

  Cheaper than the three separate calls: the sort (exact) or histogram pass (binned) is shared.
  """
  return _pixel(maps, masks, names=('auroc', 'ap', 'aupro'), fpr_limit=fpr_limit, num_bins=num_bins,
                fn='pixel_metrics')


def _pixel(maps, masks, *, names, fpr_limit, num_bins, fn) -> dict:
  _check_fpr_limit(fpr_limit, fn)
  maps, masks = _maps_and_masks(maps, masks, fn)
  if num_bins is None:
    results = _exact_pixel_metrics(maps, masks, names=names, fpr_limit=fpr_limit, fn=fn)
  else:
    results = _binned(_histograms(maps, masks, num_bins=num_bins), fpr_limit=fpr_limit, fn=fn)
  return {f'pixel_{name}': results[name] for name in names}


def pixel_auroc(maps, masks, *, num_bins: int | None = None) -> float:
  """Pixel-level AUROC of maps `[num_images, height, width]` against masks of the same shape."""
  return _pixel(maps, masks, names=('auroc',), fpr_limit=0.3, num_bins=num_bins,
                fn='pixel_auroc')['pixel_auroc']


def pixel_ap(maps, masks, *, num_bins: int | None = None) -> float:
  """Pixel-level average precision: sum over thresholds of (recall step) * precision, as in
  sklearn.metrics.average_precision_score (no interpolation)."""
  return _pixel(maps, masks, names=('ap',), fpr_limit=0.3, num_bins=num_bins,
                fn='pixel_ap')['pixel_ap']


def aupro(maps, masks, *, fpr_limit: float = 0.3, num_bins: int | None = None) -> float:
  """Normalized area under the per-region-overlap curve up to `fpr_limit` (MVTec AD definition)."""
  return _pixel(maps, masks, names=('aupro',), fpr_limit=fpr_limit, num_bins=num_bins,
                fn='aupro')['pixel_aupro']


def pro_curve(maps, masks):
  """Exact PRO curve: (fpr, pro, thresholds), one point per distinct score plus (0, 0) at +inf.

  This sorts every pixel (about 30 bytes per pixel): for plots of big test sets use `binned_pro_curve`.
  """
  maps, masks = _maps_and_masks(maps, masks, 'pro_curve')
  labels, num_regions = ndimage.label(masks > 0, structure=_STACKED_8_CONNECTIVITY)
  is_normal = (labels == 0).ravel()
  _check_pixel_counts(int(is_normal.sum()), int(is_normal.size - is_normal.sum()), None, 'pro_curve')
  overlap = np.r_[0.0, 1.0 / np.bincount(labels.ravel())[1:]][labels.ravel()]
  thresholds, (false_positives, overlaps) = _cumulative_by_threshold(
      maps.reshape(-1), is_normal.astype(np.int64), overlap)
  return (np.r_[0.0, false_positives / false_positives[-1]], np.r_[0.0, overlaps / num_regions],
          np.r_[np.inf, thresholds])


# ----------------------------------------------------------------------------- binned pixel metrics
class PixelHistograms(NamedTuple):
  """Streaming state of the binned pixel metrics: k equal bins over value_range (clipped at the ends).

  normal, anomalous: int64 [k] pixel counts per bin. region_overlap: float64 [k], per bin the sum over
  regions of (region pixels in the bin) / (region size). num_regions: regions seen so far.
  """
  value_range: tuple[float, float]
  normal: np.ndarray
  anomalous: np.ndarray
  region_overlap: np.ndarray
  num_regions: int


def init_pixel_histograms(*, value_range: tuple[float, float], num_bins: int = 10_000):
  """Empty histograms; scores outside value_range will count in the first or last bin."""
  low, high = float(value_range[0]), float(value_range[1])
  if not (math.isfinite(low) and math.isfinite(high) and low <= high):
    raise InputError(f'init_pixel_histograms: value_range must be finite (low, high) with '
                     f'low <= high, got {value_range}')
  if not isinstance(num_bins, (int, np.integer)) or isinstance(num_bins, bool) or num_bins < 1:
    raise InputError(f'init_pixel_histograms: num_bins must be a positive integer, got {num_bins}')
  return PixelHistograms((low, high), np.zeros(num_bins, np.int64), np.zeros(num_bins, np.int64),
                         np.zeros(num_bins), 0)


def update_pixel_histograms(histograms: PixelHistograms, maps, masks) -> PixelHistograms:
  """Returns histograms plus the pixels of maps/masks `[batch, height, width]` (whole images only:
  regions are found per image)."""
  maps, masks = _maps_and_masks(maps, masks, 'update_pixel_histograms')
  return _accumulate(histograms, maps, masks)


def _accumulate(histograms: PixelHistograms, maps: np.ndarray, masks: np.ndarray) -> PixelHistograms:
  num_bins = histograms.normal.size
  low, high = histograms.value_range
  scale = num_bins / (high - low) if high > low else 0.0
  normal, anomalous = histograms.normal.copy(), histograms.anomalous.copy()
  region_overlap, num_regions = histograms.region_overlap.copy(), histograms.num_regions
  for block in _image_blocks(maps.shape[0], maps[0].size):
    is_anomalous = masks[block] > 0
    # Clip before the cast so that truncation is floor; arithmetic stays in the maps' dtype.
    bins = np.clip((maps[block] - low) * scale, 0, num_bins - 1).astype(np.intp)
    counts = np.bincount((bins + num_bins * is_anomalous).ravel(), minlength=2 * num_bins)
    normal += counts[:num_bins]
    anomalous += counts[num_bins:]
    if is_anomalous.any():
      labels, count = ndimage.label(is_anomalous, structure=_STACKED_8_CONNECTIVITY)
      inverse_sizes = 1.0 / np.bincount(labels.ravel())
      region_overlap += np.bincount(bins[is_anomalous], weights=inverse_sizes[labels[is_anomalous]],
                                    minlength=num_bins)
      num_regions += count
  return PixelHistograms(histograms.value_range, normal, anomalous, region_overlap, num_regions)


def pixel_histograms(maps, masks, *, num_bins: int = 10_000, value_range=None) -> PixelHistograms:
  """Histograms of all maps/masks at once; value_range defaults to the maps' (min, max)."""
  maps, masks = _maps_and_masks(maps, masks, 'pixel_histograms')
  return _histograms(maps, masks, num_bins=num_bins, value_range=value_range)


def _histograms(maps, masks, *, num_bins, value_range=None) -> PixelHistograms:
  if value_range is None:
    value_range = (float(maps.min()), float(maps.max()))
  histograms = init_pixel_histograms(value_range=value_range, num_bins=num_bins)
  return _accumulate(histograms, maps, masks)


def _descending_cumulative(histograms: PixelHistograms):
  """Counts at or above each bin's lower edge, highest bin first, with those edges."""
  low, high = histograms.value_range
  num_bins = histograms.normal.size
  edges = low + (high - low) * np.arange(num_bins) / num_bins
  cumulative = [np.cumsum(h[::-1]) for h in (histograms.normal, histograms.anomalous,
                                             histograms.region_overlap)]
  return edges[::-1], cumulative


def binned_roc_curve(histograms: PixelHistograms):
  """(fpr, tpr, thresholds) at the bin edges, plus (0, 0) at +inf."""
  thresholds, (false_positives, true_positives, _) = _descending_cumulative(histograms)
  _check_pixel_counts(false_positives[-1], true_positives[-1], None, 'binned_roc_curve')
  return (np.r_[0.0, false_positives / false_positives[-1]],
          np.r_[0.0, true_positives / true_positives[-1]], np.r_[np.inf, thresholds])


def binned_pro_curve(histograms: PixelHistograms):
  """(fpr, pro, thresholds) at the bin edges, plus (0, 0) at +inf."""
  thresholds, (false_positives, true_positives, overlaps) = _descending_cumulative(histograms)
  _check_pixel_counts(false_positives[-1], true_positives[-1], histograms.num_regions,
                      'binned_pro_curve')
  return (np.r_[0.0, false_positives / false_positives[-1]],
          np.r_[0.0, overlaps / histograms.num_regions], np.r_[np.inf, thresholds])


def binned_metrics(histograms: PixelHistograms, *, fpr_limit: float = 0.3) -> dict:
  """{'pixel_auroc', 'pixel_ap', 'pixel_aupro'} from histograms (scores in one bin count as tied)."""
  return {f'pixel_{name}': value
          for name, value in _binned(histograms, fpr_limit=fpr_limit, fn='binned_metrics').items()}


def _binned(histograms: PixelHistograms, *, fpr_limit: float, fn: str) -> dict:
  _check_fpr_limit(fpr_limit, fn)
  _, (false_positives, true_positives, overlaps) = _descending_cumulative(histograms)
  _check_pixel_counts(false_positives[-1], true_positives[-1], histograms.num_regions, fn)
  fpr = np.r_[0.0, false_positives / false_positives[-1]]
  tpr = np.r_[0.0, true_positives / true_positives[-1]]
  pro = np.r_[0.0, overlaps / histograms.num_regions]
  predicted = np.maximum(true_positives + false_positives, 1)
  return {'auroc': _area_to_limit(fpr, tpr, 1.0),
          'ap': float(np.sum(np.diff(tpr) * true_positives / predicted)),
          'aupro': _area_to_limit(fpr, pro, fpr_limit) / fpr_limit}
