"""`folder`: the user's own images in MVTec AD layout, any category name.

  <manual_dir>/<category>/train/good/*           required, not empty
  <manual_dir>/<category>/test/{good,<defect>}/*  optional: without it the dataset is train-only (warning)
  <manual_dir>/<category>/ground_truth/<defect>/* optional: without it `has_mask` is False everywhere; with
                                                  it every defective test image needs its mask
`manual_dir` may also be the category folder itself (named as the category). Images: png/jpg/jpeg/bmp/
tif(f), any case, grayscale and colour mixed (grayscale reads back with 3 equal channels). See
`adjax.data.layout` for the rules.

Staleness: a folder's contents change, so the builder config is made at run time by `builder_config`,
named `<category>-<fingerprint>`, where the fingerprint hashes the relative path, size and modification
time of every file under train/, test/ and ground_truth/. Prepared data therefore lives in
`<data_dir>/folder/<category>-<fingerprint>/`: an unchanged folder reuses it, and adding, removing,
replacing or touching any file gives a new name and a fresh build, never stale data. This costs one
`stat` per file per load, whereas re-validating would decode every image on every load (as slow as a
build). Old builds stay on disk; delete them freely. A change that keeps a file's size and modification
time (e.g. `cp -p` of a same-size file) is not detected.
"""

import dataclasses
import re

import tensorflow_datasets as tfds

from adjax.data import features
from adjax.data import layout
from adjax.errors import InputError


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
  """A config for one user folder; `root` is the category folder, `category` the name in examples."""
  root: str = ''
  category: str = ''
  fingerprint: str = ''


def builder_config(*, manual_dir, category: str) -> FolderConfig:
  """The `FolderConfig` of `<manual_dir>/<category>` as it is on disk now (see module docstring)."""
  category = str(category)
  if not category:
    raise InputError('folder: category must be a non-empty folder name')
  root = layout.category_dir(manual_dir, category)
  digest = layout.fingerprint(root)
  # The config name becomes a directory name: keep it to portable characters.
  safe_category = re.sub(r'[^A-Za-z0-9_.-]', '_', category)
  return FolderConfig(name=f'{safe_category}-{digest}', description=f'MVTec-layout folder {root}',
                      root=str(root.resolve()), category=category, fingerprint=digest)


class Folder(tfds.core.GeneratorBasedBuilder):
  """A user folder in MVTec AD layout; pass `config=builder_config(manual_dir=..., category=...)`."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'MVTec-layout folders, optional test split and masks, fingerprinted configs.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=__doc__, features=features.features())

  def _split_generators(self, dl_manager):
    del dl_manager  # The folder is named by the config.
    config = self.builder_config
    if not isinstance(config, FolderConfig):
      raise InputError('folder: build with config=folder.builder_config(manual_dir=..., category=...)')
    tree = layout.scan(config.root, category=config.category, require_test=False, require_masks=False)
    layout.validate(tree)
    if layout.fingerprint(config.root) != config.fingerprint:
      raise InputError(f'{config.root}: files changed while the dataset was being prepared; run again')
    return {split: self._generate_examples(tree, split) for split in tree.splits}

  def _generate_examples(self, tree: layout.Tree, split: str):
    yield from layout.examples(tree, split)
