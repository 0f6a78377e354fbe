"""Tests of adjax.scoring: gradient maps, streaming per-pixel moments, norms, thresholds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjax import errors
from adjax import scoring
from adjax.models import energy


def _tiny_net_and_params(shape, seed=0, dtype=jnp.float32):
  net = energy.EnergyNet(first_features=3, features=(4, 4))
  shapes = jax.eval_shape(net.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))
  rng = np.random.default_rng(seed)  # numpy draws: flax's PRNG init takes seconds to compile here
  params = jax.tree.map(lambda s: jnp.asarray(rng.uniform(-0.3, 0.3, s.shape), dtype), shapes)
  return net, params


def test_gradient_map_of_analytic_energy():
  center = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5, 3)), jnp.float32)
  energy_fn = lambda x: 0.5 * jnp.sum(jnp.square(x - center), axis=(1, 2, 3))
  images = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 5, 3)), jnp.float32)
  energies, maps = scoring.energy_and_gradient_map(energy_fn, images)
  np.testing.assert_allclose(maps, -(images - center), rtol=1e-6)  # d log p/dx = -(x - center)
  np.testing.assert_allclose(energies, energy_fn(images), rtol=1e-6)
  np.testing.assert_allclose(scoring.gradient_map(energy_fn, images), maps)


def test_gradient_map_of_energy_net_matches_finite_differences():
  with jax.enable_x64(True):
    net, params = _tiny_net_and_params((3, 8, 8, 2), dtype=jnp.float64)
    energy_fn = jax.jit(lambda x: net.apply(params, x))
    rng = np.random.default_rng(2)
    images = jnp.asarray(rng.uniform(-1, 1, (3, 8, 8, 2)))
    maps = scoring.gradient_map(energy_fn, images)
    assert maps.shape == images.shape and maps.dtype == jnp.float64
    for _ in range(3):  # directional derivatives along random directions, per image
      direction = jnp.asarray(rng.normal(size=images.shape))
      h = 1e-5
      numeric = (energy_fn(images + h * direction) - energy_fn(images - h * direction)) / (2 * h)
      np.testing.assert_allclose(-jnp.sum(maps * direction, axis=(1, 2, 3)), numeric, rtol=1e-6)


def test_gradient_map_of_each_image_ignores_the_rest_of_the_batch():
  net, params = _tiny_net_and_params((3, 8, 8, 1))
  energy_fn = jax.jit(lambda x: net.apply(params, x))
  images = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, (3, 8, 8, 1)), jnp.float32)
  maps = scoring.gradient_map(energy_fn, images)
  for i in range(3):
    alone = scoring.gradient_map(energy_fn, images[i:i + 1])[0]
    np.testing.assert_allclose(maps[i], alone, rtol=1e-5, atol=1e-7)


def _stream(maps, batch_sizes):
  state = scoring.moments_init(maps.shape[1:])
  update = jax.jit(scoring.moments_update)
  start = 0
  for size in batch_sizes:
    state = update(state, maps[start:start + size])
    start += size
  assert start == len(maps)
  return state


def test_streaming_moments_match_numpy_over_uneven_batches():
  maps = np.random.default_rng(4).normal(2.0, 3.0, (16, 4, 5, 3)).astype(np.float32)
  state = _stream(maps, [3, 7, 1, 5])
  assert int(state['count']) == 16
  mean, std = scoring.moments_finalize(state)
  np.testing.assert_allclose(mean, maps.astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(std, maps.astype(np.float64).std(axis=0), rtol=1e-5)
  _, sample_std = scoring.moments_finalize(state, ddof=1)
  np.testing.assert_allclose(sample_std, maps.astype(np.float64).std(axis=0, ddof=1), rtol=1e-5)


def test_merging_two_halves_equals_the_whole():
  maps = np.random.default_rng(5).normal(size=(20, 3, 3, 2)).astype(np.float32)
  whole = _stream(maps, [6, 6, 8])
  merged = scoring.moments_merge(_stream(maps[:9], [4, 5]), _stream(maps[9:], [11]))
  assert int(merged['count']) == 20
  for key in ('mean', 'm2'):
    np.testing.assert_allclose(merged[key], whole[key], rtol=1e-5, atol=1e-6)
  empty = scoring.moments_init((3, 3, 2))
  for state in (scoring.moments_merge(empty, whole), scoring.moments_merge(whole, empty)):
    for key in ('count', 'mean', 'm2'):
      np.testing.assert_array_equal(state[key], whole[key])


def test_moments_merge_across_two_devices():
  assert jax.local_device_count() == 2  # tests/conftest.py
  maps = np.random.default_rng(6).normal(size=(2, 5, 3, 3, 1)).astype(np.float32)  # [device, ...]
  per_device = jax.pmap(scoring.moments_update, in_axes=(None, 0))(
      scoring.moments_init((3, 3, 1)), maps)
  merged = scoring.moments_merge(jax.tree.map(lambda a: a[0], per_device),
                                 jax.tree.map(lambda a: a[1], per_device))
  mean, std = scoring.moments_finalize(merged)
  flat = maps.reshape(10, 3, 3, 1).astype(np.float64)
  np.testing.assert_allclose(mean, flat.mean(axis=0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(std, flat.std(axis=0), rtol=1e-5)


def test_streaming_moments_are_stable_for_a_large_offset():
  rng = np.random.default_rng(7)
  maps = (1e4 + rng.normal(0, 0.1, (64, 3, 3, 2))).astype(np.float32)
  mean, std = scoring.moments_finalize(_stream(maps, [8] * 8))
  reference = maps.astype(np.float64)
  np.testing.assert_allclose(mean, reference.mean(axis=0), rtol=1e-6)
  np.testing.assert_allclose(std, reference.std(axis=0), rtol=0.02)
  # The data does stress precision: the textbook float32 formula E[x^2] - E[x]^2 is far off here.
  naive = np.sqrt(np.abs(np.mean(maps**2, axis=0, dtype=np.float32)
                         - np.mean(maps, axis=0, dtype=np.float32)**2))
  assert np.max(np.abs(naive / reference.std(axis=0) - 1)) > 1


def test_finalize_floors_the_std_and_standardize_matches_numpy():
  constant = np.full((4, 2, 2, 3), 5.0, np.float32)
  mean, std = scoring.moments_finalize(_stream(constant, [4]), eps=1e-3)
  np.testing.assert_allclose(std, 1e-3)
  np.testing.assert_allclose(scoring.standardize(constant, mean, std), 0.0)

  rng = np.random.default_rng(8)
  maps = rng.normal(size=(2, 2, 2, 3))
  mean, std = rng.normal(size=(2, 2, 3)), rng.uniform(0.5, 2, (2, 2, 3))
  np.testing.assert_allclose(scoring.standardize(maps, mean, std), (maps - mean) / std, rtol=1e-6)


@pytest.mark.parametrize('channels', [1, 3, 4, 5, 16])  # Summed slices up to 4 channels, a reduction above.
def test_pixel_and_image_norms_match_numpy(channels):
  maps = np.random.default_rng(9).normal(size=(3, 4, 5, channels)).astype(np.float32)
  for norm, order in (('l1', 1), ('l2', 2)):
    pixels = scoring.pixel_scores(maps, norm=norm)
    assert pixels.shape == (3, 4, 5)
    np.testing.assert_allclose(pixels, np.linalg.norm(maps, ord=order, axis=-1), rtol=1e-5)
    images = scoring.image_scores(pixels, norm=norm)
    assert images.shape == (3,)
    expected = np.linalg.norm(np.asarray(pixels).reshape(3, -1), ord=order, axis=1)
    np.testing.assert_allclose(images, expected, rtol=1e-5)


def test_pixel_scores_of_a_few_channels_need_no_reduction():
  """An image's 3 channels are summed elementwise; XLA:CPU sends a reduction to a slower separate kernel."""
  lowered = lambda channels: jax.jit(scoring.pixel_scores).lower(jnp.ones((2, 4, 4, channels))).as_text()
  assert 'reduce' not in lowered(3) and 'reduce' in lowered(16)


@pytest.mark.parametrize('function', [scoring.pixel_scores, scoring.image_scores])
def test_unknown_norm_raises(function):
  with pytest.raises(errors.InputError):
    function(jnp.ones((1, 2, 2, 3)), norm='max')


def test_three_sigma_threshold():
  rng = np.random.default_rng(10)
  image_scores = rng.gamma(2.0, size=50)
  np.testing.assert_allclose(scoring.three_sigma_threshold(image_scores),
                             image_scores.mean() + 3 * image_scores.std(), rtol=1e-5)
  pixel_scores = rng.gamma(2.0, size=(6, 8, 8))  # all pixels of all images pooled
  np.testing.assert_allclose(scoring.three_sigma_threshold(pixel_scores, num_sigmas=2.0),
                             pixel_scores.mean() + 2 * pixel_scores.std(), rtol=1e-5)
