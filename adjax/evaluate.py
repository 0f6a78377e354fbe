"""Scores a trained method on a test split and turns the scores into metrics and figures.

Everything here works on the method contract only: `score` gives anomaly maps `[batch, height, width]` and
image scores `[batch]` (higher = more anomalous). Metrics that need masks are None when the dataset has none.
"""

import time
from pathlib import Path

from absl import logging
import jax
import numpy as np

from adjax import figures
from adjax import metrics
from adjax import methods
from adjax import processes
from adjax.data import pipeline


def score_split(method: methods.Method, variables, statistics, source, *, preprocess: str,
                batch_size: int, devices=None) -> dict:
  """Runs `method.score` over every example of `source`, pmapped over `devices`.

  Returns host arrays: `maps` name -> `[N, H, W]` float32, `scores` name -> `[N]`, `labels [N]`,
  `masks [N, H, W]` uint8 in {0, 1}, `has_mask [N]`, `category_index [N]` (0 for a single category),
  `defect_types` list of str.
  """
  devices = list(devices or jax.local_devices())
  batch_size = max(len(devices), batch_size - batch_size % len(devices))
  sharding = pipeline.device_sharding(devices)
  score = jax.pmap(method.score, in_axes=(None, None, 0), devices=devices)
  # Several processes: each scores every process_count-th image, then all gather the whole split.
  shard = processes.shard() if len(source) >= jax.process_count() else (0, 1)
  maps, scores, labels, masks, has_mask, category_index, defect_types = {}, {}, [], [], [], [], []
  for batch in pipeline.eval_batches(source, preprocess=preprocess, batch_size=batch_size,
                                     keep_text=True, shard=shard):
    valid = batch['valid']
    batch_maps, batch_scores = jax.device_get(score(variables, statistics,
                                                     pipeline.shard(batch, sharding)['image']))
    for name, value in batch_maps.items():
      maps.setdefault(name, []).append(np.asarray(value, np.float32).reshape((-1,) + value.shape[2:])[valid])
    for name, value in batch_scores.items():
      scores.setdefault(name, []).append(np.asarray(value, np.float32).reshape(-1)[valid])
    labels.append(batch['label'][valid])
    masks.append((batch['mask'][valid] > 0.5).astype(np.uint8))
    has_mask.append(batch['has_mask'][valid])
    category_index.append(batch['category_index'][valid])
    defect_types.extend(batch['defect_type'])
  scored = {'maps': {k: np.concatenate(v) for k, v in maps.items()},
             'scores': {k: np.concatenate(v) for k, v in scores.items()},
             'labels': np.concatenate(labels).astype(np.int32), 'masks': np.concatenate(masks),
             'has_mask': np.concatenate(has_mask).astype(bool),
             'category_index': np.concatenate(category_index).astype(np.int32), 'defect_types': defect_types}
  if shard[1] > 1:
    logging.info('Process %d scored %d of %d test images', shard[0], len(defect_types), len(source))
    scored = processes.gather_rows(scored)
  return scored


