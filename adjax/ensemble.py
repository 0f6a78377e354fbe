"""Weighted majority-vote ensembles of trained runs (seed 003 Sec. 3.6, Eq. 10).

Every `adjax.main` run that evaluates writes `image_scores.npz` (see `evaluate.write_image_scores`): the
test images' scores and, for methods with a training-data threshold, its decisions `anomalous [N]`. An
ensemble reads those of several runs over the same test split, votes with `losses.weighted_majority_vote`
and scores the vote like a single run (overall and per category).

Weights (Eq. 10 leaves them to the user; seed 003 normalised "performance metrics" without saying of what
data): 'equal', explicit numbers, or a `results.json` key of each run. A test-split key (e.g. `image_f1`)
makes the ensemble's test figures optimistic, as they were in the paper; the output says so.
"""

from pathlib import Path
import json

import jax.numpy as jnp
import numpy as np

from adjax import evaluate
from adjax.errors import InputError
from adjax.losses import reconstruction as rec_losses

SCORES_FILE = 'image_scores.npz'
_SAME_SPLIT_KEYS = ('labels', 'category_index', 'defect_types', 'categories')


def load_member(run_dir) -> dict:
  """`{'name', 'anomalous' [N] bool, 'results' (results.json), <_SAME_SPLIT_KEYS arrays>}` of one run."""
  run_dir = Path(run_dir)
  path = run_dir / SCORES_FILE
  if not path.is_file():
    raise InputError(f'{path}: no per-image scores (run adjax.main to the end in {run_dir} first)')
  with np.load(path) as arrays:
    member = {key: arrays[key] for key in arrays.files}
  if 'anomalous' not in member:
    raise InputError(f'{path}: the run has no training-data threshold, so no decisions to vote with')
  results_path = run_dir / 'results.json'
  member['results'] = json.loads(results_path.read_text()) if results_path.is_file() else {}
  member['name'] = run_dir.name if run_dir.name and not run_dir.name.startswith('seed_') else str(run_dir)
  return member


def member_weights(members, weights) -> tuple[np.ndarray, str]:
  """(weights [M] > 0, description) from 'equal', a list of numbers, or a results.json key per member."""
  if isinstance(weights, str) and weights == 'equal':
    return np.ones(len(members)), 'equal'
  if isinstance(weights, str):
    values = []
    for member in members:
      value = member['results']
      for part in weights.split('.'):
        value = value.get(part) if isinstance(value, dict) else None
      if not isinstance(value, (int, float)) or not value > 0:
        raise InputError(f'--weights={weights}: run {member["name"]} has {value!r} there, need a number > 0')
      values.append(float(value))
    return np.asarray(values), f'results.json {weights} (test-split metric: optimistic, as seed 003)'
  values = np.asarray(weights, np.float64)
  if values.shape != (len(members),) or not np.all(values > 0):
    raise InputError(f'--weights: need {len(members)} numbers > 0, got {list(weights)}')
  return values, 'given'


def vote(members, weights: np.ndarray) -> dict:
  """The ensemble's decisions `anomalous [N]` and anomalous vote share `vote_share [N]` in [0, 1]."""
  for member in members[1:]:
    for key in _SAME_SPLIT_KEYS:
      if not np.array_equal(member[key], members[0][key]):
        raise InputError(f'runs {members[0]["name"]} and {member["name"]} scored different test splits '
                         f'({key} differ)')
  predictions = jnp.asarray(np.stack([member['anomalous'] for member in members]))
  anomalous = np.asarray(rec_losses.weighted_majority_vote(predictions, jnp.asarray(weights, jnp.float32)))
  share = (weights / weights.sum()) @ np.asarray(predictions, np.float64)
  return {'anomalous': anomalous, 'vote_share': share}


def ensemble_metrics(members, weights: np.ndarray) -> dict:
  """Metrics of the vote (as `evaluate.compute_metrics`, score = anomalous vote share) and of each member
  at its own threshold: image precision / recall / F1, per category and their means when several."""
  voted = vote(members, weights)
  first = members[0]
  categories = [str(c) for c in first['categories']]
  # The vote's decision at the share of 0.5 equals Eq. 10 up to ties, which Eq. 10 calls anomalous
  # as `>=` does; pass the decisions themselves to be exact.
  scored = {'scores': {'vote_share': voted['vote_share'], 'vote': voted['anomalous'].astype(np.float32)},
            'maps': {}, 'labels': first['labels'], 'category_index': first['category_index'],
            'has_mask': np.zeros(first['labels'].shape, bool), 'masks': None}
  results = evaluate.compute_metrics(scored, primary_map='', primary_score='vote', has_masks=False,
                                     image_threshold=1.0, categories=categories)
  results['image_auroc'] = results['image_auroc_by_score']['vote_share']
  for key in ('image_auroc_by_score', 'pixel_metrics_by_map', 'threshold', 'primary_map', 'primary_score',
              'pixel_auroc', 'pixel_ap', 'pixel_aupro', 'image_f1_max'):
    results.pop(key, None)
  results['members'] = {}
  for member in members:
    member_scored = {**scored, 'scores': {'decision': member['anomalous'].astype(np.float32)}}
    one = evaluate.compute_metrics(member_scored, primary_map='', primary_score='decision',
                                   has_masks=False, image_threshold=1.0, categories=categories)
    results['members'][member['name']] = {
        key: one.get(key) for key in ('image_precision', 'image_recall', 'image_f1',
                                      'image_precision_category_mean', 'image_recall_category_mean',
                                      'image_f1_category_mean')}
  results['weights'] = [float(w) for w in weights / weights.sum()]
  return results
