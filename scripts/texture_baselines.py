"""Measures two simple baselines on the built `textures` dataset, and draws its example figure.

  python scripts/texture_baselines.py [--data_dir DIR] [--categories brick,grass,gravel]
                                      [--figure docs/textures.png] [--json results.json]

Builds each category with tfds (array_record, offline, a few seconds), reads it back with
`as_data_source`, and prints image and pixel AUROC (sklearn `roc_auc_score`) overall and per defect type:
  patch_nn     2x-downsampled image, 8x8 patches (16x16 original pixels) at stride 4, flattened; a test
               patch's score is the L2 distance to its nearest train patch; the pixel map is the max over
               the patches covering a pixel, the image score the max patch score.
  filter_bank  per-pixel intensity, gradient and Hessian-eigenvalue responses of Gaussian filters at
               sigma 1..8 (`skimage.feature.multiscale_basic_features`); a mixture of 8 Gaussians fitted to
               100k train pixels scores each test pixel by its negative log-likelihood, smoothed (sigma 2);
               image score = max.
"""

import argparse
import json
import os
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np
from scipy import ndimage
from skimage import feature
from sklearn import metrics
from sklearn import mixture

from adjax.data import defects
from adjax.data.builders import textures

_DOWNSAMPLE = 2
_PATCH = 8
_STRIDE = 4


