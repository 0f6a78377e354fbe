"""Ensembles of finished runs (seed 003 Eq. 10) from their saved per-image decisions."""

import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from adjax import ensemble
from adjax import evaluate
from adjax.errors import InputError

SCRIPT = Path(__file__).resolve().parents[1] / 'scripts' / 'ensemble.py'


def fake_run(root: Path, name: str, *, anomalous, f1: float, labels, categories_index) -> Path:
  """A workdir as `adjax.main` leaves it, written through `evaluate.write_image_scores`."""
  run_dir = root / name
  run_dir.mkdir(parents=True)
  decisions = np.asarray(anomalous, np.float32)
  scored = {'scores': {'l2': decisions}, 'labels': np.asarray(labels),
            'category_index': np.asarray(categories_index, np.int32),
            'defect_types': ['good' if l == 0 else 'cut' for l in labels]}
  evaluate.write_image_scores(run_dir / ensemble.SCORES_FILE, scored, primary_score='l2', image_threshold=0.5,
                              categories=['a', 'b'])
  (run_dir / 'results.json').write_text(json.dumps({'image_f1': f1}))
  return run_dir


LABELS = [0, 0, 1, 1, 0, 1, 1, 0]
CATEGORY = [0, 0, 0, 0, 1, 1, 1, 1]
VOTES = {'one': [1, 0, 1, 0, 0, 1, 0, 1], 'two': [0, 0, 1, 1, 1, 0, 0, 0], 'three': [1, 1, 0, 1, 0, 1, 1, 0]}


def test_vote_metrics_match_a_hand_computed_majority(tmp_path):
  runs = [fake_run(tmp_path, name, anomalous=v, f1=0.5, labels=LABELS, categories_index=CATEGORY)
          for name, v in VOTES.items()]
  members = [ensemble.load_member(run) for run in runs]
  results = ensemble.ensemble_metrics(members, np.ones(3))
  majority = np.sum(list(VOTES.values()), axis=0) >= 2  # Equal weights: 2 of 3.
  np.testing.assert_array_equal(majority, [1, 0, 1, 1, 0, 1, 0, 0])
  assert results['image_f1'] == pytest.approx(sk_metrics.f1_score(LABELS, majority))
  assert results['image_precision'] == pytest.approx(sk_metrics.precision_score(LABELS, majority))
  for index, name in enumerate('ab'):
    keep = np.asarray(CATEGORY) == index
    assert results['by_category'][name]['image_recall'] == pytest.approx(
        sk_metrics.recall_score(np.asarray(LABELS)[keep], majority[keep]))
  assert results['members']['two']['image_f1'] == pytest.approx(sk_metrics.f1_score(LABELS, VOTES['two']))
  # Weights decide: 'three' alone outweighs the other two together.
  weighted = ensemble.vote(members, np.array([1.0, 1.0, 3.0]))
  np.testing.assert_array_equal(weighted['anomalous'], np.asarray(VOTES['three'], bool))


def test_script_prints_the_table_and_rejects_mismatched_runs(tmp_path):
  runs = [fake_run(tmp_path, name, anomalous=v, f1=f1, labels=LABELS, categories_index=CATEGORY)
          for (name, v), f1 in zip(VOTES.items(), (0.2, 0.3, 0.5))]
  out = tmp_path / 'ensemble.json'
  command = [sys.executable, str(SCRIPT), *[f'--run={r}' for r in runs], '--weights=image_f1',
             f'--json={out}']
  result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  assert 'optimistic' in result.stdout and '**ENSEMBLE**' in result.stdout
  saved = json.loads(out.read_text())
  np.testing.assert_allclose(saved['weights'], [0.2, 0.3, 0.5])
  other = fake_run(tmp_path, 'other', anomalous=[1] * 8, f1=0.5, labels=LABELS[::-1],
                   categories_index=CATEGORY)
  result = subprocess.run([sys.executable, str(SCRIPT), f'--run={runs[0]}', f'--run={other}'],
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2 and 'different test splits' in result.stderr
  with pytest.raises(InputError, match='no per-image scores'):
    ensemble.load_member(tmp_path / 'missing')
  with pytest.raises(InputError, match='need 3 numbers'):
    ensemble.member_weights([{}] * 3, [1.0, 2.0])
