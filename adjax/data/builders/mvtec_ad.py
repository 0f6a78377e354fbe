"""`mvtec_ad`: the MVTec Anomaly Detection dataset (Bergmann et al., CVPR 2019 / IJCV 2021), from disk.

MVTec AD cannot be downloaded automatically (its licence needs a click-through, CC BY-NC-SA 4.0). Extract
`mvtec_anomaly_detection.tar.xz` and pass its root as the manual directory; each category is one builder
config and is read from `<root>/<category>/` in the layout described in `adjax.data.layout`.

Before writing, the category is validated (every image decodes, every defective test image has a mask of
its size) and the counts found are compared with the paper's (`PAPER_COUNTS`): a difference is a warning,
not an error, so modified copies still build; the counts found are logged either way.
"""

from absl import logging
import tensorflow_datasets as tfds

from adjax.data import features
from adjax.data import layout
from adjax.errors import InputError

# (train images, good test images, defective test images) per category. Overall: 3629 train,
# 1725 test (467 good, 1258 defective), as published.
PAPER_COUNTS = {
    'bottle': (209, 20, 63),
    'cable': (224, 58, 92),
    'capsule': (219, 23, 109),
    'carpet': (280, 28, 89),
    'grid': (264, 21, 57),
    'hazelnut': (391, 40, 70),
    'leather': (245, 32, 92),
    'metal_nut': (220, 22, 93),
    'pill': (267, 26, 141),
    'screw': (320, 41, 119),
    'tile': (230, 33, 84),
    'toothbrush': (60, 12, 30),
    'transistor': (213, 60, 40),
    'wood': (247, 19, 60),
    'zipper': (240, 32, 119),
}
CATEGORIES = tuple(PAPER_COUNTS)


def found_counts(tree: layout.Tree) -> tuple[int, int, int]:
  """(train images, good test images, defective test images) of a scanned tree."""
  test = tree.splits.get('test', [])
  num_good = sum(entry.defect_type == layout.GOOD for entry in test)
  return len(tree.splits['train']), num_good, len(test) - num_good


class MvtecAd(tfds.core.GeneratorBasedBuilder):
  """MVTec AD, one config per category, read from the extracted archive (manual_dir)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Validated MVTec AD categories in the shared adjax feature spec.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Download mvtec_anomaly_detection.tar.xz from '
      'https://www.mvtec.com/company/research/datasets/mvtec-ad, '
      'extract it, and pass the extracted folder (holding bottle/, cable/, ...) as manual_dir.')
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name, description=f'MVTec AD {name}')
                     for name in CATEGORIES]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=features.features(),
        homepage='https://www.mvtec.com/company/research/datasets/mvtec-ad',
        citation='Bergmann et al., The MVTec Anomaly Detection Dataset, IJCV 129:1038-1059, 2021.',
    )

  def _split_generators(self, dl_manager):
    category = self.builder_config.name
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError as error:  # tfds reports a missing or empty manual_dir this way
      raise InputError(f'mvtec_ad: manual_dir missing or empty ({error})') from error
    tree = layout.scan(layout.category_dir(manual_dir, category), category=category,
                       require_test=True, require_masks=True)
    found, expected = found_counts(tree), PAPER_COUNTS[category]
    if found != expected:
      logging.warning('mvtec_ad/%s in %s: found %d train, %d good test, %d defective test images; the '
                      'paper lists %d, %d, %d', category, tree.root, *found, *expected)
    layout.validate(tree)
    return {split: self._generate_examples(tree, split) for split in tree.splits}

  def _generate_examples(self, tree: layout.Tree, split: str):
    yield from layout.examples(tree, split)
