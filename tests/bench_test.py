"""The benchmark command runs and reports what it promises (tiny sizes; the numbers are not checked)."""

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_bench_reports_images_and_sgld_steps_per_second(tmp_path):
  out = tmp_path / 'bench.json'
  result = subprocess.run(
      [sys.executable, '-m', 'adjax.bench', '--sizes=32', '--sgld_steps=2', '--repeats=1',
       '--batch_size=4', f'--json={out}'],
      cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = json.loads(out.read_text())
  assert {row['case'] for row in rows} == {'train_iteration', 'sgld_chain'}
  for row in rows:
    assert row['images_per_second'] > 0 and row['ms'] > 0 and row['devices'] == 2
  chain = next(row for row in rows if row['case'] == 'sgld_chain')
  assert chain['sgld_steps_per_second'] * chain['ms'] / 1e3 == pytest.approx(2)
  assert 'SGLD steps/s' in result.stdout
