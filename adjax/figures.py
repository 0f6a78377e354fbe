"""Figures of an evaluation (PNG, written atomically): example anomaly maps, score histograms, curves.

`write_all` writes under a run's `figures/` directory
  examples.png    test images, ground truth and anomaly-map overlays (best/worst by image score, random)
  histograms.png  good vs defective image scores and pixel scores, with the thresholds
  curves.png      image and pixel ROC and precision-recall curves, the PRO curve (from `adjax.metrics`)
and returns each figure as an array, for TensorBoard.
"""

import io
from pathlib import Path
import textwrap

# Figures are drawn without pyplot (matplotlib.figure.Figure renders with Agg), so importing adjax never
# changes the caller's matplotlib backend (e.g. inline plots in a notebook) and no global figure state is kept.
from matplotlib import figure as mpl_figure
from matplotlib import image as mpl_image
import numpy as np

from adjax import metrics
from adjax.data import transforms

_RNG_SEED = 0
CURVE_BINS = 2048  # Pixel curves: bins of `metrics.pixel_histograms` (plots need no finer resolution).


def _save(figure, path: Path) -> np.ndarray:
  """Writes `figure` to `path` (temp file + rename) and returns it as uint8 `[height, width, 3]`."""
  path.parent.mkdir(parents=True, exist_ok=True)
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=90, bbox_inches='tight')
  temporary = path.with_suffix('.png.tmp')
  temporary.write_bytes(buffer.getvalue())
  temporary.replace(path)
  buffer.seek(0)
  return (mpl_image.imread(buffer)[..., :3] * 255).astype(np.uint8)


def _display(image: np.ndarray) -> np.ndarray:
  """Any value range → [0, 1] for display; single channel squeezed."""
  image = np.asarray(image, np.float32)
  image = (image - image.min()) / max(float(image.max() - image.min()), 1e-12)
  return image[..., 0] if image.shape[-1] == 1 else image


# How the example grid picks its columns, by the primary image score (higher = more anomalous).
EXAMPLE_TAGS = {
    'best defective': 'highest-scoring defective images (most clearly detected)',
    'worst defective': 'lowest-scoring defective images (most clearly missed)',
    'best good': 'lowest-scoring good images (most clearly normal)',
    'worst good': 'highest-scoring good images (strongest false alarms)',
    'random': 'random test images among the rest',
}


def pick_examples(scores: np.ndarray, labels: np.ndarray, *, num_each: int = 2) -> list[tuple[str, int]]:
  """(tag, index) pairs in `EXAMPLE_TAGS` order, `num_each` per tag, no index twice.

  `scores [N]` image scores (higher = more anomalous), `labels [N]` (1 = defective). Ties keep index order.
  """
  order = np.argsort(scores, kind='stable')
  defective = [int(i) for i in order if labels[i] == 1]
  good = [int(i) for i in order if labels[i] == 0]
  picks = [('best defective', i) for i in defective[::-1][:num_each]]
  picks += [('worst defective', i) for i in defective[:num_each]]
  picks += [('best good', i) for i in good[:num_each]]
  picks += [('worst good', i) for i in good[::-1][:num_each]]
  rest = sorted(set(range(len(scores))) - {index for _, index in picks})
  rng = np.random.default_rng(_RNG_SEED)
  picks += [('random', int(i)) for i in rng.permutation(np.array(rest, int))[:num_each]]
  seen, unique = set(), []
  for tag, index in picks:  # A split with few images of a class would pick one image twice.
    if index not in seen:
      seen.add(index)
      unique.append((tag, index))
  return unique


