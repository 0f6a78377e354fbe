"""Comparing methods across datasets (seed 000 §5): Wilcoxon–Holm, average ranks, critical differences.

Scores are `[num_datasets, num_methods]` (in anomaly detection a dataset is one category, trained and
tested on its own), higher = better. Pairwise two-sided Wilcoxon signed-rank tests on the per-dataset
differences, Holm–Bonferroni over all pairs, average ranks (rank 1 = best, ties share the mean rank), the
Nemenyi critical difference (Demšar 2006), and the critical-difference diagram: methods placed at their
average rank, joined by a bar when the corrected pairwise test does not separate them.
"""

import itertools
import os
from pathlib import Path
import tempfile

from matplotlib.backends import backend_agg
from matplotlib import figure as mpl_figure
import numpy as np
from scipy import stats

from adjax.errors import InputError


def _check_scores(scores) -> np.ndarray:
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 2:
    raise InputError(f'scores: expected [num_datasets, num_methods >= 2], got shape {scores.shape}')
  if not np.all(np.isfinite(scores)):
    raise InputError('scores: must be finite (drop datasets where a method has no value)')
  return scores


def wilcoxon(scores_a, scores_b) -> tuple[float, float]:
  """Two-sided Wilcoxon signed-rank test of paired scores `[num_datasets]`: (statistic, p-value).

  scipy's defaults (zero differences dropped, exact distribution for small samples without ties); when
  every difference is zero the methods are indistinguishable: statistic 0, p-value 1.
  """
  differences = np.asarray(scores_a, np.float64) - np.asarray(scores_b, np.float64)
  if not np.any(differences):
    return 0.0, 1.0
  result = stats.wilcoxon(differences, alternative='two-sided')
  return float(result.statistic), float(result.pvalue)


