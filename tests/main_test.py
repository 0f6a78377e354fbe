"""The command line: a smoke run end to end, and one-line errors with exit code 2 for bad input."""

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

from adjax import main as adjax_main

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=REPO, data_dir=None):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  command = [sys.executable, '-m', 'adjax.main', *args]
  if data_dir is not None:
    command.append(f'--config.data.data_dir={data_dir}')
  return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


def test_default_workdir_names_config_and_preset():
  assert adjax_main.default_workdir('configs/ebm.py:smoke') == Path('runs/ebm-smoke')
  assert adjax_main.default_workdir('configs/ebm.py') == Path('runs/ebm')


def test_smoke_run_writes_results_to_the_default_workdir(tmp_path, data_dir):
  workdir = tmp_path / 'runs' / 'ebm-smoke'  # Relative to the current directory.
  result = run_cli(f'--config={REPO}/configs/ebm.py:smoke', cwd=tmp_path, data_dir=data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'adjax: workdir runs/ebm-smoke\n' in result.stdout
  results = json.loads((workdir / 'results.json').read_text())
  assert results['method'] == 'ebm' and results['dataset'] == 'textures'
  assert set(results['image_auroc_by_score']) == {'energy', 'raw', 'std', 'raw_max', 'std_max'}
  for key in ('pixel_auroc', 'pixel_ap', 'pixel_aupro', 'image_auroc'):
    assert 0.0 <= results[key] <= 1.0
  assert (workdir / 'figures' / 'histograms.png').exists()
  assert 'results.json' in result.stdout


@pytest.mark.parametrize('args, message', [
    (['--config.train.no_such_key=1'], 'config.train.no_such_key'),
    (['--config.train.num_steps=many'], 'num_steps'),
    (['--config.data.name=no_such_dataset'], 'no_such_dataset'),
    (['--config.data.name=mvtec_ad', '--config.data.category=carpet',
      '--config.data.manual_dir=/no/such/dir'], '/no/such/dir'),
    (['--config.data.name=mvtec_ad', '--config.data.category=brick'], 'brick'),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, data_dir, args, message):
  workdir = tmp_path / 'run'
  result = run_cli(f'--config={REPO}/configs/ebm.py:smoke', f'--workdir={workdir}', *args,
                   data_dir=data_dir)
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  error_lines = [line for line in result.stderr.splitlines() if line.startswith('adjax: error:')]
  assert len(error_lines) == 1 and message in error_lines[0], result.stderr[-2000:]
  assert not (workdir / 'results.json').exists()


def test_unknown_preset_and_missing_config_file(tmp_path):
  for config in (f'{REPO}/configs/ebm.py:no_such_preset', f'{tmp_path}/missing.py'):
    result = run_cli(f'--config={config}', f'--workdir={tmp_path}')
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert 'adjax: error:' in result.stderr