def examples_figure(images, masks, maps, titles, *, path: Path, caption: str = '') -> np.ndarray:
  """Rows: image, ground truth, anomaly map overlay. `images [n, h, w, c]`, `masks/maps [n, h, w]`.

  One colour scale for every overlay (1st-99.5th percentile of the shown maps), so columns compare.
  """
  count = len(images)
  figure = mpl_figure.Figure(figsize=(1.8 * count, 5.6))
  axes = figure.subplots(3, count, squeeze=False)
  if caption:
    figure.suptitle(caption, fontsize=8)
  low, high = np.percentile(np.stack(maps), [1, 99.5])
  for column in range(count):
    axes[0, column].imshow(_display(images[column]), cmap='gray')
    axes[0, column].set_title(titles[column], fontsize=7)
    axes[1, column].imshow(masks[column], cmap='gray', vmin=0, vmax=1)
    axes[2, column].imshow(_display(images[column]), cmap='gray')
    axes[2, column].imshow(maps[column], cmap='jet', alpha=0.5, vmin=low, vmax=high)
    for row in range(3):
      axes[row, column].axis('off')
  for row, name in enumerate(('image', 'ground truth', 'anomaly map')):
    axes[row, 0].text(-0.1, 0.5, name, transform=axes[row, 0].transAxes, rotation=90,
                      va='center', ha='right', fontsize=8)
  return _save(figure, path)


def histograms_figure(scored: dict, *, primary_map: str, primary_score: str, image_threshold,
                      pixel_threshold, has_masks: bool, path: Path) -> np.ndarray:
  """Good vs defective image-score histogram, and good vs defective pixel-score histogram."""
  has_masks = has_masks and bool(scored['has_mask'].any())
  panels = 2 if has_masks else 1
  figure = mpl_figure.Figure(figsize=(5 * panels, 3.4))
  axes = figure.subplots(1, panels, squeeze=False)
  labels, scores = scored['labels'], scored['scores'][primary_score]
  axis = axes[0, 0]
  bins = np.linspace(scores.min(), max(scores.max(), scores.min() + 1e-6), 40)
  for label, name in ((0, 'good'), (1, 'defective')):
    if (labels == label).any():  # A one-class split has no histogram of the other class.
      axis.hist(scores[labels == label], bins=bins, alpha=0.6, label=name, density=True)
  if image_threshold is not None:
    axis.axvline(image_threshold, color='k', linestyle='--', label='image threshold')
  axis.set_title(f'image scores ({primary_score})')
  axis.legend(fontsize=8)
  if has_masks:
    keep = scored['has_mask']
    maps, masks = scored['maps'][primary_map][keep], scored['masks'][keep]
    rng = np.random.default_rng(_RNG_SEED)
    flat_maps, flat_masks = maps.reshape(-1), masks.reshape(-1).astype(bool)
    good = rng.choice(flat_maps[~flat_masks], size=min(200_000, int((~flat_masks).sum())), replace=False)
    bad = flat_maps[flat_masks]
    bad = rng.choice(bad, size=min(200_000, bad.size), replace=False) if bad.size else bad
    axis = axes[0, 1]
    low, high = np.percentile(np.concatenate([good, bad]), [0, 99.9])
    bins = np.linspace(low, max(high, low + 1e-6), 60)
    axis.hist(good, bins=bins, alpha=0.6, label='good pixels', density=True)
    if bad.size:
      axis.hist(bad, bins=bins, alpha=0.6, label='defective pixels', density=True)
    if pixel_threshold is not None:
      axis.axvline(pixel_threshold, color='k', linestyle='--', label='pixel threshold')
    axis.set_title(f'pixel scores ({primary_map})')
    axis.legend(fontsize=8)
  return _save(figure, path)


def _precision_recall(fpr, tpr, *, num_positive: int, num_negative: int):
  """Precision-recall points from ROC points and class counts; drops points where precision is 0/0."""
  true_positives = np.asarray(tpr, np.float64) * num_positive
  predicted = true_positives + np.asarray(fpr, np.float64) * num_negative
  keep = predicted > 0
  return np.asarray(tpr)[keep], true_positives[keep] / predicted[keep]


