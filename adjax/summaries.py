"""TensorBoard event files without TensorFlow: the scalars, images and hyperparameters adjax logs.

clu's metric writers (and `clu.periodic_actions`, which imports them) import TensorFlow, seconds of every
process's start-up, for the one job of writing TensorBoard events. This writer builds the same summaries
as `tf.summary.scalar`, `tf.summary.image` and TensorBoard's hparams plugin from tensorboard's own protos and
record framing, and logs every scalar with absl as clu's `LoggingWriter` does. `read_events` reads the files
back (tests, notebooks).

Usage (the interface of clu's `MetricWriter` that adjax uses):

    writer = summaries.create_writer(workdir)   # workdir/events.out.tfevents.<time>.<host>.<pid>
    writer.write_hparams({'optim.learning_rate': 1e-3})
    writer.write_scalars(step, {'loss': 0.5})
    writer.write_images(step, {'figures/curves': uint8 [1, height, width, 3]})
    writer.flush()
"""

import io
import itertools
import os
from pathlib import Path
import socket
import time
from typing import Any, Iterator, Mapping

from absl import logging
import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.compat.tensorflow_stub import errors as tf_errors
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.util import tensor_util

_FILE_COUNTER = itertools.count()


class SummaryWriter:
  """Writes TensorBoard events to one file in `logdir` (None: scalars are only logged)."""

  def __init__(self, logdir: str | os.PathLike | None):
    self._records = None
    if logdir is not None:
      logdir = Path(logdir)
      logdir.mkdir(parents=True, exist_ok=True)
      # TensorBoard's naming; the counter keeps two writers of one process apart.
      name = f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{next(_FILE_COUNTER)}'
      self._file = open(logdir / name, 'wb')  # pylint: disable=consider-using-with
      self._records = RecordWriter(self._file)
      self._write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))

  def _write(self, event: event_pb2.Event) -> None:
    self._records.write(event.SerializeToString())

  def _write_summary(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
    if self._records is not None and values:
      self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Scalars as `tf.summary.scalar` writes them (float32 tensors, scalars plugin); logged too."""
    logging.info('[%d] %s', step, ', '.join(f'{key}={value}' for key, value in scalars.items()))
    metadata = scalar_metadata.create_summary_metadata(display_name='', description='')
    self._write_summary(step, [
        summary_pb2.Summary.Value(tag=key, metadata=metadata,
                                  tensor=tensor_util.make_tensor_proto(np.asarray(value, np.float32)))
        for key, value in scalars.items()])

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """uint8 [n, height, width, 1 or 3] per tag, as `tf.summary.image` writes them (width, height, PNGs)."""
    values = []
    for key, batch in images.items():
      batch = np.asarray(batch)
      if batch.ndim != 4 or batch.dtype != np.uint8 or batch.shape[-1] not in (1, 3):
        raise ValueError(f'write_images: {key!r} must be uint8 [n, height, width, 1 or 3], got '
                         f'{batch.dtype} {batch.shape}')
      pngs = []
      for image in batch:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format='PNG')
        pngs.append(buffer.getvalue())
      height, width = batch.shape[1:3]
      tensor = tensor_util.make_tensor_proto(np.array([str(width).encode(), str(height).encode()] + pngs,
                                                      dtype=object))
      metadata = image_metadata.create_summary_metadata(display_name='', description='')
      values.append(summary_pb2.Summary.Value(tag=key, metadata=metadata, tensor=tensor))
    self._write_summary(step, values)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """Hyperparameters for TensorBoard's HParams tab (bool, int, float or str values; others as str)."""
    plain = {key: value if isinstance(value, (bool, int, float, str)) else str(value)
             for key, value in hparams.items()}
    if self._records is not None:
      self._write(event_pb2.Event(wall_time=time.time(), summary=hparams_summary.hparams_pb(plain)))

  def flush(self) -> None:
    if self._records is not None:
      self._file.flush()

  def close(self) -> None:
    if self._records is not None:
      self._file.close()
      self._records = None


def create_writer(logdir: str | os.PathLike | None, *, just_logging: bool = False) -> SummaryWriter:
  """A writer to `logdir`, or one that only logs (`just_logging`, e.g. on processes other than 0)."""
  return SummaryWriter(None if just_logging else logdir)


def read_events(logdir: str | os.PathLike) -> Iterator[event_pb2.Event]:
  """Every event of every `events.out.tfevents.*` file in `logdir`, checksums verified, in file order."""
  for path in sorted(Path(logdir).glob('events.out.tfevents.*')):
    reader = PyRecordReader_New(str(path))  # tensorboard's TensorFlow-free reader, RecordWriter's counterpart.
    while True:
      try:
        reader.GetNext()
      except tf_errors.OutOfRangeError:
        break
      except tf_errors.DataLossError as error:
        raise ValueError(f'{path}: corrupt record ({error.message})') from error
      yield event_pb2.Event.FromString(reader.record())


def decode_image(value: summary_pb2.Summary.Value) -> np.ndarray:
  """The first image of an image summary value: uint8 [height, width, channels]."""
  return np.asarray(Image.open(io.BytesIO(value.tensor.string_val[2])))
