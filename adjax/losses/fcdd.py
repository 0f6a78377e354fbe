"""Losses of the hypersphere-classifier family: HSC, FCDD and pixel-wise HSC (seed 000).

  pseudo_huber     h(a) = sqrt(a^2 + 1) - 1                       the distance used by HSC / FCDD
  push             p(s) = -log(1 - exp(-s) + eps)                 pushes anomalous scores up (Eq. 2)
  hsc_image_loss   Eq. 3 per example: s (normal) or p(s) (anomalous)
  fcdd_loss        Eq. 4 per image: mean((1 - Y) A) + p(mean(Y A))
  pixel_hsc_loss   Eq. 5 per pixel: (1 - Y) A + |J0| / |J1| Y p(A)

All return unreduced values; the train step takes the mean. Scores and heatmaps are non-negative
(outputs of `pseudo_huber`, possibly upsampled).
"""

import jax
import jax.numpy as jnp

# -log(1 - exp(-s)) is computed as -log(-expm1(-s)) below this point and as -log1p(-exp(-s)) above it:
# each form is accurate on its side (Mächler, "Accurately computing log(1 - exp(-|a|))", 2012).
_LOG_2 = 0.6931471805599453


def pseudo_huber(a: jax.Array) -> jax.Array:
  """sqrt(a^2 + 1) - 1, elementwise, any shape.

  Computed as a^2 / (sqrt(a^2 + 1) + 1), which is the same number without the cancellation of the
  printed form for small |a| (there it is ≈ a^2 / 2, which float32 would round to 0 for |a| < 3e-4).
  """
  squared = jnp.square(a)
  return squared / (jnp.sqrt(squared + 1) + 1)


def push(s: jax.Array, *, eps: float = 1e-31) -> jax.Array:
  """p(s) = -log(1 - exp(-s) + eps), elementwise, any shape; s >= 0 (negative s is treated as 0).

  `eps` is added inside the log, as in the reference code, so p(0) = -log(eps) ≈ 71.4 and the
  derivative at 0, -1 / eps = -1e31, stay finite (float32 holds both). For s > log 2 the value is
  -log1p(eps - exp(-s)) ≈ exp(-s) - eps: accurate where 1 - exp(-s) would round to 1, tending to
  -eps (a negligible -1e-31) with gradient 0 once exp(-s) underflows; never NaN or inf. Below log 2,
  -log(-expm1(-s) + eps) keeps full relative precision as s -> 0 (where 1 - exp(-s) would cancel).
  """
  s = jnp.where(s < 0, 0.0, s)  # not jnp.maximum, which halves the gradient at exactly 0
  large = s > _LOG_2
  # Each branch only sees inputs where it is finite, so the gradient of the unused branch is not NaN.
  s_small = jnp.where(large, _LOG_2, s)
  s_large = jnp.where(large, s, 1.0)
  small_value = -jnp.log(-jnp.expm1(-s_small) + eps)
  large_value = -jnp.log1p(eps - jnp.exp(-s_large))
  return jnp.where(large, large_value, small_value)


def _check_same_shape(name: str, first: jax.Array, second: jax.Array, ndim: int) -> None:
  if first.shape != second.shape or first.ndim != ndim:
    raise ValueError(f'{name} expects two arrays of equal shape with {ndim} dimensions, got '
                     f'{first.shape} and {second.shape}')


def hsc_image_loss(scores: jax.Array, labels: jax.Array, *, eps: float = 1e-31) -> jax.Array:
  """Hypersphere-classifier loss (seed 000 Eq. 3) per example.

  Args:
    scores: float [batch] pseudo-Huber distances h(phi(x) - a) >= 0 (e.g. the mean of a heatmap).
    labels: [batch] 0 = normal, 1 = anomalous.
    eps: see `push`.

  Returns:
    float [batch]: the score for normal examples, `push(score)` for anomalous ones.
  """
  _check_same_shape('hsc_image_loss', scores, labels, 1)
  return jnp.where(labels == 1, push(scores, eps=eps), scores)


def fcdd_loss(heatmaps: jax.Array, masks: jax.Array, *, eps: float = 1e-31,
              push_every_image: bool = False) -> jax.Array:
  """FCDD loss with ground-truth maps (seed 000 Eq. 4) per image.

  For image i with m pixels: (1/m) sum_j (1 - Y_ij) A_ij + p((1/m) sum_j Y_ij A_ij). Both sums are
  divided by all m pixels of the image (not by the number of normal / anomalous pixels), as printed
  and as in the reference code.

  Paper text and code differ in one point: the reference code adds the push term only to images with
  at least one anomalous pixel (the default here). Eq. 4 as printed applies p to every image, so an
  image without anomalous pixels also adds the constant p(0) = -log(eps) ≈ 71.4, which has no
  gradient; `push_every_image=True` gives that form. Training is the same with either.

  Args:
    heatmaps: float [batch, height, width] anomaly scores A >= 0 at mask resolution (FCDD: the
      pseudo-Huber map, upsampled).
    masks: [batch, height, width] ground truth Y, 1 = anomalous pixel (0/1, or soft weights).
    eps: see `push`.
    push_every_image: apply p also to images without anomalous pixels (Eq. 4 as printed).

  Returns:
    float [batch] loss per image.
  """
  _check_same_shape('fcdd_loss', heatmaps, masks, 3)
  masks = masks.astype(heatmaps.dtype)
  normal_term = jnp.mean(heatmaps * (1 - masks), axis=(1, 2))
  anomalous_term = push(jnp.mean(heatmaps * masks, axis=(1, 2)), eps=eps)
  if push_every_image:
    return normal_term + anomalous_term
  has_anomaly = jnp.sum(masks, axis=(1, 2)) > 0
  return normal_term + jnp.where(has_anomaly, anomalous_term, 0)


def pixel_hsc_loss(heatmaps: jax.Array, masks: jax.Array, *, eps: float = 1e-31,
                   weight_smoothing: float = 1.0) -> jax.Array:
  """Pixel-wise hypersphere-classifier loss (seed 000 Eq. 5) per pixel.

  Each pixel contributes (1 - Y) A + w Y p(A), with p applied per pixel (not to a mean) and
  w = |J0| / (|J1| + weight_smoothing), where |J0| and |J1| count the normal and anomalous pixels of
  the whole batch passed in (under pmap: of this device's part). The mean of the returned array over
  all [batch, height, width] entries is the loss of Eq. 5. The default weight_smoothing = 1 is the
  reference code's n_normal / (n_anomalous + 1); weight_smoothing = 0 is the printed |J0| / |J1|
  (w = 0 when the batch has no anomalous pixels, where the anomalous terms vanish anyway).

  Args:
    heatmaps: float [batch, height, width] anomaly scores A >= 0 (the reference upsamples the squared
      1x1-conv output first, then applies sqrt(. + 1) - 1).
    masks: [batch, height, width] ground truth Y, 1 = anomalous pixel.
    eps: see `push`.
    weight_smoothing: added to |J1| in the class-balancing weight (>= 0).

  Returns:
    float [batch, height, width] loss per pixel.
  """
  _check_same_shape('pixel_hsc_loss', heatmaps, masks, 3)
  masks = masks.astype(heatmaps.dtype)
  num_anomalous = jnp.sum(masks)
  num_normal = masks.size - num_anomalous
  denominator = num_anomalous + weight_smoothing
  weight = jnp.where(denominator > 0, num_normal / jnp.where(denominator > 0, denominator, 1), 0)
  return (1 - masks) * heatmaps + weight * masks * push(heatmaps, eps=eps)
