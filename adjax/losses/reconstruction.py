"""Losses and decision rules of the reconstruction autoencoders (seeds 001 LAMP and 003 CAE family).

  l2_map, l1_map            per-pixel squared / absolute error
  ssim_map, ssim_loss_map,  SSIM with the Gaussian window of Wang et al. (2004) (skimage conventions),
  dssim_map (= dssim)       1 - SSIM and (1 - SSIM) / 2
  ms_ssim                   multi-scale SSIM (Wang et al. 2003) per image
  lamp                      loss amplification -log(1 - L / max L * (1 - eps)) (seed 001 Eq. 1-2)
  contractive_penalty       ||J_E(x)||_F^2 of the encoder, exact or by random projections (seed 003 Eq. 8)
  denoising_corruption      clamp(x + v * N(0, 1)) (seed 003 Eq. 7)
  ema_class_thresholds      per-class T <- (1 - a) T + a (mu + b sigma) (seed 003 Eq. 6)
  threshold_predictions     score > T[predicted class] (seed 003 Algorithm 1)
  weighted_majority_vote    weighted voting ensemble (seed 003 Eq. 10)

The Mixer classifier's loss is the plain softmax cross-entropy of seed 003 Sec. 3.7 (weight 3):
use `optax.softmax_cross_entropy_with_integer_labels(logits [batch, classes], labels [batch])`.

Losses return unreduced values; reductions and `lax.pmean` belong to the train step.
"""

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from adjax.errors import InputError

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _check_same_images(x: jax.Array, y: jax.Array, name: str):
  if x.shape != y.shape or x.ndim != 4:
    raise ValueError(f'{name} expects two images [batch, height, width, channels] of equal shape, '
                     f'got {x.shape} and {y.shape}')


def l2_map(x: jax.Array, y: jax.Array) -> jax.Array:
  """Per-pixel squared error `(x - y)^2`, float [batch, height, width, channels]."""
  _check_same_images(x, y, 'l2_map')
  return jnp.square(x - y)


def l1_map(x: jax.Array, y: jax.Array) -> jax.Array:
  """Per-pixel absolute error `|x - y|`, float [batch, height, width, channels]."""
  _check_same_images(x, y, 'l1_map')
  return jnp.abs(x - y)


def _gaussian_window(window_size: int, sigma: float) -> tuple[float, ...]:
  """Normalised 1-D Gaussian taps [window_size] (scipy's taps for radius = window_size // 2)."""
  if window_size < 1 or window_size % 2 != 1:
    raise InputError(f'SSIM window_size must be a positive odd integer, got {window_size}')
  if sigma <= 0:
    raise InputError(f'SSIM sigma must be > 0, got {sigma}')
  offsets = np.arange(window_size, dtype=np.float32) - window_size // 2
  taps = np.exp(-0.5 * np.square(offsets / np.float32(sigma)))
  return tuple(float(tap) for tap in taps / np.sum(taps))


def _pad_axis(images: jax.Array, axis: int, width: int, mode: str) -> jax.Array:
  widths = [(0, 0)] * images.ndim
  widths[axis] = (width, width)
  return jnp.pad(images, widths, mode=mode)


