"""Per-example preprocessing ops for the input pipeline, chosen by a big_vision-style spec string.

`parse("resize(256)|random_crop(224)|flip_lr|local_contrast_normalization|min_max")` returns
`preprocess(example, rng) -> example`, run on the host one example at a time. Ops are separated by `|`;
each is `name` or `name(args, key=value)` with Python-literal arguments (positional arguments fill the
op's hyperparameters in the order listed by its factory). All randomness comes from `rng`.

Contract:
- An example is a dict with `image` [height, width, channels] and optionally `mask` [height, width, 1]
  (uint8 0/255) plus any other fields, which pass through untouched.
- Geometric ops (resize, crops, flips, rot90) move image and mask alike; the mask is always resampled
  with nearest neighbour, so it stays binary and aligned. They keep the dtype.
- Photometric ops touch the image only. Value convention: a uint8 image spans [0, 255], a float image
  spans [0, 1] (after LCN or normalize it is unbounded). Ops that change values return float32.
- `parse` always finishes with `to_float`: image float32 [height, width, channels], mask float32
  [height, width] in {0, 1}. `to_float` is idempotent and may also appear in the spec.
- Resizing uses PIL: `bilinear` (default) and `bicubic` antialias when shrinking (PIL widens the filter
  by the scale factor, like torchvision's `antialias=True`); `nearest` copies pixels.

The functions on plain arrays (`resize`, `center_crop`, `grayscale`, `adjust_*`,
`local_contrast_normalization`, `min_max`, `value_range`, `normalize`) are public too. Add an op by
putting a factory (keyword-only hyperparameters → `op(example, rng) -> example`) into `OPS`.
"""

import ast
from collections.abc import Callable, Sequence
import inspect
from typing import Any

import numpy as np
from PIL import Image

from adjax.errors import InputError

Example = dict[str, Any]
Op = Callable[[Example, np.random.Generator], Example]

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as PIL and torchvision
NORMALIZE_PRESETS = {
    'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    'inception': ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [0, 1] -> [-1, 1]
}
_RESAMPLE = {'nearest': Image.NEAREST, 'bilinear': Image.BILINEAR, 'bicubic': Image.BICUBIC}


# ----------------------------------------------------------------------------- arrays


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


# ----------------------------------------------------------------------------- examples


def to_float(example: Example, rng: np.random.Generator | None = None) -> Example:
  """image -> float32 (uint8 scaled to [0, 1]); mask -> float32 [height, width] in {0, 1}. Idempotent."""
  del rng
  out = dict(example, image=_as_unit_float(example['image']))
  if 'mask' in example:
    mask = np.asarray(example['mask'])
    mask = mask[..., 0] if mask.ndim == 3 else mask
    threshold = 127 if mask.dtype == np.uint8 else 0.5
    out['mask'] = (mask > threshold).astype(np.float32)
  return out


def _geometric(example: Example, transform: Callable[[np.ndarray, bool], np.ndarray]) -> Example:
  """Applies `transform(array, is_mask)` to the image and, if present, the mask."""
  out = dict(example, image=transform(np.asarray(example['image']), False))
  if 'mask' in example:
    out['mask'] = transform(np.asarray(example['mask']), True)
  return out


def _photometric(example: Example, transform: Callable[[np.ndarray], np.ndarray]) -> Example:
  return dict(example, image=transform(np.asarray(example['image'])))


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise InputError(message)


def _resize_op(*, size, method='bilinear') -> Op:
  _pair(size)
  _check(method in _RESAMPLE, f'method must be one of {sorted(_RESAMPLE)}, got {method!r}')
  return lambda example, rng: _geometric(
      example, lambda a, is_mask: resize(a, size, method='nearest' if is_mask else method))


def _resize_short_op(*, size, method='bilinear') -> Op:
  """Scales so the shorter side is `size` (longer side truncated, like torchvision)."""
  _check(isinstance(size, int) and size > 0, f'size must be a positive int, got {size!r}')
  _check(method in _RESAMPLE, f'method must be one of {sorted(_RESAMPLE)}, got {method!r}')

  def op(example, rng):
    height, width = np.shape(example['image'])[:2]
    scale = size / min(height, width)
    target = (size, int(width * scale)) if height <= width else (int(height * scale), size)
    return _resize_op(size=target, method=method)(example, rng)

  return op


def _center_crop_op(*, size) -> Op:
  _pair(size)
  return lambda example, rng: _geometric(example, lambda a, _: center_crop(a, size))


def _random_crop_op(*, size) -> Op:
  _pair(size)

  def op(example, rng):
    height, width = np.shape(example['image'])[:2]
    crop_height, crop_width = _crop_size(size, height, width, 'random_crop')
    top = rng.integers(height - crop_height + 1)
    left = rng.integers(width - crop_width + 1)
    return _geometric(example, lambda a, _: a[top:top + crop_height, left:left + crop_width])

  return op


