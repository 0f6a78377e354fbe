"""Per-run figures: which examples are shown, curve points vs references, files and TensorBoard images."""

import jax.numpy as jnp
import matplotlib.pyplot as plt
import ml_collections
import numpy as np
import optax
import pytest

from adjax import evaluate
from adjax import figures
from adjax import metrics
from adjax import summaries
from adjax.methods import Method

SIZE = 8


def test_pick_examples_are_the_extremes_by_score():
  rng = np.random.default_rng(0)
  scores = rng.permutation(40).astype(np.float32) / 7  # Distinct scores.
  labels = (rng.uniform(size=40) < 0.4).astype(np.int32)
  picks = figures.pick_examples(scores, labels, num_each=3)
  by_tag = {}
  for tag, index in picks:
    by_tag.setdefault(tag, []).append(index)
  defective = sorted(np.flatnonzero(labels == 1), key=lambda i: scores[i])
  good = sorted(np.flatnonzero(labels == 0), key=lambda i: scores[i])
  assert by_tag['best defective'] == defective[-3:][::-1]
  assert by_tag['worst defective'] == defective[:3]
  assert by_tag['best good'] == good[:3]
  assert by_tag['worst good'] == good[-3:][::-1]
  assert len(by_tag['random']) == 3
  assert not set(by_tag['random']) & set(defective[-3:] + defective[:3] + good[:3] + good[-3:])
  assert list(by_tag) == list(figures.EXAMPLE_TAGS)
  assert picks == figures.pick_examples(scores, labels, num_each=3)  # Deterministic.


def test_pick_examples_never_repeats_an_image():
  picks = figures.pick_examples(np.array([3.0, 1.0, 2.0]), np.array([1, 0, 0]), num_each=1)
  # The lone defective image is best and worst: shown once, under its first tag; no image is left to draw.
  assert picks == [('best defective', 0), ('best good', 1), ('worst good', 2)]


def test_curve_points_match_references():
  rng = np.random.default_rng(1)
  labels = np.array([0, 1] * 15)
  scores = np.round(labels + rng.normal(size=30), 1)  # Rounding makes ties.
  fpr, tpr, thresholds = metrics.roc_curve(scores, labels)
  for threshold in np.unique(scores)[::4]:
    point = figures._operating_point(fpr, tpr, thresholds, threshold)  # pylint: disable=protected-access
    predicted = scores >= threshold
    assert point == pytest.approx((predicted[labels == 0].mean(), predicted[labels == 1].mean()))
    recall, precision = figures._precision_recall(  # pylint: disable=protected-access
        *point, num_positive=15, num_negative=15)
    expected_precision, expected_recall, _ = metrics.precision_recall_f1(scores, labels, threshold=threshold)
    assert (float(recall[0]), float(precision[0])) == pytest.approx((expected_recall, expected_precision))
  recall, precision = figures._precision_recall(  # pylint: disable=protected-access
      fpr, tpr, num_positive=15, num_negative=15)
  assert recall.size == fpr.size - 1  # Only the (0, 0) point at +inf has no precision.
  # Average precision as the step sum over this curve equals the metric of adjax.metrics' exact pixel AP.
  step_sum = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
  assert step_sum == pytest.approx(metrics.pixel_ap(scores[:, None, None], labels[:, None, None]))


def _source(num_images=12, seed=0):
  """Test split in `adjax.data.features` form: bright 3x3 defects on noise, labels 0/1 alternating."""
  rng = np.random.default_rng(seed)
  examples = []
  for index in range(num_images):
    label = index % 2
    mask = np.zeros((SIZE, SIZE, 1), np.uint8)
    if label:
      row, column = rng.integers(0, SIZE - 3, 2)
      mask[row:row + 3, column:column + 3] = 255
    # Per-image brightness ranges, so the maxima (the image scores) differ from image to image.
    image = (rng.uniform(size=(SIZE, SIZE, 1)) * (60 + 5 * index) + 0.4 * mask).astype(np.uint8)
    examples.append({'image': np.repeat(image, 3, -1), 'mask': mask, 'label': label, 'has_mask': True,
                     'defect_type': b'blob' if label else b'good', 'category': b'noise',
                     'filename': f'{index}.png'.encode()})
  return examples


