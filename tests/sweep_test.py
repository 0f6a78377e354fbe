"""adjax.sweep: a real smoke sweep (2 runs + 1 failing run), skipping, collection, tables and statistics."""

import csv
import json
import os
from pathlib import Path
import subprocess
import sys

from matplotlib import pyplot as plt
import numpy as np
import pytest
from scipy import stats

from adjax import summaries
from adjax import sweep
from adjax.errors import InputError

REPO = Path(__file__).resolve().parents[1]
METRICS = ('image_auroc', 'pixel_auroc', 'pixel_aupro')


def run_sweep_cli(*args, cwd):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, '-m', 'adjax.sweep', *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=900)


def read_csv(path):
  with open(path) as file:
    return list(csv.DictReader(file))


@pytest.fixture(scope='module')
def smoke_sweep(tmp_path_factory):
  """brick and grass (real smoke runs) and an unknown category (fails fast), seed 0."""
  root = tmp_path_factory.mktemp('sweep')
  args = [f'--config={REPO}/configs/ebm.py:smoke', '--seeds=0', '--workdir=runs/sweep',
          f'--set=data.data_dir={root / "tfds"}', f'--metrics={",".join(METRICS)}']
  first = run_sweep_cli(*args, '--categories=brick,no_such_category,grass', cwd=root)
  return root, args, first


def test_sweep_runs_records_failures_and_collects(smoke_sweep):
  root, _, result = smoke_sweep
  assert result.returncode == 1, result.stderr[-3000:]  # One run failed.
  workdir = root / 'runs' / 'sweep'
  assert '[1/3] ebm-smoke brick seed 0: done' in result.stdout
  assert '[3/3] ebm-smoke grass seed 0: done' in result.stdout  # Ran after the failure.
  failures = json.loads((workdir / 'failures.json').read_text())
  assert [(f['category'], f['returncode']) for f in failures] == [('no_such_category', 2)]
  assert 'no_such_category' in failures[0]['error'].splitlines()[-1]
  assert 'Failed runs (1)' in (workdir / 'summary.md').read_text()

  results = {c: json.loads((workdir / 'ebm-smoke' / c / 'seed_0' / 'results.json').read_text())
             for c in ('brick', 'grass')}
  assert {c: r['category'] for c, r in results.items()} == {'brick': 'brick', 'grass': 'grass'}
  summary = {row['category']: row for row in read_csv(workdir / 'summary.csv')}
  assert set(summary) == {'brick', 'grass', 'overall'}
  for metric in METRICS:
    for category in ('brick', 'grass'):
      assert float(summary[category][f'{metric}_mean']) == pytest.approx(results[category][metric])
      assert summary[category][f'{metric}_std'] == ''  # One seed: no std.
    assert float(summary['overall'][f'{metric}_mean']) == pytest.approx(
        np.mean([results[c][metric] for c in results]))
  runs = read_csv(workdir / 'runs.csv')
  assert sorted(row['category'] for row in runs) == ['brick', 'grass']
  assert f'{results["brick"]["image_auroc"]:.4f}' in (workdir / 'summary.md').read_text()


def test_rerun_skips_finished_runs_and_collect_only(smoke_sweep):
  root, args, _ = smoke_sweep
  workdir = root / 'runs' / 'sweep'
  results_file = workdir / 'ebm-smoke' / 'brick' / 'seed_0' / 'results.json'
  before = results_file.stat().st_mtime_ns
  again = run_sweep_cli(*args, '--categories=brick,grass', cwd=root)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'brick seed 0: skipped' in again.stdout and 'grass seed 0: skipped' in again.stdout
  assert results_file.stat().st_mtime_ns == before
  assert json.loads((workdir / 'failures.json').read_text()) == []
  collected = run_sweep_cli('--collect_only', '--workdir=runs/sweep', cwd=root)
  assert collected.returncode == 0, collected.stderr[-3000:]
  assert '(2 runs, 0 failed)' in collected.stdout


def _write_results(workdir, name, category, seed, **metrics):
  path = workdir / name / category / f'seed_{seed}' / 'results.json'
  path.parent.mkdir(parents=True)
  results = dict(method='x', dataset='textures', category=category, seed=seed, train_seconds=1.0,
                 image_auroc=None, pixel_auroc=None, pixel_aupro=None)
  results.update(metrics)
  path.write_text(json.dumps(results))