def _flip_op(axis: int) -> Callable[..., Op]:
  def factory(*, p=0.5) -> Op:
    _check(isinstance(p, (int, float)) and 0 <= p <= 1, f'p must be in [0, 1], got {p!r}')

    def op(example, rng):
      if rng.random() >= p:
        return example
      return _geometric(example, lambda a, _: np.flip(a, axis))

    return op

  return factory


def _rot90_op(*, k=None) -> Op:
  """Rotates by k quarter turns counter-clockwise; k=None draws k from {0, 1, 2, 3}."""
  _check(k is None or isinstance(k, int), f'k must be None or an int, got {k!r}')

  def op(example, rng):
    turns = rng.integers(4) if k is None else k
    return _geometric(example, lambda a, _: np.rot90(a, turns, axes=(0, 1)))

  return op


def _grayscale_op(*, channels=3) -> Op:
  _check(channels in (1, 3), f'channels must be 1 or 3, got {channels!r}')
  return lambda example, rng: _photometric(example, lambda image: grayscale(image, channels=channels))


def _color_jitter_op(*, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0) -> Op:
  """torchvision.ColorJitter: factors ~ U[max(0, 1 - x), 1 + x], hue shift ~ U[-hue, hue].

  The four adjustments run in a random order (a permutation drawn per example, as torchvision);
  a zero hyperparameter skips its adjustment, so all zeros returns the example untouched.
  """
  for name, value in (('brightness', brightness), ('contrast', contrast), ('saturation', saturation)):
    _check(isinstance(value, (int, float)) and value >= 0, f'{name} must be >= 0, got {value!r}')
  _check(isinstance(hue, (int, float)) and 0 <= hue <= 0.5, f'hue must be in [0, 0.5], got {hue!r}')
  ranges = [(max(0.0, 1 - v), 1 + v) if v > 0 else None for v in (brightness, contrast, saturation)]
  ranges.append((-hue, hue) if hue > 0 else None)
  adjusters = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)

  def op(example, rng):
    if all(r is None for r in ranges):
      return example
    order = rng.permutation(4)
    factors = [None if r is None else rng.uniform(*r) for r in ranges]
    image = _as_unit_float(example['image'])
    for index in order:
      if factors[index] is not None:
        image = adjusters[index](image, factors[index])
    return dict(example, image=image)

  return op


def _gaussian_noise_op(*, std_fraction=0.1, pixel_fraction=1.0, p=1.0, clip=True) -> Op:
  """Adds N(0, (std_fraction * image std)^2) to a random `pixel_fraction` of the pixel positions.

  The std is over all pixels and channels; each chosen position gets independent noise per channel.
  With probability 1 - p the example is left untouched. Seed 000 §4: pixel_fraction=0.5, p=1;
  FCDD's code: pixel_fraction=1, p=0.5. `clip` clips to [0, 1] (the code clamps).
  """
  _check(isinstance(std_fraction, (int, float)) and std_fraction >= 0,
         f'std_fraction must be >= 0, got {std_fraction!r}')
  for name, value in (('pixel_fraction', pixel_fraction), ('p', p)):
    _check(isinstance(value, (int, float)) and 0 <= value <= 1, f'{name} must be in [0, 1], got {value!r}')

  def op(example, rng):
    if rng.random() >= p:
      return example
    image = _float_copy(example['image'])
    mean = image.mean()
    sigma = np.float32(std_fraction * np.sqrt(_mean_of(image, lambda block: np.square(block - mean))))
    chosen = np.flatnonzero(rng.random(image.shape[:2], dtype=np.float32) < pixel_fraction)
    pixels = image.reshape(-1, image.shape[-1])
    pixels[chosen] += sigma * rng.standard_normal((len(chosen), image.shape[-1]), dtype=np.float32)
    return dict(example, image=np.clip(image, 0, 1, out=image) if clip else image)

  return op


def _lcn_op() -> Op:
  return lambda example, rng: _photometric(example, local_contrast_normalization)


def _min_max_op(*, low=None, high=None) -> Op:
  if low is not None and high is not None:
    _check(np.all(np.asarray(high, float) > np.asarray(low, float)), f'need high > low, got {low}, {high}')
  return lambda example, rng: _photometric(example, lambda image: min_max(image, low=low, high=high))


def _value_range_op(*, low, high) -> Op:
  _check(float(high) != float(low), f'need low != high, got {low}, {high}')
  return lambda example, rng: _photometric(example, lambda image: value_range(image, low, high))


