"""Figures of an evaluation: example anomaly maps and score histograms (PNG, written atomically)."""

import io
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from adjax.data import transforms

_RNG_SEED = 0


def _save(figure, path: Path) -> np.ndarray:
  """Writes `figure` to `path` (temp file + rename) and returns it as uint8 `[height, width, 3]`."""
  path.parent.mkdir(parents=True, exist_ok=True)
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=90, bbox_inches='tight')
  plt.close(figure)
  temporary = path.with_suffix('.png.tmp')
  temporary.write_bytes(buffer.getvalue())
  temporary.replace(path)
  buffer.seek(0)
  return (plt.imread(buffer)[..., :3] * 255).astype(np.uint8)


def _display(image: np.ndarray) -> np.ndarray:
  """Any value range → [0, 1] for display; single channel squeezed."""
  image = np.asarray(image, np.float32)
  image = (image - image.min()) / max(float(image.max() - image.min()), 1e-12)
  return image[..., 0] if image.shape[-1] == 1 else image


def pick_examples(scores: np.ndarray, labels: np.ndarray, *, num_each: int = 3) -> list[tuple[str, int]]:
  """(tag, index) pairs: the most and least anomalous-looking defective images, the most anomalous-looking
  good images, and random ones, without repeats."""
  order = np.argsort(scores)
  anomalous = [i for i in order if labels[i] == 1]
  good = [i for i in order if labels[i] == 0]
  picks = [('best defective', i) for i in anomalous[::-1][:num_each]]
  picks += [('worst defective', i) for i in anomalous[:num_each]]
  picks += [('worst good', i) for i in good[::-1][:num_each]]
  rest = [i for i in range(len(scores)) if i not in {p for _, p in picks}]
  rng = np.random.default_rng(_RNG_SEED)
  picks += [('random', int(i)) for i in rng.permutation(rest)[:num_each]]
  seen, unique = set(), []
  for tag, index in picks:
    if index not in seen:
      seen.add(index)
      unique.append((tag, int(index)))
  return unique


def examples_figure(images, masks, maps, titles, *, path: Path) -> np.ndarray:
  """Rows: image, ground truth, anomaly map overlay. `images [n, h, w, c]`, `masks/maps [n, h, w]`."""
  count = len(images)
  figure, axes = plt.subplots(3, count, figsize=(1.8 * count, 5.6), squeeze=False)
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
  panels = 2 if has_masks else 1
  figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.4), squeeze=False)
  labels, scores = scored['labels'], scored['scores'][primary_score]
  axis = axes[0, 0]
  bins = np.linspace(scores.min(), scores.max(), 40)
  axis.hist(scores[labels == 0], bins=bins, alpha=0.6, label='good', density=True)
  axis.hist(scores[labels == 1], bins=bins, alpha=0.6, label='defective', density=True)
  if image_threshold is not None:
    axis.axvline(image_threshold, color='k', linestyle='--', label='threshold')
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
    bins = np.linspace(low, high, 60)
    axis.hist(good, bins=bins, alpha=0.6, label='good pixels', density=True)
    if bad.size:
      axis.hist(bad, bins=bins, alpha=0.6, label='defective pixels', density=True)
    if pixel_threshold is not None:
      axis.axvline(pixel_threshold, color='k', linestyle='--', label='three-sigma threshold')
    axis.set_title(f'pixel scores ({primary_map})')
    axis.legend(fontsize=8)
  return _save(figure, path)


def write_all(scored: dict, source, *, figure_dir: Path, preprocess: str, primary_map: str,
              primary_score: str, image_threshold, pixel_threshold, has_masks: bool) -> dict:
  """Writes `examples.png` and `histograms.png` under `figure_dir`; returns them as arrays by name."""
  picks = pick_examples(scored['scores'][primary_score], scored['labels'])
  process = transforms.parse(preprocess)
  images = [process(dict(source[i]), np.random.default_rng(0))['image'] for _, i in picks]
  titles = [f'{tag}\n{scored["defect_types"][i]} {scored["scores"][primary_score][i]:.3g}'
            for tag, i in picks]
  written = {
      'examples': examples_figure(images, [scored['masks'][i] for _, i in picks],
                                  [scored['maps'][primary_map][i] for _, i in picks], titles,
                                  path=figure_dir / 'examples.png'),
      'histograms': histograms_figure(scored, primary_map=primary_map, primary_score=primary_score,
                                      image_threshold=image_threshold, pixel_threshold=pixel_threshold,
                                      has_masks=has_masks, path=figure_dir / 'histograms.png'),
  }
  return written
