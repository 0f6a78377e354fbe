"""The one feature spec shared by every adjax dataset builder.

Every example, whatever the dataset, reads back (through `tfds.data_source`) as
  image      uint8 [height, width, 3]   grayscale sources are expanded to 3 channels
  mask       uint8 [height, width, 1]   0 / 255; all zeros for good images and when no mask exists
  label      int64                      0 = good, 1 = anomaly
  has_mask   bool                       False where the dataset has no ground truth for this image
  defect_type, category, filename       bytes (tfds Text)
Builders yield images and masks as PNG bytes (or file paths), never numpy arrays: encoding arrays
needs TensorFlow, and reading must not.
"""

import io

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

LABEL_NAMES = ('good', 'anomaly')


def features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3), encoding_format='png'),
      'mask': tfds.features.Image(shape=(None, None, 1), encoding_format='png'),
      'label': tfds.features.ClassLabel(names=LABEL_NAMES),
      'has_mask': tfds.features.Scalar(dtype=np.bool_),
      'defect_type': tfds.features.Text(),
      'category': tfds.features.Text(),
      'filename': tfds.features.Text(),
  })


def png_bytes(array: np.ndarray) -> bytes:
  """Encodes uint8 [height, width] or [height, width, channels] as PNG (no TensorFlow)."""
  array = np.asarray(array)
  if array.dtype != np.uint8:
    raise ValueError(f'png_bytes expects uint8, got {array.dtype}')
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()
