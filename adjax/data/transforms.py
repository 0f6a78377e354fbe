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
- `confetti` (synthetic anomalies for training) is the one op that also sets `label`, `mask` and
  `has_mask`; see its factory.
- Photometric ops touch the image only. Value convention: a uint8 image spans [0, 255], a float image
  spans [0, 1] (after LCN or normalize it is unbounded). Ops that change values return float32.
- `parse` always finishes with `to_float`: image float32 [height, width, channels], mask float32
  [height, width] in {0, 1}. `to_float` is idempotent and may also appear in the spec.

The ops are built from the array functions of `adjax.data.image_ops` (resizing with PIL, colour
adjustments, LCN, ...), which this module re-exports (`transforms.resize`, `transforms.min_max`, ...).
Add an op by putting a factory (keyword-only hyperparameters → `op(example, rng) -> example`) into `OPS`.
"""

import ast
from collections.abc import Callable, Sequence
import inspect
from typing import Any

import numpy as np

# Re-exported, so callers keep writing `transforms.resize(...)`, `transforms.min_max(...)`, ...
from adjax.data.image_ops import (LUMA_WEIGHTS, NORMALIZE_PRESETS, adjust_brightness, adjust_contrast,
                                  adjust_hue, adjust_saturation, center_crop, confetti_noise, grayscale,
                                  local_contrast_normalization, malform, min_max, normalize, resize,
                                  value_range)
# Package-internal helpers: the ops validate and convert exactly as the array functions do.
from adjax.data.image_ops import _RESAMPLE, _as_unit_float, _crop_size, _float_copy, _mean_of, _pair
from adjax.errors import InputError

Example = dict[str, Any]
Op = Callable[[Example, np.random.Generator], Example]


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


def _crop_or_resize_op(*, size, crop_probability=0.5, method='bilinear') -> Op:
  """FCDD / seed 000 §4: a random `size` crop with probability `crop_probability`, else a resize to `size`.

  The reference code resizes with nearest neighbour (`method="nearest"`); the mask always uses nearest.
  """
  _check(isinstance(crop_probability, (int, float)) and 0 <= crop_probability <= 1,
         f'crop_probability must be in [0, 1], got {crop_probability!r}')
  crop, resize_op = _random_crop_op(size=size), _resize_op(size=size, method=method)
  return lambda example, rng: (crop if rng.random() < crop_probability else resize_op)(example, rng)


def _confetti_op(*, probability=0.5, mode='malformed_normal', coloured_probability=1.8e-5,
                 grey_probability=1.2e-5, min_side=8, max_side=54, max_rotation=45.0, blur_sigma=5.0,
                 invert_threshold=0.025) -> Op:
  """FCDD's online supervisor: with `probability`, replaces a training image by a confetti-malformed copy.

  Noise and sign rule: `image_ops.confetti_noise` and `image_ops.malform`. A modified example gets
  label 1 and a uint8 [height, width, 1] mask of 255 on the whole image (mode "malformed_normal", the
  reference default: the FCDD loss then pushes the mean score of the whole image) or on the changed
  pixels only (mode "pixels", the reference's "malformed_normal_gt"); its image becomes float32 in
  [0, 1]. An unmodified example keeps its label and mask (zeros if it had none). `has_mask` is True for
  every example.

  Placement: images must still be uint8 or in [0, 1] (InputError otherwise), so put it before
  `local_contrast_normalization` / `normalize` / `value_range`. The reference applies it before any
  augmentation: `resize(240)|confetti|crop_or_resize(224)|...`. Training specs only.
  """
  modes = ('malformed_normal', 'pixels')
  _check(mode in modes, f'mode must be one of {modes}, got {mode!r}')
  for name, value in (('probability', probability), ('coloured_probability', coloured_probability),
                      ('grey_probability', grey_probability)):
    _check(isinstance(value, (int, float)) and 0 <= value <= 1, f'{name} must be in [0, 1], got {value!r}')
  _check(isinstance(min_side, int) and isinstance(max_side, int) and 1 <= min_side <= max_side,
         f'need integer sides 1 <= min_side <= max_side, got {min_side!r}, {max_side!r}')
  _check(coloured_probability > 0 and grey_probability > 0,
         'coloured_probability and grey_probability must be > 0')
  for name, value in (('max_rotation', max_rotation), ('blur_sigma', blur_sigma),
                      ('invert_threshold', invert_threshold)):
    _check(isinstance(value, (int, float)) and value >= 0, f'{name} must be >= 0, got {value!r}')
  noise_options = dict(coloured_probability=coloured_probability, grey_probability=grey_probability,
                       min_side=min_side, max_side=max_side, max_rotation=max_rotation, blur_sigma=blur_sigma)

  def op(example, rng):
    image = np.asarray(example['image'])
    if image.dtype != np.uint8 and (image.min() < 0 or image.max() > 1):
      raise InputError(f'confetti expects uint8 images or floats in [0, 1], got values in '
                       f'[{image.min():.3g}, {image.max():.3g}]; put it before ops that leave [0, 1] '
                       '(local_contrast_normalization, normalize, value_range)')
    out = dict(example, has_mask=np.True_)
    if rng.random() >= probability:
      if 'mask' not in example:
        out['mask'] = np.zeros(image.shape[:2] + (1,), np.uint8)
      return out
    noise = confetti_noise(image.shape[:2] + (image.shape[2],), rng, **noise_options)
    out['image'], changed = malform(image, noise, invert_threshold=invert_threshold)
    marked = changed if mode == 'pixels' else np.ones_like(changed)
    out['mask'] = (marked * np.uint8(255)).astype(np.uint8)[..., None]
    out['label'] = np.int64(1)
    return out

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
  Seed 000 §4 draws, with probability 1/2 each, all four at 0.04 or all at 0.0005:
  `one_of(["color_jitter(0.04, 0.04, 0.04, 0.04)", "color_jitter(0.0005, 0.0005, 0.0005, 0.0005)"])`
  (FCDD's code uses brightness 0.005 in the second).
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
    'crop_or_resize': _crop_or_resize_op,
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
    'confetti': _confetti_op,
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