def holm_bonferroni(p_values, *, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
  """Holm's step-down correction: (adjusted p-values `[m]`, rejected `[m]` bool) in the input order.

  The i-th smallest p-value (from 0) is multiplied by `m - i`, made non-decreasing along that order and
  capped at 1; a hypothesis is rejected when its adjusted p-value is <= alpha.
  """
  p_values = np.asarray(p_values, np.float64).reshape(-1)
  order = np.argsort(p_values, kind='stable')
  multipliers = len(p_values) - np.arange(len(p_values))
  adjusted_sorted = np.minimum(np.maximum.accumulate(p_values[order] * multipliers), 1.0)
  adjusted = np.empty_like(p_values)
  adjusted[order] = adjusted_sorted
  return adjusted, adjusted <= alpha


def ranks(scores, *, higher_is_better: bool = True) -> np.ndarray:
  """Rank of each method on each dataset `[num_datasets, num_methods]`: 1 = best, ties averaged."""
  scores = _check_scores(scores)
  return stats.rankdata(-scores if higher_is_better else scores, method='average', axis=1)


def average_ranks(scores, *, higher_is_better: bool = True) -> np.ndarray:
  """Mean rank of each method over the datasets `[num_methods]`."""
  return ranks(scores, higher_is_better=higher_is_better).mean(axis=0)


def nemenyi_critical_difference(*, num_methods: int, num_datasets: int, alpha: float = 0.05) -> float:
  """Demšar's CD = q_alpha sqrt(k (k + 1) / (6 N)), q_alpha = studentized range quantile(k, inf) / sqrt(2)."""
  if num_methods < 2 or num_datasets < 1:
    raise InputError(f'critical difference needs >= 2 methods and >= 1 dataset, got {num_methods} '
                     f'methods and {num_datasets} datasets')
  q_alpha = stats.studentized_range.ppf(1 - alpha, num_methods, np.inf) / np.sqrt(2)
  return float(q_alpha * np.sqrt(num_methods * (num_methods + 1) / (6 * num_datasets)))


def cliques(average_rank, significant) -> list[tuple[int, ...]]:
  """Maximal runs of methods (in average-rank order) with no significant pair among them.

  `average_rank [k]`, `significant [k, k]` bool (symmetric). Returns tuples of method indices, best
  first, each of >= 2 methods and not contained in another.
  """
  order = np.argsort(np.asarray(average_rank), kind='stable')
  significant = np.asarray(significant, bool)
  runs = []
  for start in range(len(order)):
    end = start
    while end + 1 < len(order) and not significant[np.ix_(order[start:end + 2], order[start:end + 2])].any():
      end += 1
    if end > start and not (runs and runs[-1][1] >= end):
      runs.append((start, end))
  return [tuple(int(i) for i in order[start:end + 1]) for start, end in runs]


def compare(scores, *, method_names, alpha: float = 0.1, higher_is_better: bool = True) -> dict:
  """All of seed 000 §5 for one metric. `scores [num_datasets, num_methods]`.

  Returns `average_ranks` {name: rank}, `pairs` (one dict per pair: method_a, method_b, statistic,
  p_value, p_holm, significant, better), `critical_difference` (Nemenyi at alpha), `cliques` (tuples of
  names), `num_datasets` and `alpha`.
  """
  scores = _check_scores(scores)
  names = list(method_names)
  if len(names) != scores.shape[1]:
    raise InputError(f'method_names: {len(names)} names for {scores.shape[1]} methods')
  mean_ranks = average_ranks(scores, higher_is_better=higher_is_better)
  index_pairs = list(itertools.combinations(range(len(names)), 2))
  tests = [wilcoxon(scores[:, a], scores[:, b]) for a, b in index_pairs]
  adjusted, rejected = holm_bonferroni([p for _, p in tests], alpha=alpha)
  significant = np.zeros((len(names),) * 2, bool)
  pairs = []
  for (a, b), (statistic, p_value), p_holm, reject in zip(index_pairs, tests, adjusted, rejected):
    significant[a, b] = significant[b, a] = reject
    pairs.append(dict(method_a=names[a], method_b=names[b], statistic=statistic, p_value=p_value,
                      p_holm=float(p_holm), significant=bool(reject),
                      better=names[a] if mean_ranks[a] < mean_ranks[b] else
                      names[b] if mean_ranks[b] < mean_ranks[a] else None))
  return dict(
      average_ranks={name: float(rank) for name, rank in zip(names, mean_ranks)}, pairs=pairs,
      critical_difference=nemenyi_critical_difference(
          num_methods=len(names), num_datasets=scores.shape[0], alpha=alpha),
      cliques=[tuple(names[i] for i in clique) for clique in cliques(mean_ranks, significant)],
      num_datasets=int(scores.shape[0]), alpha=alpha)


def write_cd_diagram(path, *, mean_ranks: dict, clique_names=(), critical_difference: float | None = None,
                     title: str = '') -> Path:
  """Draws the critical-difference diagram as a PNG at `path` (temp file + rename); returns the path.

  `mean_ranks` {name: average rank}, `clique_names` tuples of names; the rank axis runs from 1 (best, left) to the number of methods; the
  better half of the methods is labelled on the left, the rest on the right; each clique (names not
  separated by the corrected pairwise test) is a thick bar; the Nemenyi CD is drawn above the axis.
  """
  names = sorted(mean_ranks, key=lambda name: (mean_ranks[name], name))
  k = len(names)
  if k < 2:
    raise InputError(f'a CD diagram needs >= 2 methods, got {k}')
  num_left = (k + 1) // 2
  rows = max(num_left, k - num_left)
  clique_top = -0.25
  label_top = clique_top - 0.3 * len(clique_names) - 0.05
  bottom, top = label_top - 0.3 * (rows - 1) - 0.25, 0.95 if title else 0.6
  fig = mpl_figure.Figure(figsize=(7.0, 0.75 * (top - bottom)))
  backend_agg.FigureCanvasAgg(fig)
  axes = fig.add_axes((0.0, 0.0, 1.0, 1.0))
  axes.set_axis_off()
  low, high = 1.0, float(k)
  margin = 0.45 * (high - low) + 0.6  # Room for the labels on both sides.
  axes.set_xlim(low - margin, high + margin)
  axes.set_ylim(bottom, top)
  line = dict(color='black', linewidth=1.0)
  axes.plot([low, high], [0, 0], **line)
  for tick in np.arange(1, k + 1):
    axes.plot([tick, tick], [0, 0.08], **line)
    axes.text(tick, 0.12, str(tick), ha='center', va='bottom', fontsize=9)
  if critical_difference is not None and np.isfinite(critical_difference):
    cd_end = min(low + critical_difference, high + margin * 0.9)
    axes.plot([low, cd_end], [0.42, 0.42], color='black', linewidth=1.5)
    for x in (low, cd_end):
      axes.plot([x, x], [0.37, 0.47], color='black', linewidth=1.0)
    axes.text(cd_end + 0.05, 0.42, f'CD (Nemenyi) = {critical_difference:.2f}', va='center', fontsize=8)
  for row, members in enumerate(clique_names):
    member_ranks = [mean_ranks[name] for name in members]
    y = clique_top - 0.3 * row
    axes.plot([min(member_ranks) - 0.03, max(member_ranks) + 0.03], [y, y], color='tab:red',
              linewidth=4, solid_capstyle='round')
  for position, name in enumerate(names):
    rank = mean_ranks[name]
    on_left = position < num_left
    row = position if on_left else k - 1 - position
    y = label_top - 0.3 * row
    edge = low - margin * 0.25 if on_left else high + margin * 0.25
    axes.plot([rank, rank, edge], [0, y, y], **line)
    axes.text(edge + (-0.05 if on_left else 0.05), y, f'{name} ({rank:.2f})',
              ha='right' if on_left else 'left', va='center', fontsize=9)
  if title:
    axes.text((low + high) / 2, top - 0.05, title, ha='center', va='top', fontsize=10)
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  try:
    with os.fdopen(descriptor, 'wb') as file:
      fig.savefig(file, format='png', dpi=110, bbox_inches='tight')
    os.replace(temporary, path)
  except BaseException:
    Path(temporary).unlink(missing_ok=True)
    raise
  return path
