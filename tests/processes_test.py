"""adjax.processes: rows of a split sharded over processes come back in split order; states merge in order."""

import jax
import numpy as np

from adjax import processes
from adjax import scoring


def _whole(num=5):
  rng = np.random.default_rng(0)
  return {'scores': {'max': rng.normal(size=num).astype(np.float32)},
          'maps': rng.normal(size=(num, 3, 2)).astype(np.float32),
          'labels': np.arange(num, dtype=np.int32),
          'defect_types': ['good', 'cut', 'hole', 'good', 'långt namn'][:num]}


def _part(whole, index, count):
  take = np.arange(index, len(whole['labels']), count)
  part = jax.tree_util.tree_map(lambda a: a[take], {k: v for k, v in whole.items() if k != 'defect_types'})
  part['defect_types'] = [whole['defect_types'][i] for i in take]
  return part


def test_interleave_rows_restores_the_split_order():
  whole = {'a': np.arange(7) * 10, 'b': {'c': np.arange(14).reshape(7, 2)}}
  for count in (1, 2, 3, 7):
    parts = [jax.tree_util.tree_map(lambda a, k=k: a[k::count], whole) for k in range(count)]
    merged = processes.interleave_rows(parts)
    np.testing.assert_array_equal(merged['a'], whole['a'])
    np.testing.assert_array_equal(merged['b']['c'], whole['b']['c'])


def test_gather_rows_with_two_processes_text_included(monkeypatch):
  """Process 0's view of a 2-process gather of 5 rows; the fake `process_allgather` returns what process 1
  sent (recorded by running process 1's side first)."""
  whole = _whole()
  counts = np.array([3, 2], np.int32)  # Rows of processes 0 and 1 (examples 0, 2, 4 and 1, 3).
  monkeypatch.setattr(processes.jax, 'process_count', lambda: 2)
  sent = []

  def process1_side(tree):
    if not isinstance(tree, dict):  # The row counts.
      return counts
    sent.append(tree)
    return jax.tree_util.tree_map(lambda a: np.stack([a, a]), tree)

  def process0_side(tree):
    if not isinstance(tree, dict):  # The row counts.
      return counts
    return jax.tree_util.tree_map(lambda a, b: np.stack([a, b]), tree, sent[0])

  monkeypatch.setattr(processes.multihost_utils, 'process_allgather', process1_side)
  processes.gather_rows(_part(whole, 1, 2))
  monkeypatch.setattr(processes.multihost_utils, 'process_allgather', process0_side)
  merged = processes.gather_rows(_part(whole, 0, 2))
  assert merged['defect_types'] == whole['defect_types']
  arrays = lambda tree: jax.tree_util.tree_leaves({k: v for k, v in tree.items() if k != 'defect_types'})
  for got, want in zip(arrays(merged), arrays(whole)):
    np.testing.assert_array_equal(got, want)


def test_single_process_is_the_identity():
  rows = _whole()
  assert processes.shard() == (0, 1)
  assert processes.gather_rows(rows) is rows
  state = scoring.moments_init((2,))
  assert processes.merge_across(state, scoring.moments_merge) is state


def test_merge_across_merges_every_process_in_order(monkeypatch):
  """Moments of two processes' shares, merged, equal the moments of the whole (numpy reference)."""
  values = np.random.default_rng(1).normal(size=(9, 4)).astype(np.float32)
  states = [scoring.moments_update(scoring.moments_init((4,)), values[k::2]) for k in range(2)]
  monkeypatch.setattr(processes.jax, 'process_count', lambda: 2)
  monkeypatch.setattr(processes.multihost_utils, 'process_allgather',
                      lambda tree: jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *states))
  merged = processes.merge_across(states[0], scoring.moments_merge)
  mean, std = scoring.moments_finalize(merged, eps=0.)
  np.testing.assert_allclose(mean, values.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(std, values.std(0), rtol=1e-5)
