"""`textures`: the embedded default dataset, real CC0 photos with seeded synthetic defects.

Built offline from scikit-image's CC0 texture photographs `brick`, `grass` and `gravel` (512x512 gray);
one builder config per category. Per category:
  train  NUM_TRAIN good 128x128 crops from rows 0-175 and 336-511 of the photo;
  test   NUM_TEST_GOOD good crops and NUM_TEST_DEFECTIVE defective crops (split evenly over the
         category's defect types in `DEFECT_PARAMETERS`) from rows 176-335, so no test pixel was ever seen
         in training (test crops may overlap one another).
Crops lie wholly inside a band, at uniformly random positions, each flipped left-right with probability
1/2. A defective crop gets one defect from `adjax.data.defects`; its mask is the defect's exact region
(0/255) and every pixel outside it is the photo's own. Everything is drawn from
`numpy.random.default_rng([SEED, crc32(category), split])`, so a build is the same on every machine.
Filenames record where each crop came from: `<split>/<defect_type>/<index>_r<top>_c<left>[_flip].png`.
"""

import zlib

import numpy as np
from skimage import color
from skimage import data as skimage_data
import tensorflow_datasets as tfds

from adjax import errors
from adjax.data import defects
from adjax.data import features

SEED = 20240611
IMAGE_SIZE = 128
NUM_TRAIN = 300
NUM_TEST_GOOD = 60
NUM_TEST_DEFECTIVE = 60  # Split evenly over the category's defect types.
PHOTO_SIZE = 512
TEST_ROWS = (176, 336)
CATEGORIES = ('brick', 'grass', 'gravel')
_SPLITS = ('train', 'test')

# Each category's defect types and the keyword arguments of their `adjax.data.defects` functions
# (`source` names the photo a foreign patch is cut from; coffee is scikit-image's CC0 colour photo, taken
# in gray). Brick is a regular pattern, so small, faint defects already break it. Grass and gravel are
# busy, isotropic textures: a rotated patch of them is no defect at all, and blobs of another texture with
# the same mean and std, or smooth blobs, look like ordinary blades, leaves or stones to a patch
# comparison. There the defects are larger and stronger: dark stains, bright or dark scratches, and blobs
# of the coffee photo (wood grain, porcelain) with their own brightness. Tuned with
# scripts/texture_baselines.py so that simple baselines land above chance and below perfect.
DEFECT_PARAMETERS = {
    'brick': {
        'foreign_patch': dict(source='gravel', area_range=(0.015, 0.04), match_moments=True),
        'rotated_patch': dict(area_range=(0.008, 0.025), angle_range=(30.0, 90.0), min_change=0.06),
        'scratch': dict(length_range=(0.2, 0.5), width_range=(1.0, 1.6), contrast_range=(0.3, 0.5)),
        'stain': dict(area_range=(0.015, 0.04), strength_range=(0.25, 0.45)),
    },
    'grass': {
        'foreign_patch': dict(source='coffee', area_range=(0.05, 0.1), match_moments=False),
        'scratch': dict(length_range=(0.3, 0.6), width_range=(2.0, 4.0), contrast_range=(0.75, 0.9)),
        'stain': dict(area_range=(0.04, 0.08), strength_range=(0.75, 0.95), tone_range=(0.0, 0.15)),
    },
    'gravel': {
        'foreign_patch': dict(source='coffee', area_range=(0.04, 0.08), match_moments=False),
        'scratch': dict(length_range=(0.3, 0.6), width_range=(2.0, 4.0), contrast_range=(0.75, 0.9)),
        'stain': dict(area_range=(0.04, 0.08), strength_range=(0.65, 0.9), tone_range=(0.0, 0.2)),
    },
}
_FOREIGN_SOURCES = ('coffee', 'gravel')


def photo(name: str) -> np.ndarray:
  """A grayscale photo bundled with scikit-image: a category's source or a foreign-patch source, uint8."""
  if name not in CATEGORIES + _FOREIGN_SOURCES:
    raise ValueError(f'unknown textures photo {name!r}; expected one of {CATEGORIES + _FOREIGN_SOURCES}')
  image = getattr(skimage_data, name)()
  return image if image.ndim == 2 else np.round(color.rgb2gray(image) * 255).astype(np.uint8)