def compute_metrics(scored: dict, *, primary_map: str, primary_score: str, has_masks: bool,
                    image_threshold: float | None, fpr_limit: float = 0.3,
                    num_bins: int | None = None, image_thresholds_by_category=None,
                    categories=None) -> dict:
  """Image metrics for every score, pixel metrics for every map, and the primary ones at top level.

  `image_thresholds_by_category` ([num_categories], from training data) decides image i by
  `score >= T[category_index[i]]` (seed 003's per-category thresholds) instead of one `image_threshold`.
  With several `categories` (names by `category_index`), `by_category` holds per-category metrics
  (see `category_metrics`) and `image_{precision,recall,f1}_category_mean` their means (seed 003 Table 3).
  """
  labels = scored['labels']
  results = {'num_test_images': int(labels.size), 'num_anomalous_test_images': int(labels.sum())}
  both_classes = 0 < labels.sum() < labels.size
  if not both_classes:
    logging.warning('Image AUROC and F1 are null: the test split holds only one class of images.')
  results['image_auroc_by_score'] = {
      name: metrics.image_auroc(value, labels) if both_classes else None
      for name, value in scored['scores'].items()}
  primary_scores = scored['scores'][primary_score]
  f1, f1_threshold = metrics.f1_max(primary_scores, labels) if both_classes else (None, None)
  results.update(image_auroc=results['image_auroc_by_score'][primary_score], image_f1_max=f1)
  decision_scores, image_threshold = decision_margin(
      scored, primary_score=primary_score, image_threshold=image_threshold,
      image_thresholds_by_category=image_thresholds_by_category)
  if image_threshold is None:
    results.update(threshold=f1_threshold, threshold_source='test_f1_max' if both_classes else None)
  elif both_classes:
    precision, recall, f1_at = metrics.precision_recall_f1(decision_scores, labels,
                                                           threshold=image_threshold)
    results.update(threshold=image_threshold, threshold_source='training_statistics',
                   image_precision=precision, image_recall=recall, image_f1=f1_at)
  else:
    results.update(threshold=image_threshold, threshold_source='training_statistics')
  results['pixel_metrics_by_map'] = {}
  pixel = {'pixel_auroc': None, 'pixel_ap': None, 'pixel_aupro': None}
  if has_masks:
    keep = scored['has_mask']
    masks = scored['masks'][keep]
    if masks.any() and not masks.all():
      for name, maps in scored['maps'].items():
        results['pixel_metrics_by_map'][name] = metrics.pixel_metrics(
            maps[keep], masks, fpr_limit=fpr_limit, num_bins=num_bins)
      pixel = results['pixel_metrics_by_map'][primary_map]
    else:
      logging.warning('Pixel metrics are null: the test masks hold only one class of pixels.')
  results.update(pixel)
  results.update(primary_map=primary_map, primary_score=primary_score)
  if image_thresholds_by_category is not None:
    results.update(threshold=None, thresholds_by_category=[float(t) for t in image_thresholds_by_category])
  if categories is not None and len(categories) > 1:
    results['by_category'] = category_metrics(
        scored, decision_scores, categories=categories, primary_map=primary_map,
        primary_score=primary_score, has_masks=has_masks, decision_threshold=image_threshold,
        fpr_limit=fpr_limit, num_bins=num_bins)
    for name in ('precision', 'recall', 'f1'):
      values = [m[f'image_{name}'] for m in results['by_category'].values()]
      results[f'image_{name}_category_mean'] = (
          float(np.mean(values)) if values and None not in values else None)
  return results


def decision_margin(scored: dict, *, primary_score: str, image_threshold: float | None,
                    image_thresholds_by_category=None) -> tuple[np.ndarray, float | None]:
  """(decision scores [N], threshold): image i is anomalous when `decision_scores[i] >= threshold`.

  With per-category thresholds the decision scores are `score - T[category_index]` and the threshold 0.
  """
  scores = scored['scores'][primary_score]
  if image_thresholds_by_category is None:
    return scores, image_threshold
  thresholds = np.asarray(image_thresholds_by_category, np.float32)
  return scores - thresholds[scored['category_index']], 0.0


def write_image_scores(path: Path, scored: dict, *, primary_score: str, image_threshold: float | None,
                       image_thresholds_by_category=None, categories=None):
  """Saves the per-image results of a test split as `.npz` (atomically), for ensembles and re-analysis.

  Arrays: `score_<name> [N]` for every image score, `labels [N]`, `category_index [N]`, `defect_types [N]`
  (str), `categories` (str), and when the method has a training threshold `anomalous [N]` (bool, the
  method's own decisions, by `decision_margin`).
  """
  arrays = {f'score_{name}': value for name, value in scored['scores'].items()}
  arrays.update(labels=scored['labels'], category_index=scored['category_index'],
                defect_types=np.asarray(scored['defect_types'], dtype=str),
                categories=np.asarray(list(categories or []), dtype=str))
  margin, threshold = decision_margin(scored, primary_score=primary_score, image_threshold=image_threshold,
                                      image_thresholds_by_category=image_thresholds_by_category)
  if threshold is not None:
    arrays['anomalous'] = margin >= threshold
  path = Path(path)
  temporary = path.with_name(path.name + '.tmp.npz')
  np.savez(temporary, **arrays)
  temporary.replace(path)


