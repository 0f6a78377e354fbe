"""Bad input end to end: one `adjax: error:` line naming the file or key, exit code 2, the workdir untouched.

Cases already covered elsewhere are not repeated here: unknown config key, wrong config value type and a
missing dataset directory (tests/main_test.py, as subprocesses), non-binary masks (tests/layout_test.py,
tests/folder_test.py), a weights file's missing / mis-shaped keys at the loader (tests/weights_test.py).
The command line runs in this process (`adjax.main`'s flag parser and `main`), which is what
`python -m adjax.main` runs.
"""

import logging
import os
from pathlib import Path
import sys

from absl import flags
import numpy as np
from PIL import Image
import pytest

from adjax import main as adjax_main
from adjax import methods
from adjax import train
from adjax.data import layout

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from configs import ebm as ebm_config  # pylint: disable=g-import-not-at-top,wrong-import-position


def _save(path: Path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.asarray(array, np.uint8)).save(path)
  return path


def make_folder(root: Path, *, size=24) -> Path:
  """A small valid MVTec-layout category `root/widget` (RGB images, one defect type with masks)."""
  rng = np.random.default_rng(0)
  category = root / 'widget'
  for index in range(4):
    _save(category / f'train/good/{index}.png', rng.integers(0, 256, (size, size, 3)))
  for index in range(2):
    _save(category / f'test/good/{index}.png', rng.integers(0, 256, (size, size, 3)))
    _save(category / f'test/crack/{index}.png', rng.integers(0, 256, (size, size, 3)))
    mask = np.zeros((size, size), np.uint8)
    mask[2:8, 3:9] = 255
    _save(category / f'ground_truth/crack/{index}_mask.png', mask)
  return category


def snapshot(directory: Path) -> dict:
  """Every path under `directory` with its size and modification time."""
  if not directory.exists():
    return {}
  listing = {}
  for dirpath, dirnames, filenames in os.walk(directory):
    for name in dirnames + filenames:
      path = Path(dirpath, name)
      stat = path.stat()
      listing[path.relative_to(directory).as_posix()] = (stat.st_size, stat.st_mtime_ns)
  return listing


def parse_and_run(*args):
  """`python -m adjax.main *args` in this process (config_flags reads the overrides from sys.argv)."""
  argv = ['adjax.main', *args]
  saved, sys.argv = sys.argv, argv
  try:
    adjax_main.main(adjax_main._parse_flags(argv))  # pylint: disable=protected-access
  finally:
    sys.argv = saved
    # config_flags registers one flag per override at parse time; drop them so the next run can.
    for name in [name for name in flags.FLAGS if name.startswith('config.')]:
      delattr(flags.FLAGS, name)
    flags.FLAGS.unparse_flags()


def run_main(*args) -> int:
  """Runs the command line in-process; returns its exit code."""
  with pytest.raises(SystemExit) as exit_info:
    parse_and_run(*args)
  return exit_info.value.code


def expect_input_error(capsys, workdir: Path, args, *needles):
  """Asserts exit code 2, a single error line holding every needle, and an unchanged workdir."""
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'notes.txt').write_text('kept\n')
  before = snapshot(workdir)
  capsys.readouterr()
  code = run_main(f'--workdir={workdir}', *args)
  err = capsys.readouterr().err
  error_lines = [line for line in err.splitlines() if line.startswith('adjax: error:')]
  assert code == 2, err[-2000:]
  assert len(error_lines) == 1, err[-2000:]
  for needle in needles:
    assert str(needle) in error_lines[0], error_lines[0]
  assert 'Traceback' not in err
  assert snapshot(workdir) == before
  return error_lines[0]


def folder_args(tmp_path, *extra):
  return [f'--config={REPO}/configs/ebm.py:smoke', '--config.data.name=folder',
          '--config.data.category=widget', f'--config.data.manual_dir={tmp_path / "user"}',
          f'--config.data.data_dir={tmp_path / "tfds"}', *extra]


def test_wrong_layout(tmp_path, capsys):
  category = make_folder(tmp_path / 'user')
  (category / 'train' / 'good').rename(category / 'train' / 'ok')  # MVTec layout wants train/good.
  expect_input_error(capsys, tmp_path / 'run', folder_args(tmp_path), category / 'train' / 'good', 'missing')


def test_empty_train_split(tmp_path, capsys):
  category = make_folder(tmp_path / 'user')
  for path in (category / 'train' / 'good').iterdir():
    path.unlink()
  expect_input_error(capsys, tmp_path / 'run', folder_args(tmp_path), category / 'train' / 'good',
                     'no training images')


