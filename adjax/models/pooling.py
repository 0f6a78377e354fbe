"""2x2 stride-2 max pooling with a gradient XLA:CPU runs fast; the same function as `flax.linen.max_pool`.

JAX differentiates `lax.reduce_window` max pooling with `select_and_scatter_add`, which XLA:CPU runs
slowly: on [16, 224, 224, 64] its gradient took 298 ms against 8 ms for the forward pass
(`python scripts/conv_speed.py --tables 6`, README Performance). With non-overlapping windows every input pixel
belongs to one window, so the gradient is elementwise: each window's output gradient goes to the first of
its maxima in row-major order, the pixel `select_and_scatter_add` picks as well (its `ge` selection keeps
the earlier of equal values). `max_pool_2x2` computes exactly that, as comparisons on the four window
phases. Its backward pass is made of differentiable operations, so higher-order gradients (the CAE's
contractive penalty) go through it too.

Outside differentiation (scoring, frozen layers) the max is taken as elementwise maxima of the four window
phases instead of a reduction: XLA:CPU hands a reduction to YNNPACK fused with the convolutions and
batch-norm around it as one graph, which ran slower there; FCDD's 64² score took 0.84x the time this way,
its 224² score 0.92–0.93x, the CAE's 64² score 0.97–1.00x (`python scripts/conv_speed.py --tables 11`). Under
differentiation the forward pass keeps the reduction, which trains no slower (table 11's train steps: level;
the phase form in the differentiated pass too was not faster in a trial). Both forms give the same values.
"""

import jax
import jax.numpy as jnp


def _windows(x: jax.Array) -> jax.Array:
  """[batch, height, width, channels] -> [batch, height // 2, 2, width // 2, 2, channels]; an odd last row
  or column is dropped, as 'VALID' pooling does."""
  batch, height, width, channels = x.shape
  x = x[:, :height - height % 2, :width - width % 2]
  return x.reshape(batch, height // 2, 2, width // 2, 2, channels)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """Max over 2x2 windows with stride 2, no padding: [batch, H, W, C] -> [batch, H // 2, W // 2, C]."""
  windows = _windows(x)
  return jnp.maximum(jnp.maximum(windows[:, :, 0, :, 0], windows[:, :, 0, :, 1]),
                     jnp.maximum(windows[:, :, 1, :, 0], windows[:, :, 1, :, 1]))


def _forward(x):
  pooled = jnp.max(_windows(x), axis=(2, 4))  # The reduction when differentiated (module docstring).
  return pooled, (x, pooled)


def _backward(residuals, grad):
  x, pooled = residuals
  windows = _windows(x)
  taken = jnp.zeros(pooled.shape, bool)
  phases = []
  for row in range(2):
    for col in range(2):
      first = (windows[:, :, row, :, col] == pooled) & ~taken  # The first maximum in row-major order.
      taken = taken | first
      phases.append(jnp.where(first, grad, jnp.zeros_like(grad)))
  batch, height, width, channels = x.shape
  # [2 rows, 2 cols, batch, h, w, C] -> [batch, h, 2, w, 2, C] -> [batch, 2h, 2w, C].
  stacked = jnp.stack(phases).reshape(2, 2, *pooled.shape).transpose(2, 3, 0, 4, 1, 5)
  dx = stacked.reshape(batch, 2 * pooled.shape[1], 2 * pooled.shape[2], channels)
  return (jnp.pad(dx, ((0, 0), (0, height % 2), (0, width % 2), (0, 0))),)


max_pool_2x2.defvjp(_forward, _backward)
