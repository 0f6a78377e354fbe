"""Tests of adjax.losses.reconstruction against numpy, scipy, skimage and hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import structural_similarity

from adjax.errors import InputError
from adjax.losses import reconstruction

# Jitted once per shape: eager dispatch compiles every small op separately (slow on XLA:CPU).
ssim_map = jax.jit(reconstruction.ssim_map, static_argnames=('data_range', 'window_size'))
ms_ssim = jax.jit(reconstruction.ms_ssim, static_argnames=('data_range', 'weights'))
# epsilon stays traced so that one compilation serves every value.
lamp = jax.jit(reconstruction.lamp, static_argnames=('reduction', 'stop_gradient_max'))
ssim_loss_map = jax.jit(reconstruction.ssim_loss_map, static_argnames=('data_range',))
dssim = jax.jit(reconstruction.dssim, static_argnames=('data_range',))
ema_class_thresholds = jax.jit(reconstruction.ema_class_thresholds)
denoising_corruption = jax.jit(reconstruction.denoising_corruption, static_argnames=('value_range',))


def _image_pair(seed, shape=(2, 21, 18, 3), noise=0.3):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1, 1, shape).astype(np.float32)
  # Smooth the first image a little so the local statistics are not all alike.
  x = ndimage.gaussian_filter(x, sigma=(0, 1, 1, 0)).astype(np.float32)
  y = np.clip(x + noise * rng.normal(size=shape), -1, 1).astype(np.float32)
  return x, y


def test_pixel_error_maps():
  x, y = _image_pair(0)
  np.testing.assert_allclose(reconstruction.l2_map(x, y), (x - y) ** 2, rtol=1e-6)
  np.testing.assert_allclose(reconstruction.l1_map(x, y), np.abs(x - y), rtol=1e-6)
  with pytest.raises(ValueError):
    reconstruction.l2_map(x, y[:, :-1])


@pytest.mark.parametrize('data_range, channels', [(2.0, 3), (2.0, 1), (1.0, 2)])
def test_ssim_map_matches_skimage(data_range, channels):
  x, y = _image_pair(1, shape=(2, 23, 19, channels))
  if data_range == 1.0:
    x, y = (x + 1) / 2, (y + 1) / 2
  ours = np.asarray(ssim_map(x, y, data_range=data_range))
  for b in range(2):
    mean, full = structural_similarity(
        x[b].astype(np.float64), y[b].astype(np.float64), gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=data_range, channel_axis=-1, full=True)
    # float32 vs skimage's float64: measured max difference ~1e-6.
    np.testing.assert_allclose(ours[b], full, atol=1e-5)
    np.testing.assert_allclose(ours[b, 5:-5, 5:-5].mean(), mean, atol=1e-5)


@pytest.mark.parametrize('shape,window_size', [((2, 21, 18, 3), 11), ((1, 4, 3, 2), 11), ((2, 9, 12, 1), 7)])
def test_gaussian_blur_and_its_vjp_match_scipy_and_autodiff_of_a_gather_form(shape, window_size):
  """The shifted-slice blur equals scipy's 'reflect' filter; its custom VJP equals JAX's VJP of a plain form.

  (4, 3) is smaller than the window's radius: the padding reflects more than once, as numpy's 'symmetric'.
  """
  rng = np.random.default_rng(7)
  images = rng.normal(size=shape).astype(np.float32)
  cotangent = jnp.asarray(rng.normal(size=shape).astype(np.float32))
  window = reconstruction._gaussian_window(window_size, 1.5)  # pylint: disable=protected-access

  def gather_form(x):  # The filter as indices into the reflected image: linear, and JAX's own VJP.
    for axis in (1, 2):
      length = x.shape[axis]
      padded = jnp.take(x, np.pad(np.arange(length), window_size // 2, mode='symmetric'), axis=axis)
      x = sum(tap * jax.lax.slice_in_dim(padded, k, k + length, axis=axis) for k, tap in enumerate(window))
    return x

  blur = jax.jit(reconstruction._gaussian_blur, static_argnums=1)  # pylint: disable=protected-access
  expected = ndimage.correlate1d(ndimage.correlate1d(images, window, axis=1, mode='reflect'), window, axis=2,
                                 mode='reflect')
  np.testing.assert_allclose(blur(images, window), expected, rtol=1e-5, atol=1e-6)
  (ours,) = jax.vjp(lambda x: blur(x, window), jnp.asarray(images))[1](cotangent)
  (reference,) = jax.vjp(gather_form, jnp.asarray(images))[1](cotangent)
  np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


def test_ssim_loss_maps():
  x, y = _image_pair(2)
  ssim = np.asarray(ssim_map(x, y, data_range=2.0))
  np.testing.assert_allclose(ssim_loss_map(x, y, data_range=2.0), 1 - ssim, atol=1e-6)
  np.testing.assert_allclose(dssim(x, y, data_range=2.0), (1 - ssim) / 2, atol=1e-6)
  np.testing.assert_allclose(dssim(x, x, data_range=2.0), 0.0, atol=1e-6)
  assert reconstruction.dssim is reconstruction.dssim_map
  with pytest.raises(InputError):
    reconstruction.ssim_map(x, y, data_range=2.0, window_size=10)


def _numpy_ms_ssim(x, y, weights, data_range):
  """Independent float64 reference: scipy Gaussian filters and 2x2 block means."""
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  blur = lambda a: ndimage.gaussian_filter(a, sigma=(1.5, 1.5, 0), mode='reflect', truncate=3.5)
  result = 1.0
  for scale, weight in enumerate(weights):
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    cs = (2 * cxy + c2) / (vx + vy + c2)
    if scale == len(weights) - 1:
      factor = np.mean(cs * (2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1))
    else:
      factor = np.mean(cs)
      h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
      x = x[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).mean(axis=(1, 3))
      y = y[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).mean(axis=(1, 3))
    result *= max(factor, 0.0) ** weight
  return result


def test_ms_ssim():
  x, _ = _image_pair(3, shape=(1, 35, 33, 3))
  np.testing.assert_allclose(ms_ssim(x, x, data_range=2.0), [1.0], atol=1e-6)
  rng = np.random.default_rng(4)
  noise = rng.normal(size=x.shape).astype(np.float32)
  values = [float(ms_ssim(x, np.clip(x + level * noise, -1, 1), data_range=2.0)[0])
            for level in (0.02, 0.1, 0.3, 0.8)]
  assert all(a > b for a, b in zip(values, values[1:])), values
  assert 0 <= values[-1] < values[0] < 1
  y = np.clip(x + 0.1 * noise, -1, 1)
  expected = _numpy_ms_ssim(x[0].astype(np.float64), y[0].astype(np.float64),
                            reconstruction.MS_SSIM_WEIGHTS, 2.0)
  np.testing.assert_allclose(ms_ssim(x, y, data_range=2.0)[0], expected, rtol=1e-4)
  # One scale of weight 1 is the mean SSIM map.
  np.testing.assert_allclose(ms_ssim(x, y, data_range=2.0, weights=(1.0,)),
                             np.mean(ssim_map(x, y, data_range=2.0)), rtol=1e-5)
  # An inverted image has negative contrast-structure: clamped to 0, with a finite gradient.
  two_scales = lambda a, b: reconstruction.ms_ssim(a, b, data_range=2.0, weights=(0.5, 0.5))[0]
  value_and_grad = jax.jit(jax.value_and_grad(two_scales))
  value, grad = value_and_grad(x, -x)
  np.testing.assert_allclose(value, 0.0)
  assert np.all(np.isfinite(grad))
  assert np.any(value_and_grad(x, y)[1] != 0)
  with pytest.raises(ValueError):
    reconstruction.ms_ssim(x[:, :8, :8], y[:, :8, :8], data_range=2.0)


def _numpy_lamp(loss, epsilon, reduction, stop_gradient_max):
  """LAMP value and its gradient w.r.t. the base loss, in closed form (float64)."""
  axes = None if reduction == 'batch' else (1, 2, 3)
  maximum = loss.max(axis=axes, keepdims=True)
  scaled = loss / maximum * (1 - epsilon)
  value = (-np.log(1 - scaled)).sum(axis=(1, 2, 3))
  grad = (1 - epsilon) / maximum / (1 - scaled)
  if not stop_gradient_max:
    # d/dmax of sum -log(1 - L_i (1 - eps) / max) = -sum L'_i / (max (1 - L'_i)), added to the
    # arg-max, where it cancels that element's own term.
    through_max = -(scaled / (maximum * (1 - scaled))).sum(axis=axes, keepdims=True)
    grad = grad + np.where(loss == maximum, through_max, 0.0)
  return value, grad


@pytest.mark.parametrize('reduction', ['batch', 'image'])
@pytest.mark.parametrize('stop_gradient_max', [False, True])
def test_lamp_value_and_gradient(reduction, stop_gradient_max):
  rng = np.random.default_rng(5)
  loss = rng.uniform(0, 2, (3, 4, 5, 2))
  epsilon = 0.05
  expected_value, expected_grad = _numpy_lamp(loss, epsilon, reduction, stop_gradient_max)
  amplified = lambda l: lamp(l, epsilon=epsilon, reduction=reduction,
                             stop_gradient_max=stop_gradient_max)
  np.testing.assert_allclose(amplified(jnp.asarray(loss, jnp.float32)), expected_value, rtol=1e-5)
  grad = jax.jit(jax.grad(lambda l: jnp.sum(amplified(l))))(jnp.asarray(loss, jnp.float32))
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-5)


def test_lamp_of_l2_gradient_wrt_reconstruction():
  x, y = _image_pair(6, shape=(2, 4, 4, 1))
  loss = lambda recon: jnp.sum(reconstruction.lamp(reconstruction.l2_map(x, recon), epsilon=0.1))
  _, grad_wrt_map = _numpy_lamp((x - y).astype(np.float64) ** 2, 0.1, 'batch', False)
  np.testing.assert_allclose(jax.jit(jax.grad(loss))(jnp.asarray(y)), grad_wrt_map * 2 * (y - x), rtol=1e-3,
                             atol=1e-5)


@pytest.mark.parametrize('reduction', ['batch', 'image'])
@pytest.mark.parametrize('stop_gradient_max', [False, True])
def test_lamp_is_finite_for_equal_and_zero_errors(reduction, stop_gradient_max):
  equal = jnp.full((2, 3, 3, 1), 0.7)
  zero = jnp.zeros((2, 3, 3, 1))
  mixed = zero.at[1].set(0.2)  # One perfect image in the batch.
  fn = lambda l, eps: lamp(l, epsilon=eps, reduction=reduction, stop_gradient_max=stop_gradient_max)
  grad_fn = jax.jit(jax.grad(lambda l, eps: jnp.sum(fn(l, eps))))
  for epsilon in (1e-7, 0.5):
    epsilon = jnp.float32(epsilon)
    for loss in (equal, zero, mixed):
      value, grad = fn(loss, epsilon), grad_fn(loss, epsilon)
      assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    # All equal: every element is at the max, L' = 1 - eps, loss = -9 log(eps) per image.
    np.testing.assert_allclose(fn(equal, epsilon), -9 * np.log(epsilon) * np.ones(2), rtol=1e-5)
    np.testing.assert_allclose(fn(zero, epsilon), [0.0, 0.0])
    # One perfect image under a batch max: its L' = 0, so its loss is 0.
    if reduction == 'batch':
      np.testing.assert_allclose(fn(mixed, epsilon)[0], 0.0)


def test_lamp_rejects_bad_hyperparameters():
  loss = jnp.ones((1, 2, 2, 1))
  for epsilon in (0.0, 1.0, -0.1):
    with pytest.raises(InputError):
      reconstruction.lamp(loss, epsilon=epsilon)
  with pytest.raises(InputError):
    reconstruction.lamp(loss, epsilon=0.1, reduction='pixel')


def _tiny_encoder(code_size, seed=7):
  rng = np.random.default_rng(seed)
  w1, b1 = rng.normal(size=(12, 6)) / 3, rng.normal(size=6)
  w2 = rng.normal(size=(6, code_size)) / 2

  def numpy_encoder(image):  # [2, 3, 2] -> [code_size], float64
    return np.tanh(image.reshape(-1) @ w1 + b1) @ w2

  def jax_encoder(images):  # [batch, 2, 3, 2] -> [batch, code_size, 1] (trailing code axes)
    hidden = jnp.tanh(images.reshape(images.shape[0], -1) @ jnp.asarray(w1, jnp.float32)
                      + jnp.asarray(b1, jnp.float32))
    return (hidden @ jnp.asarray(w2, jnp.float32))[..., None]

  return numpy_encoder, jax_encoder


def _finite_difference_frobenius(numpy_encoder, image, step=1e-5):
  columns = []
  for index in np.ndindex(image.shape):
    delta = np.zeros_like(image)
    delta[index] = step
    columns.append((numpy_encoder(image + delta) - numpy_encoder(image - delta)) / (2 * step))
  return np.sum(np.square(columns))


@pytest.mark.parametrize('code_size', [3, 20])  # vjp over code units; jvp over the 12 inputs.
def test_contractive_penalty_exact_matches_finite_differences(code_size):
  numpy_encoder, jax_encoder = _tiny_encoder(code_size)
  x = np.random.default_rng(8).normal(size=(3, 2, 3, 2))
  expected = [_finite_difference_frobenius(numpy_encoder, image) for image in x]
  got = reconstruction.contractive_penalty(jax_encoder, jnp.asarray(x, jnp.float32))
  assert got.shape == (3,)
  np.testing.assert_allclose(got, expected, rtol=1e-4)
  chunked = reconstruction.contractive_penalty(jax_encoder, jnp.asarray(x, jnp.float32),
                                               probe_chunk=2)
  np.testing.assert_allclose(chunked, got, rtol=1e-6)


@pytest.mark.parametrize('distribution', ['rademacher', 'gaussian'])
def test_contractive_penalty_hutchinson_is_unbiased(distribution):
  _, jax_encoder = _tiny_encoder(5)
  x = jnp.asarray(np.random.default_rng(9).normal(size=(2, 2, 3, 2)), jnp.float32)
  exact = np.asarray(reconstruction.contractive_penalty(jax_encoder, x))
  keys = jax.random.split(jax.random.key(0), 1000)
  single = jax.vmap(lambda key: reconstruction.contractive_penalty(
      jax_encoder, x, method='hutchinson', rng=key, distribution=distribution))(keys)
  single = np.asarray(single)  # [1000, batch] one-probe estimates.
  standard_error = single.std(axis=0) / np.sqrt(len(keys))
  assert np.all(np.abs(single.mean(axis=0) - exact) < 4 * standard_error), (single.mean(0), exact)
  # Several probes per call average the single-probe estimates.
  many = reconstruction.contractive_penalty(jax_encoder, x, method='hutchinson', rng=keys[0],
                                            num_projections=1000, distribution=distribution)
  np.testing.assert_allclose(many, exact, rtol=0.2)
  with pytest.raises(InputError):
    reconstruction.contractive_penalty(jax_encoder, x, method='hutchinson')


def test_contractive_penalty_gradient_wrt_parameters_is_finite():
  x = jnp.asarray(np.random.default_rng(10).normal(size=(2, 2, 3, 2)), jnp.float32)

  def penalty(scale):
    return jnp.sum(reconstruction.contractive_penalty(lambda v: jnp.tanh(scale * v.reshape(2, -1)),
                                                      x))

  # d/ds sum_i (s (1 - tanh^2(s x_i)))^2, by hand.
  s = 0.7
  t = np.tanh(s * np.asarray(x, np.float64))
  expected = np.sum(2 * s * (1 - t ** 2) ** 2 - 4 * s ** 2 * (1 - t ** 2) ** 2 * t * np.asarray(x))
  np.testing.assert_allclose(jax.grad(penalty)(s), expected, rtol=1e-4)


def test_denoising_corruption():
  key = jax.random.key(1)
  x = jnp.zeros((4, 16, 16, 3))
  wide = denoising_corruption(key, x, scale=0.3, value_range=(-10, 10))
  assert 0.27 < float(jnp.std(wide)) < 0.33
  clean = jnp.asarray(np.random.default_rng(11).uniform(-1, 1, (4, 16, 16, 3)), jnp.float32)
  noisy = denoising_corruption(key, clean)
  assert float(noisy.min()) >= -1 and float(noisy.max()) <= 1 and float(noisy.min()) == -1
  np.testing.assert_allclose(noisy, np.clip(clean + np.asarray(wide), -1, 1), atol=1e-6)
  np.testing.assert_array_equal(denoising_corruption(key, clean, scale=0.0), clean)


def test_ema_class_thresholds_by_hand():
  thresholds = jnp.array([0.5, 0.5, 2.0])
  scores = jnp.array([1.0, 3.0, 0.2, 0.4, 0.6, 99.0])
  classes = jnp.array([0, 0, 1, 1, 1, 0])
  mask = jnp.array([True] * 5 + [False])  # The last score is padding.
  got = ema_class_thresholds(thresholds, scores, classes, alpha=0.65, beta=0.3, mask=mask)
  # Class 0: mu 2, sigma 1; class 1: mu 0.4, sigma sqrt(0.08/3); class 2: no scores, kept.
  expected = [0.35 * 0.5 + 0.65 * (2 + 0.3 * 1.0),
              0.35 * 0.5 + 0.65 * (0.4 + 0.3 * np.sqrt(0.08 / 3)),
              2.0]
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  unmasked = ema_class_thresholds(thresholds, scores[:5], classes[:5], alpha=0.65, beta=0.3)
  np.testing.assert_allclose(unmasked, expected, rtol=1e-6)
  with pytest.raises(InputError):
    reconstruction.ema_class_thresholds(thresholds, scores, classes, alpha=1.5, beta=0.3)


def test_threshold_predictions():
  thresholds = jnp.array([0.5, 2.0])
  got = reconstruction.threshold_predictions(jnp.array([1.0, 1.0, 0.5, 3.0]), jnp.array([0, 1, 0, 1]),
                                             thresholds)
  np.testing.assert_array_equal(got, [True, False, False, True])


def test_weighted_majority_vote_worked_example():
  # Three detectors, weights 0.4 / 0.35 / 0.25 (given unnormalised as 4 / 3.5 / 2.5).
  predictions = jnp.array([[1, 0, 1, 0, 1],
                           [0, 1, 1, 0, 0],
                           [0, 1, 0, 1, 0]], bool)
  # Anomaly weight per image: 0.4, 0.6, 0.75, 0.25, 0.4 against normal 0.6, 0.4, 0.25, 0.75, 0.6.
  np.testing.assert_array_equal(
      reconstruction.weighted_majority_vote(predictions, jnp.array([4.0, 3.5, 2.5])),
      [False, True, True, False, False])
  # One heavy detector outvotes the two others (plain majority would say normal).
  np.testing.assert_array_equal(
      reconstruction.weighted_majority_vote(predictions, jnp.array([0.6, 0.2, 0.2])),
      [True, False, True, False, True])
  # Ties (0.5 against 0.5) follow argmax's first class, anomaly, unless asked otherwise.
  tie_weights = jnp.array([0.5, 0.3, 0.2])
  np.testing.assert_array_equal(reconstruction.weighted_majority_vote(predictions, tie_weights),
                                [True, True, True, False, True])
  np.testing.assert_array_equal(
      reconstruction.weighted_majority_vote(predictions, tie_weights, ties_anomalous=False),
      [False, False, True, False, False])
  # Traced weights (under jit) give the same votes.
  np.testing.assert_array_equal(jax.jit(reconstruction.weighted_majority_vote)(
      predictions, jnp.array([0.6, 0.2, 0.2])), [True, False, True, False, True])
  with pytest.raises(InputError):
    reconstruction.weighted_majority_vote(predictions, jnp.array([0.5, 0.5, 0.0]))
