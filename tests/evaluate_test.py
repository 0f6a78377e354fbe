"""Metrics assembly from scored test splits: references, primary choices, null when undefined."""

import jax
import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from adjax import evaluate


def scored_split(*, num_images=12, size=8, seed=0, labels=None):
  rng = np.random.default_rng(seed)
  labels = np.array([0, 1] * (num_images // 2)) if labels is None else np.asarray(labels)
  masks = np.zeros((len(labels), size, size), np.uint8)
  for index in np.flatnonzero(labels):
    row, column = rng.integers(0, size - 3, 2)
    masks[index, row:row + 3, column:column + 3] = 1
  signal = masks + 0.8 * rng.standard_normal(masks.shape)
  return {
      'maps': {'good_map': signal.astype(np.float32),
               'noise_map': rng.standard_normal(masks.shape).astype(np.float32)},
      'scores': {'max': signal.max(axis=(1, 2)), 'noise': rng.standard_normal(len(labels))},
      'labels': labels, 'masks': masks, 'has_mask': np.ones(len(labels), bool),
      'defect_types': ['good' if label == 0 else 'blob' for label in labels],
  }


def test_metrics_match_sklearn_and_primary_choices():
  scored = scored_split()
  results = evaluate.compute_metrics(scored, primary_map='good_map', primary_score='max',
                                     has_masks=True, image_threshold=None)
  assert results['image_auroc'] == pytest.approx(
      sk_metrics.roc_auc_score(scored['labels'], scored['scores']['max']))
  assert results['image_auroc_by_score']['noise'] == pytest.approx(
      sk_metrics.roc_auc_score(scored['labels'], scored['scores']['noise']))
  flat_masks = scored['masks'].reshape(-1)
  assert results['pixel_auroc'] == pytest.approx(
      sk_metrics.roc_auc_score(flat_masks, scored['maps']['good_map'].reshape(-1)))
  assert results['pixel_ap'] == pytest.approx(
      sk_metrics.average_precision_score(flat_masks, scored['maps']['good_map'].reshape(-1)))
  assert results['pixel_metrics_by_map']['noise_map']['pixel_auroc'] != results['pixel_auroc']
  assert results['threshold_source'] == 'test_f1_max'
  predictions = scored['scores']['max'] >= results['threshold']
  assert results['image_f1_max'] == pytest.approx(sk_metrics.f1_score(scored['labels'], predictions))


def test_training_threshold_reports_precision_recall():
  scored = scored_split()
  threshold = float(np.median(scored['scores']['max']))
  results = evaluate.compute_metrics(scored, primary_map='good_map', primary_score='max',
                                     has_masks=True, image_threshold=threshold)
  predictions = scored['scores']['max'] >= threshold
  assert results['threshold'] == threshold and results['threshold_source'] == 'training_statistics'
  assert results['image_precision'] == pytest.approx(
      sk_metrics.precision_score(scored['labels'], predictions))
  assert results['image_recall'] == pytest.approx(sk_metrics.recall_score(scored['labels'], predictions))


def test_without_masks_or_with_one_class_metrics_are_null():
  scored = scored_split()
  results = evaluate.compute_metrics(scored, primary_map='good_map', primary_score='max',
                                     has_masks=False, image_threshold=None)
  assert results['pixel_auroc'] is None and results['pixel_ap'] is None and results['pixel_aupro'] is None
  assert results['image_auroc'] is not None
  normal_only = scored_split(labels=[0] * 6)
  results = evaluate.compute_metrics(normal_only, primary_map='good_map', primary_score='max',
                                     has_masks=True, image_threshold=1.0)
  assert results['image_auroc'] is None and results['image_f1_max'] is None
  assert results['pixel_auroc'] is None and results['threshold'] == 1.0


def test_per_category_thresholds_and_metrics_match_sklearn():
  scored = scored_split(num_images=24, seed=3)
  scored['category_index'] = np.repeat(np.array([0, 1, 2], np.int32), 8)
  thresholds = [float(np.median(scored['scores']['max'][scored['category_index'] == k])) + 0.1 * k
                for k in range(3)]
  results = evaluate.compute_metrics(scored, primary_map='good_map', primary_score='max', has_masks=True,
                                     image_threshold=None, image_thresholds_by_category=thresholds,
                                     categories=['a', 'b', 'c'])
  labels, raw = scored['labels'], scored['scores']['max']
  predictions = raw >= np.asarray(thresholds, np.float32)[scored['category_index']]
  assert results['threshold_source'] == 'training_statistics' and results['thresholds_by_category'] == thresholds
  assert results['image_auroc'] == pytest.approx(sk_metrics.roc_auc_score(labels, raw))  # Raw score.
  assert results['image_f1'] == pytest.approx(sk_metrics.f1_score(labels, predictions))
  assert results['image_precision'] == pytest.approx(sk_metrics.precision_score(labels, predictions))
  for index, name in enumerate('abc'):
    keep = scored['category_index'] == index
    entry = results['by_category'][name]
    assert entry['num_test_images'] == 8
    assert entry['image_auroc'] == pytest.approx(sk_metrics.roc_auc_score(labels[keep], raw[keep]))
    assert entry['image_recall'] == pytest.approx(sk_metrics.recall_score(labels[keep], predictions[keep]))
    assert entry['image_f1'] == pytest.approx(sk_metrics.f1_score(labels[keep], predictions[keep]))
    assert entry['anomalous_accuracy'] == pytest.approx(entry['image_recall'])
    assert entry['normal_accuracy'] == pytest.approx(np.mean(~predictions[keep][labels[keep] == 0]))
    masks = scored['masks'][keep].reshape(-1)
    assert entry['pixel_auroc'] == pytest.approx(
        sk_metrics.roc_auc_score(masks, scored['maps']['good_map'][keep].reshape(-1)))
  assert results['image_f1_category_mean'] == pytest.approx(
      np.mean([results['by_category'][n]['image_f1'] for n in 'abc']))


def test_one_category_has_no_breakdown_and_a_normal_only_category_gets_nulls():
  scored = scored_split(num_images=12)
  scored['category_index'] = np.zeros(12, np.int32)
  results = evaluate.compute_metrics(scored, primary_map='good_map', primary_score='max', has_masks=True,
                                     image_threshold=0.5, categories=['only'])
  assert 'by_category' not in results
  scored = scored_split(labels=[0, 1, 0, 1, 0, 0])
  scored['category_index'] = np.array([0, 0, 0, 0, 1, 1], np.int32)
  results = evaluate.compute_metrics(scored, primary_map='good_map', primary_score='max', has_masks=True,
                                     image_threshold=0.5, categories=['mixed', 'normal_only'])
  assert results['by_category']['normal_only']['image_auroc'] is None
  assert results['by_category']['normal_only']['image_f1'] is None
  assert results['by_category']['mixed']['image_f1'] is not None
  assert results['image_f1_category_mean'] is None  # A mean over fewer categories would mislead.
