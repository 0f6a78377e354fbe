"""Command line: `python -m adjax.main --config=configs/ebm.py[:preset] [--workdir=DIR] [--config.a.b=v]`.

Without `--workdir` the run goes to `runs/<config name>[-<preset>]`. Bad input (unknown config key, missing
dataset, bad layout, ...) ends with one line on stderr and exit code 2; a diverged training with exit code 1.
"""

import os
from pathlib import Path
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from adjax import xla_options  # pylint: disable=g-import-not-at-top

xla_options.set_defaults()  # Before JAX starts its backends.

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
from ml_collections import config_flags

from adjax.errors import InputError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, optionally `:preset`.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, TensorBoard events, figures and '
                               'results.json go (default: runs/<config name>[-<preset>]).')
flags.mark_flags_as_required(['config'])


def default_workdir(config_argument: str) -> Path:
  """`configs/ebm.py:smoke` → `runs/ebm-smoke`."""
  path, _, preset = config_argument.partition(':')
  return Path('runs') / (Path(path).stem + (f'-{preset}' if preset else ''))


def _fail(message: str, code: int = 2):
  print(f'adjax: error: {message}', file=sys.stderr)
  sys.exit(code)


def _one_line(error: BaseException) -> str:
  """The gist of an error whose text may embed a traceback (config_flags does that)."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  if not lines:
    return type(error).__name__
  if any(line.startswith('Traceback') for line in lines):
    return f'{lines[0]} {lines[-1]}'
  return ' '.join(lines)


def _parse_flags(argv):
  """absl's parser, but a bad flag or config value is one line and exit code 2, not a traceback."""
  try:
    remaining = flags.FLAGS(argv)
    config = _CONFIG.value
    config.to_dict()  # A config file that failed to load raises its error here.
    return remaining
  except flags.Error as error:
    _fail(_one_line(error))
  except (KeyError, AttributeError) as error:
    key = str(error).strip('"\'')
    flag = next((a.split('=')[0] for a in argv if a.startswith('--config.') and key in a.split('=')[0]),
                '--config')
    _fail(f'{flag}: no such config key {key!r}')
  except Exception as error:  # pylint: disable=broad-except  (errors from the user's config file)
    _fail(f'--config: {type(error).__name__}: {_one_line(error)}')


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  from adjax import train  # pylint: disable=g-import-not-at-top  (slow imports after flag checks)
  # The config flag's argument keeps its `:preset` suffix.
  workdir = Path(_WORKDIR.value) if _WORKDIR.value else default_workdir(
      config_flags.get_config_filename(flags.FLAGS['config']))
  print(f'adjax: workdir {workdir}', flush=True)
  try:
    results = train.train_and_evaluate(_CONFIG.value, workdir)
  except InputError as error:
    _fail(str(error))
  except train.TrainingDiverged as error:
    _fail(str(error), code=1)
  summary = {k: results[k] for k in ('image_auroc', 'pixel_auroc', 'pixel_aupro') if k in results}
  print(f'adjax: wrote {workdir / "results.json"}: ' +
        ', '.join(f'{k} {v:.4f}' if v is not None else f'{k} n/a' for k, v in summary.items()))


def _quiet_libraries(record) -> bool:
  """Keeps INFO lines from adjax and clu (progress, metrics); libraries speak from WARNING up."""
  return record.levelno >= logging.converter.STANDARD_WARNING or '/adjax/' in record.pathname or (
      '/clu/' in record.pathname)


if __name__ == '__main__':
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_quiet_libraries)
  app.run(main, flags_parser=_parse_flags)