def _operating_point(curve_x, curve_y, thresholds, threshold):
  """The curve point of predicting anomalous for score >= threshold (thresholds descending, inf first)."""
  index = int(np.sum(thresholds >= threshold)) - 1
  return curve_x[index], curve_y[index]


def _format(value) -> str:
  return 'n/a' if value is None else f'{value:.3f}'


def curves_figure(scored: dict, results: dict, *, primary_map: str, primary_score: str, image_threshold,
                  pixel_threshold, has_masks: bool, fpr_limit: float, path: Path) -> np.ndarray | None:
  """ROC and PR curves (image and pixel) and the PRO curve; None when no curve is defined.

  Curves come from `adjax.metrics` (`roc_curve` for image scores; `pixel_histograms` with
  `binned_roc_curve` / `binned_pro_curve` for pixels, `CURVE_BINS` bins, so big test sets need no sort of
  every pixel). Areas in the legends are the exact metrics of `results`. Dots mark the thresholds.
  """
  labels, scores = scored['labels'], scored['scores'][primary_score]
  image_curve = metrics.roc_curve(scores, labels) if 0 < labels.sum() < labels.size else None
  pixel = None
  if has_masks:
    keep = scored['has_mask']
    masks = scored['masks'][keep]
    if masks.any() and not masks.all():
      pixel = metrics.pixel_histograms(scored['maps'][primary_map][keep], masks, num_bins=CURVE_BINS)
  if image_curve is None and pixel is None:
    return None
  panels = 3 if pixel is not None else 2
  figure = mpl_figure.Figure(figsize=(4.2 * panels, 3.8))
  axes = figure.subplots(1, panels, squeeze=False)
  roc_axis, pr_axis = axes[0, 0], axes[0, 1]
  for axis in axes[0]:
    axis.set_xlim(-0.02, 1.02)
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
  roc_axis.plot([0, 1], [0, 1], color='0.7', linestyle=':', linewidth=1)
  if image_curve is not None:
    fpr, tpr, thresholds = image_curve
    line, = roc_axis.plot(fpr, tpr,
                          label=f'image ({primary_score}), AUROC {_format(results.get("image_auroc"))}')
    counts = dict(num_positive=int(labels.sum()), num_negative=int(labels.size - labels.sum()))
    pr_axis.plot(*_precision_recall(fpr, tpr, **counts), color=line.get_color(),
                 label=f'image, F1-max {_format(results.get("image_f1_max"))}')
    if image_threshold is not None:
      point = _operating_point(fpr, tpr, thresholds, image_threshold)
      roc_axis.plot(*point, 'o', color=line.get_color())
      pr_axis.plot(*_precision_recall(*point, **counts), 'o', color=line.get_color())
  if pixel is not None:
    fpr, tpr, thresholds = metrics.binned_roc_curve(pixel)
    line, = roc_axis.plot(fpr, tpr,
                          label=f'pixel ({primary_map}), AUROC {_format(results.get("pixel_auroc"))}')
    counts = dict(num_positive=int(pixel.anomalous.sum()), num_negative=int(pixel.normal.sum()))
    pr_axis.plot(*_precision_recall(fpr, tpr, **counts), color=line.get_color(),
                 label=f'pixel, AP {_format(results.get("pixel_ap"))}')
    pro_fpr, pro, pro_thresholds = metrics.binned_pro_curve(pixel)
    pro_axis = axes[0, 2]
    pro_axis.plot(pro_fpr, pro, color=line.get_color(),
                  label=f'PRO, AUPRO@{fpr_limit:g} {_format(results.get("pixel_aupro"))}')
    pro_axis.axvspan(0, fpr_limit, color='0.9', zorder=0, label=f'integrated (FPR <= {fpr_limit:g})')
    if pixel_threshold is not None:
      point = _operating_point(fpr, tpr, thresholds, pixel_threshold)
      roc_axis.plot(*point, 's', color=line.get_color())
      pr_axis.plot(*_precision_recall(*point, **counts), 's', color=line.get_color())
      pro_axis.plot(*_operating_point(pro_fpr, pro, pro_thresholds, pixel_threshold), 's',
                    color=line.get_color())
    pro_axis.set(title='per-region overlap', xlabel='false positive rate (pixels)', ylabel='PRO')
    pro_axis.legend(fontsize=7, loc='lower right')
  roc_axis.set(title='ROC', xlabel='false positive rate', ylabel='true positive rate')
  pr_axis.set(title='precision-recall', xlabel='recall', ylabel='precision')
  roc_axis.legend(fontsize=7, loc='lower right')
  pr_axis.legend(fontsize=7, loc='lower left')
  figure.tight_layout()
  return _save(figure, path)