def row_ranges(split: str) -> tuple[tuple[int, int], ...]:
  """The bands of rows [start, stop) of the photo that a split's crops lie in; train and test never overlap.

  Test takes the middle band and train the bands above and below it, so that slow changes across the
  photo (perspective, lighting) do not make good test crops look unlike every train crop.
  """
  top, bottom = TEST_ROWS
  return ((0, top), (bottom, PHOTO_SIZE)) if split == 'train' else ((top, bottom),)


def _rng(category: str, split: str) -> np.random.Generator:
  return np.random.default_rng([SEED, zlib.crc32(category.encode()), _SPLITS.index(split)])


def _random_crop(image: np.ndarray, bands: tuple[tuple[int, int], ...], *, rng: np.random.Generator):
  """A crop [IMAGE_SIZE, IMAGE_SIZE] lying wholly in one of `bands`, with a random left-right flip."""
  # Each possible top row is equally likely, whichever band it is in.
  tops = np.concatenate([np.arange(start, stop - IMAGE_SIZE + 1) for start, stop in bands])
  top = int(rng.choice(tops))
  left = int(rng.integers(0, image.shape[1] - IMAGE_SIZE + 1))
  flip = bool(rng.random() < 0.5)
  crop = image[top:top + IMAGE_SIZE, left:left + IMAGE_SIZE]
  return (crop[:, ::-1] if flip else crop), (top, left, flip)


def make_examples(category: str, split: str) -> list[dict]:
  """Generates one split of one category as numpy arrays (what the builder stores, before PNG encoding).

  Returns:
    A list of dicts with `image` uint8 [IMAGE_SIZE, IMAGE_SIZE], `mask` bool [IMAGE_SIZE, IMAGE_SIZE],
    `label` (0 good, 1 anomaly), `defect_type` ('good' or a name in DEFECT_TYPES), `origin`
    (top row, left column, flipped) of the crop in the photo, and `filename`.
  """
  if category not in CATEGORIES:
    raise errors.InputError(f'textures has no category {category!r}; expected one of {", ".join(CATEGORIES)}')
  if split not in _SPLITS:
    raise ValueError(f'unknown split {split!r}; expected one of {_SPLITS}')
  source = photo(category)
  rng = _rng(category, split)
  bands = row_ranges(split)
  if split == 'train':
    kinds = ['good'] * NUM_TRAIN
  else:
    types = list(DEFECT_PARAMETERS[category])
    kinds = ['good'] * NUM_TEST_GOOD + [t for t in types for _ in range(NUM_TEST_DEFECTIVE // len(types))]
  examples = []
  for index, kind in enumerate(kinds):
    crop, origin = _random_crop(source, bands, rng=rng)
    if kind == 'good':
      image, mask = np.ascontiguousarray(crop), np.zeros(crop.shape, bool)
    else:
      parameters = dict(DEFECT_PARAMETERS[category][kind])
      if 'source' in parameters:
        parameters['source'] = photo(parameters['source'])
      image, mask = getattr(defects, kind)(crop, rng=rng, **parameters)
    top, left, flip = origin
    examples.append({
        'image': image, 'mask': mask, 'label': int(kind != 'good'), 'defect_type': kind, 'origin': origin,
        'filename': f'{split}/{kind}/{index:03d}_r{top}_c{left}{"_flip" if flip else ""}.png',
    })
  return examples


class Textures(tfds.core.GeneratorBasedBuilder):
  """CC0 texture photos (scikit-image) with seeded synthetic defects and exact masks."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'brick (four defect types), grass and gravel (three each).'}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=name, description=f'scikit-image {name}() photo, 128x128 crops')
      for name in CATEGORIES
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features.features(),
        description=__doc__,
        homepage='https://scikit-image.org/docs/stable/api/skimage.data.html',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything comes from scikit-image's bundled photos.
    return {split: self._generate_examples(split) for split in _SPLITS}

  def _generate_examples(self, split):
    category = self.builder_config.name
    for example in make_examples(category, split):
      yield example['filename'], {
          'image': features.png_bytes(example['image']),
          'mask': features.png_bytes(example['mask'].astype(np.uint8) * 255),
          'label': example['label'],
          'has_mask': True,
          'defect_type': example['defect_type'],
          'category': category,
          'filename': example['filename'],
      }
