"""Tests of adjax.sampling: SGLD in one lax.scan, its stationary law, replay buffer."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjax import errors
from adjax import sampling
from adjax.models import energy
from jaxpr_helpers import primitive_names  # pylint: disable=g-bad-import-order


def _quadratic_energy(mean, scale):
  """E(x) = ||x - mean||^2 / (2 scale^2) per chain: p(x) = N(mean, scale^2 I)."""
  return lambda x: jnp.sum(jnp.square(x - mean), axis=1) / (2 * scale**2)


def _tiny_net_and_params(shape, seed=0):
  net = energy.EnergyNet(first_features=3, features=(4, 4))
  shapes = jax.eval_shape(net.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))
  rng = np.random.default_rng(seed)  # numpy draws: flax's PRNG init takes seconds to compile here
  params = jax.tree.map(lambda s: jnp.asarray(rng.uniform(-0.3, 0.3, s.shape), jnp.float32), shapes)
  return net, params



@pytest.mark.parametrize('partitionable', [True, False])
@pytest.mark.parametrize('shape', [(4, 8, 8, 3), (5, 7, 3), (256,)])  # Rows of 128 with and without a tail.
def test_normal_and_uniform_equal_jax_random_draws_of_the_same_shape(shape, partitionable):
  def draws(key):  # One program (jit): op-by-op dispatch of each draw is slow to compile.
    return [(sampling.normal(key, shape, dtype), jax.random.normal(key, shape, dtype),
             sampling.uniform(key, shape, dtype, low=-1., high=2.), jax.random.uniform(key, shape, dtype, -1., 2.))
            for dtype in (jnp.float32, jnp.bfloat16)]

  with jax.threefry_partitionable(partitionable):
    for normal, want_normal, uniform, want_uniform in jax.jit(draws)(jax.random.key(7)):
      np.testing.assert_array_equal(normal, want_normal)
      np.testing.assert_array_equal(uniform, want_uniform)


def test_langevin_parameters():
  assert sampling.langevin_parameters(0.02) == pytest.approx((0.01, math.sqrt(0.02)))


def test_exact_langevin_stationary_mean_and_variance_of_a_gaussian():
  mean = jnp.linspace(-0.5, 0.5, 8)
  scale, epsilon = 0.5, 0.02
  step_size, noise_scale = sampling.langevin_parameters(epsilon)
  x0 = sampling.uniform_init(jax.random.key(0), (4000, 8))
  samples = jax.jit(functools.partial(
      sampling.sgld, _quadratic_energy(mean, scale), num_steps=400, step_size=step_size,
      noise_scale=noise_scale, value_range=None))(x0, jax.random.key(1))
  deviation = np.asarray(samples - mean, np.float64)
  # The discretised chain is AR(1): d <- a d + sqrt(eps) N with a = 1 - eps / (2 s^2), whose
  # stationary variance is eps / (1 - a^2); it tends to s^2 as eps -> 0. a^400 ~ 1e-7: the start
  # is forgotten.
  a = 1 - epsilon / (2 * scale**2)
  discrete_variance = epsilon / (1 - a**2)
  assert abs(deviation.mean()) < 0.01  # standard error ~0.003
  np.testing.assert_allclose(deviation.mean(axis=0), 0, atol=0.04)  # per dim, s.e. ~0.008
  np.testing.assert_allclose(deviation.var(), discrete_variance, rtol=0.03)  # s.e. ~0.8%
  np.testing.assert_allclose(deviation.var(), scale**2, rtol=0.05)
  np.testing.assert_allclose(deviation.var(axis=0), discrete_variance, rtol=0.15)


def test_short_run_moves_samples_towards_the_mode():
  mean = jnp.full((4,), 0.3)
  x0 = sampling.uniform_init(jax.random.key(0), (64, 4))
  samples = sampling.sgld(_quadratic_energy(mean, 1.0), x0, jax.random.key(1), num_steps=50,
                          step_size=0.1, noise_scale=0.01)
  start = np.linalg.norm(x0 - mean, axis=1)
  end = np.linalg.norm(samples - mean, axis=1)
  assert np.all(end < 0.5 * start)
  assert end.mean() < 0.05  # 0.9^50 * start + noise ~ 0.03


def test_scan_equals_python_reference_loop():
  net, params = _tiny_net_and_params((2, 8, 8, 1))
  energy_fn = lambda x: net.apply(params, x)
  x0 = sampling.uniform_init(jax.random.key(0), (2, 8, 8, 1))
  rng = jax.random.key(1)
  settings = dict(step_size=1.0, noise_scale=0.05, grad_clip=0.02, value_range=(-0.9, 0.9))
  samples, trace = sampling.sgld(energy_fn, x0, rng, num_steps=6, return_trace=True, **settings)

  @jax.jit  # one step, compiled once (eager flax ops are slow to dispatch here)
  def reference_step(x, key):
    mean_energy = jnp.mean(energy_fn(x))
    grad = jax.grad(lambda x: jnp.sum(energy_fn(x)))(x)
    x = x - 1.0 * jnp.clip(grad, -0.02, 0.02) + 0.05 * jax.random.normal(key, x.shape)
    return jnp.clip(x, -0.9, 0.9), mean_energy

  x, energies = x0, []
  for key in jax.random.split(rng, 6):
    x, mean_energy = reference_step(x, key)
    energies.append(float(mean_energy))
  np.testing.assert_allclose(samples, x, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(trace['energy'], energies, rtol=1e-5)
  assert not np.allclose(samples, x0, atol=0.01)


def test_sampler_is_a_single_scan():
  energy_fn = _quadratic_energy(jnp.zeros(3), 1.0)
  jaxpr = jax.make_jaxpr(lambda x0, rng: sampling.sgld(
      energy_fn, x0, rng, num_steps=100, step_size=0.1, noise_scale=0.01))(
          jnp.zeros((5, 3)), jax.random.key(0))
  names = primitive_names(jaxpr)
  assert names.count('scan') == 1
  assert len(jaxpr.jaxpr.eqns) < 20  # not unrolled


def test_trace_reports_energy_and_gradient_norm_before_each_step():
  mean = jnp.zeros(3)
  x0 = jnp.array([[1.0, 2.0, 2.0], [0.0, 0.0, 3.0]])
  _, trace = sampling.sgld(_quadratic_energy(mean, 1.0), x0, jax.random.key(0), num_steps=4,
                           step_size=0.1, noise_scale=0.0, value_range=None, return_trace=True)
  assert trace['energy'].shape == trace['grad_norm'].shape == (4,)
  # Step 0 at x0: energies 9/2 and 9/2, gradient x0 with norms 3 and 3; x shrinks by 0.9 a step.
  np.testing.assert_allclose(trace['energy'], 4.5 * 0.81**np.arange(4), rtol=1e-5)
  np.testing.assert_allclose(trace['grad_norm'], 3.0 * 0.9**np.arange(4), rtol=1e-5)


def test_value_range_clips_every_step():
  flat = lambda x: jnp.sum(0.0 * x, axis=1)
  x0 = jnp.zeros((256, 4))
  clipped = sampling.sgld(flat, x0, jax.random.key(0), num_steps=20, step_size=1.0,
                          noise_scale=1.0, value_range=(-1.0, 1.0))
  assert float(clipped.min()) >= -1.0 and float(clipped.max()) <= 1.0
  assert float(jnp.mean(jnp.abs(clipped) == 1.0)) > 0.2  # many walkers sit on the walls
  free = sampling.sgld(flat, x0, jax.random.key(0), num_steps=20, step_size=1.0, noise_scale=1.0,
                       value_range=None)
  assert float(jnp.abs(free).max()) > 3.0


def test_grad_clip_limits_each_element_of_the_step():
  steep = lambda x: 1000.0 * jnp.sum(x - jnp.array([0.0, 1.0]) * x**2, axis=1)
  x0 = jnp.zeros((3, 2))
  samples = sampling.sgld(steep, x0, jax.random.key(0), num_steps=5, step_size=1.0,
                          noise_scale=0.0, grad_clip=0.01, value_range=None)
  np.testing.assert_allclose(samples, -0.05 * np.ones((3, 2)), rtol=1e-5)


def test_no_gradient_flows_from_samples_to_parameters():
  net, params = _tiny_net_and_params((2, 8, 8, 1))
  x0 = sampling.uniform_init(jax.random.key(0), (2, 8, 8, 1))
  positives = sampling.uniform_init(jax.random.key(1), (2, 8, 8, 1))

  def samples_of(params):
    return sampling.sgld(lambda x: net.apply(params, x), x0, jax.random.key(2), num_steps=3,
                         step_size=1.0, noise_scale=0.01)

  grads = jax.jit(jax.grad(lambda p: jnp.sum(jnp.square(samples_of(p)))))(params)
  assert all(np.all(leaf == 0) for leaf in jax.tree.leaves(grads))

  # In a CD loss the negatives act as constants: same gradient as with precomputed samples.
  def cd(p, negatives):
    return jnp.mean(net.apply(p, positives)) - jnp.mean(net.apply(p, negatives))

  through_sampler = jax.jit(jax.grad(lambda p: cd(p, samples_of(p))))(params)
  constant = jax.jit(jax.grad(cd))(params, samples_of(params))
  for a, b in zip(jax.tree.leaves(through_sampler), jax.tree.leaves(constant)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert any(np.any(leaf != 0) for leaf in jax.tree.leaves(constant))


def test_negative_num_steps_raises():
  with pytest.raises(errors.InputError):
    sampling.sgld(_quadratic_energy(0.0, 1.0), jnp.zeros((2, 2)), jax.random.key(0), num_steps=-1,
                  step_size=0.1, noise_scale=0.01)


def test_uniform_init_range_and_shape():
  x = sampling.uniform_init(jax.random.key(0), (100, 4, 4, 3), low=-0.5, high=2.0)
  assert x.shape == (100, 4, 4, 3) and x.dtype == jnp.float32
  assert float(x.min()) >= -0.5 and float(x.max()) < 2.0
  np.testing.assert_allclose(float(x.mean()), 0.75, atol=0.03)


def test_replay_buffer_sample_and_update_under_jit():
  buffer = sampling.replay_buffer_init(jax.random.key(0), size=50, shape=(4, 4, 3))
  assert buffer.samples.shape == (50, 4, 4, 3)
  assert float(buffer.samples.min()) >= -1 and float(buffer.samples.max()) <= 1

  sample = jax.jit(functools.partial(sampling.replay_buffer_sample, batch_size=20,
                                     reinit_probability=0.0))
  x0, indices = sample(buffer, jax.random.key(1))
  assert x0.shape == (20, 4, 4, 3) and indices.shape == (20,)
  assert len(set(np.asarray(indices).tolist())) == 20  # no slot drawn twice
  np.testing.assert_array_equal(x0, buffer.samples[indices])

  new_samples = jnp.full((20, 4, 4, 3), 7.0)
  updated = jax.jit(sampling.replay_buffer_update)(buffer, indices, new_samples)
  written = np.zeros(50, bool)
  written[np.asarray(indices)] = True
  np.testing.assert_array_equal(updated.samples[written], 7.0)
  np.testing.assert_array_equal(updated.samples[~written], buffer.samples[~written])


@pytest.mark.parametrize('probability', [0.0, 0.25, 1.0])
def test_replay_buffer_reinitialisation_rate(probability):
  buffer = sampling.replay_buffer_init(jax.random.key(0), size=4000, shape=(2,))
  x0, indices = sampling.replay_buffer_sample(buffer, jax.random.key(1), batch_size=2000,
                                              reinit_probability=probability)
  fresh = np.any(np.asarray(x0) != np.asarray(buffer.samples[indices]), axis=1)
  np.testing.assert_allclose(fresh.mean(), probability, atol=0.04)  # s.e. <= 0.01
  assert float(jnp.abs(x0).max()) <= 1.0


def test_replay_buffer_rejects_batch_larger_than_buffer():
  buffer = sampling.replay_buffer_init(jax.random.key(0), size=8, shape=(2,))
  with pytest.raises(errors.InputError):
    sampling.replay_buffer_sample(buffer, jax.random.key(1), batch_size=9)
