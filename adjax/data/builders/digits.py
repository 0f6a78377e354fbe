"""`digits`: scikit-learn's bundled handwritten digits as a one-class (one-vs-rest) benchmark.

`sklearn.datasets.load_digits()` holds 1797 real 8x8 grayscale digits with 17 gray levels 0..16, stored
here as uint8 `rint(level * 255 / 16)` (0..255, read back with 3 equal channels). The images are split
once, the same way for every config: `train_test_split(stratify=target, test_size=TEST_FRACTION,
random_state=SPLIT_SEED)` (stratified 60/40). Config `<d>` (d = 0..9) treats digit d as normal:
  train  the train-part images of digit d only, label 0
  test   every test-part image (719), label 0 for digit d and 1 for the others
`defect_type` is the image's digit as text ('3'), `filename` is `digits/<index in load_digits>`;
there is no ground truth, so `has_mask` is False and masks are zeros.
"""

import numpy as np
import tensorflow_datasets as tfds

from adjax.data import features

CATEGORIES = tuple(str(digit) for digit in range(10))
TEST_FRACTION = 0.4
SPLIT_SEED = 0
NUM_LEVELS = 16  # load_digits pixel values are 0..16


def to_uint8(levels: np.ndarray) -> np.ndarray:
  """Gray levels 0..16 (any shape) to uint8 0..255."""
  return np.rint(np.asarray(levels, np.float64) * (255 / NUM_LEVELS)).astype(np.uint8)


def split_indices(target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(train indices, test indices) into `load_digits()`, stratified by digit, each sorted."""
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top  (only needed to build)
  train, test = model_selection.train_test_split(
      np.arange(len(target)), test_size=TEST_FRACTION, stratify=target, random_state=SPLIT_SEED)
  return np.sort(train), np.sort(test)


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn digits, one config per normal digit."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'One-vs-rest digits, stratified 60/40 split with seed 0.'}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=digit, description=f'digit {digit} is normal')
                     for digit in CATEGORIES]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__, features=features.features(),
        homepage='https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html')

  def _split_generators(self, dl_manager):
    del dl_manager  # scikit-learn ships the data.
    from sklearn import datasets  # pylint: disable=g-import-not-at-top  (only needed to build)
    digits = datasets.load_digits()
    images, target = to_uint8(digits.images), digits.target
    train, test = split_indices(target)
    normal = int(self.builder_config.name)
    return {
        'train': self._generate_examples(images, target, train[target[train] == normal], normal),
        'test': self._generate_examples(images, target, test, normal),
    }

  def _generate_examples(self, images, target, indices, normal):
    empty_mask = features.png_bytes(np.zeros(images.shape[1:], np.uint8))
    for index in indices:
      filename = f'digits/{index:04d}'
      yield filename, {
          'image': features.png_bytes(images[index]),
          'mask': empty_mask,
          'label': int(target[index] != normal),
          'has_mask': False,
          'defect_type': str(target[index]),
          'category': self.builder_config.name,
          'filename': filename,
      }
