"""Several processes: two local CPU processes (gloo collectives, one device each) train and evaluate exactly
like one process with two devices; settings come from flags or environment variables."""

import json
import os
from pathlib import Path
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from adjax import main as adjax_main
from adjax.errors import InputError

REPO = Path(__file__).resolve().parents[1]
TIMING_KEYS = ('train_seconds', 'train_images_per_second', 'eval_seconds')


def test_settings_from_flags_or_environment():
  assert adjax_main.distributed_settings(environ={}) is None
  environ = {'JAX_COORDINATOR_ADDRESS': 'node0:1234', 'JAX_NUM_PROCESSES': '4', 'JAX_PROCESS_ID': '3'}
  assert adjax_main.distributed_settings(environ=environ) == {
      'coordinator_address': 'node0:1234', 'num_processes': 4, 'process_id': 3}
  assert adjax_main.distributed_settings(process_id=1, environ=environ)['process_id'] == 1  # Flags win.
  with pytest.raises(InputError, match='--process_id'):
    adjax_main.distributed_settings(coordinator_address='a:1', num_processes=2, environ={})
  with pytest.raises(InputError, match='JAX_NUM_PROCESSES'):
    adjax_main.distributed_settings(environ=dict(environ, JAX_NUM_PROCESSES='two'))
  with pytest.raises(InputError, match=r'not in \[0, 2\)'):
    adjax_main.distributed_settings(coordinator_address='a:1', num_processes=2, process_id=2, environ={})


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


def _start(workdir, data_dir, *extra, devices: int, log: Path):
  flags = [flag for flag in os.environ.get('XLA_FLAGS', '').split()  # conftest's, with this device count.
           if not flag.startswith('--xla_force_host_platform_device_count=')]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', JAX_PLATFORMS='cpu',
             XLA_FLAGS=' '.join(flags + [f'--xla_force_host_platform_device_count={devices}']))
  command = [sys.executable, '-m', 'adjax.main', f'--config={REPO}/configs/ebm.py:smoke',
             f'--workdir={workdir}', f'--config.data.data_dir={data_dir}', '--config.train.num_steps=4',
             '--config.ebm.sgld_steps=2', *extra]
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=log.open('w'), stderr=subprocess.STDOUT)


def test_two_processes_equal_one_process_with_two_devices(tmp_path):
  # The two processes share a data_dir that holds no dataset yet: process 0 builds it, process 1 waits.
  data_dir, single_data_dir = tmp_path / 'tfds', tmp_path / 'tfds_single'
  single_dir, multi_dir = tmp_path / 'single', tmp_path / 'multi'
  address = f'127.0.0.1:{_free_port()}'
  runs = [_start(single_dir, single_data_dir, devices=2, log=tmp_path / 'single.log')]
  runs += [_start(multi_dir, data_dir, f'--coordinator_address={address}', '--num_processes=2',
                  f'--process_id={index}', devices=1, log=tmp_path / f'process{index}.log')
           for index in range(2)]
  for run, log in zip(runs, ('single.log', 'process0.log', 'process1.log')):
    assert run.wait(timeout=500) == 0, (tmp_path / log).read_text()[-3000:]
  assert 'Process 1 of 2; 1 local and 2 global devices' in (tmp_path / 'process1.log').read_text()
  assert 'wrote' not in (tmp_path / 'process1.log').read_text()  # Only process 0 reports and writes.
  num_test = json.loads((single_dir / 'results.json').read_text())['num_test_images']
  num_train = json.loads((single_dir / 'results.json').read_text())['num_train_images']
  for index in range(2):  # Each process fitted and scored its half of each split (then all gathered them).
    log = (tmp_path / f'process{index}.log').read_text()
    assert f'Process {index} scored {len(range(index, num_test, 2))} of {num_test} test images' in log
    assert f'Process {index} fits on {len(range(index, num_train, 2))} of {num_train} training images' in log
  assert len(list(multi_dir.glob('events.out.tfevents*'))) == 1

  assert jax.device_count() == 2  # Restores the two-device checkpoint's layout (tests/conftest.py).
  single, multi = (ocp.StandardCheckpointer().restore(d / 'checkpoints' / '4' / 'state')
                   for d in (single_dir, multi_dir))
  assert jax.tree_util.tree_structure(single) == jax.tree_util.tree_structure(multi)
  for a, b in zip(jax.tree_util.tree_leaves(single), jax.tree_util.tree_leaves(multi)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  results = [json.loads((d / 'results.json').read_text()) for d in (single_dir, multi_dir)]
  for result in results:
    for key in TIMING_KEYS + ('config',):
      result.pop(key)
  # The EBM's pixel moments merge per process (`processes.merge_across`), so statistics agree to float32
  # rounding rather than bit for bit; everything else (counts, labels, ranks) is equal.
  _assert_equal_up_to_rounding(results[0], results[1])
  assert results[0]['image_auroc'] is not None


def _assert_equal_up_to_rounding(a, b, path='results'):
  if isinstance(a, dict):
    assert isinstance(b, dict) and a.keys() == b.keys(), path
    for key in a:
      _assert_equal_up_to_rounding(a[key], b[key], f'{path}.{key}')
  elif isinstance(a, list):
    assert isinstance(b, list) and len(a) == len(b), path
    for index, (x, y) in enumerate(zip(a, b)):
      _assert_equal_up_to_rounding(x, y, f'{path}[{index}]')
  elif isinstance(a, float) and not isinstance(b, bool):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=path)
  else:
    assert a == b, path
