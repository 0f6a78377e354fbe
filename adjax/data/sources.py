"""Random-access data sources by dataset name: builds a tfds dataset if needed, then opens one split.

    source, info = load_split(name='mvtec_ad', category='bottle', split='test',
                              data_dir='~/tensorflow_datasets', manual_dir='~/mvtec_anomaly_detection')
    len(source); source[0]  # dict of numpy arrays / bytes / ints in `adjax.data.features` form

Several categories at once (one model over a whole dataset, seed 003's Mixer): `category='all'` (every config
of the dataset) or `'brick+grass'`; the splits are concatenated in that order and every example gains an int
`category_index` (its category's position in the list; 0 for a single category).

Builds use `file_format='array_record'` and run once per config (tfds reuses prepared data); reading needs
no TensorFlow. Processes that ask for the same missing dataset at once (parallel runs on one machine)
build it once: a file lock next to the data serialises them, and the others then read it. Builder modules
are imported only when their name is asked for, so a missing or broken optional builder does not affect the
others. To add a dataset, add one line to `_REGISTRY`.
"""

import bisect
import contextlib
import fcntl
import importlib
import os
import pathlib
from typing import Any, NamedTuple

import tensorflow_datasets as tfds

from adjax.errors import InputError


class _Entry(NamedTuple):
  module: str  # import path of the builder module
  builder: str  # name of its tfds builder class
  needs_manual_dir: bool  # the data comes from a user directory
  # Name of a module function (manual_dir=, category=) -> BuilderConfig, for configs made at run time.
  config_fn: str | None = None


_REGISTRY = {
    'mvtec_ad': _Entry('adjax.data.builders.mvtec_ad', 'MvtecAd', needs_manual_dir=True),
    'folder': _Entry('adjax.data.builders.folder', 'Folder', needs_manual_dir=True,
                     config_fn='builder_config'),
    'digits': _Entry('adjax.data.builders.digits', 'Digits', needs_manual_dir=False),
    'textures': _Entry('adjax.data.builders.textures', 'Textures', needs_manual_dir=False),
}
NAMES = tuple(_REGISTRY)


def _module(name: str):
  if name not in _REGISTRY:
    raise InputError(f'data.name: unknown dataset {name!r}; valid names: {", ".join(NAMES)}')
  try:
    return importlib.import_module(_REGISTRY[name].module)
  except ImportError as error:
    raise InputError(f'data.name: dataset {name!r} is not available ({error})') from error


def _checked_manual_dir(name: str, manual_dir) -> pathlib.Path:
  if manual_dir is None or not str(manual_dir):
    raise InputError(f'data.manual_dir: dataset {name!r} reads from a directory; set data.manual_dir')
  manual_dir = pathlib.Path(manual_dir).expanduser()
  if not manual_dir.is_dir():
    raise InputError(f'{manual_dir}: dataset directory (data.manual_dir) does not exist')
  return manual_dir


def make_builder(*, name: str, category, data_dir, manual_dir=None) -> tfds.core.DatasetBuilder:
  """The tfds builder of one dataset config (not yet prepared); `InputError` for unknown names."""
  module, entry = _module(name), _REGISTRY[name]
  builder_cls = getattr(module, entry.builder)
  if category is None or not str(category):
    raise InputError(f'data.category: dataset {name!r} needs a category')
  category = str(category)
  if entry.config_fn:
    config = getattr(module, entry.config_fn)(manual_dir=_checked_manual_dir(name, manual_dir),
                                              category=category)
  elif category in builder_cls.builder_configs:
    config = category
  else:
    raise InputError(f'data.category: unknown {name} category {category!r}; valid categories: '
                     f'{", ".join(builder_cls.builder_configs)}')
  # Empty means tfds's own default ($TFDS_DATA_DIR or ~/tensorflow_datasets), never the current directory.
  data_dir = pathlib.Path(data_dir or os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')).expanduser()
  return builder_cls(data_dir=str(data_dir), config=config, file_format='array_record')


def _is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  return builder.data_path.exists() and builder.is_prepared()  # exists() first: tfds warns on a missing dir


@contextlib.contextmanager
def _build_lock(builder: tfds.core.DatasetBuilder):
  """An exclusive lock on `<data_dir>/<dataset>/<config>.lock`, held while one process builds."""
  path = pathlib.Path(builder.data_dir_root) / builder.name / f'{builder.builder_config.name}.lock'
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'a') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def prepare(builder: tfds.core.DatasetBuilder, *, name: str, manual_dir=None) -> None:
  """Builds the dataset unless tfds already holds it; the manual_dir is checked only when building."""
  if _is_prepared(builder):
    return
  with _build_lock(builder):
    if _is_prepared(builder):  # Another process built it while this one waited for the lock.
      builder.info.read_from_directory(builder.data_dir)
      return
    download_config = None
    if _REGISTRY[name].needs_manual_dir:
      download_config = tfds.download.DownloadConfig(manual_dir=str(_checked_manual_dir(name, manual_dir)))
    builder.download_and_prepare(download_config=download_config)