def _correlate_valid(padded: jax.Array, window: Sequence[float], axis: int) -> jax.Array:
  """sum_k window[k] * padded[..., i + k, ...] along `axis`: the 'valid' correlation as shifted slices."""
  # Materialised first: fused into the shifted sum, the padding (a concatenation of reversed slices, or
  # zeros) is recomputed for every tap and every element, and XLA:CPU ran the SSIM blur 15x slower
  # (`python scripts/conv_speed.py --tables 10`).
  padded = jax.lax.optimization_barrier(padded)
  length = padded.shape[axis] - len(window) + 1
  return sum(tap * jax.lax.slice_in_dim(padded, k, k + length, axis=axis) for k, tap in enumerate(window))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _gaussian_blur(images: jax.Array, window: tuple[float, ...]) -> jax.Array:
  """Separable filter `window` of [batch, height, width, channels], 'reflect' borders (as scipy).

  scipy.ndimage's 'reflect' (d c b a | a b c d) is numpy's 'symmetric' padding. Shifted slices instead of a
  depthwise convolution, which XLA:CPU compiles and runs slowly; the VJP is the same filter's transpose.
  """
  for axis in (1, 2):
    images = _correlate_valid(_pad_axis(images, axis, len(window) // 2, 'symmetric'), window, axis)
  return images


def _gaussian_blur_forward(images, window):
  return _gaussian_blur(images, window), images.shape


def _gaussian_blur_backward(window, shape, grad):
  # Per axis, y = correlate(pad(x)) has the transpose x_bar = pad^T(correlate(zero_pad(y_bar), reversed
  # window)): the correlation with zeros around is the full convolution; pad^T folds the reflected
  # borders back onto the pixels they copied (JAX transposes the linear pad).
  radius = len(window) // 2
  for axis in (2, 1):
    full = _correlate_valid(_pad_axis(grad, axis, 2 * radius, 'constant'), window[::-1], axis)
    (grad,) = jax.linear_transpose(lambda x, axis=axis: _pad_axis(x, axis, radius, 'symmetric'),
                                   jax.ShapeDtypeStruct(tuple(shape), grad.dtype))(full)
  return (grad,)


_gaussian_blur.defvjp(_gaussian_blur_forward, _gaussian_blur_backward)


def _ssim_terms(x, y, *, data_range, window_size, sigma, k1, k2):
  """Luminance and contrast-structure maps [batch, height, width, channels] of SSIM."""
  if isinstance(data_range, (int, float)) and data_range <= 0:
    raise InputError(f'SSIM data_range must be > 0 (max - min of the pixel range), got {data_range}')
  window = _gaussian_window(window_size, sigma)
  # (Co)variances are shift-invariant: centring first limits float32 cancellation in E[x^2] - E[x]^2.
  offset = jax.lax.stop_gradient(0.5 * jnp.mean(x + y, axis=(1, 2), keepdims=True))
  x, y = x - offset, y - offset
  # One blur for the five local moments.
  moments = _gaussian_blur(jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1), window)
  mean_x, mean_y, mean_xx, mean_yy, mean_xy = jnp.split(moments, 5, axis=-1)
  var_x = mean_xx - jnp.square(mean_x)
  var_y = mean_yy - jnp.square(mean_y)
  cov_xy = mean_xy - mean_x * mean_y
  mean_x, mean_y = mean_x + offset, mean_y + offset
  c1 = (k1 * data_range) ** 2
  c2 = (k2 * data_range) ** 2
  luminance = (2 * mean_x * mean_y + c1) / (jnp.square(mean_x) + jnp.square(mean_y) + c1)
  contrast_structure = (2 * cov_xy + c2) / (var_x + var_y + c2)
  return luminance, contrast_structure


def ssim_map(x: jax.Array, y: jax.Array, *, data_range: float, window_size: int = 11,
             sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> jax.Array:
  """Local SSIM of two images with a Gaussian window, per pixel and channel.

  Same conventions as `skimage.metrics.structural_similarity(x, y, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=..., channel_axis=-1, full=True)`: population
  (co)variances, C1 = (k1 R)^2, C2 = (k2 R)^2, 'reflect' borders, so the map has the input size.
  (skimage's scalar SSIM averages this map after cropping window_size // 2 pixels at each border.)

  Args:
    x, y: float [batch, height, width, channels] images.
    data_range: R, the span of the pixel range (2 for images in [-1, 1], 1 for [0, 1]).
    window_size: odd side of the Gaussian window (11 = skimage's default for sigma 1.5).
    sigma: standard deviation of the Gaussian window in pixels.
    k1, k2: stabilising constants.

  Returns:
    float [batch, height, width, channels] SSIM in [-1, 1] (1 where the images agree).
  """
  _check_same_images(x, y, 'ssim_map')
  luminance, contrast_structure = _ssim_terms(x, y, data_range=data_range, window_size=window_size,
                                              sigma=sigma, k1=k1, k2=k2)
  return luminance * contrast_structure


def ssim_loss_map(x: jax.Array, y: jax.Array, *, data_range: float, **ssim_kwargs) -> jax.Array:
  """`1 - ssim_map(x, y)`, float [batch, height, width, channels] in [0, 2]; kwargs as `ssim_map`."""
  return 1.0 - ssim_map(x, y, data_range=data_range, **ssim_kwargs)


def dssim_map(x: jax.Array, y: jax.Array, *, data_range: float, **ssim_kwargs) -> jax.Array:
  """`(1 - ssim_map(x, y)) / 2` in [0, 1], the seed-003 code's loss and score (data range 2)."""
  return 0.5 * ssim_loss_map(x, y, data_range=data_range, **ssim_kwargs)


dssim = dssim_map  # The name used in REFERENCE_NOTES.


def _relu_power(values: jax.Array, exponent: float) -> jax.Array:
  """max(values, 0) ** exponent with zero (not NaN) gradient where values <= 0."""
  positive = values > 0
  return jnp.where(positive, jnp.where(positive, values, 1.0) ** exponent, 0.0)


def ms_ssim(x: jax.Array, y: jax.Array, *, data_range: float,
            weights: Sequence[float] = MS_SSIM_WEIGHTS, window_size: int = 11, sigma: float = 1.5,
            k1: float = 0.01, k2: float = 0.03) -> jax.Array:
  """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003) per image.

  MS-SSIM = prod_{j < M} cs_j^{w_j} * ssim_M^{w_M}, where cs_j is the mean contrast-structure map at
  scale j and ssim_M the mean SSIM map at the coarsest scale; scales are made by 2x2 average pooling.
  Means run over the full (reflect-padded) maps and all channels; negative factors count as 0 (as
  in TensorFlow and pytorch-msssim), so the result lies in [0, 1]. With `weights=(1.0,)` it is the
  mean of `ssim_map`.

  Args:
    x, y: float [batch, height, width, channels]; height and width >= 2 ** (len(weights) - 1).
    data_range, window_size, sigma, k1, k2: as `ssim_map`.
    weights: exponent per scale, finest first (default: the 5 weights of the paper).

  Returns:
    float [batch], 1 for identical images.
  """
  _check_same_images(x, y, 'ms_ssim')
  num_scales = len(weights)
  if num_scales < 1 or min(x.shape[1:3]) < 2 ** (num_scales - 1):
    raise ValueError(f'ms_ssim with {num_scales} scales needs images of at least '
                     f'{2 ** (num_scales - 1)} pixels per side, got {x.shape[1:3]}')
  result = jnp.ones(x.shape[0], x.dtype)
  for scale, weight in enumerate(weights):
    luminance, contrast_structure = _ssim_terms(x, y, data_range=data_range,
                                                window_size=window_size, sigma=sigma, k1=k1, k2=k2)
    if scale == num_scales - 1:
      factor = jnp.mean(luminance * contrast_structure, axis=(1, 2, 3))
    else:
      factor = jnp.mean(contrast_structure, axis=(1, 2, 3))
      pool = lambda images: jax.lax.reduce_window(images, 0.0, jax.lax.add, (1, 2, 2, 1),
                                                  (1, 2, 2, 1), 'VALID') / 4.0
      x, y = pool(x), pool(y)
    result = result * _relu_power(factor, weight)
  return result


def lamp(base_loss_map: jax.Array, *, epsilon: float, reduction: str = 'batch',
         stop_gradient_max: bool = False) -> jax.Array:
  """LAMP loss amplification (seed 001 Eq. 1-2), per image.

  L' = L / max(L) * (1 - epsilon) lies in [0, 1 - epsilon], and the amplified loss is
  sum_{h,w,c} -log(1 - L'), at most -log(epsilon) per element. `max` runs over the whole batch
  (`reduction='batch'`, the paper; under pmap that is the per-device batch) or over each image
  (`'image'`). When the max is 0 (a perfect reconstruction) L' is defined as 0, so the loss is 0.

  Gradient: the paper writes Eq. 2 as part of the loss and says nothing about detaching the max,
  so the literal reading, differentiating through max(L), is the default
  (`stop_gradient_max=False`). Through the max, the arg-max element's own term is the constant
  -log(epsilon) and its gradient comes only from rescaling the others (it is pushed up); with
  `stop_gradient_max=True` the max is a constant and every element gets (1 - eps) / max / (1 - L').

  Args:
    base_loss_map: float [batch, height, width, channels] non-negative per-pixel base loss, e.g.
      `l2_map`, `l1_map` or `ssim_loss_map`.
    epsilon: in (0, 1); keeps 1 - L' >= epsilon so the log stays finite.
    reduction: 'batch' (one max over the batch, the paper) or 'image' (one max per image).
    stop_gradient_max: treat max(L) as a constant for differentiation.

  Returns:
    float [batch] amplified loss per image (not reduced over the batch).
  """
  if base_loss_map.ndim != 4:
    raise ValueError(f'lamp expects base_loss_map [batch, height, width, channels], '
                     f'got shape {base_loss_map.shape}')
  if isinstance(epsilon, (int, float)) and not 0 < epsilon < 1:
    raise InputError(f'LAMP epsilon must lie in (0, 1), got {epsilon}')
  if reduction not in ('batch', 'image'):
    raise InputError(f"LAMP reduction must be 'batch' or 'image', got {reduction!r}")
  axes = None if reduction == 'batch' else (1, 2, 3)
  maximum = jnp.max(base_loss_map, axis=axes, keepdims=True)
  if stop_gradient_max:
    maximum = jax.lax.stop_gradient(maximum)
  # 0 / 0 := 0: an all-zero map divides by 1 instead (the double `where` keeps gradients finite).
  positive = maximum > 0
  normalized = jnp.where(positive, base_loss_map / jnp.where(positive, maximum, 1.0), 0.0)
  # 1 - L' = (1 - n) + n * eps: exact at n = 1 (where 1 - (1 - eps) rounds badly for tiny eps);
  # log1p keeps precision for small n.
  near_max = normalized > 0.5
  amplified = jnp.where(near_max, -jnp.log((1.0 - normalized) + normalized * epsilon),
                        -jnp.log1p(-jnp.where(near_max, 0.0, normalized) * (1.0 - epsilon)))
  return jnp.sum(amplified, axis=(1, 2, 3))


def contractive_penalty(encoder_fn: Callable[[jax.Array], jax.Array], x: jax.Array, *,
                        method: str = 'exact', num_projections: int = 1,
                        rng: jax.Array | None = None, distribution: str = 'rademacher',
                        probe_chunk: int | None = None) -> jax.Array:
  """Squared Frobenius norm of the encoder's Jacobian w.r.t. its input, per example (seed 003 Eq. 8).

  `encoder_fn` is applied to the whole batch and must treat examples independently (e.g.
  BatchNorm with running averages), so the batch Jacobian is block-diagonal and one vector-Jacobian
  (or Jacobian-vector) product with per-example probes gives every example's product at once.

  method='exact': sums the squared rows J^T e_k over all code units k (one vjp each, batched), or
    the squared columns J e_d (VJPs of u -> J^T u) over all input elements when there are fewer of
    them. Memory grows with that count times the batch: for small inputs or codes.
  method='hutchinson': unbiased estimate mean_p ||J^T u_p||^2 over `num_projections` random probes
    u_p in code space with E[u u^T] = I (Rademacher or standard Gaussian), since
    E||J^T u||^2 = trace(J J^T) = ||J||_F^2. Rademacher probes have the lower variance.

  Args:
    encoder_fn: maps x [batch, ...] to codes [batch, ...] (any trailing shape).
    x: float [batch, ...] inputs, e.g. [batch, height, width, channels].
    method: 'exact' or 'hutchinson'.
    num_projections: probes per example for 'hutchinson'.
    rng: PRNG key, required for 'hutchinson'.
    distribution: 'rademacher' or 'gaussian' probes.
    probe_chunk: evaluate this many probes at a time (`lax.map`) to bound memory; None = all at once.

  Returns:
    float [batch] ||J_E(x_b)||_F^2 (differentiable w.r.t. the encoder's parameters).
  """
  codes, vjp_fn = jax.vjp(encoder_fn, x)
  batch = x.shape[0]
  if codes.shape[0] != batch:
    raise ValueError(f'encoder_fn must keep the batch axis: {x.shape} -> {codes.shape}')
  code_size = codes[0].size
  input_size = x[0].size
  sum_per_example = lambda rows: jnp.sum(jnp.square(rows.reshape(rows.shape[0], batch, -1)),
                                         axis=(0, 2))

  def over_probes(fn, probes):
    if probe_chunk is None:
      return jax.vmap(fn)(probes)
    return jax.lax.map(fn, probes, batch_size=probe_chunk)

  if method == 'exact':
    if code_size <= input_size:
      basis = jnp.eye(code_size, dtype=codes.dtype).reshape(code_size, 1, *codes.shape[1:])
      rows, = over_probes(vjp_fn, jnp.broadcast_to(basis, (code_size,) + codes.shape))
      return sum_per_example(rows)
    basis = jnp.eye(input_size, dtype=x.dtype).reshape(input_size, 1, *x.shape[1:])
    # J e_d as the VJP of the linear map u -> J^T u (reverse mode only: the models' convs define custom VJPs).
    _, transpose_vjp = jax.vjp(lambda u: vjp_fn(u)[0], jnp.zeros_like(codes))
    columns = over_probes(lambda tangent: transpose_vjp(tangent)[0], jnp.broadcast_to(basis, (input_size,) + x.shape))
    return sum_per_example(columns)
  if method != 'hutchinson':
    raise InputError(f"contractive penalty method must be 'exact' or 'hutchinson', got {method!r}")
  if rng is None:
    raise InputError("contractive penalty method 'hutchinson' needs an rng key")
  if num_projections < 1:
    raise InputError(f'contractive penalty num_projections must be >= 1, got {num_projections}')
  shape = (num_projections,) + codes.shape
  if distribution == 'rademacher':
    probes = jax.random.rademacher(rng, shape, dtype=codes.dtype)
  elif distribution == 'gaussian':
    probes = jax.random.normal(rng, shape, dtype=codes.dtype)
  else:
    raise InputError(f"contractive penalty distribution must be 'rademacher' or 'gaussian', "
                     f'got {distribution!r}')
  rows, = over_probes(vjp_fn, probes)
  return sum_per_example(rows) / num_projections


def denoising_corruption(rng: jax.Array, x: jax.Array, *, scale: float = 0.3,
                         value_range: tuple[float, float] = (-1.0, 1.0)) -> jax.Array:
  """clamp(x + scale * N(0, 1)) to `value_range` (seed 003 Eq. 7); apply at training time only.

  Args:
    rng: PRNG key.
    x: float [batch, height, width, channels] clean images.
    scale: noise amount v (0.3 in the paper).
    value_range: (low, high) of the clamp, the normalised image range.

  Returns:
    float, same shape as x: the corrupted images (the target stays the clean x).
  """
  low, high = value_range
  if not low < high:
    raise InputError(f'denoising value_range must be (low, high) with low < high, got {value_range}')
  noise = jax.random.normal(rng, x.shape, x.dtype)
  return jnp.clip(x + scale * noise, low, high)


def ema_class_thresholds(thresholds: jax.Array, scores: jax.Array, classes: jax.Array, *,
                         alpha: float, beta: float, mask: jax.Array | None = None) -> jax.Array:
  """Per-class threshold update T_k <- (1 - alpha) T_k + alpha (mu_k + beta sigma_k) (seed 003 Eq. 6).

  mu_k and sigma_k are the mean and population standard deviation of the scores of class k (the
  paper averages per-batch means and stds over the epoch; pass the epoch's scores here). Classes
  with no score keep their threshold. The paper keeps beta in (-1, 1); negative beta favours recall.
  The seed-003 code uses alpha 0.65, beta 0.3 and starts from T = 0.5.

  Args:
    thresholds: float [classes] current thresholds.
    scores: float [num_scores] anomaly scores of training (normal) images.
    classes: int [num_scores] class index in [0, classes) of each score.
    alpha: weight of the new statistic, in [0, 1].
    beta: multiple of the standard deviation added to the mean.
    mask: optional bool [num_scores]; False entries (padding) are ignored.

  Returns:
    float [classes] updated thresholds.
  """
  if isinstance(alpha, (int, float)) and not 0 <= alpha <= 1:
    raise InputError(f'threshold EMA alpha must lie in [0, 1], got {alpha}')
  num_classes = thresholds.shape[0]
  weight = jnp.ones_like(scores) if mask is None else mask.astype(scores.dtype)
  segment_sum = lambda values: jax.ops.segment_sum(values, classes, num_segments=num_classes)
  counts = segment_sum(weight)
  safe_counts = jnp.maximum(counts, 1.0)
  means = segment_sum(weight * scores) / safe_counts
  # Two passes (mean, then squared deviations) for accuracy.
  variances = segment_sum(weight * jnp.square(scores - means[classes])) / safe_counts
  target = means + beta * jnp.sqrt(variances)
  return jnp.where(counts > 0, (1 - alpha) * thresholds + alpha * target, thresholds)


def threshold_predictions(scores: jax.Array, predicted_classes: jax.Array,
                          thresholds: jax.Array) -> jax.Array:
  """Mixer decision (seed 003 Algorithm 1): anomalous iff score > thresholds[predicted class].

  Args:
    scores: float [num_images] anomaly scores.
    predicted_classes: int [num_images] classes from the latent classifier.
    thresholds: float [classes].

  Returns:
    bool [num_images], True = anomaly.
  """
  return scores > thresholds[predicted_classes]


def weighted_majority_vote(predictions: jax.Array, weights: jax.Array, *,
                           ties_anomalous: bool = True) -> jax.Array:
  """Weighted majority vote of M detectors (seed 003 Eq. 10).

  y(x) = argmax_c sum_m w_m I(y_m(x) = c) over c in (anomaly, normal), with w normalised to sum to
  1. Eq. 10 leaves ties open; argmax conventionally returns the first maximiser and the paper lists
  c1 = anomaly first (and favours recall), so a tie is an anomaly by default. Weight sums that differ
  by less than 1e-6 (relative) count as a tie, so float rounding cannot break it.

  Args:
    predictions: bool [M, num_images], True = detector m flags the image as anomalous.
    weights: float [M] positive detector weights (e.g. validation F1), normalised here.
    ties_anomalous: the decision when both classes get equal weight.

  Returns:
    bool [num_images], True = anomaly.
  """
  if predictions.ndim != 2 or weights.shape != predictions.shape[:1]:
    raise ValueError(f'weighted_majority_vote expects predictions [M, N] and weights [M], got '
                     f'{predictions.shape} and {weights.shape}')
  try:
    concrete_weights = np.asarray(weights)
  except jax.errors.TracerArrayConversionError:  # Traced under jit: cannot check.
    concrete_weights = None
  if concrete_weights is not None and not np.all(concrete_weights > 0):
    raise InputError(f'ensemble weights must all be > 0, got {concrete_weights}')
  weights = weights / jnp.sum(weights)
  votes = predictions.astype(weights.dtype)
  anomaly_weight = weights @ votes
  normal_weight = weights @ (1.0 - votes)
  margin = anomaly_weight - normal_weight
  return margin >= -1e-6 if ties_anomalous else margin > 1e-6
