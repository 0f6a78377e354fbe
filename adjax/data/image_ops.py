"""Image operations on plain numpy arrays: resizing, cropping, colour adjustments, value scaling.

Value convention: a uint8 image spans [0, 255], a float image spans [0, 1]. Images are
`[height, width, channels]`. Functions that change values return float32; `grayscale`, `adjust_*`,
`value_range` and `normalize` first scale uint8 to [0, 1]. After `local_contrast_normalization` or
`normalize` the values are unbounded.

Geometry: `resize` and `center_crop` also take `[height, width]`. `center_crop` keeps the dtype;
`resize` keeps uint8 with 1 or 3 channels (PIL rounds) and returns float32 otherwise (an array already
of the target size comes back as is). Resizing uses PIL: `bilinear` (default) and `bicubic` antialias
when shrinking (PIL widens the filter by the scale factor, like torchvision's `antialias=True`);
`nearest` copies pixels.

`adjax.data.transforms` builds its spec-string ops from these functions and re-exports them.
"""

from collections.abc import Callable

import numpy as np
from PIL import Image

from adjax.errors import InputError

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as PIL and torchvision
NORMALIZE_PRESETS = {
    'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    'inception': ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [0, 1] -> [-1, 1]
}
_RESAMPLE = {'nearest': Image.NEAREST, 'bilinear': Image.BILINEAR, 'bicubic': Image.BICUBIC}


def _pair(size) -> tuple[int, int]:
  sizes = (size, size) if np.ndim(size) == 0 else tuple(size)
  if len(sizes) != 2 or not all(
      isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in sizes):
    raise InputError(f'size must be a positive int or (height, width), got {size!r}')
  return int(sizes[0]), int(sizes[1])