def category_metrics(scored: dict, decision_scores, *, categories, primary_map: str, primary_score: str,
                     has_masks: bool, decision_threshold: float | None, fpr_limit: float = 0.3,
                     num_bins: int | None = None) -> dict:
  """Per category (by `scored['category_index']`): image AUROC of the primary score; at
  `decision_threshold` (anomalous when `decision_scores [N] >=` it) precision / recall / F1 and the fractions
  of normal and anomalous images classified correctly (seed 003 Table 4); pixel AUROC / AUPRO of the
  primary map. None where a category lacks a class or there is no threshold."""
  by_category = {}
  for index, name in enumerate(categories):
    keep = scored['category_index'] == index
    labels, scores = scored['labels'][keep], scored['scores'][primary_score][keep]
    decisions = np.asarray(decision_scores)[keep]
    both_classes = 0 < labels.sum() < labels.size
    entry = {'num_test_images': int(keep.sum()), 'num_anomalous_test_images': int(labels.sum()),
             'image_auroc': metrics.image_auroc(scores, labels) if both_classes else None,
             'image_precision': None, 'image_recall': None, 'image_f1': None,
             'normal_accuracy': None, 'anomalous_accuracy': None}
    if decision_threshold is not None and both_classes:
      precision, recall, f1 = metrics.precision_recall_f1(decisions, labels, threshold=decision_threshold)
      predicted = decisions >= decision_threshold
      entry.update(image_precision=precision, image_recall=recall, image_f1=f1,
                   normal_accuracy=float(np.mean(~predicted[labels == 0])),
                   anomalous_accuracy=float(np.mean(predicted[labels == 1])))
    entry.update(pixel_auroc=None, pixel_aupro=None)
    if has_masks:
      pixel_keep = keep & scored['has_mask']
      masks = scored['masks'][pixel_keep]
      if masks.any() and not masks.all():
        pixel = metrics.pixel_metrics(scored['maps'][primary_map][pixel_keep], masks, fpr_limit=fpr_limit,
                                      num_bins=num_bins)
        entry.update(pixel_auroc=pixel['pixel_auroc'], pixel_aupro=pixel['pixel_aupro'])
    by_category[name] = entry
  return by_category


def no_test_split_metrics() -> dict:
  """The metrics of `results.json` for a train-only dataset: all null, none omitted."""
  return {'num_test_images': 0, 'num_anomalous_test_images': 0, 'image_auroc': None,
          'image_f1_max': None, 'threshold': None, 'threshold_source': None, 'pixel_auroc': None,
          'pixel_ap': None, 'pixel_aupro': None, 'image_auroc_by_score': {},
          'pixel_metrics_by_map': {}}


def evaluate(method: methods.Method, variables, statistics, source, *, config, preprocess: str,
             has_masks: bool, categories=None, devices=None, figure_dir: Path | None = None,
             scores_path: Path | None = None, writer=None) -> dict:
  """Scores the test split, computes metrics, optionally writes figures and the per-image scores
  (`write_image_scores` to `scores_path`); returns the metrics dict."""
  start = time.perf_counter()
  scored = score_split(method, variables, statistics, source, preprocess=preprocess,
                       batch_size=config.eval.batch_size, devices=devices)
  logging.info('Scored %d test images in %.1f s', scored['labels'].size, time.perf_counter() - start)
  thresholds = method.thresholds(statistics)
  results = compute_metrics(
      scored, primary_map=config.eval.map, primary_score=config.eval.score, has_masks=has_masks,
      image_threshold=thresholds.get('image'), fpr_limit=config.eval.get('fpr_limit', 0.3),
      num_bins=config.eval.get('num_bins') or None,
      image_thresholds_by_category=thresholds.get('image_by_category'), categories=categories)
  if scores_path is not None and jax.process_index() == 0:
    write_image_scores(scores_path, scored, primary_score=config.eval.score,
                       image_threshold=thresholds.get('image'),
                       image_thresholds_by_category=thresholds.get('image_by_category'), categories=categories)
  if figure_dir is not None and jax.process_index() == 0:
    images = figures.write_all(scored, source, figure_dir=Path(figure_dir),
                               preprocess=preprocess, primary_map=config.eval.map,
                               primary_score=config.eval.score, image_threshold=results['threshold'],
                               pixel_threshold=thresholds.get('pixel'), has_masks=has_masks,
                               results=results, fpr_limit=config.eval.get('fpr_limit', 0.3))
    if writer is not None:  # TensorBoard images tab: figures/examples, figures/histograms, figures/curves.
      writer.write_images(0, {f'figures/{name}': image[None] for name, image in images.items()})
  return results