def write_all(scored: dict, source, *, figure_dir: Path, preprocess: str, primary_map: str,
              primary_score: str, image_threshold, pixel_threshold, has_masks: bool,
              results: dict | None = None, fpr_limit: float = 0.3) -> dict:
  """Writes `examples.png`, `histograms.png` and `curves.png` under `figure_dir`.

  `results` is `evaluate.compute_metrics`' dict (the legends' areas). Returns the written figures as
  uint8 `[height, width, 3]` arrays by name (no `curves` when neither image nor pixel curves are defined).
  """
  picks = pick_examples(scored['scores'][primary_score], scored['labels'])
  process = transforms.parse(preprocess)
  images = [process(dict(source[i]), np.random.default_rng(0))['image'] for _, i in picks]
  titles = [f'{tag}\n{scored["defect_types"][i]} {scored["scores"][primary_score][i]:.3g}'
            for tag, i in picks]
  caption = f'columns by image score ({primary_score}): ' + '; '.join(
      f'{tag} = {meaning}' for tag, meaning in EXAMPLE_TAGS.items() if tag in {t for t, _ in picks})
  written = {
      'examples': examples_figure(images, [scored['masks'][i] for _, i in picks],
                                  [scored['maps'][primary_map][i] for _, i in picks], titles,
                                  path=figure_dir / 'examples.png', caption=_wrap(caption, len(picks))),
      'histograms': histograms_figure(scored, primary_map=primary_map, primary_score=primary_score,
                                      image_threshold=image_threshold, pixel_threshold=pixel_threshold,
                                      has_masks=has_masks, path=figure_dir / 'histograms.png'),
  }
  curves = curves_figure(scored, results or {}, primary_map=primary_map, primary_score=primary_score,
                         image_threshold=image_threshold, pixel_threshold=pixel_threshold,
                         has_masks=has_masks, fpr_limit=fpr_limit, path=figure_dir / 'curves.png')
  if curves is not None:
    written['curves'] = curves
  return written


def _wrap(text: str, num_columns: int) -> str:
  return textwrap.fill(text, width=max(60, 24 * num_columns))


def table_figure(header, rows, *, path: Path, title: str = '') -> np.ndarray:
  """A table of strings as a PNG (e.g. a sweep's results); returns it as uint8 `[height, width, 3]`."""
  rows = [[str(cell) for cell in row] for row in rows]
  figure = mpl_figure.Figure(figsize=(max(4.0, 1.25 * len(header)), 0.6 + 0.3 * (len(rows) + 1)))
  axes = figure.add_subplot()
  axes.axis('off')
  table = axes.table(cellText=rows or [[''] * len(header)], colLabels=list(header), loc='center',
                     cellLoc='center')
  table.auto_set_font_size(False)
  table.set_fontsize(8)
  table.auto_set_column_width(list(range(len(header))))
  table.scale(1.0, 1.4)
  for (row, _), cell in table.get_celld().items():
    if row == 0:
      cell.set_text_props(weight='bold')
  if title:
    axes.set_title(title, fontsize=9)
  return _save(figure, Path(path))
