"""Weighted majority vote (seed 003 Eq. 10) of finished adjax runs over the same test split.

  python scripts/ensemble.py --run runs/cae_a --run runs/cae_b --run runs/lamp [--weights equal]
                             [--json runs/ensemble.json]

Each --run is a workdir that `adjax.main` trained and evaluated (it holds `image_scores.npz`, written by every
evaluation, with the method's decisions at its training-data threshold). `--weights` is `equal`, numbers
(`1,2,1`), or a results.json key of each run (e.g. `image_f1`: a test-split metric, which makes the
ensemble's figures optimistic, as in seed 003). Prints precision / recall / F1 of every member and of the
vote (category means too when the runs cover several categories) as Markdown; `--json` saves everything.
"""

import argparse
import json
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adjax import ensemble  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax.errors import InputError  # pylint: disable=g-import-not-at-top,wrong-import-position


def _fmt(value) -> str:
  return 'n/a' if value is None else f'{value:.3f}'


def table(results: dict) -> str:
  """Markdown rows: members then ENSEMBLE; columns P R F1 overall (and category means if present)."""
  per_category = results.get('image_f1_category_mean', None) is not None or 'by_category' in results
  header = ['model', 'weight', 'P', 'R', 'F1'] + (['P (cat. mean)', 'R (cat. mean)', 'F1 (cat. mean)']
                                                   if per_category else [])
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  rows = list(results['members'].items()) + [('**ENSEMBLE**', results)]
  weights = results['weights'] + [None]
  for (name, values), weight in zip(rows, weights):
    cells = [name, '' if weight is None else f'{weight:.3f}'] + [
        _fmt(values.get(f'image_{key}')) for key in ('precision', 'recall', 'f1')]
    if per_category:
      cells += [_fmt(values.get(f'image_{key}_category_mean')) for key in ('precision', 'recall', 'f1')]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def run(run_dirs, *, weights: str) -> dict:
  members = [ensemble.load_member(path) for path in run_dirs]
  if len(members) < 2:
    raise InputError('--run: an ensemble needs at least two runs')
  if weights != 'equal' and all(part.strip().replace('.', '', 1).isdigit() for part in weights.split(',')):
    weights = [float(part) for part in weights.split(',')]
  values, description = ensemble.member_weights(members, weights)
  results = ensemble.ensemble_metrics(members, values)
  results['weights_from'] = description
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--run', action='append', default=[], help='a finished adjax workdir (repeat)')
  parser.add_argument('--weights', default='equal', help="'equal', numbers 'w1,w2,...' or a results.json key")
  parser.add_argument('--json', default='', help='write the full results here')
  args = parser.parse_args()
  try:
    results = run(args.run, weights=args.weights)
  except InputError as error:
    print(f'ensemble: error: {error}', file=sys.stderr)
    sys.exit(2)
  print(f'Weighted majority vote of {len(args.run)} runs; weights: {results["weights_from"]}\n')
  print(table(results))
  if args.json:
    Path(args.json).write_text(json.dumps(results, indent=2) + '\n')


if __name__ == '__main__':
  main()
