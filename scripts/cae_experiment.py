"""Seed 003's Table 3 on adjax's data: baseline / DE / CO / CO+DE / +Mixer autoencoders and their ensemble.

  python scripts/cae_experiment.py [--preset default] [--category all] [--seeds 0]
                                   [--workdir runs/cae_experiment] [--set train.num_steps=300 ...]

Runs `configs/cae.py:<preset>` in seed 003's variants, each ONE model over all categories of
`--category` (default: the three embedded textures), through `adjax.sweep` (one `adjax.main` process per
run; finished runs are skipped, so an interrupted experiment resumes):
  baseline        plain convolutional AE, L2 (no denoising, no contractive term)
  DE              denoising (v = 0.3, training only)
  CO              contractive (lambda 1e-4, ||J_E(x)||_F^2)
  CO+DE           both
  CO+DE+MIX (L2)  both + the Mixer latent classifier; decisions against T[predicted category]
  CO+DE+MIX (SSIM)  the same trained and scored with 1 - SSIM
and the weighted majority vote of all of them with equal weights (Eq. 10). Non-Mixer models decide against
the threshold of the image's own category (as one model per category would). All thresholds come from
training images only (seed 003 Eq. 6). Prints precision / recall / F1 averaged over categories (Table 3)
and, for CO+DE+MIX (L2), the fractions of normal and anomalous images classified correctly per category
(Table 4), mean over seeds. seed 003's MS-SSIM row is not run (adjax has MS-SSIM as a score function,
not as a training loss).
"""

import argparse
from pathlib import Path
import sys

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adjax import ensemble  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position

CONFIG = Path(__file__).resolve().parents[1] / 'configs' / 'cae.py'
MIXER = 'mixer.num_categories={k} eval.score=mixer'
VARIANTS = (
    ('baseline', 'baseline', 'denoising.scale=0.0 contractive.weight=0.0'),
    ('de', 'DE', 'contractive.weight=0.0'),
    ('co', 'CO', 'denoising.scale=0.0'),
    ('co_de', 'CO+DE', ''),
    ('co_de_mix_l2', 'CO+DE+MIX (L2)', MIXER),
    ('co_de_mix_ssim', 'CO+DE+MIX (SSIM)', MIXER + ' loss.base=ssim mixer.score=ssim eval.map=ssim'),
)


def _fmt(values) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return 'n/a'
  return f'{np.mean(values):.3f}' + (f' ± {np.std(values):.3f}' if len(values) > 1 else '')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--preset', default='default', help='configs/cae.py preset (smoke, default, paper)')
  parser.add_argument('--category', default='all', help="several categories: 'all' or 'a+b+c'")
  parser.add_argument('--dataset', default='', help='data.name (default: the preset\'s)')
  parser.add_argument('--seeds', default='0')
  parser.add_argument('--workdir', default='runs/cae_experiment')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='config override for every run, e.g. train.num_steps=100 (repeatable)')
  parser.add_argument('--timeout', type=float, default=None, help='seconds per run')
  args = parser.parse_args()
  from adjax.data import sources  # pylint: disable=g-import-not-at-top
  dataset = args.dataset or ('mvtec_ad' if args.preset.startswith('paper') else 'textures')
  num_categories = len(sources.categories_of(name=dataset, category=args.category))
  seeds = [int(s) for s in args.seeds.split(',') if s]
  dataset_override = [f'data.name={dataset}'] if args.dataset else []
  specs = [sweep.parse_config_spec(f'{name}={CONFIG}:{args.preset} {overrides.format(k=num_categories)}'.strip())
           for name, _, overrides in VARIANTS]
  overrides = [sweep.parse_override(text) for text in dataset_override + args.set]
  records = sweep.run_sweep(specs, categories=[args.category], seeds=seeds, workdir=args.workdir,
                            overrides=overrides, timeout_seconds=args.timeout,
                            log=lambda line: print(line, file=sys.stderr, flush=True))
  failed = [r for r in records if r['status'] == 'failed']
  rows = {label: [] for _, label, _ in VARIANTS}
  rows['ENSEMBLE (equal weights)'] = []
  for seed in seeds:
    run_dirs = [sweep.run_dir(args.workdir, name=name, category=args.category, seed=seed)
                for name, _, _ in VARIANTS]
    finished = [path for path in run_dirs if (path / ensemble.SCORES_FILE).is_file()]
    members = [ensemble.load_member(path) for path in finished]
    for path, member in zip(finished, members):
      label = dict((name, label) for name, label, _ in VARIANTS)[path.parts[-3]]
      rows[label].append(member['results'])
    if len(members) >= 2:
      rows['ENSEMBLE (equal weights)'].append(ensemble.ensemble_metrics(members, np.ones(len(members))))
  print(f'## Seed 003 Table 3 on {dataset} {args.category} ({num_categories} categories, one model per '
        f'variant over all of them; {args.preset} preset; seeds {args.seeds}; '
        f'overrides: {" ".join(args.set) or "none"})\n')
  print('P / R / F1: image precision, recall and F1 at the training-data thresholds, averaged over the '
        'categories (mean ± std over seeds); image AUROC of the decision score.\n')
  print('| model | P | R | F1 | image AUROC |\n|---|---|---|---|---|')
  for label, results in rows.items():
    cells = [_fmt([r.get(f'image_{k}_category_mean') for r in results]) for k in ('precision', 'recall', 'f1')]
    print(f'| {label} | ' + ' | '.join(cells) + f' | {_fmt([r.get("image_auroc") for r in results])} |')
  mixer = rows['CO+DE+MIX (L2)']
  if mixer and mixer[0].get('by_category'):
    print('\nCO+DE+MIX (L2), Table 4 style: fraction of normal / anomalous test images classified correctly.\n')
    print('| category | normal | anomalous |\n|---|---|---|')
    for category in mixer[0]['by_category']:
      normal = _fmt([r['by_category'][category]['normal_accuracy'] for r in mixer])
      anomalous = _fmt([r['by_category'][category]['anomalous_accuracy'] for r in mixer])
      print(f'| {category} | {normal} | {anomalous} |')
  if failed:
    print(f'\n{len(failed)} run(s) failed; see {Path(args.workdir) / "failures.json"}')
    sys.exit(1)


if __name__ == '__main__':
  main()
