"""Executes every notebook of `colabs/` in test mode (a few train steps), so the notebooks cannot rot.

Each notebook runs in its own kernel with `ADJAX_COLAB_TEST=1` and its runs under a temporary directory.
Needs nbclient, nbformat and ipykernel (the `test` extra); skipped when nbclient is absent.
"""

from concurrent import futures
import json
import os
from pathlib import Path
import sys

import pytest

nbclient = pytest.importorskip('nbclient')
nbformat = pytest.importorskip('nbformat')

COLABS = Path(__file__).resolve().parents[1] / 'colabs'
sys.path.insert(0, str(COLABS))
import make_notebooks  # pylint: disable=g-import-not-at-top,wrong-import-position

NOTEBOOKS = sorted(path.stem for path in COLABS.glob('*.ipynb'))
# Training runs of each method notebook (each writes RUNS/<name>/results.json and three figures).
RUNS = {'ebm': ('ebm',), 'fcdd': ('fcdd', 'hsc'), 'reconstruction': ('lamp', 'cae'), 'occ': ('occ',)}


def test_every_notebook_is_there_and_matches_its_generator():
  assert {'ebm', 'fcdd', 'reconstruction', 'losses'} <= set(NOTEBOOKS)
  assert set(NOTEBOOKS) <= set(make_notebooks.NOTEBOOKS)
  for name in NOTEBOOKS:
    assert (COLABS / f'{name}.ipynb').read_text() == make_notebooks.render(name), (
        f'colabs/{name}.ipynb is stale: run python colabs/make_notebooks.py {name}')


def _images_shown(notebook) -> int:
  return sum('image/png' in output.get('data', {})
             for cell in notebook.cells if cell.cell_type == 'code' for output in cell.outputs)


def _execute(name: str, workdir: Path):
  """Runs colabs/<name>.ipynb in a fresh kernel; returns (executed notebook, error or None)."""
  notebook = nbformat.read(COLABS / f'{name}.ipynb', as_version=4)
  client = nbclient.NotebookClient(notebook, timeout=300, kernel_name='python3',
                                   resources={'metadata': {'path': str(COLABS)}})
  env = dict(os.environ, ADJAX_COLAB_TEST='1', ADJAX_COLAB_WORKDIR=str(workdir))
  try:
    client.execute(env=env)
  except Exception as error:  # pylint: disable=broad-except  Reported by the notebook's own test below.
    return notebook, error
  return notebook, None


@pytest.fixture(name='executed', scope='module')
def executed_fixture(tmp_path_factory):
  """Every notebook executed, two kernels at a time (the CPU has 2 cores; each kernel is mostly 1 thread)."""
  workdirs = {name: tmp_path_factory.mktemp(name) for name in NOTEBOOKS}
  with futures.ThreadPoolExecutor(max_workers=2) as pool:
    jobs = {name: pool.submit(_execute, name, workdirs[name]) for name in NOTEBOOKS}
    return {name: (*job.result(), workdirs[name]) for name, job in jobs.items()}


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, executed):
  notebook, error, workdir = executed[name]
  if error is not None:
    raise error  # CellExecutionError names the failing cell and shows its traceback.
  runs = RUNS.get(name, ())
  for run in runs:
    results = json.loads((workdir / run / 'results.json').read_text())
    assert results['num_train_steps'] == 2 and 0 <= results['image_auroc'] <= 1
    for figure in ('examples', 'histograms', 'curves'):
      assert (workdir / run / 'figures' / f'{figure}.png').is_file()
  # Shown inline: method notebooks the data preview plus three figures per run; losses its two plots.
  assert _images_shown(notebook) == (1 + 3 * len(runs) if runs else 2)
