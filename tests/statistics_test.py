"""adjax.statistics against hand-worked examples, scipy and Demšar's (2006) critical-value table."""

import itertools

import matplotlib.image
import numpy as np
import pytest
from scipy import stats

from adjax import statistics
from adjax.errors import InputError

# Demšar (2006), Table 5(a) and 5(b): q_alpha for the two-tailed Nemenyi test, k = 2 .. 10 methods.
_Q_005 = (1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164)
_Q_010 = (1.645, 2.052, 2.291, 2.459, 2.589, 2.693, 2.780, 2.855, 2.920)


def test_holm_bonferroni_worked_example():
  # Sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> raised to 0.06 (monotone).
  adjusted, rejected = statistics.holm_bonferroni([0.01, 0.04, 0.03, 0.005], alpha=0.05)
  np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
  np.testing.assert_array_equal(rejected, [True, False, False, True])
  # Step-down stops at the first non-rejection even if a later raw p-value is small after multiplying:
  # 0.02 x3 = 0.06 > 0.05 stops; 0.025 x2 = 0.05 is raised to 0.06, 0.5 x1 = 0.5.
  adjusted, rejected = statistics.holm_bonferroni([0.5, 0.02, 0.025], alpha=0.05)
  np.testing.assert_allclose(adjusted, [0.5, 0.06, 0.06])
  assert not rejected.any()
  adjusted, _ = statistics.holm_bonferroni([0.4, 0.6], alpha=0.1)  # 0.4 x2 = 0.8, 0.6 -> 0.8; capped at 1.
  np.testing.assert_allclose(adjusted, [0.8, 0.8])
  adjusted, _ = statistics.holm_bonferroni([0.7, 0.9], alpha=0.1)
  np.testing.assert_allclose(adjusted, [1.0, 1.0])


def test_ranks_average_ties_like_scipy():
  scores = np.array([[0.9, 0.8, 0.8, 0.7],
                     [0.5, 0.6, 0.6, 0.6],
                     [0.3, 0.3, 0.3, 0.3]])
  expected = np.array([[1, 2.5, 2.5, 4], [4, 2, 2, 2], [2.5, 2.5, 2.5, 2.5]])
  np.testing.assert_array_equal(statistics.ranks(scores), expected)
  for row, scores_row in zip(statistics.ranks(scores), scores):
    np.testing.assert_array_equal(row, stats.rankdata(-scores_row, method='average'))
  np.testing.assert_allclose(statistics.average_ranks(scores), expected.mean(axis=0))
  np.testing.assert_array_equal(statistics.ranks(scores, higher_is_better=False), 5 - expected)


def test_wilcoxon_matches_scipy_and_the_exact_distribution():
  rng = np.random.default_rng(0)
  a, b = rng.uniform(size=12), rng.uniform(size=12)
  b[3] = a[3]  # One zero difference: dropped by scipy's default zero_method.
  reference = stats.wilcoxon(a, b)
  assert statistics.wilcoxon(a, b) == pytest.approx((reference.statistic, reference.pvalue))
  # Five positive differences: W = 0, exact two-sided p = 2 / 2^5.
  assert statistics.wilcoxon([1, 2, 3, 4, 5], [0, 0, 0, 0, 0]) == pytest.approx((0.0, 0.0625))
  assert statistics.wilcoxon([0.5, 0.7], [0.5, 0.7]) == (0.0, 1.0)


