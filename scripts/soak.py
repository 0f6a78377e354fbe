"""Soak test (not in CI): trains and evaluates every method's smoke preset in a loop, in one process.

  python scripts/soak.py [--minutes 10] [--data_dir DIR] [--json soak.json] [--rss_growth_mb 150]

Methods are `adjax.methods.known_methods()`; every `configs/<name>.py` whose `smoke` preset names one of them is
run (a method can have several, e.g. `reconstruction` through lamp.py and cae.py). Rounds repeat until the
time is up; each run gets a fresh workdir (a reused one would resume instead of train). Checks, after every
round: each config's results (timings aside) equal its first run's, and the process's resident memory (RSS)
after a round has not grown by more than `--rss_growth_mb` over the end of round 1 (round 1 fills JAX's
compilation caches). Exits 1 when a check fails; prints a table of rounds, seconds and RSS.
"""

import argparse
import importlib.util
import json
import os
from pathlib import Path
import shutil
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from adjax import xla_options  # pylint: disable=g-import-not-at-top,wrong-import-position

xla_options.set_defaults()

from absl import logging  # pylint: disable=g-import-not-at-top,wrong-import-position

from adjax import methods  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax import train  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = Path(__file__).resolve().parents[1]
TIMING_KEYS = ('train_seconds', 'train_images_per_second', 'eval_seconds')


def rss_megabytes() -> float:
  """Current resident set size of this process (Linux /proc)."""
  for line in Path('/proc/self/status').read_text().splitlines():
    if line.startswith('VmRSS:'):
      return int(line.split()[1]) / 1024
  raise RuntimeError('no VmRSS in /proc/self/status')


def smoke_configs(data_dir: str) -> dict:
  """`{config file stem: smoke ConfigDict}` for every config whose method is a known method."""
  known, found = methods.known_methods(), {}
  for path in sorted((REPO / 'configs').glob('*.py')):
    spec = importlib.util.spec_from_file_location(f'soak_config_{path.stem}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if 'smoke' not in getattr(module, 'PRESETS', ()):
      continue
    config = module.get_config('smoke')
    if config.method in known:
      config.data.data_dir = data_dir
      found[path.stem] = config
  return found


def comparable(results: dict) -> str:
  return json.dumps({k: v for k, v in results.items() if k not in TIMING_KEYS}, sort_keys=True, default=str)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--minutes', type=float, default=10.0)
  parser.add_argument('--data_dir', default='', help='tfds data dir (default: a temporary one)')
  parser.add_argument('--rss_growth_mb', type=float, default=150.0)
  parser.add_argument('--json', default='', help='also write the figures here')
  parser.add_argument('--keep_jax_caches', action='store_true',
                      help='pass clear_jax_caches=False to train_and_evaluate (shows the growth it prevents)')
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  scratch = Path(tempfile.mkdtemp(prefix='adjax-soak-'))
  configs = smoke_configs(args.data_dir or str(scratch / 'tfds'))
  untested = sorted(set(methods.known_methods()) - {c.method for c in configs.values()})
  print(f'soak: configs {", ".join(configs)}; methods without a smoke config: {untested or "none"}')
  deadline = time.monotonic() + 60 * args.minutes
  first_results, rounds, failures = {}, [], []
  while time.monotonic() < deadline or not rounds:
    start, seconds = time.perf_counter(), {}
    for name, config in configs.items():
      workdir = scratch / 'runs' / name
      run_start = time.perf_counter()
      results = train.train_and_evaluate(config, workdir, clear_jax_caches=not args.keep_jax_caches)
      seconds[name] = round(time.perf_counter() - run_start, 1)
      shutil.rmtree(workdir)
      fingerprint = comparable(results)
      first_results.setdefault(name, fingerprint)
      if fingerprint != first_results[name]:
        failures.append(f'round {len(rounds) + 1}: {name} results differ from round 1')
    rounds.append({'round': len(rounds) + 1, 'seconds': round(time.perf_counter() - start, 1),
                   'rss_mb': round(rss_megabytes(), 1), 'run_seconds': seconds})
    print(f'soak: round {rounds[-1]["round"]:3d}  {rounds[-1]["seconds"]:7.1f} s  '
          f'RSS {rounds[-1]["rss_mb"]:8.1f} MB  {seconds}', flush=True)
  growth = rounds[-1]['rss_mb'] - rounds[0]['rss_mb']
  if growth > args.rss_growth_mb:
    failures.append(f'RSS grew by {growth:.1f} MB from round 1 to round {len(rounds)}')
  summary = {'rounds': rounds, 'rss_growth_mb': round(growth, 1), 'failures': failures,
             'configs': list(configs), 'methods_without_smoke_config': untested}
  if args.json:
    Path(args.json).write_text(json.dumps(summary, indent=2) + '\n')
  shutil.rmtree(scratch, ignore_errors=True)
  print(f'soak: {len(rounds)} round(s); RSS growth after round 1: {growth:+.1f} MB; '
        f'{"identical results in every round" if not failures else "FAILED: " + "; ".join(failures)}')
  sys.exit(1 if failures else 0)


if __name__ == '__main__':
  main()
