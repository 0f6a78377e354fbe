"""SGLD sampling of energy-based models (one `lax.scan`) and chain initialisations.

Sign convention: low energy = likely, p(x) ∝ exp(-E(x)), so grad log p(x) = -grad E(x).

One SGLD step (`sgld`), for every chain and pixel:
    x <- clip(x - step_size * clip(dE/dx, ±grad_clip) + noise_scale * N(0, I), value_range)
- Short-run parametrisation of Nijkamp et al. (the seed 004 reference): step_size=1,
  noise_scale=0.01, i.e. x + grad log p(x) + 0.01 N(0, I); their code does not clip values
  (value_range=None).
- Exact (unadjusted) Langevin dynamics with step epsilon: step_size=epsilon/2,
  noise_scale=sqrt(epsilon); `langevin_parameters(epsilon)` returns that pair. Only this choice
  samples p(x) as epsilon -> 0.

Chain starts: `uniform_init` (seed 004: non-persistent chains from U(-1, 1)) or a persistent replay
buffer (`replay_buffer_*`, a pure pytree; Tieleman 2008, Du & Mordatch 2019), which seed 004 tried
and found unstable. Everything here is jit-able with static sizes.
"""

import math
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp

from adjax import errors

EnergyFn = Callable[[jax.Array], jax.Array]  # x [batch, ...] -> energies [batch]


# Minor dimension the random draws are generated with (see `normal`).
_RANDOM_ROW = 128


