"""scripts/reconstruction_experiment.py: the seed-001 Table 2 grid runs end to end and reports every cell."""

from pathlib import Path
import subprocess
import sys

SCRIPT = Path(__file__).resolve().parents[1] / 'scripts' / 'reconstruction_experiment.py'


def test_two_cells_on_two_digits(tmp_path):
  output = tmp_path / 'table.md'
  command = [sys.executable, str(SCRIPT), '--digits=3,5', '--num_steps=2', '--losses=l2',
             '--optimizers=sgd,adam', '--image_size=8', '--features=4,8', f'--data_dir={tmp_path / "tfds"}',
             f'--output={output}']
  result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = output.read_text().splitlines()
  assert 'digits one-vs-rest, 2 steps of batch 16, 8x8' in lines[0]
  rows = {line.split('|')[1].strip(): line for line in lines if line.startswith('| ') and '→' in line}
  assert sorted(rows) == ['3', '5', 'average']
  for row in rows.values():
    cells = [cell.strip() for cell in row.split('|')[2:-1]]
    assert len(cells) == 2  # L2 sgd, L2 adam
    for cell in cells:
      plain, lamp = (float(value) for value in cell.split('→'))
      assert 0.0 <= plain <= 1.0 and 0.0 <= lamp <= 1.0
  average = [float(v) for v in rows['average'].split('|')[2].split('→')]
  per_digit = [[float(v) for v in rows[d].split('|')[2].split('→')] for d in ('3', '5')]
  assert abs(average[0] - (per_digit[0][0] + per_digit[1][0]) / 2) < 1e-3  # The mean of the digits.