@pytest.mark.parametrize('damage', ['truncated', 'garbage'])
def test_corrupt_png(tmp_path, capsys, damage):
  category = make_folder(tmp_path / 'user')
  path = category / 'test' / 'crack' / '1.png'
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2] if damage == 'truncated' else b'not a png at all')
  expect_input_error(capsys, tmp_path / 'run', folder_args(tmp_path), path, 'cannot decode')


def test_image_mask_size_mismatch(tmp_path, capsys):
  category = make_folder(tmp_path / 'user')
  mask = category / 'ground_truth' / 'crack' / '0_mask.png'
  _save(mask, np.zeros((20, 24), np.uint8))
  expect_input_error(capsys, tmp_path / 'run', folder_args(tmp_path), mask, '24x20')


def test_grayscale_among_rgb_is_converted_with_a_warning(tmp_path, caplog):
  category = make_folder(tmp_path / 'user')
  gray = _save(category / 'train' / 'good' / '9.png', np.full((24, 24), 77))
  tree = layout.scan(category, category='widget', require_test=False, require_masks=False)
  with caplog.at_level(logging.WARNING):
    layout.validate(tree)
  assert any('grayscale' in r.getMessage() and str(gray) in r.getMessage() for r in caplog.records)
  example = dict(layout.examples(tree, 'train'))['train/good/9.png']
  from adjax.data import sources  # pylint: disable=g-import-not-at-top
  source, _ = sources.load_split(name='folder', category='widget', split='train',
                                 data_dir=str(tmp_path / 'tfds'), manual_dir=str(tmp_path / 'user'))
  images = {bytes(source[i]['filename']).decode(): source[i]['image'] for i in range(len(source))}
  assert example['label'] == 0 and images['train/good/9.png'].shape == (24, 24, 3)
  np.testing.assert_array_equal(images['train/good/9.png'], np.full((24, 24, 3), 77))


def test_image_too_small_for_the_crop(tmp_path, capsys):
  make_folder(tmp_path / 'user', size=12)
  args = folder_args(tmp_path, "--config.data.train_preprocess=random_crop(16)|value_range(-1, 1)")
  expect_input_error(capsys, tmp_path / 'run', args, 'train/good/', 'random_crop', '12')


def test_weights_file_with_missing_and_misshaped_keys(tmp_path, capsys):
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'vgg.safetensors'
  save_file({'features.0.weight': np.zeros((64, 3, 5, 5), np.float32)}, str(path))
  args = [f'--config={REPO}/configs/fcdd.py:smoke', '--config.model.trunk=vgg11_bn',
          f'--config.model.backbone_weights={path}',
          f'--config.data.data_dir={tmp_path / "tfds"}']
  line = expect_input_error(capsys, tmp_path / 'run', args, path)
  assert 'missing' in line and 'features.0.weight' in line


@pytest.fixture(scope='module')
def trained_ebm_workdir(tmp_path_factory):
  """A workdir holding a checkpoint of the ebm smoke config (saved by the train loop's own helpers)."""
  root = tmp_path_factory.mktemp('trained')
  config = ebm_config.get_config('smoke')
  method = methods.get_method(config)
  state = train.create_train_state(method, seed=0, sample_images=np.zeros((1, 16, 16, 3), np.float32))
  manager = train._checkpoint_manager(root / 'run', config)  # pylint: disable=protected-access
  train._save(manager, state, method_name='ebm', train_seconds=0.0)  # pylint: disable=protected-access
  manager.wait_until_finished()
  manager.close()
  return root


def test_workdir_with_a_checkpoint_of_other_shapes(trained_ebm_workdir, capsys):
  workdir = trained_ebm_workdir / 'run'
  args = [f'--config={REPO}/configs/ebm.py:smoke', f'--config.data.data_dir={trained_ebm_workdir / "tfds"}',
          '--config.model.features=(16, 32)']
  expect_input_error(capsys, workdir, args, workdir / 'checkpoints', 'does not match', 'another --workdir')


def test_workdir_with_a_checkpoint_of_another_method(trained_ebm_workdir, capsys):
  workdir = trained_ebm_workdir / 'run'
  args = [f'--config={REPO}/configs/lamp.py:smoke', f'--config.data.data_dir={trained_ebm_workdir / "tfds"}']
  expect_input_error(capsys, workdir, args, workdir / 'checkpoints', "'ebm'", 'another --workdir')
