"""Seeded synthetic defects with exact masks, as pure functions over numpy arrays.

Every defect function takes an image `[height, width]` or `[height, width, channels]` (uint8, or float in
any range), a `numpy.random.Generator` and keyword-only hyperparameters, and returns
`(defective_image, mask)`:
  defective_image  same shape and dtype as the input; uint8 results are rounded and clipped to [0, 255],
                   float results are clipped to the input's own [min, max]
  mask             bool [height, width], the region the defect was drawn into; every pixel outside it
                   equals the input bit for bit, and nearly every pixel inside differs (a pasted pixel
                   can happen to equal the one it covers)
The same generator state gives the same defect, so a dataset built from one seed is reproducible.

Defect types (`DEFECT_TYPES`):
  foreign_patch  a blob of another image (another texture) pasted in, optionally with its mean and std matched to the
                 pixels it covers (so only the structure differs, not the brightness)
  rotated_patch  a blob of the same image, taken from elsewhere, rotated and rescaled
  scratch        a thin curved line blended towards white or black
  stain          a blob with soft interior shading blended towards a tone (dark by default)

Blob areas are drawn uniformly from `area_range`, given as fractions of the image area; the rasterised
mask matches the drawn area up to pixel rounding along its border (see `blob_mask`).
"""

import numpy as np
from scipy import ndimage
from scipy import spatial
from skimage import draw

DEFECT_TYPES = ('foreign_patch', 'rotated_patch', 'scratch', 'stain')


def _check_image(image: np.ndarray, name: str = 'image') -> np.ndarray:
  image = np.asarray(image)
  if image.ndim not in (2, 3):
    raise ValueError(f'{name} must be [height, width] or [height, width, channels], got shape {image.shape}')
  if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
    raise ValueError(f'{name} must be uint8 or float, got {image.dtype}')
  return image


def _value_range(image: np.ndarray) -> tuple[float, float]:
  """The range results are clipped to: the dtype's for uint8, the image's own for float."""
  if image.dtype == np.uint8:
    return 0.0, 255.0
  return float(image.min()), float(image.max())


