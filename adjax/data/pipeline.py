"""grain input pipelines over random-access (tfds) data sources.

Training data is a `grain.MapDataset` indexed by step: batch k is a pure function of (seed, k), so a resumed
run reads exactly the batches an uninterrupted run would have read, with no iterator state to checkpoint.
Each process reads its own contiguous slice of every global batch (process p of P gets examples
`[p * B / P, (p + 1) * B / P)` of global batch k, and random preprocessing is seeded by the example's global
position), so P processes with D devices each see exactly what one process with P * D devices sees. Batches are
reshaped to `[local_devices, per_device_batch, ...]` and placed on the devices before the train step sees them.
"""

from collections.abc import Iterator, Sequence
from typing import Any

import grain
import jax
import numpy as np

from adjax.data import transforms
from adjax.errors import InputError

# Fields that reach the devices; text fields stay on the host.
# `category_index` (int) says which category of a multi-category source (`sources.CombinedSource`) an example
# is from; 0 for a single category.
ARRAY_KEYS = ('image', 'mask', 'label', 'has_mask', 'category_index')


def _preprocessor(spec: str):
  """Returns `fn(example, rng) -> example` keeping the array fields (image and mask end as float32)."""
  ops = transforms.parse(spec)

  def preprocess(example, rng):
    try:
      example = ops(dict(example), rng)
    except InputError as error:  # e.g. an image too small for a crop: name the file.
      raise InputError(f'{_text(example.get("filename", "?"))}: {error}') from None
    example.setdefault('category_index', 0)
    return {key: np.asarray(example[key]) for key in ARRAY_KEYS}

  return preprocess


def train_dataset(source, *, preprocess: str, global_batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """Infinite, shuffled (a new order every epoch), preprocessed batches for this process.

  Returns a MapDataset whose item k is this process's part of global batch k: a dict of
  `image [batch, height, width, channels]`, `mask [batch, height, width]`, `label [batch]`, `has_mask [batch]`.
  """
  if global_batch_size % process_count:
    raise ValueError(f'batch size {global_batch_size} is not divisible by {process_count} processes')
  dataset = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
  dataset = dataset.random_map(_preprocessor(preprocess), seed=seed + 1)  # Seeded by global position.
  local_batch_size = global_batch_size // process_count
  if process_count > 1:
    stream = dataset
    dataset = grain.MapDataset.range(len(stream) // process_count).map(
        lambda index: stream[(index // local_batch_size) * global_batch_size
                             + process_index * local_batch_size + index % local_batch_size])
  return dataset.batch(local_batch_size, drop_remainder=True)


def eval_batches(source, *, preprocess: str, batch_size: int, seed: int = 0,
                 keep_text: bool = False, shard: tuple[int, int] = (0, 1)) -> Iterator[dict[str, Any]]:
  """Every example once, in order, in batches of exactly `batch_size` (the last one padded).

  Each batch has a boolean `valid [batch]` marking real examples. With `keep_text`, `filename` and
  `defect_type` (lists of str, unpadded length) are added for reports. `shard=(k, n)` keeps examples
  k, k + n, k + 2n, ... (one process's part); each is preprocessed exactly as without sharding.
  """
  preprocess_fn = _preprocessor(preprocess)
  dataset = grain.MapDataset.source(source).random_map(preprocess_fn, seed=seed)
  shard_index, shard_count = shard
  mine = range(shard_index, len(source), shard_count)
  for start in range(0, len(mine), batch_size):
    indices = mine[start:start + batch_size]
    examples = [dataset[i] for i in indices]
    batch = {key: np.stack([e[key] for e in examples]) for key in ARRAY_KEYS}
    batch = {key: _pad(value, batch_size) for key, value in batch.items()}
    batch['valid'] = np.arange(batch_size) < len(indices)
    if keep_text:
      raw = [source[i] for i in indices]
      batch['filename'] = [_text(r['filename']) for r in raw]
      batch['defect_type'] = [_text(r['defect_type']) for r in raw]
    yield batch


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _pad(array: np.ndarray, size: int) -> np.ndarray:
  missing = size - array.shape[0]
  if not missing:
    return array
  return np.concatenate([array, np.zeros((missing,) + array.shape[1:], array.dtype)])


def device_sharding(devices: Sequence[jax.Device] | None = None) -> jax.sharding.NamedSharding:
  """Splits the leading axis of an array over the local devices (the pmap layout)."""
  devices = list(devices or jax.local_devices())
  mesh = jax.sharding.Mesh(np.array(devices), ('batch',))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('batch'))


def replicate(tree, sharding: jax.sharding.NamedSharding):
  """Places a copy of every array of `tree` on each device of `sharding`'s mesh (how pmap returns
  unmapped outputs): feeding the state in this layout from the first step avoids a second trace."""
  replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
  return jax.device_put(tree, replicated)


def shard(batch: dict[str, np.ndarray], sharding: jax.sharding.NamedSharding) -> dict[str, jax.Array]:
  """`[batch, ...]` host arrays → `[devices, batch / devices, ...]` arrays placed on the devices.

  With several processes, `batch` is this process's part and the result is the global array.
  """
  num_devices = len(sharding.addressable_devices)

  def put(array):
    array = np.asarray(array)
    if array.shape[0] % num_devices:
      raise ValueError(f'batch of {array.shape[0]} does not split over {num_devices} devices')
    array = array.reshape((num_devices, -1) + array.shape[1:])
    if sharding.is_fully_addressable:
      return jax.device_put(array, sharding)
    return jax.make_array_from_process_local_data(sharding, array)

  return {key: put(value) for key, value in batch.items() if key in ARRAY_KEYS + ('valid',)}


def device_iterator(dataset: grain.MapDataset, *, start_step: int, sharding, prefetch: int = 2,
                    num_threads: int = 2) -> Iterator[dict[str, jax.Array]]:
  """Batches `start_step, start_step + 1, ...` placed on the devices, `prefetch` batches ahead."""
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(2, prefetch * 2))
  host_iterator = iter(dataset[start_step:].to_iter_dataset(options))
  queue = []
  while True:
    while len(queue) <= prefetch:
      queue.append(shard(next(host_iterator), sharding))
    yield queue.pop(0)
