"""Semi-supervised splits (seed 000, Sec. 4): a few real anomalous test images moved into the training split.

    train, test, moved = move_labeled_anomalies(train_source, test_source, per_type=1, seed=0)

`per_type` anomalous test images of every defect type (chosen at random with `seed`) leave the test split
(so they are never evaluated) and join the training split with their label 1 and their real masks. The seed
replaces each training image with an anomalous one with probability 1/2; over an epoch that is what
`anomaly_fraction=0.5` gives: the new training split lists every normal image once and as many anomaly slots,
which cycle through the moved images (the loop's shuffling mixes them). Sources are random-access (`len`,
`[i]`), as `adjax.data.sources.load_split` returns and grain reads.
"""

from collections.abc import Callable, Sequence
import dataclasses
import math
from typing import Any

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from adjax.errors import InputError


@dataclasses.dataclass(frozen=True)
class IndexedSource:
  """Read-only random-access view: item k is `sources[items[k][0]][items[k][1]]`."""
  sources: tuple[Any, ...]
  items: tuple[tuple[int, int], ...]

  def __len__(self) -> int:
    return len(self.items)

  def __getitem__(self, index: int):
    part, item = self.items[int(index)]
    return self.sources[part][item]


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def labels_and_defect_types(source) -> list[tuple[int, str]]:
  """(label, defect_type) of every example; tfds sources are read without decoding images."""
  if dataclasses.is_dataclass(source) and 'decoders' in {f.name for f in dataclasses.fields(source)}:
    skip = tfds.decode.SkipDecoding()
    source = dataclasses.replace(source, decoders={'image': skip, 'mask': skip})
  return [(int(source[i]['label']), _text(source[i]['defect_type'])) for i in range(len(source))]


def choose_labeled_anomalies(metadata: Sequence[tuple[int, str]], *, per_type: int,
                             seed: int) -> list[int]:
  """Indices of `per_type` anomalous examples (label 1) of every defect type, sorted; seeded."""
  by_type: dict[str, list[int]] = {}
  for index, (label, defect_type) in enumerate(metadata):
    if label == 1:
      by_type.setdefault(defect_type, []).append(index)
  rng = np.random.default_rng(seed)
  chosen = []
  for defect_type in sorted(by_type):
    candidates = by_type[defect_type]
    if len(candidates) <= per_type:
      logging.warning('Semi-supervised split: defect type %r has %d anomalous test image(s); all move '
                      'to training and none is left to evaluate it.', defect_type, len(candidates))
    chosen.extend(rng.choice(candidates, size=min(per_type, len(candidates)), replace=False).tolist())
  return sorted(chosen)


def move_labeled_anomalies(train_source, test_source, *, per_type: int, seed: int,
                           anomaly_fraction: float = 0.5) -> tuple[IndexedSource, IndexedSource, list[int]]:
  """Moves `per_type` anomalous test images per defect type into training.

  Args:
    train_source: random-access training split (normal images).
    test_source: random-access test split with `label` and `defect_type` fields.
    per_type: anomalous images to move per defect type (>= 1).
    seed: picks which images move.
    anomaly_fraction: share of the new training split's items that are (repeated) moved anomalies; 0 lists
      each moved image once.

  Returns:
    (train, test, moved): the new sources and the moved test indices (sorted).
  """
  if not isinstance(per_type, int) or per_type < 1:
    raise InputError(f'config.data.labeled_anomalies_per_type: must be an int >= 1 (0 turns the '
                     f'semi-supervised split off), got {per_type!r}')
  if not 0 <= anomaly_fraction < 1:
    raise InputError(f'config.data.anomaly_fraction: must be in [0, 1), got {anomaly_fraction!r}')
  moved = choose_labeled_anomalies(labels_and_defect_types(test_source), per_type=per_type, seed=seed)
  if not moved:
    raise InputError('config.data.labeled_anomalies_per_type: the test split holds no anomalous images '
                     'to move into training')
  num_normal = len(train_source)
  num_slots = max(len(moved), math.ceil(num_normal * anomaly_fraction / (1 - anomaly_fraction)))
  train_items = [(0, i) for i in range(num_normal)] + [(1, moved[k % len(moved)]) for k in range(num_slots)]
  moved_set = set(moved)
  test_items = [(0, i) for i in range(len(test_source)) if i not in moved_set]
  logging.info('Semi-supervised split: moved %d anomalous test images (%d per defect type) into training '
               '(%d anomaly slots beside %d normal images); %d test images remain.', len(moved), per_type,
               num_slots, num_normal, len(test_items))
  return (IndexedSource((train_source, test_source), tuple(train_items)),
          IndexedSource((test_source,), tuple(test_items)), moved)


def from_config(config, train_source, *, load_test: Callable[[], Any]):
  """(train, test) for `config.data.labeled_anomalies_per_type` (0 or missing: (train_source, None))."""
  per_type = config.data.get('labeled_anomalies_per_type', 0) or 0
  if not per_type:
    return train_source, None
  train, test, _ = move_labeled_anomalies(
      train_source, load_test(), per_type=per_type, seed=config.seed,
      anomaly_fraction=config.data.get('anomaly_fraction', 0.5))
  return train, test
