"""Tests for adjax.data.sources: the registry, input errors, reuse of prepared data, TensorFlow-free use."""

import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image
import pytest

from adjax.data import sources
from adjax.errors import InputError


def _tiny_mvtec(root):
  for key, value in (('train/good/000.png', 10), ('test/good/000.png', 20), ('test/crack/000.png', 30)):
    path = root / 'bottle' / key
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((5, 7), value, np.uint8)).save(path)
  mask = np.zeros((5, 7), np.uint8)
  mask[1:3, 2:5] = 255
  (root / 'bottle/ground_truth/crack').mkdir(parents=True)
  Image.fromarray(mask).save(root / 'bottle/ground_truth/crack/000_mask.png')
  return root


def test_registry_names():
  assert set(sources.NAMES) >= {'mvtec_ad', 'folder', 'digits', 'textures'}


def test_unknown_name_and_category_list_the_valid_ones(tmp_path):
  with pytest.raises(InputError,
                     match="unknown dataset 'mnist'; valid names: mvtec_ad, folder, digits, textures"):
    sources.load_split(name='mnist', category='0', split='train', data_dir=tmp_path)
  with pytest.raises(InputError, match=r"unknown digits category '12'; valid categories: 0, 1, 2, .*, 9"):
    sources.load_split(name='digits', category=12, split='train', data_dir=tmp_path)
  with pytest.raises(InputError,
                     match=r"unknown mvtec_ad category 'bottles'; valid categories: bottle, cable"):
    sources.load_split(name='mvtec_ad', category='bottles', split='train', data_dir=tmp_path,
                       manual_dir=tmp_path)


def test_missing_manual_dir(tmp_path):
  with pytest.raises(InputError, match='data.manual_dir: dataset .mvtec_ad. reads from a directory'):
    sources.load_split(name='mvtec_ad', category='bottle', split='train', data_dir=tmp_path)
  missing = tmp_path / 'no_such_dir'
  with pytest.raises(InputError, match=f'{missing}: dataset directory .* does not exist'):
    sources.load_split(name='folder', category='x', split='train', data_dir=tmp_path, manual_dir=missing)


def test_builders_import_lazily_and_a_missing_one_is_an_input_error(tmp_path, monkeypatch):
  monkeypatch.setitem(sources._REGISTRY, 'broken', sources._Entry('adjax.data.builders.no_such', 'X', False))
  with pytest.raises(InputError, match="dataset 'broken' is not available"):
    sources.load_split(name='broken', category='a', split='train', data_dir=tmp_path)
  builder = sources.make_builder(name='textures', category='brick', data_dir=tmp_path)
  assert type(builder).__name__ == 'Textures' and builder.builder_config.name == 'brick'


def test_prepared_data_is_reused(tmp_path):
  manual_dir = _tiny_mvtec(tmp_path / 'mvtec')
  args = dict(name='mvtec_ad', category='bottle', data_dir=tmp_path / 'data')
  test, info = sources.load_split(split='test', manual_dir=manual_dir, **args)
  assert info['has_masks'] and info['num_examples'] == 2 and len(test) == 2
  written = sorted(tmp_path.glob('data/mvtec_ad/bottle/1.0.0/*'))
  stamps = [path.stat().st_mtime_ns for path in written]
  # Once prepared, mvtec_ad needs no manual_dir, and nothing is rewritten.
  train, info = sources.load_split(split='train', **args)
  assert info['num_examples'] == 1 and info['has_masks']
  np.testing.assert_array_equal(train[0]['image'], np.full((5, 7, 3), 10, np.uint8))
  assert sorted(tmp_path.glob('data/mvtec_ad/bottle/1.0.0/*')) == written
  assert [path.stat().st_mtime_ns for path in written] == stamps


def test_build_and_read_without_tensorflow(tmp_path):
  manual_dir = _tiny_mvtec(tmp_path / 'mvtec')
  script = textwrap.dedent(f"""
      import sys
      from adjax.data import sources
      source, info = sources.load_split(name='mvtec_ad', category='bottle', split='test',
                                        data_dir={str(tmp_path / 'data')!r}, manual_dir={str(manual_dir)!r})
      masks = sorted(int(source[i]['mask'].sum() // 255) for i in range(len(source)))
      print(masks, 'tensorflow' in sys.modules)
  """)
  output = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, check=True).stdout
  assert output.strip().splitlines()[-1] == '[0, 6] False'


def test_empty_data_dir_means_the_tfds_default_not_the_current_directory(tmp_path, monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds_home'))
  monkeypatch.chdir(tmp_path / '..')
  builder = sources.make_builder(name='digits', category='3', data_dir='')
  assert str(builder.data_dir).startswith(str(tmp_path / 'tfds_home'))


def test_several_categories_concatenate_with_a_category_index(tmp_path):
  args = dict(name='digits', split='train', data_dir=tmp_path)
  zero, _ = sources.load_split(category='0', **args)
  one, _ = sources.load_split(category='1', **args)
  both, info = sources.load_split(category='0+1', **args)
  assert info['categories'] == ['0', '1'] and len(both) == len(zero) + len(one)
  last_zero, first_one = both[len(zero) - 1], both[len(zero)]
  assert last_zero['category_index'] == 0 and first_one['category_index'] == 1
  np.testing.assert_array_equal(last_zero['image'], zero[len(zero) - 1]['image'])
  np.testing.assert_array_equal(first_one['image'], one[0]['image'])
  with pytest.raises(IndexError):
    both[len(both)]  # pylint: disable=pointless-statement
  assert sources.categories_of(name='digits', category='all') == [str(d) for d in range(10)]
  assert sources.split_names(category='0+1', name='digits', data_dir=tmp_path) == ['test', 'train']


def test_all_is_refused_for_folder_datasets():
  with pytest.raises(InputError, match="'all' needs a dataset with fixed categories"):
    sources.categories_of(name='folder', category='all')


def test_a_concurrent_build_waits_for_the_lock_and_reads_the_other_processs_data(tmp_path):
  """Two processes asking for the same missing dataset build it once (parallel runs, test workers)."""
  manual_dir = _tiny_mvtec(tmp_path / 'mvtec')
  args = dict(name='mvtec_ad', category='bottle', data_dir=tmp_path / 'data', manual_dir=manual_dir)
  builder = sources.make_builder(**args)
  script = textwrap.dedent(f"""
      from adjax.data import sources
      source, info = sources.load_split(name='mvtec_ad', category='bottle', split='test',
                                        data_dir={str(tmp_path / 'data')!r}, manual_dir={str(manual_dir)!r})
      print(len(source), info['num_examples'])
  """)
  with sources._build_lock(builder):  # pylint: disable=protected-access  This process is "building".
    waiting = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, text=True)
    with pytest.raises(subprocess.TimeoutExpired):
      waiting.wait(timeout=8)  # Blocked on the lock (its imports take a few seconds of this).
    assert not list(tmp_path.glob('data/mvtec_ad/bottle/*/*.array_record*'))
    builder.download_and_prepare(  # What `prepare` does under the lock.
        download_config=sources.tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  written = sorted(tmp_path.glob('data/mvtec_ad/bottle/1.0.0/*'))
  stamps = [path.stat().st_mtime_ns for path in written]
  out, _ = waiting.communicate(timeout=120)
  assert waiting.returncode == 0 and out.strip().splitlines()[-1] == '2 2'
  # The waiting process read the data this one built; it did not build again.
  assert sorted(tmp_path.glob('data/mvtec_ad/bottle/1.0.0/*')) == written
  assert [path.stat().st_mtime_ns for path in written] == stamps