def test_compare_applies_holm_to_all_pairs():
  rng = np.random.default_rng(1)
  scores = rng.uniform(0.5, 0.9, (10, 1)) + np.array([0.0, 0.01, 0.08, 0.09]) + rng.normal(0, 0.02, (10, 4))
  names = ['a', 'b', 'c', 'd']
  result = statistics.compare(scores, method_names=names, alpha=0.1)
  pairs = list(itertools.combinations(range(4), 2))
  p_values = [stats.wilcoxon(scores[:, i], scores[:, j]).pvalue for i, j in pairs]
  adjusted, rejected = statistics.holm_bonferroni(p_values, alpha=0.1)
  assert [(p['method_a'], p['method_b']) for p in result['pairs']] == [(names[i], names[j]) for i, j in pairs]
  np.testing.assert_allclose([p['p_value'] for p in result['pairs']], p_values)
  np.testing.assert_allclose([p['p_holm'] for p in result['pairs']], adjusted)
  assert [p['significant'] for p in result['pairs']] == list(rejected)
  ranks = statistics.average_ranks(scores)
  assert result['average_ranks'] == pytest.approx(dict(zip(names, ranks)))
  assert result['critical_difference'] == pytest.approx(
      statistics.nemenyi_critical_difference(num_methods=4, num_datasets=10, alpha=0.1))
  # Every clique has no significant pair inside it.
  significant = {(p['method_a'], p['method_b']) for p in result['pairs'] if p['significant']}
  for clique in result['cliques']:
    assert not any(pair in significant or pair[::-1] in significant
                   for pair in itertools.combinations(clique, 2))


@pytest.mark.parametrize('alpha, table', [(0.05, _Q_005), (0.10, _Q_010)])
def test_nemenyi_cd_matches_demsar_table(alpha, table):
  num_datasets = 14  # The table has 3 decimals (k = 3 at 0.05: 2.3437 printed as 2.343).
  for k, q in zip(range(2, 11), table):
    expected = q * np.sqrt(k * (k + 1) / (6 * num_datasets))
    got = statistics.nemenyi_critical_difference(num_methods=k, num_datasets=num_datasets, alpha=alpha)
    assert got == pytest.approx(expected, abs=1e-3 * np.sqrt(k * (k + 1) / (6 * num_datasets)))
  # Demšar's worked example: 4 methods, 14 data sets, alpha 0.05 -> CD = 1.25.
  if alpha == 0.05:
    assert statistics.nemenyi_critical_difference(num_methods=4, num_datasets=14) == pytest.approx(
        1.25, abs=0.005)


def test_cliques_are_maximal_runs_without_significant_pairs():
  rank = np.array([1.0, 2.0, 3.0, 4.0])
  significant = np.zeros((4, 4), bool)
  significant[0, 2] = significant[2, 0] = True  # 0-1 together, 1-2-3 together.
  assert statistics.cliques(rank, significant) == [(0, 1), (1, 2, 3)]
  assert statistics.cliques(rank, np.zeros((4, 4), bool)) == [(0, 1, 2, 3)]
  assert statistics.cliques(rank, ~np.eye(4, dtype=bool)) == []
  # Order comes from the ranks, not from the column order.
  assert statistics.cliques(np.array([3.0, 1.0, 2.0]), np.array(
      [[0, 1, 0], [1, 0, 0], [0, 0, 0]], bool)) == [(1, 2), (2, 0)]


def test_cd_diagram_is_written_atomically(tmp_path):
  path = tmp_path / 'plots' / 'cd.png'
  ranks = {'fcdd': 2.6, 'hsc': 1.4, 'ebm': 2.0}
  for _ in range(2):  # Overwriting works too.
    written = statistics.write_cd_diagram(path, mean_ranks=ranks, clique_names=[('hsc', 'ebm')],
                                          critical_difference=1.2, title='image_auroc')
  assert written == path
  assert sorted(p.name for p in path.parent.iterdir()) == ['cd.png']  # No temporary files left.
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[1] > image.shape[0] > 50
  assert (image[..., :3] < 0.5).any()  # Something was drawn.
  red = (image[..., 0] > 0.7) & (image[..., 1] < 0.3) & (image[..., 2] < 0.3)
  assert red.any()  # The clique bar.
  with pytest.raises(InputError):
    statistics.write_cd_diagram(tmp_path / 'one.png', mean_ranks={'a': 1.0})


def test_bad_scores_raise_input_error():
  with pytest.raises(InputError, match='finite'):
    statistics.compare([[0.5, np.nan], [0.6, 0.7]], method_names=['a', 'b'])
  with pytest.raises(InputError, match='shape'):
    statistics.average_ranks([0.5, 0.6])
  with pytest.raises(InputError, match='method_names'):
    statistics.compare([[0.5, 0.6], [0.6, 0.7]], method_names=['a'])