def _draw(sampler, rng, shape, dtype, **kwargs):
  size = math.prod(shape)
  rows = (size // _RANDOM_ROW, _RANDOM_ROW) if size % _RANDOM_ROW == 0 else (size,)
  return sampler(rng, rows, dtype, **kwargs).reshape(shape)


def normal(rng: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """`jax.random.normal(rng, shape, dtype)`, the same values, drawn as rows of 128 and reshaped.

  Threefry's counters are the elements' flat indices, so the values do not depend on the shape the
  draw is made with; XLA:CPU vectorises the generator along the minor dimension, and with images'
  3 channels there each draw — one per SGLD step — ran several times slower (`python
  scripts/conv_speed.py --tables 12`).
  """
  return _draw(jax.random.normal, rng, shape, dtype)


def uniform(rng: jax.Array, shape: tuple[int, ...], dtype=jnp.float32, *, low: float = 0.,
            high: float = 1.) -> jax.Array:
  """`jax.random.uniform(rng, shape, dtype, low, high)`, the same values, drawn as `normal` is."""
  return _draw(jax.random.uniform, rng, shape, dtype, minval=low, maxval=high)


def langevin_parameters(epsilon: float) -> tuple[float, float]:
  """(step_size, noise_scale) = (epsilon / 2, sqrt(epsilon)): `sgld` as exact Langevin dynamics."""
  return epsilon / 2, math.sqrt(epsilon)


def sgld(energy_fn: EnergyFn, x0: jax.Array, rng: jax.Array, *, num_steps: int,
         step_size: float, noise_scale: float, grad_clip: float | None = None,
         value_range: tuple[float, float] | None = (-1., 1.), return_trace: bool = False):
  """Runs `num_steps` SGLD steps from `x0` in one `jax.lax.scan` (update rule: module docstring).

  Gradients are taken w.r.t. the samples only (of sum_i E(x_i), which is each chain's own dE/dx_i
  because `energy_fn` treats images independently). The start and the result are under
  `stop_gradient`: no gradient flows from the samples to the energy's parameters. For speed, build
  `energy_fn` outside the function you differentiate w.r.t. the parameters (or over
  `stop_gradient(params)`), else JAX also linearises the whole chain w.r.t. them before discarding
  it.

  Step k uses the noise `jax.random.normal(jax.random.split(rng, num_steps)[k], x.shape, x.dtype)`
  (drawn by `normal`).

  Args:
    energy_fn: x [batch, ...] -> energies [batch].
    x0: float [batch, ...] chain starts (e.g. images [batch, height, width, channels]).
    rng: PRNG key.
    num_steps: number of steps (static).
    step_size: drift coefficient on -dE/dx.
    noise_scale: standard deviation of the Gaussian noise added per step.
    grad_clip: if set, clip dE/dx elementwise to [-grad_clip, grad_clip] before the step.
    value_range: if set, (low, high) to clip the samples to after every step; None = no clipping.
    return_trace: also return per-step diagnostics.

  Returns:
    samples [batch, ...] (same shape and dtype as x0); with return_trace, (samples, trace) where
    trace is a dict of float [num_steps]: 'energy' = mean energy of the chains before each step,
    'grad_norm' = mean over chains of the L2 norm of dE/dx (before clipping) at that state.
  """
  if num_steps < 0:
    raise errors.InputError(f'SGLD num_steps must be >= 0, got {num_steps}')

  def step(x, key):
    energies, energy_vjp = jax.vjp(energy_fn, x)
    (grad,) = energy_vjp(jnp.ones_like(energies))
    grad_norm = jnp.sqrt(jnp.sum(jnp.square(grad.reshape(grad.shape[0], -1)), axis=1))
    if grad_clip is not None:
      grad = jnp.clip(grad, -grad_clip, grad_clip)
    noise = normal(key, x.shape, x.dtype)
    x = x - step_size * grad + noise_scale * noise
    if value_range is not None:
      x = jnp.clip(x, *value_range)
    return x, {'energy': jnp.mean(energies), 'grad_norm': jnp.mean(grad_norm)}

  keys = jax.random.split(rng, num_steps)
  samples, trace = jax.lax.scan(step, jax.lax.stop_gradient(x0), keys)
  samples = jax.lax.stop_gradient(samples)
  return (samples, trace) if return_trace else samples


def uniform_init(rng: jax.Array, shape: tuple[int, ...], *, low: float = -1., high: float = 1.,
                 dtype=jnp.float32) -> jax.Array:
  """Chain starts drawn from U(low, high) of `shape`, e.g. [batch, height, width, channels]."""
  return uniform(rng, shape, dtype, low=low, high=high)


@flax.struct.dataclass
class ReplayBuffer:
  """Persistent SGLD chains (a pytree; checkpoint it with the train state).

  Attributes:
    samples: float [size, ...] stored chain states, e.g. [size, height, width, channels].
  """
  samples: jax.Array


def replay_buffer_init(rng: jax.Array, *, size: int, shape: tuple[int, ...], low: float = -1.,
                       high: float = 1.) -> ReplayBuffer:
  """`size` chains of one-sample `shape` (e.g. [height, width, channels]) from U(low, high)."""
  return ReplayBuffer(samples=uniform_init(rng, (size, *shape), low=low, high=high))


def replay_buffer_sample(buffer: ReplayBuffer, rng: jax.Array, *, batch_size: int,
                         reinit_probability: float = 0.05, low: float = -1.,
                         high: float = 1.) -> tuple[jax.Array, jax.Array]:
  """Draws chain starts; each is replaced by U(low, high) noise with probability reinit_probability.

  Indices are drawn without replacement so that `replay_buffer_update` never writes one slot twice.

  Returns:
    x0 float [batch_size, ...] and indices int32 [batch_size] (the slots to write back to).
  """
  size = buffer.samples.shape[0]
  if not 0 < batch_size <= size:
    raise errors.InputError(f'replay buffer batch_size must be in [1, {size}], got {batch_size}')
  index_key, reinit_key, noise_key = jax.random.split(rng, 3)
  indices = jax.random.choice(index_key, size, (batch_size,), replace=False).astype(jnp.int32)
  stored = buffer.samples[indices]
  fresh = uniform_init(noise_key, stored.shape, low=low, high=high, dtype=stored.dtype)
  reinit = jax.random.bernoulli(reinit_key, reinit_probability, (batch_size,))
  reinit = reinit.reshape((batch_size,) + (1,) * (stored.ndim - 1))
  return jnp.where(reinit, fresh, stored), indices


def replay_buffer_update(buffer: ReplayBuffer, indices: jax.Array,
                         samples: jax.Array) -> ReplayBuffer:
  """Writes samples [batch, ...] back to the slots indices [batch] from `replay_buffer_sample`."""
  new_samples = buffer.samples.at[indices].set(jax.lax.stop_gradient(samples).astype(
      buffer.samples.dtype))
  return buffer.replace(samples=new_samples)