def _compose(image: np.ndarray, changed: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Takes `changed` (float, same shape) inside `mask` and `image` untouched outside it."""
  low, high = _value_range(image)
  changed = np.clip(changed, low, high)
  if image.dtype == np.uint8:
    changed = np.round(changed)
  changed = changed.astype(image.dtype)
  region = mask if image.ndim == 2 else mask[..., None]
  return np.where(region, changed, image)


def _warp(image: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
  """Samples each channel at matrix @ (row, col) + offset (bilinear, mirrored at the border), as float."""
  planes = image[..., None] if image.ndim == 2 else image
  warped = np.stack([ndimage.affine_transform(planes[..., c].astype(np.float64), matrix, offset, order=1,
                                              mode='mirror') for c in range(planes.shape[-1])], axis=-1)
  return warped[..., 0] if image.ndim == 2 else warped


def blob_mask(height: int, width: int, *, rng: np.random.Generator,
              area_range: tuple[float, float], roughness: float = 0.25,
              center: tuple[float, float] | None = None) -> np.ndarray:
  """An irregular star-shaped blob, fully inside the image.

  The outline is r(theta) = r0 * (1 + sum_k a_k cos(k theta + phase_k)) for k = 2, 3, 4 with
  |a_k| <= roughness / k, scaled so that the polygon's area is a fraction of height * width drawn uniformly
  from `area_range`. Rasterising keeps the pixels whose centres fall inside the polygon.

  Args:
    height, width: image size in pixels.
    rng: source of randomness.
    area_range: (low, high) fraction of the image area.
    roughness: how far the outline departs from a circle (0 = circle, at most 0.5).
    center: (row, col) of the blob; random (keeping the blob inside the image) when None.

  Returns:
    bool [height, width].
  """
  low, high = area_range
  if not 0 < low <= high < 0.5:
    raise ValueError(f'area_range must satisfy 0 < low <= high < 0.5, got {area_range}')
  if not 0 <= roughness <= 0.5:
    raise ValueError(f'roughness must be in [0, 0.5], got {roughness}')
  area = rng.uniform(low, high) * height * width
  theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
  harmonics = np.arange(2, 5)
  amplitudes = rng.uniform(-1, 1, size=3) * roughness / harmonics
  phases = rng.uniform(0, 2 * np.pi, size=3)
  radius = 1 + (amplitudes[:, None] * np.cos(harmonics[:, None] * theta + phases[:, None])).sum(0)
  # Shoelace area of the unit-scale polygon, then scale to the drawn area.
  unit_area = 0.5 * np.sum(radius * np.roll(radius, -1)) * np.sin(2 * np.pi / theta.size)
  radius *= np.sqrt(area / unit_area)
  rows, cols = radius * np.sin(theta), radius * np.cos(theta)
  if center is None:
    row_low, row_high = -rows.min(), height - 1 - rows.max()
    col_low, col_high = -cols.min(), width - 1 - cols.max()
    if row_low > row_high or col_low > col_high:
      raise ValueError(f'a blob of area {area:.0f} px does not fit in a {height}x{width} image')
    center = (rng.uniform(row_low, row_high), rng.uniform(col_low, col_high))
  rr, cc = draw.polygon(rows + center[0], cols + center[1], shape=(height, width))
  mask = np.zeros((height, width), bool)
  mask[rr, cc] = True
  return mask


def foreign_patch(image: np.ndarray, source: np.ndarray, *, rng: np.random.Generator,
                  area_range: tuple[float, float] = (0.02, 0.06), match_moments: bool = True,
                  roughness: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
  """Pastes a blob cut from a random place of `source` (another texture) into `image`.

  Args:
    image: [height, width] or [height, width, channels].
    source: same number of channels, at least as large as `image`.
    rng: source of randomness.
    area_range: blob area as a fraction of the image area.
    match_moments: rescale the pasted pixels (per channel) to the mean and std of the pixels they cover.
    roughness: outline irregularity, see `blob_mask`.

  Returns:
    (defective image, bool mask [height, width]).
  """
  image, source = _check_image(image), _check_image(source, 'source')
  height, width = image.shape[:2]
  if source.ndim != image.ndim or source.shape[2:] != image.shape[2:]:
    raise ValueError(f'source shape {source.shape} has other channels than image shape {image.shape}')
  if source.shape[0] < height or source.shape[1] < width:
    raise ValueError(f'source {source.shape[:2]} is smaller than image {image.shape[:2]}')
  mask = blob_mask(height, width, rng=rng, area_range=area_range, roughness=roughness)
  top = rng.integers(0, source.shape[0] - height + 1)
  left = rng.integers(0, source.shape[1] - width + 1)
  pasted = source[top:top + height, left:left + width].astype(np.float64)
  if match_moments:
    target = image.astype(np.float64)[mask]
    inside = pasted[mask]
    scale = target.std(axis=0) / np.maximum(inside.std(axis=0), 1e-6)
    pasted = (pasted - inside.mean(axis=0)) * scale + target.mean(axis=0)
  return _compose(image, pasted, mask), mask


def rotated_patch(image: np.ndarray, *, rng: np.random.Generator,
                  area_range: tuple[float, float] = (0.02, 0.06),
                  angle_range: tuple[float, float] = (30.0, 150.0),
                  scale_range: tuple[float, float] = (1.0, 1.0),
                  min_change: float = 0.0, roughness: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
  """Fills a blob with the same image seen from elsewhere, rotated and rescaled.

  Each output pixel p of the blob samples the image (bilinear, mirrored at the border) at
  c_src + R(angle) (p - c_dst) / scale, so the blob shows the texture around a random point c_src
  turned by `angle` degrees and magnified by `scale` (> 1 enlarges the structure). A plain region
  rotated onto a plain region changes nothing a person could see, so the source point, angle and scale
  are drawn again (up to 20 times, keeping the last) until the mean absolute change inside the blob is at
  least `min_change` of the value range.

  Args:
    image: [height, width] or [height, width, channels].
    rng: source of randomness.
    area_range: blob area as a fraction of the image area.
    angle_range: (low, high) rotation in degrees; the sign is random.
    scale_range: (low, high) magnification, drawn log-uniformly.
    min_change: required mean absolute change inside the blob, as a fraction of the value range.
    roughness: outline irregularity, see `blob_mask`.

  Returns:
    (defective image, bool mask [height, width]).
  """
  image = _check_image(image)
  height, width = image.shape[:2]
  mask = blob_mask(height, width, rng=rng, area_range=area_range, roughness=roughness)
  center_dst = np.argwhere(mask).mean(axis=0)
  low, high = _value_range(image)
  for _ in range(20):
    center_src = rng.uniform((0, 0), (height - 1, width - 1))
    angle = np.deg2rad(rng.uniform(*angle_range) * rng.choice((-1, 1)))
    scale = np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1])))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = rotation / scale
    defective = _compose(image, _warp(image, matrix, center_src - matrix @ center_dst), mask)
    change = np.abs(defective.astype(np.float64) - image)[mask].mean() / max(high - low, 1e-12)
    if change >= min_change:
      break
  return defective, mask


def _bezier_points(height: int, width: int, *, rng: np.random.Generator, length: float,
                   bend: float) -> np.ndarray:
  """Points [n, 2] (row, col) along a quadratic Bezier curve of chord `length` that fits in the image."""
  angle = rng.uniform(0, np.pi)
  direction = np.array([np.sin(angle), np.cos(angle)])
  normal = np.array([direction[1], -direction[0]])
  offsets = np.stack([-direction * length / 2, normal * bend * length, direction * length / 2])
  low = -offsets.min(axis=0)
  high = np.array([height - 1, width - 1]) - offsets.max(axis=0)
  center = rng.uniform(low, high)
  steps = np.linspace(0, 1, int(8 * length) + 2)[:, None]  # Points 1/8 px apart.
  control = center + offsets
  return ((1 - steps) ** 2 * control[0] + 2 * steps * (1 - steps) * control[1]
          + steps ** 2 * control[2])


def scratch(image: np.ndarray, *, rng: np.random.Generator,
            length_range: tuple[float, float] = (0.3, 0.7), width_range: tuple[float, float] = (1.0, 3.0),
            contrast_range: tuple[float, float] = (0.5, 0.8),
            bend_range: tuple[float, float] = (-0.25, 0.25)) -> tuple[np.ndarray, np.ndarray]:
  """Draws a thin curved line, blended towards white or black (random) by a random contrast.

  Args:
    image: [height, width] or [height, width, channels].
    rng: source of randomness.
    length_range: chord length as a fraction of min(height, width), at most 0.8.
    width_range: (low, high) line width in pixels.
    contrast_range: blend weight towards the extreme value (1 = the line is pure white or black).
    bend_range: sideways offset of the Bezier control point, as a fraction of the length.

  Returns:
    (defective image, bool mask [height, width]).
  """
  image = _check_image(image)
  height, width = image.shape[:2]
  if not 0 < length_range[0] <= length_range[1] <= 0.8:
    raise ValueError(f'length_range must satisfy 0 < low <= high <= 0.8, got {length_range}')
  length = rng.uniform(*length_range) * min(height, width)
  points = _bezier_points(height, width, rng=rng, length=length, bend=rng.uniform(*bend_range))
  # The line is every pixel whose centre lies closer than half the width to the curve.
  half_width = rng.uniform(*width_range) / 2
  grid = np.stack(np.mgrid[0:height, 0:width], axis=-1).reshape(-1, 2)
  distance, _ = spatial.cKDTree(points).query(grid, distance_upper_bound=half_width + 1)
  mask = (distance < half_width).reshape(height, width)
  low, high = _value_range(image)
  extreme = high if rng.random() < 0.5 else low
  contrast = rng.uniform(*contrast_range)
  values = image.astype(np.float64)
  return _compose(image, values + contrast * (extreme - values), mask), mask


def stain(image: np.ndarray, *, rng: np.random.Generator,
          area_range: tuple[float, float] = (0.02, 0.06),
          strength_range: tuple[float, float] = (0.3, 0.6),
          tone_range: tuple[float, float] = (0.0, 0.3),
          roughness: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
  """Blends a blob towards a tone, strongest in its middle, like a dried spill.

  Inside the blob the blend weight is strength * (0.5 + 0.5 * w), where w in [0, 1] is the mask smoothed by
  a Gaussian (sigma = a quarter of the blob's radius) and normalised to its peak: the edge keeps a visible step
  and the interior is shaded. The tone is drawn per channel as low + t * (high - low) with t from `tone_range`
  (0 = black, 1 = white).

  Args:
    image: [height, width] or [height, width, channels].
    rng: source of randomness.
    area_range: blob area as a fraction of the image area.
    strength_range: (low, high) peak blend weight, in (0, 1].
    tone_range: (low, high) fraction of the value range the stain blends towards.
    roughness: outline irregularity, see `blob_mask`.

  Returns:
    (defective image, bool mask [height, width]).
  """
  image = _check_image(image)
  height, width = image.shape[:2]
  mask = blob_mask(height, width, rng=rng, area_range=area_range, roughness=roughness)
  sigma = 0.25 * np.sqrt(mask.sum() / np.pi)
  smooth = ndimage.gaussian_filter(mask.astype(np.float64), sigma) * mask
  weight = rng.uniform(*strength_range) * (0.5 + 0.5 * smooth / smooth.max())
  low, high = _value_range(image)
  channels = () if image.ndim == 2 else (image.shape[-1],)
  tone = low + rng.uniform(*tone_range, size=channels) * (high - low)
  if image.ndim == 3:
    weight = weight[..., None]
  values = image.astype(np.float64)
  return _compose(image, values + weight * (tone - values), mask), mask