def _patches(images: np.ndarray) -> np.ndarray:
  """[n, height, width] -> flattened patches [n, rows, cols, _PATCH * _PATCH] on the downsampled grid."""
  n, height, width = images.shape
  small = images.reshape(n, height // _DOWNSAMPLE, _DOWNSAMPLE, width // _DOWNSAMPLE, _DOWNSAMPLE).mean((2, 4))
  windows = np.lib.stride_tricks.sliding_window_view(small, (_PATCH, _PATCH), axis=(1, 2))
  windows = windows[:, ::_STRIDE, ::_STRIDE]
  return windows.reshape(*windows.shape[:3], -1)


def patch_nn_scores(train_images: np.ndarray, test_images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Patch nearest-neighbour distance. Images float [n, height, width]; returns (maps [n, h, w], scores [n])."""
  bank = _patches(train_images).reshape(-1, _PATCH * _PATCH).astype(np.float32)
  queries = _patches(test_images).astype(np.float32)
  n, rows, cols, dims = queries.shape
  flat = queries.reshape(-1, dims)
  bank_sq = (bank ** 2).sum(1)
  nearest = np.empty(len(flat))
  for start in range(0, len(flat), 256):  # Chunks keep the distance matrix in cache-sized pieces.
    chunk = flat[start:start + 256]
    squared = (bank_sq[None] - 2 * chunk @ bank.T).min(1) + (chunk ** 2).sum(1)
    nearest[start:start + 256] = np.sqrt(np.maximum(squared, 0))
  patch_scores = nearest.reshape(n, rows, cols)
  # Pixel map: each patch covers _PATCH * _DOWNSAMPLE original pixels; take the max over covering patches.
  height, width = test_images.shape[1:]
  maps = np.zeros((n, height, width))
  size, step = _PATCH * _DOWNSAMPLE, _STRIDE * _DOWNSAMPLE
  for r in range(rows):
    for c in range(cols):
      region = maps[:, r * step:r * step + size, c * step:c * step + size]
      np.maximum(region, patch_scores[:, r, c, None, None], out=region)
  return maps, patch_scores.reshape(n, -1).max(1)


def _filter_features(images: np.ndarray) -> np.ndarray:
  return np.stack([feature.multiscale_basic_features(image, sigma_min=1, sigma_max=8, num_sigma=4)
                   for image in images])


def filter_bank_scores(train_images: np.ndarray, test_images: np.ndarray, *, num_components: int = 8,
                       max_train_pixels: int = 100000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Filter-bank features scored by a Gaussian mixture. Same shapes as `patch_nn_scores`."""
  train = _filter_features(train_images)
  train = train.reshape(-1, train.shape[-1])
  rng = np.random.default_rng(seed)
  train = train[rng.choice(len(train), min(max_train_pixels, len(train)), replace=False)]
  mixture_model = mixture.GaussianMixture(num_components, covariance_type='full', reg_covar=1e-4,
                                          random_state=seed).fit(train)
  test = _filter_features(test_images)
  negative_log_likelihood = -mixture_model.score_samples(test.reshape(-1, test.shape[-1]))
  maps = np.stack([ndimage.gaussian_filter(m, 2) for m in negative_log_likelihood.reshape(test.shape[:3])])
  return maps, maps.reshape(len(maps), -1).max(1)


def _load(category: str, data_dir: str) -> dict:
  builder = textures.Textures(config=category, data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare()
  source = builder.as_data_source()
  def read(split):
    # Sorted by filename: tfds stores examples in a shuffled order.
    items = sorted((source[split][i] for i in range(len(source[split]))), key=lambda x: x['filename'])
    return {
        'image': np.stack([x['image'][..., 0] for x in items]).astype(np.float64) / 255,
        'mask': np.stack([x['mask'][..., 0] > 127 for x in items]),
        'label': np.array([x['label'] for x in items]),
        'defect_type': np.array([x['defect_type'].decode() for x in items]),
    }
  return {'train': read('train'), 'test': read('test')}


def _kinds(test: dict) -> list[str]:
  """The defect types present in a test split, in `DEFECT_TYPES` order."""
  return [kind for kind in defects.DEFECT_TYPES if kind in set(test['defect_type'])]


def evaluate(dataset: dict) -> dict:
  """AUROCs of both baselines: overall image and pixel AUROC, and image AUROC of good vs each defect type."""
  test = dataset['test']
  results = {}
  for name, method in (('patch_nn', patch_nn_scores), ('filter_bank', filter_bank_scores)):
    maps, scores = method(dataset['train']['image'], test['image'])
    row = {'image_auroc': metrics.roc_auc_score(test['label'], scores),
           'pixel_auroc': metrics.roc_auc_score(test['mask'].ravel(), maps.ravel())}
    for kind in _kinds(test):
      keep = (test['defect_type'] == 'good') | (test['defect_type'] == kind)
      row[kind] = metrics.roc_auc_score(test['label'][keep], scores[keep])
    results[name] = {k: round(float(v), 3) for k, v in row.items()}
  return results


def draw_figure(datasets: dict, path: str, *, good_per_row: int = 2) -> None:
  """One row per category: `good_per_row` good test crops, then one crop of each defect type, mask outlined."""
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt
  columns = good_per_row + len(defects.DEFECT_TYPES)
  figure, axes = plt.subplots(len(datasets), columns, figsize=(1.9 * columns, 2.05 * len(datasets)),
                              squeeze=False)
  for row, (category, dataset) in enumerate(datasets.items()):
    test = dataset['test']
    picks = list(np.flatnonzero(test['defect_type'] == 'good')[:good_per_row])
    picks += [np.flatnonzero(test['defect_type'] == kind)[0] for kind in _kinds(test)]
    for column, index in enumerate(picks):
      axis = axes[row, column]
      axis.imshow(test['image'][index], cmap='gray', vmin=0, vmax=1)
      if test['mask'][index].any():
        # Outline drawn 2 px outside the mask so that it hides none of the defect.
        outline = ndimage.binary_dilation(test['mask'][index], iterations=2)
        axis.contour(outline, levels=[0.5], colors='red', linewidths=0.7)
      axis.set_title(f'{category}: {test["defect_type"][index]}', fontsize=7)
      axis.set_xticks([])
      axis.set_yticks([])
    for axis in axes[row, len(picks):]:
      axis.set_visible(False)
  figure.tight_layout(pad=0.3)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=90)
  plt.close(figure)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data_dir', default=None, help='where tfds builds the data (default: a temp dir)')
  parser.add_argument('--categories', default=','.join(textures.CATEGORIES))
  parser.add_argument('--figure', default=None, help='write the example figure (PNG) here')
  parser.add_argument('--json', default=None, help='write the AUROCs here')
  args = parser.parse_args()
  categories = args.categories.split(',')
  unknown = sorted(set(categories) - set(textures.CATEGORIES))
  if unknown:
    parser.error(f'--categories: unknown {", ".join(unknown)}; expected some of {", ".join(textures.CATEGORIES)}')
  with tempfile.TemporaryDirectory() as scratch:
    datasets = {c: _load(c, args.data_dir or scratch) for c in categories}
  results = {}
  print(f'{"category":8} {"method":11} {"image":>6} {"pixel":>6}  ' +
        ' '.join(f'{k:>13}' for k in defects.DEFECT_TYPES))
  for category, dataset in datasets.items():
    results[category] = evaluate(dataset)
    for method, row in results[category].items():
      print(f'{category:8} {method:11} {row["image_auroc"]:6.3f} {row["pixel_auroc"]:6.3f}  ' +
            ' '.join(f'{row[k]:13.3f}' if k in row else f'{"-":>13}' for k in defects.DEFECT_TYPES))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=2)
  if args.figure:
    draw_figure(datasets, args.figure)
    print(f'wrote {args.figure}')


if __name__ == '__main__':
  main()
