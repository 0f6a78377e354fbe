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

Confetti noise (FCDD's synthetic anomalies): `confetti_noise` draws the noise, `malform` adds it.

`adjax.data.transforms` builds its spec-string ops from these functions and re-exports them.
"""

from collections.abc import Callable

import numpy as np
from PIL import Image
import scipy.ndimage
import skimage.draw

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


# ----------------------------------------------------------------------------- confetti noise (FCDD)


def _zero_truncated_binomial(rng: np.random.Generator, trials: int, probability: float) -> int:
  """A Binomial(trials, probability) draw conditioned on >= 1 (FCDD ensures a blob per image).

  Exact and without rejection loops: the first success is at trial K, a geometric variable truncated
  to <= trials (drawn by inverting its CDF); the trials after it are a free Binomial(trials - K, p).
  """
  log_failure = np.log1p(-probability)
  any_success = -np.expm1(trials * log_failure)  # P(X >= 1) = 1 - (1 - p)^trials
  first = int(np.clip(np.ceil(np.log1p(-rng.uniform() * any_success) / log_failure), 1, trials))
  return 1 + int(rng.binomial(trials - first, probability))


def _draw_squares(layer: np.ndarray, rng: np.random.Generator, *, probability: float, sides: np.ndarray,
                  max_rotation: float, colours: np.ndarray | None) -> None:
  """Paints rotated squares into `layer` [height, width, channels] in place (later squares on top).

  Centres are distinct pixels; there are Binomial(pixels, probability) of them, at least one. `sides`
  are the side lengths to draw from; `colours` None paints 255 in every channel (grey blobs).
  """
  height, width, channels = layer.shape
  count = _zero_truncated_binomial(rng, height * width, probability)
  centres = rng.choice(height * width, count, replace=False)
  side = rng.choice(sides, count)
  angle = np.deg2rad(rng.uniform(-max_rotation, max_rotation, count))
  colour = (rng.integers(0, 256, (count, channels)) if colours is None
            else np.broadcast_to(colours, (count, channels)))
  corners = np.array([[-1, -1], [-1, 1], [1, 1], [1, -1]], np.float64)  # (row, col) signs
  for index in range(count):
    # (s - 1) / 2 around a centre shifted by half a pixel for even s covers exactly s x s pixels at 0°.
    offset = 0.5 * ((side[index] + 1) % 2)
    centre_row, centre_col = divmod(int(centres[index]), width)
    cos, sin = np.cos(angle[index]), np.sin(angle[index])
    half = corners * (side[index] - 1) / 2
    rows = centre_row + offset + cos * half[:, 0] - sin * half[:, 1]
    cols = centre_col + offset + sin * half[:, 0] + cos * half[:, 1]
    layer[skimage.draw.polygon(rows, cols, (height, width))] = colour[index]


def confetti_noise(shape, rng: np.random.Generator, *, coloured_probability: float = 1.8e-5,
                   grey_probability: float = 1.2e-5, min_side: int = 8, max_side: int = 54,
                   max_rotation: float = 45.0, blur_sigma: float = 5.0,
                   reference_size: int = 224) -> np.ndarray:
  """FCDD's confetti noise: float32 `shape` = [height, width, channels], in grey levels (0-255 scale).

  Two layers of squares with uniformly drawn integer sides in [min_side, max_side] and rotations in
  ±max_rotation degrees, each with a square centred on a pixel with the given per-pixel probability
  (at least one per layer): coloured squares (an independent value in 0..255 per channel) and grey
  squares (255 in every channel). The layers are summed and blurred with a Gaussian of `blur_sigma`
  (FCDD: kernel 25, sigma 5, i.e. truncated at 12 pixels; mirror borders; 0 = no blur, as in seed 000's
  own runs). For images smaller than `reference_size` (shorter side) the sides and the blur shrink by
  that ratio (the per-pixel probabilities do not). The noise is non-negative; `malform` adds it.
  Unlike the reference, which rotates each square inside a 1.5-side window and so may clip its
  corners, squares are rasterised whole with `skimage.draw.polygon`.
  """
  height, width, channels = shape
  scale = min(1.0, min(height, width) / reference_size)
  sides = np.maximum(1, np.rint(np.arange(min_side, max_side + 1) * scale).astype(int))
  coloured = np.zeros(shape, np.float32)
  grey = np.zeros(shape, np.float32)
  _draw_squares(coloured, rng, probability=coloured_probability, sides=sides, max_rotation=max_rotation,
                colours=None)
  _draw_squares(grey, rng, probability=grey_probability, sides=sides, max_rotation=max_rotation,
                colours=np.full(channels, 255))
  noise = coloured + grey
  if blur_sigma > 0:
    # truncate 2.4 gives FCDD's 25-pixel kernel (radius 12) at sigma 5.
    noise = scipy.ndimage.gaussian_filter(noise, sigma=(blur_sigma * scale, blur_sigma * scale, 0),
                                          truncate=2.4, mode='mirror')
  return noise


def malform(image: np.ndarray, noise: np.ndarray, *,
            invert_threshold: float = 0.025) -> tuple[np.ndarray, np.ndarray]:
  """Adds `noise` (grey levels) to an image; returns (float32 image in [0, 1], changed [height, width]).

  The image is uint8 [0, 255] or float [0, 1]. As in FCDD's online supervisor, the noise is negated
  when the mean signed change it makes (clamped to the value range, over all pixels and channels, in
  grey levels) is below `invert_threshold` in absolute value and the negated noise changes more (e.g.
  bright noise on a white image). The noise is rounded to whole grey levels (the reference truncates
  to uint8), so pixels under half a grey level of blur tail stay exactly as they were; `changed` marks
  the pixels where any channel differs.
  """
  original = _as_unit_float(image)
  levels = original * np.float32(255)
  noise = np.rint(noise).astype(np.float32)
  change = np.clip(levels + noise, 0, 255) - levels
  inverted = np.clip(levels - noise, 0, 255) - levels
  if abs(change.mean()) < invert_threshold and abs(inverted.mean()) > abs(change.mean()):
    change = inverted
  changed = np.any(change != 0, axis=-1)
  out = np.where(changed[..., None], (levels + change) / np.float32(255), original).astype(np.float32)
  return out, changed
