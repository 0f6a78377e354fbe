"""Tests of adjax.losses.fcdd against float64 numpy references of seed 000 Eqs. 2-5."""

import jax
import jax.numpy as jnp
from jax import test_util
import numpy as np
import pytest

from adjax.losses import fcdd as fcdd_losses

EPS = 1e-31


def _push_reference(s, eps=EPS):
  """-log(1 - exp(-s) + eps) in float64 (1 - exp(-s) through expm1, so tiny s keep their value)."""
  return -np.log(-np.expm1(-np.asarray(s, np.float64)) + eps)


def _batch(seed=0):
  """Heatmaps [3, 4, 5] and masks: image 0 without anomalous pixels, 1 partly anomalous, 2 all anomalous."""
  rng = np.random.default_rng(seed)
  heatmaps = rng.uniform(0.05, 3.0, (3, 4, 5)).astype(np.float32)
  masks = np.zeros((3, 4, 5), np.float32)
  masks[1, 1:3, 2:5] = 1
  masks[2] = 1
  return heatmaps, masks


def test_pseudo_huber_values_and_small_argument_precision():
  a = np.array([-3.0, -0.5, 0.0, 1e-4, 0.5, 2.0, 100.0])
  expected = np.sqrt(a ** 2 + 1) - 1  # float64
  np.testing.assert_allclose(fcdd_losses.pseudo_huber(jnp.asarray(a, jnp.float32)), expected, rtol=1e-6)
  assert float(fcdd_losses.pseudo_huber(jnp.float32(1e-4))) > 0  # the printed form rounds this to 0


def test_push_matches_reference_across_scales():
  s = np.array([1e-30, 1e-12, 1e-6, 1e-3, 0.1, 0.5, np.log(2), 0.7, 1.0, 5.0, 20.0, 50.0, 80.0])
  expected = _push_reference(s)
  # float64 rounds 1 - exp(-s) + eps to 1 there; to first order p(s) = exp(-s) - eps (< 0 from s ≈ 71.4).
  expected[s > 10] = np.exp(-s[s > 10]) - EPS
  np.testing.assert_allclose(fcdd_losses.push(jnp.asarray(s, jnp.float32)), expected, rtol=2e-6)
  np.testing.assert_allclose(fcdd_losses.push(jnp.float32(1e-30)), -np.log(1e-30 + EPS), rtol=1e-6)
  np.testing.assert_allclose(fcdd_losses.push(jnp.float32(0.0)), -np.log(EPS), rtol=1e-6)
  np.testing.assert_allclose(fcdd_losses.push(jnp.float32(0.0), eps=1e-6), -np.log(1e-6), rtol=1e-6)
  np.testing.assert_allclose(fcdd_losses.push(jnp.float32(0.2), eps=0.1), _push_reference(0.2, 0.1),
                             rtol=1e-6)


def test_push_is_finite_with_finite_gradients_at_the_extremes():
  s = jnp.array([0.0, 1e-38, 1e-20, 1e-7, np.log(2), 30.0, 1e3, 1e10, 3e38], jnp.float32)
  values = fcdd_losses.push(s)
  grads = jax.jit(jax.vmap(jax.grad(fcdd_losses.push)))(s)
  assert np.all(np.isfinite(values)) and np.all(np.isfinite(grads))
  assert np.all(values >= -EPS) and np.all(grads <= 0)  # decreasing: higher scores are pushed less
  np.testing.assert_allclose(grads[0], -1 / EPS, rtol=1e-5)  # d/ds at 0 = -1 / eps
  np.testing.assert_allclose(grads[3], -1 / (1e-7 + EPS), rtol=1e-3)
  np.testing.assert_allclose(grads[5], -np.exp(-30.0) / (1 - np.exp(-30.0)), rtol=1e-5)
  np.testing.assert_allclose(values[-3:], -EPS, rtol=1e-5)
  assert np.all(grads[-2:] == 0)
  np.testing.assert_allclose(fcdd_losses.push(jnp.float32(-1e-7)), fcdd_losses.push(jnp.float32(0.0)))


def test_push_and_pseudo_huber_gradients():
  s = jnp.array([0.05, 0.3, 0.69, 0.8, 2.0, 7.0], jnp.float32)
  test_util.check_grads(jax.jit(lambda x: jnp.sum(fcdd_losses.push(x))), (s,), order=2, modes=('rev',),
                        eps=1e-3, rtol=2e-2)
  a = jnp.array([-2.0, -0.3, 0.0, 0.4, 3.0], jnp.float32)
  test_util.check_grads(jax.jit(lambda x: jnp.sum(fcdd_losses.pseudo_huber(x))), (a,), order=2,
                        modes=('rev',), eps=1e-2, rtol=1e-2)
  np.testing.assert_allclose(jax.vmap(jax.grad(fcdd_losses.pseudo_huber))(a), a / np.sqrt(a ** 2 + 1),
                             rtol=1e-6)


def test_hsc_image_loss():
  scores = np.array([0.2, 0.2, 1.5, 3.0, 0.0], np.float32)
  labels = np.array([0, 1, 0, 1, 0])
  expected = np.where(labels == 1, _push_reference(scores), scores)
  np.testing.assert_allclose(fcdd_losses.hsc_image_loss(jnp.asarray(scores), jnp.asarray(labels)), expected,
                             rtol=1e-6)
  test_util.check_grads(jax.jit(lambda x: jnp.sum(fcdd_losses.hsc_image_loss(x, jnp.asarray(labels[:4])))),
                        (jnp.asarray(scores[:4]),), order=1, modes=('rev',), eps=1e-3, rtol=1e-2)