def _normalize_op(*, mean, std=None) -> Op:
  """`normalize("imagenet")` or `normalize(mean=(...), std=(...))`."""
  if isinstance(mean, str):
    _check(mean in NORMALIZE_PRESETS and std is None,
           f'preset must be one of {sorted(NORMALIZE_PRESETS)} (without std), got {mean!r}')
    mean, std = NORMALIZE_PRESETS[mean]
  _check(std is not None and np.all(np.asarray(std, float) > 0), f'std must be > 0, got {std!r}')
  return lambda example, rng: _photometric(example, lambda image: normalize(image, mean, std))


def _one_of_op(*, ops: Sequence[str], weights=None) -> Op:
  """Runs one of the sub-specs, e.g. `one_of(["resize(224)", "random_crop(224)"])` (uniform by default)."""
  _check(isinstance(ops, (list, tuple)) and ops and all(isinstance(s, str) for s in ops),
         f'ops must be a non-empty list of spec strings, got {ops!r}')
  choices = [_parse_ops(sub_spec) for sub_spec in ops]
  if weights is not None:
    weights = np.asarray(weights, float)
    _check(weights.shape == (len(ops),) and np.all(weights >= 0) and weights.sum() > 0,
           f'weights must be {len(ops)} non-negative numbers, got {weights.tolist()}')
    weights = weights / weights.sum()

  def op(example, rng):
    for chosen_op in choices[rng.choice(len(choices), p=weights)]:
      example = chosen_op(example, rng)
    return example

  return op


OPS: dict[str, Callable[..., Op]] = {
    'resize': _resize_op,
    'resize_short': _resize_short_op,
    'center_crop': _center_crop_op,
    'random_crop': _random_crop_op,
    'flip_lr': _flip_op(axis=1),
    'flip_ud': _flip_op(axis=0),
    'rot90': _rot90_op,
    'grayscale': _grayscale_op,
    'color_jitter': _color_jitter_op,
    'gaussian_noise': _gaussian_noise_op,
    'local_contrast_normalization': _lcn_op,
    'min_max': _min_max_op,
    'value_range': _value_range_op,
    'normalize': _normalize_op,
    'to_float': lambda: to_float,
    'one_of': _one_of_op,
}


# ----------------------------------------------------------------------------- spec strings


def parse(spec: str) -> Callable[[Example, np.random.Generator], Example]:
  """Builds `preprocess(example, rng) -> example` from a spec; ends with `to_float` (see module doc)."""
  ops = _parse_ops(spec)

  def preprocess(example: Example, rng: np.random.Generator) -> Example:
    for op in ops:
      example = op(example, rng)
    return to_float(example)

  return preprocess


def _parse_ops(spec: str) -> list[Op]:
  if not isinstance(spec, str):
    raise InputError(f'preprocessing spec must be a string, got {spec!r}')
  if not spec.strip():
    return []
  try:
    node = ast.parse(spec.strip(), mode='eval').body
  except SyntaxError as error:
    raise InputError(f'cannot read preprocessing spec {spec!r}: {error.msg}') from None
  nodes = []  # `a|b|c` parses as ((a | b) | c)
  while isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
    nodes.append(node.right)
    node = node.left
  nodes.append(node)
  return [_build_op(node, spec) for node in reversed(nodes)]


def _build_op(node: ast.expr, spec: str) -> Op:
  call = node if isinstance(node, ast.Call) else ast.Call(func=node, args=[], keywords=[])
  if not isinstance(call.func, ast.Name):
    raise InputError(f'cannot read {ast.unparse(node)!r} as an op in preprocessing spec {spec!r}')
  name = call.func.id
  if name not in OPS:
    raise InputError(f'unknown preprocessing op {name!r} in spec {spec!r}; known ops: {", ".join(OPS)}')
  factory = OPS[name]
  params = list(inspect.signature(factory).parameters)
  where = f'op {name!r} in preprocessing spec {spec!r}'
  try:
    args = [ast.literal_eval(arg) for arg in call.args]
    kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg is not None}
  except (ValueError, SyntaxError):
    raise InputError(f'{where}: arguments must be Python literals') from None
  if len(args) > len(params) or len(kwargs) < len(call.keywords):
    raise InputError(f'{where}: too many arguments; it takes {params}')
  for param, value in zip(params, args):
    if param in kwargs:
      raise InputError(f'{where}: {param!r} given twice')
    kwargs[param] = value
  try:
    inspect.signature(factory).bind(**kwargs)
  except TypeError as error:
    raise InputError(f'{where}: {error}; it takes {params}') from None
  try:
    return factory(**kwargs)
  except (InputError, TypeError, ValueError) as error:
    raise InputError(f'{where}: {error}') from None