def _as_unit_float(image: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [0, 1]; other dtypes -> float32 unchanged (no copy if already float32)."""
  image = np.asarray(image)
  if image.dtype == np.uint8:
    return np.divide(image, np.float32(255), dtype=np.float32)
  return image.astype(np.float32, copy=False)


def _float_copy(image: np.ndarray) -> np.ndarray:
  """Like `_as_unit_float`, but always a new array, which the caller then updates in place.

  In-place updates matter here: with glibc's default malloc every fresh 224²x3 float32 temporary
  costs ~0.5 ms of page faults, several times more than the arithmetic.
  """
  image = np.asarray(image)
  return _as_unit_float(image) if image.dtype == np.uint8 else np.array(image, np.float32)


def resize(array: np.ndarray, size, *, method: str = 'bilinear') -> np.ndarray:
  """Resizes `[height, width]` or `[height, width, channels]` to `size` (int → square, or (h, w)).

  uint8 with 1 or 3 channels is resized by PIL as is (rounded); anything else plane by plane as float32.
  """
  height, width = _pair(size)
  array = np.asarray(array)
  if array.shape[:2] == (height, width):
    return array
  resample = _RESAMPLE[method]
  if array.dtype == np.uint8 and (array.ndim == 2 or array.shape[2] in (1, 3)):
    planar = array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array
    out = np.asarray(Image.fromarray(planar).resize((width, height), resample))
    return out.reshape((height, width) + array.shape[2:])
  planes = array.astype(np.float32).reshape(array.shape[:2] + (-1,))
  out = [np.asarray(Image.fromarray(np.ascontiguousarray(planes[..., c])).resize((width, height), resample))
         for c in range(planes.shape[-1])]
  return np.stack(out, -1).reshape((height, width) + array.shape[2:])


def _crop_size(size, height: int, width: int, op: str) -> tuple[int, int]:
  crop_height, crop_width = _pair(size)
  if crop_height > height or crop_width > width:
    raise InputError(f'{op}: crop {crop_height}x{crop_width} is larger than the image {height}x{width}')
  return crop_height, crop_width


def center_crop(array: np.ndarray, size) -> np.ndarray:
  """The central `size` window of `[height, width, ...]` (offsets rounded like torchvision)."""
  height, width = array.shape[:2]
  crop_height, crop_width = _crop_size(size, height, width, 'center_crop')
  top, left = round((height - crop_height) / 2), round((width - crop_width) / 2)
  return array[top:top + crop_height, left:left + crop_width]


def _luma(image: np.ndarray) -> np.ndarray:
  """[height, width, 3 or 1] float -> [height, width] float32."""
  return image[..., 0] if image.shape[-1] == 1 else image @ LUMA_WEIGHTS


def grayscale(image: np.ndarray, *, channels: int = 3) -> np.ndarray:
  """[height, width, 3] -> float32 [height, width, channels] of BT.601 luma, in [0, 1]."""
  gray = _luma(_as_unit_float(image))[..., None]
  return np.repeat(gray, channels, axis=-1)


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
  """torchvision semantics on [0, 1]: blend with black, clip. Returns float32 [height, width, channels]."""
  out = _float_copy(image)
  out *= np.float32(factor)
  return np.clip(out, 0, 1, out=out)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
  """Blend with the image's mean luma (one scalar), clip."""
  out = _float_copy(image)
  mean = _luma(out).mean()
  out *= np.float32(factor)
  out += np.float32(1 - factor) * mean
  return np.clip(out, 0, 1, out=out)


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
  """Blend with the per-pixel luma, clip; single-channel images come back unchanged."""
  out = _float_copy(image)
  if out.shape[-1] == 1:
    return out
  gray = _luma(out)
  gray *= np.float32(1 - factor)
  out *= np.float32(factor)
  out += gray[..., None]
  return np.clip(out, 0, 1, out=out)


def adjust_hue(image: np.ndarray, shift: float) -> np.ndarray:
  """Rotates the HSV hue by `shift` turns (in [-0.5, 0.5]); HSV value and saturation are unchanged.

  Same result as torchvision's tensor `adjust_hue`, ~10x faster than a skimage.color round trip.
  """
  image = _as_unit_float(image)
  if image.shape[-1] != 3:
    return image
  pixels = image.reshape(-1, 3)
  out = np.empty_like(pixels)
  # Blocks keep the many temporaries small (cache-resident, no fresh pages from malloc).
  for start in range(0, len(pixels), 8192):
    out[start:start + 8192] = _shift_hue_block(pixels[start:start + 8192], shift)
  return out.reshape(image.shape)


def _shift_hue_block(pixels: np.ndarray, shift: float) -> np.ndarray:
  """[pixels, 3] -> [pixels, 3]. HSV→RGB gives each channel as min + (max - min) * profile(hue)."""
  red, green, blue = pixels.T
  high = np.maximum(np.maximum(red, green), blue)
  low = np.minimum(np.minimum(red, green), blue)
  delta = high - low
  safe = np.where(delta > 0, delta, 1)
  # Hue in sixths of a turn, in [-1, 5), then shifted and wrapped to [0, 6).
  sixths = np.where(high == red, green - blue,
                    np.where(high == green, blue - red + 2 * safe, red - green + 4 * safe)) / safe
  sixths += np.float32(6 * shift)
  sixths -= 6 * np.floor(sixths / 6)
  profiles = np.stack([np.abs(sixths - 3) - 1, 2 - np.abs(sixths - 2), 2 - np.abs(sixths - 4)], -1)
  return low[:, None] + delta[:, None] * np.clip(profiles, 0, 1)


def _mean_of(values: np.ndarray, elementwise: Callable[[np.ndarray], np.ndarray]) -> float:
  """mean(elementwise(values)) computed in blocks, so no image-sized temporary is allocated."""
  flat = values.reshape(-1)
  total = sum(float(elementwise(flat[i:i + 16384]).sum()) for i in range(0, flat.size, 16384))
  return total / max(flat.size, 1)


def local_contrast_normalization(image: np.ndarray) -> np.ndarray:
  """FCDD's LCN: subtract the mean, divide by the mean absolute value (all pixels and channels together).

  `[height, width, channels]` -> float32 with mean 0 and mean |x| 1 (zeros for a constant image).
  Scale invariant, so uint8 and [0, 1] inputs give the same result.
  """
  out = np.array(image, np.float32)
  out -= out.mean()
  scale = _mean_of(out, np.abs)
  if scale > 0:
    out /= scale
  return out


def min_max(image: np.ndarray, *, low=None, high=None) -> np.ndarray:
  """Maps [low, high] to [0, 1]: by default the image's own min and max (all channels together).

  Fixed `low` / `high` (scalars or per-channel sequences, e.g. FCDD's per-category tables after LCN)
  apply to the values as they are, without clipping. A constant image maps to zeros.
  """
  out = np.array(image, np.float32)
  low = out.min() if low is None else np.asarray(low, np.float32)
  high = out.max() if high is None else np.asarray(high, np.float32)
  span = high - low
  out -= low
  out /= np.where(span > 0, span, np.inf).astype(np.float32)
  return out


def value_range(image: np.ndarray, low: float, high: float) -> np.ndarray:
  """Maps uint8 [0, 255], or float [0, 1], linearly onto float32 [low, high]."""
  out = _float_copy(image)
  out *= np.float32(high - low)
  out += np.float32(low)
  return out


def normalize(image: np.ndarray, mean, std) -> np.ndarray:
  """(image in [0, 1] - mean) / std per channel; uint8 is first scaled to [0, 1]."""
  out = _float_copy(image)
  out -= np.asarray(mean, np.float32)
  out /= np.asarray(std, np.float32)
  return out