def _brightness_method(pixel_threshold):
  """Anomaly map = brightness; image score = its maximum; fixed thresholds."""

  def score(variables, statistics, images):
    del variables, statistics
    maps = images[..., 0]
    return {'brightness': maps}, {'max': jnp.max(maps, axis=(1, 2))}

  return Method(name='brightness', init=None, loss_fn=None, fit=None, score=score,
                optimizer=optax.identity(),
                thresholds=lambda statistics: {'image': 0.8, 'pixel': pixel_threshold})


def _config():
  config = ml_collections.ConfigDict()
  config.eval = ml_collections.ConfigDict(dict(batch_size=4, map='brightness', score='max',
                                               fpr_limit=0.3, num_bins=0))
  return config


def test_evaluate_writes_figures_and_tensorboard_images(tmp_path, monkeypatch):
  shown = {}
  draw_examples = figures.examples_figure

  def spy(images, masks, maps, titles, **kwargs):
    shown.update(maps=maps, titles=titles)
    return draw_examples(images, masks, maps, titles, **kwargs)

  monkeypatch.setattr(figures, 'examples_figure', spy)
  writer = summaries.create_writer(tmp_path / 'events')
  source = _source()
  results = evaluate.evaluate(_brightness_method(0.7), {}, {}, source, config=_config(),
                              preprocess='value_range(0, 1)', has_masks=True,
                              figure_dir=tmp_path / 'figures', writer=writer)
  writer.flush()

  # The first column is the brightest defective image, shown with its own map.
  images = np.stack([e['image'][..., 0] for e in source]).astype(np.float32) / 255
  labels = np.array([e['label'] for e in source])
  assert len(set(images.max(axis=(1, 2)))) == len(source)  # No ties: the picks are well defined.
  brightest_defective = max(np.flatnonzero(labels == 1), key=lambda i: images[i].max())
  assert shown['titles'][0].startswith('best defective')
  np.testing.assert_allclose(shown['maps'][0], images[brightest_defective], atol=1e-6)
  darkest_good = min(np.flatnonzero(labels == 0), key=lambda i: images[i].max())
  best_good_column = [t.startswith('best good') for t in shown['titles']].index(True)
  np.testing.assert_allclose(shown['maps'][best_good_column], images[darkest_good], atol=1e-6)
  assert results['image_auroc'] is not None

  names = ('examples', 'histograms', 'curves')
  figure_dir = tmp_path / 'figures'
  assert sorted(p.name for p in figure_dir.iterdir()) == sorted(f'{n}.png' for n in names)  # No temp files.
  on_disk = {n: (plt.imread(figure_dir / f'{n}.png')[..., :3] * 255).astype(np.uint8) for n in names}

  logged = {}
  for event in summaries.read_events(tmp_path / 'events'):
    for value in event.summary.value:
      if value.tag.startswith('figures/'):
        logged[value.tag] = (event.step, summaries.decode_image(value))
  assert sorted(logged) == sorted(f'figures/{n}' for n in names)
  for name in names:
    step, image = logged[f'figures/{name}']
    assert step == 0
    np.testing.assert_array_equal(image, on_disk[name])  # TensorBoard shows exactly the PNG files.
    assert image.shape[0] > 100 and image.shape[1] > 300 and image.std() > 10  # Not blank.


def test_curves_are_skipped_when_undefined(tmp_path):
  good_only = [e for e in _source() if e['label'] == 0]
  writer = summaries.create_writer(tmp_path / 'events')
  results = evaluate.evaluate(_brightness_method(None), {}, {}, good_only, config=_config(),
                              preprocess='value_range(0, 1)', has_masks=True,
                              figure_dir=tmp_path / 'figures', writer=writer)
  assert results['image_auroc'] is None and results['pixel_auroc'] is None
  assert sorted(p.name for p in (tmp_path / 'figures').iterdir()) == ['examples.png', 'histograms.png']
