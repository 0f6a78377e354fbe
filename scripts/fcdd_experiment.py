"""Seed 000's comparison on adjax's data: FCDD loss (Eq. 4) vs pixel-wise HSC loss (Eq. 5), side by side.

  python scripts/fcdd_experiment.py [--preset default] [--categories brick,grass,gravel] [--seeds 0,1,2]
                                    [--workdir runs/fcdd_experiment] [--set train.num_steps=100 ...]

Runs `configs/fcdd.py:<preset>,fcdd` and `configs/fcdd.py:<preset>,hsc` (same network, data, confetti and
optimiser; only the loss differs) for every category and seed through `adjax.sweep` (one `adjax.main`
process per run; finished runs are skipped, so an interrupted experiment resumes), then prints pixel AUROC
and pixel AP in percent, mean (std) over seeds, per category and averaged over categories, as Markdown in
the style of seed 000's Tables 1-2 (plus image AUROC). The default preset trains a FROM-SCRATCH CNN trunk
(no ImageNet weights offline); the paper used an ImageNet VGG11-BN on MVTec AD. `adjax.sweep`'s tables
(runs.csv, summary.md, Wilcoxon statistics) are written under the workdir as well.
"""

import argparse
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adjax import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position

LOSSES = (('fcdd', 'FCDD (Eq. 4)'), ('hsc', 'HSC (Eq. 5)'))
METRICS = (('pixel_auroc', 'pixel AUROC'), ('pixel_ap', 'pixel AP'), ('image_auroc', 'image AUROC'))
CONFIG = Path(__file__).resolve().parents[1] / 'configs' / 'fcdd.py'


def _cell(mean, std) -> str:
  if mean is None:
    return 'n/a'
  return f'{100 * mean:.1f}' + (f' ({100 * std:.1f})' if std is not None else '')


def side_by_side(summary) -> str:
  """Markdown: one row per category (+ mean), per metric one column per loss; best of a pair in bold."""
  entries = {(entry['method'], entry['category']): entry for entry in summary}
  categories = sorted({c for _, c in entries if c != 'overall'}) + ['overall']
  header = ['category'] + [f'{label} {title}' for _, label in METRICS for _, title in LOSSES]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for category in categories:
    cells = [f'**mean**' if category == 'overall' else category]
    for metric, _ in METRICS:
      values = [entries.get((loss, category), {}) for loss, _ in LOSSES]
      means = [value.get(f'{metric}_mean') for value in values]
      best = max((m for m in means if m is not None), default=None)
      for value, mean in zip(values, means):
        text = _cell(mean, value.get(f'{metric}_std'))
        cells.append(f'**{text}**' if mean is not None and mean == best and means.count(best) == 1 else text)
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--preset', default='default', help='configs/fcdd.py preset (smoke, default, paper)')
  parser.add_argument('--categories', default='brick,grass,gravel')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--workdir', default='runs/fcdd_experiment')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='config override for every run, e.g. train.num_steps=100 (repeatable)')
  parser.add_argument('--timeout', type=float, default=None, help='seconds per run')
  args = parser.parse_args()
  categories = [c for c in args.categories.split(',') if c]
  seeds = [int(s) for s in args.seeds.split(',') if s]
  specs = [sweep.parse_config_spec(f'{loss}={CONFIG}:{args.preset},{loss}') for loss, _ in LOSSES]
  overrides = [sweep.parse_override(text) for text in args.set]
  records = sweep.run_sweep(specs, categories=categories, seeds=seeds, workdir=args.workdir,
                            overrides=overrides, timeout_seconds=args.timeout,
                            log=lambda line: print(line, file=sys.stderr, flush=True))
  rows = [row for row in sweep.collect(args.workdir)
          if row['method'] in dict(LOSSES) and row['category'] in categories and row['seed'] in seeds]
  sweep.write_tables(args.workdir, rows, failures=[r for r in records if r['status'] == 'failed'])
  trunk = 'FROM-SCRATCH CNN trunk' if args.preset in ('smoke', 'default') else 'VGG11-BN trunk'
  print(f'## FCDD loss vs pixel-wise HSC loss ({args.preset} preset, {trunk}; '
        f'{len(seeds)} seed(s): {args.seeds}; overrides: {" ".join(args.set) or "none"})\n')
  print('Percent, mean (std) over seeds; the mean row averages the category means (std over seeds of the '
        'per-seed category average).\n')
  print(side_by_side(sweep.summarize(rows)))
  failed = [r for r in records if r['status'] == 'failed']
  if failed:
    print(f'\n{len(failed)} run(s) failed; see {Path(args.workdir) / "failures.json"}')


if __name__ == '__main__':
  main()
