"""TensorBoard events without TensorFlow: what TensorBoard's own reader sees in the files adjax writes."""

import subprocess
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

from adjax import summaries


def _accumulator(logdir):
  accumulator = event_accumulator.EventAccumulator(str(logdir), size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return accumulator


def test_tensorboard_reads_scalars_images_and_hparams(tmp_path):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (1, 9, 13, 3), dtype=np.uint8)
  gray = rng.integers(0, 256, (1, 6, 4, 1), dtype=np.uint8)
  writer = summaries.create_writer(tmp_path)
  writer.write_hparams({'optim.learning_rate': 0.5, 'model.name': 'vgg', 'train.steps': 7, 'flag': True,
                        'data.sizes': (2, 3)})
  writer.write_scalars(1, {'loss': 0.25, 'count': np.int32(3)})
  writer.write_scalars(2, {'loss': np.float32(-1.5)})
  writer.write_images(2, {'figures/rgb': rgb, 'figures/gray': gray})
  writer.close()

  accumulator = _accumulator(tmp_path)
  assert sorted(accumulator.Tags()['tensors']) == sorted(
      ['_hparams_/session_start_info', 'loss', 'count', 'figures/rgb', 'figures/gray'])
  loss = [(event.step, float(tensor_util.make_ndarray(event.tensor_proto))) for event in accumulator.Tensors('loss')]
  assert loss == [(1, 0.25), (2, -1.5)]
  assert float(tensor_util.make_ndarray(accumulator.Tensors('count')[0].tensor_proto)) == 3.
  for tag, plugin in (('loss', 'scalars'), ('figures/rgb', 'images'), ('figures/gray', 'images')):
    assert accumulator.SummaryMetadata(tag).plugin_data.plugin_name == plugin

  for tag, image in (('figures/rgb', rgb), ('figures/gray', gray)):
    (event,) = accumulator.Tensors(tag)
    width, height, png = tensor_util.make_ndarray(event.tensor_proto)
    assert (event.step, int(width), int(height)) == (2, image.shape[2], image.shape[1])
  decoded = {value.tag: summaries.decode_image(value)
             for event in summaries.read_events(tmp_path) for value in event.summary.value
             if value.tag.startswith('figures/')}
  np.testing.assert_array_equal(decoded['figures/rgb'], rgb[0])
  np.testing.assert_array_equal(decoded['figures/gray'], gray[0, ..., 0])

  content = accumulator.PluginTagToContent('hparams')['_hparams_/session_start_info']
  hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
  assert hparams['optim.learning_rate'].number_value == 0.5
  assert hparams['model.name'].string_value == 'vgg'
  assert hparams['train.steps'].number_value == 7
  assert hparams['flag'].bool_value
  assert hparams['data.sizes'].string_value == '(2, 3)'


def test_two_writers_of_one_process_write_two_files_and_just_logging_writes_none(tmp_path, monkeypatch):
  for _ in range(2):
    writer = summaries.create_writer(tmp_path / 'events')
    writer.write_scalars(0, {'loss': 1.})
    writer.close()
  assert len(list((tmp_path / 'events').glob('events.out.tfevents.*'))) == 2
  logged = []
  # absl's handler may not reach pytest's log capture once another test configured it: record the calls.
  monkeypatch.setattr(summaries.logging, 'info', lambda message, *args: logged.append(message % args))
  writer = summaries.create_writer(tmp_path / 'other', just_logging=True)
  writer.write_scalars(5, {'loss': 2.5})
  writer.write_images(5, {'x': np.zeros((1, 2, 2, 3), np.uint8)})
  writer.close()
  assert not (tmp_path / 'other').exists()
  assert logged == ['[5] loss=2.5']


def test_bad_images_and_corrupt_files_are_one_clear_error(tmp_path):
  writer = summaries.create_writer(tmp_path)
  with pytest.raises(ValueError, match="'figures/x' must be uint8"):
    writer.write_images(0, {'figures/x': np.zeros((1, 4, 4, 3), np.float32)})
  writer.write_scalars(0, {'loss': 1.})
  writer.close()
  (path,) = tmp_path.glob('events.out.tfevents.*')
  data = bytearray(path.read_bytes())
  data[-6] ^= 1  # A bit of the last record's payload.
  path.write_bytes(bytes(data))
  with pytest.raises(ValueError, match=f'{path.name}: corrupt record'):
    list(summaries.read_events(tmp_path))


def test_training_and_sweeps_never_import_tensorflow():
  code = ('import sys; import adjax.main, adjax.train, adjax.sweep, adjax.evaluate, adjax.data.sources; '
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'clu')))")
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert result.stdout.strip() == '[]'