def test_fcdd_loss_matches_numpy():
  heatmaps, masks = _batch()
  h, y = heatmaps.astype(np.float64), masks.astype(np.float64)
  normal = (h * (1 - y)).reshape(3, -1).mean(1)
  anomalous_mean = (h * y).reshape(3, -1).mean(1)
  expected = normal + np.where(y.reshape(3, -1).sum(1) > 0, _push_reference(anomalous_mean), 0)
  loss = fcdd_losses.fcdd_loss(jnp.asarray(heatmaps), jnp.asarray(masks))
  assert loss.shape == (3,)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(loss[0], heatmaps[0].mean(), rtol=1e-6)  # all-normal image: plain mean
  np.testing.assert_allclose(loss[2], _push_reference(heatmaps[2].astype(np.float64).mean()), rtol=1e-5)
  printed = fcdd_losses.fcdd_loss(jnp.asarray(heatmaps), jnp.asarray(masks), push_every_image=True)
  np.testing.assert_allclose(printed, expected + np.array([-np.log(EPS), 0, 0]), rtol=1e-5)


def test_fcdd_loss_all_normal_batch_and_gradients():
  heatmaps, masks = _batch(1)
  zeros = jnp.zeros_like(masks)
  np.testing.assert_allclose(fcdd_losses.fcdd_loss(jnp.asarray(heatmaps), zeros),
                             heatmaps.reshape(3, -1).mean(1), rtol=1e-6)
  total = jax.jit(lambda x: jnp.sum(fcdd_losses.fcdd_loss(x, jnp.asarray(masks))))
  test_util.check_grads(total, (jnp.asarray(heatmaps),), order=1, modes=('rev',), eps=1e-3, rtol=2e-2)
  grads = jax.grad(total)(jnp.asarray(heatmaps))
  np.testing.assert_allclose(grads[0], 1 / 20)  # d mean / dA of a normal image
  # Paper form: same gradient (the extra p(0) is a constant), even with zero heatmaps.
  printed = lambda x: jnp.sum(fcdd_losses.fcdd_loss(x, jnp.asarray(masks), push_every_image=True))
  np.testing.assert_allclose(jax.grad(printed)(jnp.asarray(heatmaps)), grads, rtol=1e-6)
  at_zero = jax.grad(printed)(jnp.zeros_like(heatmaps))
  assert np.all(np.isfinite(at_zero)) and np.all(at_zero[0] == 1 / 20)


def test_pixel_hsc_loss_matches_numpy():
  heatmaps, masks = _batch(2)
  h, y = heatmaps.astype(np.float64), masks.astype(np.float64)
  num_anomalous, num_normal = y.sum(), y.size - y.sum()  # 26 and 34 over the whole batch
  for smoothing, weight in ((1.0, num_normal / (num_anomalous + 1)), (0.0, num_normal / num_anomalous)):
    expected = (1 - y) * h + weight * y * _push_reference(h)
    loss = fcdd_losses.pixel_hsc_loss(jnp.asarray(heatmaps), jnp.asarray(masks), weight_smoothing=smoothing)
    assert loss.shape == (3, 4, 5)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(jnp.mean(loss), expected.sum() / y.size, rtol=1e-5)  # Eq. 5
  np.testing.assert_allclose(num_normal / (num_anomalous + 1), 34 / 27)


def test_pixel_hsc_loss_without_anomalies_and_gradients():
  heatmaps, masks = _batch(3)
  for smoothing in (0.0, 1.0):
    loss = fcdd_losses.pixel_hsc_loss(jnp.asarray(heatmaps), jnp.zeros_like(masks), weight_smoothing=smoothing)
    np.testing.assert_allclose(loss, heatmaps, rtol=1e-6)
  everything = fcdd_losses.pixel_hsc_loss(jnp.asarray(heatmaps), jnp.ones_like(masks))
  np.testing.assert_allclose(everything, 0.0)  # |J0| = 0: no normal pixels, weight 0 / (60 + 1)
  total = jax.jit(lambda x: jnp.mean(fcdd_losses.pixel_hsc_loss(x, jnp.asarray(masks))))
  test_util.check_grads(total, (jnp.asarray(heatmaps),), order=1, modes=('rev',), eps=1e-3, rtol=2e-2)
  at_zero = jax.grad(total)(jnp.zeros_like(heatmaps))
  assert np.all(np.isfinite(at_zero))
  np.testing.assert_allclose(at_zero[masks == 0], 1 / masks.size)


def test_losses_jit_and_reject_bad_shapes():
  heatmaps, masks = _batch()
  np.testing.assert_allclose(jax.jit(fcdd_losses.fcdd_loss)(heatmaps, masks),
                             fcdd_losses.fcdd_loss(heatmaps, masks), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(fcdd_losses.pixel_hsc_loss)(heatmaps, masks),
                             fcdd_losses.pixel_hsc_loss(heatmaps, masks), rtol=1e-6)
  for loss in (fcdd_losses.fcdd_loss, fcdd_losses.pixel_hsc_loss):
    with pytest.raises(ValueError):
      loss(jnp.zeros((2, 4, 4)), jnp.zeros((2, 4, 5)))
    with pytest.raises(ValueError):
      loss(jnp.zeros((4, 4)), jnp.zeros((4, 4)))
  with pytest.raises(ValueError):
    fcdd_losses.hsc_image_loss(jnp.zeros(3), jnp.zeros(4))
