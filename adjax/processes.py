"""Host-side work split over the processes of a multi-process run, and gathered back.

Post-training statistics (`Method.fit`) and evaluation read a split example by example. In a run of n
processes (`jax.distributed`), process k takes examples k, k + n, k + 2n, ... (`shard()`; the pipelines'
`shard=` argument), computes its rows, and `gather_rows` puts every process's rows back in the order of
the split, on every process. Running statistics merge with `merge_across`. With one process both are the
identity, so single-process code pays nothing.
"""

from typing import Any, Callable

import jax
from jax.experimental import multihost_utils
import numpy as np

_TEXT_BYTES = 64  # Texts (e.g. defect-type names) travel between processes as fixed-width UTF-8.


def shard() -> tuple[int, int]:
  """(index, count) of this process: its share of a split is examples index, index + count, ..."""
  return jax.process_index(), jax.process_count()


def interleave_rows(parts: list) -> Any:
  """parts[k] = rows of process k (pytrees of arrays [n_k, ...]) -> all rows in split order.

  Row i of part k is example k + i * len(parts), so the split's shares have sizes that differ by at most
  one, largest first.
  """
  count = len(parts)
  total = sum(len(jax.tree_util.tree_leaves(part)[0]) for part in parts)

  def merge(*leaves):
    out = np.empty((total,) + leaves[0].shape[1:], leaves[0].dtype)
    for k, leaf in enumerate(leaves):
      out[k::count] = leaf
    return out

  return jax.tree_util.tree_map(merge, *parts)


def _encode(texts) -> np.ndarray:
  encoded = np.zeros((len(texts), _TEXT_BYTES), np.uint8)
  for row, text in enumerate(texts):
    data = text.encode()[:_TEXT_BYTES]
    encoded[row, :len(data)] = np.frombuffer(data, np.uint8)
  return encoded


def _decode(encoded: np.ndarray) -> list[str]:
  return [bytes(row).rstrip(b'\0').decode(errors='replace') for row in encoded]


def gather_rows(rows: dict[str, Any]) -> dict[str, Any]:
  """This process's rows of a sharded split -> the whole split's rows, in split order, on every process.

  Args:
    rows: dict of (nested dicts of) arrays [num_local, ...], or lists of str (e.g. defect types); row i
      is example index + i * count of the split (`shard()`). Every value has the same number of rows.

  Returns:
    The same structure with [num_examples, ...] numpy arrays (lists of str stay lists).
  """
  if jax.process_count() == 1:
    return rows
  texts = [key for key, value in rows.items() if isinstance(value, list)]
  local = {key: _encode(value) if key in texts else jax.tree_util.tree_map(np.asarray, value)
           for key, value in rows.items()}
  num_local = len(jax.tree_util.tree_leaves(local)[0])
  counts = np.asarray(multihost_utils.process_allgather(np.int32(num_local))).reshape(-1)
  width = int(counts.max())
  padded = jax.tree_util.tree_map(
      lambda a: np.concatenate([a, np.zeros((width - a.shape[0],) + a.shape[1:], a.dtype)]), local)
  gathered = multihost_utils.process_allgather(padded)  # Leaves [count, width, ...].
  parts = [jax.tree_util.tree_map(lambda a, k=k, n=int(n): np.asarray(a)[k, :n], gathered)
           for k, n in enumerate(counts)]
  merged = interleave_rows(parts)
  return {key: _decode(value) if key in texts else value for key, value in merged.items()}


def merge_across(state: Any, merge: Callable[[Any, Any], Any]) -> Any:
  """Every process's `state` (a pytree of arrays) merged in process order: merge(merge(s0, s1), s2)...

  `merge` must be associative (e.g. `scoring.moments_merge`); the result is the same on every process.
  """
  if jax.process_count() == 1:
    return state
  gathered = multihost_utils.process_allgather(jax.device_get(state))  # Leaves [count, ...].
  parts = [jax.tree_util.tree_map(lambda leaf, k=k: leaf[k], gathered) for k in range(jax.process_count())]
  merged = parts[0]
  for part in parts[1:]:
    merged = merge(merged, part)
  return merged
