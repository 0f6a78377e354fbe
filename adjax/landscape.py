"""Loss landscapes around trained parameters (Li et al. 2018), as drawn in seed 001 Figs. 1 and 3.

  filter_normalize   rescale a direction so each filter has the norm of the matching parameter filter
  random_direction   a filter-normalised Gaussian direction
  loss_surface       loss(params + a * d1 + b * d2) over a 2-D grid of (a, b)

A "filter" is one output unit: the slice `[..., j]` of a flax kernel (Conv `[kh, kw, in, out]`,
ConvTranspose `[kh, kw, in, out]`, Dense `[in, out]`), i.e. all weights that produce output channel j
(Li et al. slice PyTorch's axis 0, which is the output axis there). One-dimensional parameters (biases,
BatchNorm scales and offsets) get a zero direction by default, as Li et al.'s `ignore='biasbn'`.
"""

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

PyTree = Any


def filter_normalize(direction: PyTree, params: PyTree, *, ignore_1d: bool = True,
                     eps: float = 1e-10) -> PyTree:
  """Scales every filter of `direction` to the norm of the same filter of `params`.

  d_j <- d_j * ||theta_j|| / (||d_j|| + eps) for each output unit j (last axis) of each leaf with
  ndim >= 2. Leaves with ndim <= 1 are zeroed when `ignore_1d` (Li et al.'s default), otherwise
  scaled as one filter.

  Args:
    direction: pytree of arrays with the structure and shapes of `params`.
    params: pytree of parameter arrays (the trained point).
    ignore_1d: zero the direction on 1-D (and scalar) parameters.
    eps: guards the division for an all-zero direction filter.

  Returns:
    pytree like `params`, the normalised direction.
  """
  def normalize_leaf(d, theta):
    if theta.ndim <= 1:
      if ignore_1d:
        return jnp.zeros_like(d)
      return d * jnp.linalg.norm(theta) / (jnp.linalg.norm(d) + eps)
    axes = tuple(range(theta.ndim - 1))
    d_norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=True))
    theta_norm = jnp.sqrt(jnp.sum(jnp.square(theta), axis=axes, keepdims=True))
    return d * theta_norm / (d_norm + eps)

  return jax.tree_util.tree_map(normalize_leaf, direction, params)


def random_direction(rng: jax.Array, params: PyTree, *, ignore_1d: bool = True) -> PyTree:
  """A standard-Gaussian direction like `params`, filter-normalised (see `filter_normalize`)."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(rng, len(leaves))
  gaussian = [jax.random.normal(key, jnp.shape(leaf), jnp.result_type(leaf))
              for key, leaf in zip(keys, leaves)]
  return filter_normalize(jax.tree_util.tree_unflatten(treedef, gaussian), params,
                          ignore_1d=ignore_1d)


def loss_surface(loss_fn: Callable[[PyTree], jax.Array], params: PyTree, *,
                 directions: tuple[PyTree, PyTree],
                 grid: tuple[Sequence[float], Sequence[float]]) -> jax.Array:
  """Loss on the plane params + a * d1 + b * d2 (Li et al. 2018, Sec. 4).

  Points are evaluated one after another with `lax.map` (memory of one loss evaluation), all in one
  compiled program; `loss_fn` must be a traceable JAX function of the parameters (fix its data,
  model state and rng by closure).

  Args:
    loss_fn: params -> scalar loss.
    params: the centre of the plane (the trained parameters).
    directions: (d1, d2), pytrees like `params`, e.g. from `random_direction`.
    grid: (alphas [num_a], betas [num_b]) coordinates along d1 and d2.

  Returns:
    float [num_a, num_b]: surface[i, j] = loss_fn(params + alphas[i] * d1 + betas[j] * d2).
  """
  first, second = directions
  alphas = jnp.asarray(grid[0], jnp.float32)
  betas = jnp.asarray(grid[1], jnp.float32)
  coordinates = jnp.stack(jnp.meshgrid(alphas, betas, indexing='ij'), axis=-1).reshape(-1, 2)

  def at(coordinate):
    a, b = coordinate[0], coordinate[1]
    moved = jax.tree_util.tree_map(lambda p, u, v: p + (a * u + b * v).astype(p.dtype),
                                   params, first, second)
    return jnp.asarray(loss_fn(moved), jnp.float32)

  values = jax.jit(lambda points: jax.lax.map(at, points))(coordinates)
  return values.reshape(alphas.shape[0], betas.shape[0])