def _has_masks(builder: tfds.core.DatasetBuilder) -> bool:
  """Whether any test example has a ground-truth mask (reads only `has_mask`, no image decoding)."""
  if 'test' not in builder.info.splits:
    return False
  skip = tfds.decode.SkipDecoding()
  test = builder.as_data_source(split='test', decoders={'image': skip, 'mask': skip})
  return any(bool(test[index]['has_mask']) for index in range(len(test)))


def categories_of(*, name: str, category) -> list[str]:
  """`'all'` -> every builder config of `name`; `'a+b'` -> ['a', 'b']; anything else -> [category]."""
  category = str(category)
  if category == 'all':
    builder_cls = getattr(_module(name), _REGISTRY[name].builder)
    if _REGISTRY[name].config_fn or not builder_cls.builder_configs:
      raise InputError(f"data.category: 'all' needs a dataset with fixed categories, not {name!r}; "
                       "list them as 'a+b+c'")
    return list(builder_cls.builder_configs)
  return category.split('+') if '+' in category else [category]


class CombinedSource:
  """Concatenated random-access sources; example i gains `category_index` (which source it came from)."""

  def __init__(self, sources):
    self._sources = list(sources)
    self._starts = [0]
    for source in self._sources:
      self._starts.append(self._starts[-1] + len(source))

  def __len__(self):
    return self._starts[-1]

  def __getitem__(self, index):
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f'index {index} out of range for {len(self)} examples')
    which = bisect.bisect_right(self._starts, index) - 1
    return {**self._sources[which][index - self._starts[which]], 'category_index': which}


def split_names(*, name: str, category, data_dir, manual_dir=None) -> list[str]:
  """The splits `name/category` has (all categories, for several), building it if needed."""
  names = None
  for one in categories_of(name=name, category=category):
    builder = make_builder(name=name, category=one, data_dir=data_dir, manual_dir=manual_dir)
    prepare(builder, name=name, manual_dir=manual_dir)
    found = set(builder.info.splits.keys())
    names = found if names is None else names & found
  return sorted(names)


def load_split(*, name: str, category, split: str, data_dir, manual_dir=None) -> tuple[Any, dict]:
  """Builds `name/category` if needed and opens one split for random access.

  Args:
    name: dataset name, one of `NAMES`.
    category: builder config (`bottle`, `3`, `brick`, or a folder's category name); several as
      `'all'` or `'a+b'` (a `CombinedSource`).
    split: 'train' or 'test'.
    data_dir: where tfds keeps prepared data.
    manual_dir: root of the MVTec-layout tree (`mvtec_ad`, `folder`); `mvtec_ad` needs it only to build.
  Returns:
    (source, info): `source` has `len()` and `source[i]` -> dict of `adjax.data.features` values;
    `info` is a dict with `name`, `category`, `split`, `num_examples` (of this split), `has_masks`
    (any test image has a mask), `data_dir` (the prepared dataset's directory) and `categories` (list).
  """
  categories = categories_of(name=name, category=category)
  if len(categories) > 1:
    parts = [load_split(name=name, category=one, split=split, data_dir=data_dir, manual_dir=manual_dir)
             for one in categories]
    source = CombinedSource([part[0] for part in parts])
    return source, {'name': name, 'category': str(category), 'split': split, 'num_examples': len(source),
                    'has_masks': any(part[1]['has_masks'] for part in parts),
                    'data_dir': parts[0][1]['data_dir'], 'categories': categories}
  builder = make_builder(name=name, category=category, data_dir=data_dir, manual_dir=manual_dir)
  prepare(builder, name=name, manual_dir=manual_dir)
  splits = builder.info.splits
  if split not in splits:
    raise InputError(f'{name}/{category}: no {split!r} split; available: {", ".join(splits.keys())}')
  source = builder.as_data_source(split=split)
  info = {
      'name': name,
      'category': str(category),
      'split': split,
      'num_examples': len(source),
      'has_masks': _has_masks(builder),
      'data_dir': str(builder.data_dir),
      'categories': categories,
  }
  return source, info