def test_collect_summarize_and_statistics_on_written_results(tmp_path):
  rng = np.random.default_rng(0)
  categories = [f'c{i}' for i in range(6)]
  values = {}
  for name, offset in (('good', 0.1), ('bad', 0.0)):
    for category in categories:
      for seed in (0, 1):
        value = values[name, category, seed] = float(0.6 + offset + rng.normal(0, 0.02))
        _write_results(tmp_path, name, category, seed, image_auroc=value,
                       image_auroc_by_score={'energy': value / 2})
  rows = sweep.collect(tmp_path, metrics=('image_auroc', 'pixel_auroc', 'image_auroc_by_score.energy'))
  assert len(rows) == 24 and {row['method'] for row in rows} == {'good', 'bad'}
  summary = {(e['method'], e['category']): e for e in sweep.summarize(rows, metrics=('image_auroc', 'pixel_auroc'))}
  pair = [values['good', 'c0', 0], values['good', 'c0', 1]]
  assert summary['good', 'c0']['image_auroc_mean'] == pytest.approx(np.mean(pair))
  assert summary['good', 'c0']['image_auroc_std'] == pytest.approx(np.std(pair, ddof=1))
  per_seed = [np.mean([values['good', c, s] for c in categories]) for s in (0, 1)]
  assert summary['good', 'overall']['image_auroc_mean'] == pytest.approx(np.mean(per_seed))
  assert summary['good', 'overall']['image_auroc_std'] == pytest.approx(np.std(per_seed, ddof=1))
  assert summary['good', 'overall']['pixel_auroc_mean'] is None
  assert [row['image_auroc_by_score.energy'] * 2 for row in rows] == pytest.approx(
      [row['image_auroc'] for row in rows])

  text = sweep.write_tables(tmp_path, rows, metrics=('image_auroc', 'pixel_auroc'), alpha=0.1)
  assert 'n/a' in text  # Null pixel metrics.
  assert (tmp_path / 'cd_image_auroc.png').stat().st_size > 1000
  assert not (tmp_path / 'cd_pixel_auroc.png').exists()  # No values: no statistics.
  (pair_row,) = read_csv(tmp_path / 'statistics.csv')
  means = {n: [np.mean([values[n, c, s] for s in (0, 1)]) for c in categories] for n in ('bad', 'good')}
  assert float(pair_row['p_value']) == pytest.approx(stats.wilcoxon(means['bad'], means['good']).pvalue)
  assert pair_row['better'] == 'good'
  ranks = {row['method']: float(row['average_rank']) for row in read_csv(tmp_path / 'ranks.csv')}
  assert ranks == {'good': 1.0, 'bad': 2.0}
  assert 'cd_image_auroc.png' in (tmp_path / 'statistics.md').read_text()
  # The results table and the CD diagram are also TensorBoard images, equal to the PNG files.
  logged = {}
  for event in summaries.read_events(tmp_path / 'tensorboard'):
    for value in event.summary.value:
      logged[value.tag] = summaries.decode_image(value)
  assert sorted(logged) == ['sweep/cd_image_auroc', 'sweep/results_table']
  for tag, file_name in (('sweep/cd_image_auroc', 'cd_image_auroc.png'), ('sweep/results_table', 'summary.png')):
    on_disk = (plt.imread(tmp_path / file_name)[..., :3] * 255).astype(np.uint8)
    np.testing.assert_array_equal(logged[tag], on_disk)
    assert on_disk.std() > 10  # Not blank.


def test_config_specs_and_overrides(tmp_path):
  spec = sweep.parse_config_spec(f'{REPO}/configs/ebm.py:smoke')
  assert (spec.name, spec.argument, spec.overrides) == ('ebm-smoke', f'{REPO}/configs/ebm.py:smoke', ())
  spec = sweep.parse_config_spec(f'raw={REPO}/configs/ebm.py eval.score=raw config.train.num_steps=2')
  assert spec.name == 'raw' and spec.argument == f'{REPO}/configs/ebm.py'
  assert spec.overrides == ('--config.eval.score=raw', '--config.train.num_steps=2')
  for bad in ('seed=3', 'data.category=brick', 'no_equals_sign'):
    with pytest.raises(InputError):
      sweep.parse_override(bad)
  with pytest.raises(InputError, match='no such config file'):
    sweep.parse_config_spec(f'{tmp_path}/missing.py')
  with pytest.raises(InputError, match='unique'):
    specs = [sweep.parse_config_spec(f'{REPO}/configs/ebm.py:smoke')] * 2
    sweep.run_sweep(specs, categories=['brick'], seeds=[0], workdir=tmp_path)
  assert sweep.metric_value({'a': {'b': 0.5}, 'c': None, 'd': True}, 'a.b') == 0.5
  assert sweep.metric_value({'c': None}, 'c') is None and sweep.metric_value({}, 'x.y') is None


def test_bad_command_line_is_one_line(tmp_path):
  result = run_sweep_cli('--collect_only', f'--workdir={tmp_path}/none', cwd=tmp_path)
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert 'adjax.sweep: error: --workdir' in result.stderr
  result = run_sweep_cli(f'--config={REPO}/configs/ebm.py:smoke', '--categories=brick', '--seeds=a',
                         cwd=tmp_path)
  assert result.returncode == 2 and '--seeds' in result.stderr
