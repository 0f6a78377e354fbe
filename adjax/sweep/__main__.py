"""`python -m adjax.sweep`: the command line of `adjax.sweep` (flags live here, apart from the library, so
importing `adjax.sweep` next to `adjax.main` defines no flag twice)."""

from pathlib import Path
import sys

from absl import app
from absl import flags

from adjax.errors import InputError
from adjax.sweep import DEFAULT_METRICS
from adjax.sweep import recorded_failures
from adjax.sweep import collect
from adjax.sweep import parse_config_spec
from adjax.sweep import parse_override
from adjax.sweep import run_sweep
from adjax.sweep import write_tables

_CONFIGS = flags.DEFINE_multi_string('config', [], '`[NAME=]PATH[:PRESET] [key=value ...]`; repeat to '
                                     'compare methods.')
_CATEGORIES = flags.DEFINE_list('categories', [], 'Categories (config.data.category) to run.')
_SEEDS = flags.DEFINE_list('seeds', ['0'], 'Seeds (config.seed) to run.')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/sweep', 'Root of the sweep; one folder per run.')
_SET = flags.DEFINE_multi_string('set', [], '`key=value` config override for every run.')
_METRICS = flags.DEFINE_list('metrics', list(DEFAULT_METRICS), 'results.json keys to tabulate (dots go '
                             'into nested dicts, e.g. image_auroc_by_score.energy); higher = better.')
_ALPHA = flags.DEFINE_float('alpha', 0.1, 'Significance level of Wilcoxon-Holm and the Nemenyi CD.')
_TIMEOUT = flags.DEFINE_float('timeout_seconds', 0, 'Per-run time limit (0: none).')
_COLLECT_ONLY = flags.DEFINE_bool('collect_only', False, 'Only collect the results under --workdir.')


def _main(argv):
  if len(argv) > 1:
    raise InputError(f'unexpected arguments: {" ".join(argv[1:])}')
  workdir = Path(_WORKDIR.value)
  failures = []
  if not _COLLECT_ONLY.value:
    if not _CONFIGS.value or not _CATEGORIES.value:
      raise InputError('--config and --categories are required (or use --collect_only)')
    try:
      seeds = [int(seed) for seed in _SEEDS.value]
    except ValueError as error:
      raise InputError(f'--seeds: expected integers, got {_SEEDS.value}') from error
    specs = [parse_config_spec(text) for text in _CONFIGS.value]
    overrides = [parse_override(text) for text in _SET.value]
    records = run_sweep(specs, categories=_CATEGORIES.value, seeds=seeds, workdir=workdir,
                        overrides=overrides, timeout_seconds=_TIMEOUT.value or None)
    failures = [r for r in records if r['status'] == 'failed']
  elif not workdir.is_dir():
    raise InputError(f'--workdir: no such directory {workdir}')
  else:
    failures = recorded_failures(workdir)
  rows = collect(workdir, metrics=_METRICS.value)
  print(write_tables(workdir, rows, metrics=_METRICS.value, alpha=_ALPHA.value, failures=failures))
  print(f'adjax.sweep: wrote {workdir / "summary.md"} ({len(rows)} runs, {len(failures)} failed)')
  return 1 if failures else 0


def main(argv):
  try:
    sys.exit(_main(argv))
  except InputError as error:
    print(f'adjax.sweep: error: {error}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
