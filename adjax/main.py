"""Command line: `python -m adjax.main --config=configs/ebm.py[:preset] [--workdir=DIR] [--config.a.b=v]`.

Without `--workdir` the run goes to `runs/<config name>[-<preset>]`. Bad input (unknown config key, missing
dataset, bad layout, ...) ends with one line on stderr and exit code 2; a diverged training with exit code 1.

Several processes (hosts): start the same command once per process with `--coordinator_address=HOST:PORT
--num_processes=N --process_id=I` (or the environment variables `JAX_COORDINATOR_ADDRESS`,
`JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`), or with `--distributed` under a cluster scheduler JAX detects (SLURM,
Open MPI, ...). Every process needs the same config, data and a shared `--workdir`.
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
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'Several processes: HOST:PORT of process 0 '
                                   '(default: $JAX_COORDINATOR_ADDRESS).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Several processes: how many '
                                      '(default: $JAX_NUM_PROCESSES).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Several processes: this one\'s index, 0 to '
                                   'num_processes - 1 (default: $JAX_PROCESS_ID).')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'Several processes, all settings detected by JAX from '
                                 'the cluster environment (SLURM, Open MPI, Kubernetes, ...).')
flags.mark_flags_as_required(['config'])

_ENVIRONMENT = {'coordinator_address': 'JAX_COORDINATOR_ADDRESS', 'num_processes': 'JAX_NUM_PROCESSES',
                'process_id': 'JAX_PROCESS_ID'}


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


def distributed_settings(*, coordinator_address=None, num_processes=None, process_id=None,
                         environ=os.environ) -> dict | None:
  """The `jax.distributed.initialize` arguments from flags, else environment variables; None: one process."""
  given = {'coordinator_address': coordinator_address, 'num_processes': num_processes,
           'process_id': process_id}
  for name, variable in _ENVIRONMENT.items():
    if given[name] is None and environ.get(variable):
      value = environ[variable]
      if name != 'coordinator_address':
        try:
          value = int(value)
        except ValueError:
          raise InputError(f'${variable}: must be an integer, got {value!r}') from None
      given[name] = value
  if all(value is None for value in given.values()):
    return None
  missing = [f'--{name} (or ${_ENVIRONMENT[name]})' for name, value in given.items() if value is None]
  if missing:
    raise InputError(f'several processes need {", ".join(missing)} as well')
  if not 0 <= given['process_id'] < given['num_processes']:
    raise InputError(f'--process_id: {given["process_id"]} is not in [0, {given["num_processes"]})')
  return given


def initialize_distributed(settings: dict | None, *, detect: bool = False) -> None:
  """Starts JAX's multi-process runtime (before any computation); CPU collectives go through gloo."""
  if settings is None and not detect:
    return
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # Only affects CPU devices.
  jax.distributed.initialize(**(settings or {}))
  logging.info('Process %d of %d; %d local and %d global devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  try:
    settings = distributed_settings(coordinator_address=_COORDINATOR.value,
                                    num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  except InputError as error:
    _fail(str(error))
  initialize_distributed(settings, detect=_DISTRIBUTED.value)
  import jax  # pylint: disable=g-import-not-at-top
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
  if jax.process_index() > 0:  # Process 0 writes results.json.
    return
  summary = {k: results[k] for k in ('image_auroc', 'pixel_auroc', 'pixel_aupro') if k in results}
  print(f'adjax: wrote {workdir / "results.json"}: ' +
        ', '.join(f'{k} {v:.4f}' if v is not None else f'{k} n/a' for k, v in summary.items()))


def _quiet_libraries(record) -> bool:
  """Keeps INFO lines from adjax (progress, metrics); libraries speak from WARNING up."""
  return record.levelno >= logging.converter.STANDARD_WARNING or '/adjax/' in record.pathname


if __name__ == '__main__':
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_quiet_libraries)
  app.run(main, flags_parser=_parse_flags)
