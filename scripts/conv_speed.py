"""Measures the convolution facts behind `adjax.models.convolution` on this machine (run it idle).

    python scripts/conv_speed.py [--size 64] [--steps 10] [--repeats 5]

1. One SGLD step of the seed-004 energy net (batch 16), inside a `lax.scan` and fully unrolled, with JAX's
   input-gradient rule (`conv_vjp='lax'`) and with `convolution.conv2d` ('hwio'): ms per step.
2. A 3x3 stride-1 conv (batch 16) through XLA's convolution and as patches @ kernel (`im2col_conv`), for
   output sizes around `IM2COL_MAX_OUTPUT_PIXELS`: ms per call.
"""

import argparse
import time

from adjax import xla_options

xla_options.set_defaults()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
from jax import lax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from adjax.models import convolution  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax.models import energy  # pylint: disable=g-import-not-at-top,wrong-import-position

BATCH = 16


def median_ms(fn, *, repeats: int) -> float:
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times) * 1e3)


def sgld_step_ms(*, size: int, steps: int, repeats: int, conv_vjp: str, unroll: bool) -> float:
  net = energy.EnergyNet(features=energy.features_for(size), conv_vjp=conv_vjp)
  x = jax.random.uniform(jax.random.key(0), (BATCH, size, size, 3), minval=-1, maxval=1)
  params = net.init(jax.random.key(1), x)
  grad_x = jax.grad(lambda p, x: jnp.sum(net.apply(p, x)), argnums=1)

  @jax.jit
  def chain(params, x):
    step = lambda x, _: (jnp.clip(x - grad_x(params, x), -1, 1), None)
    return lax.scan(step, x, None, length=steps, unroll=steps if unroll else 1)[0]

  return median_ms(lambda: chain(params, x), repeats=repeats) / steps


def conv_ms(*, size: int, channels: int, repeats: int) -> tuple[float, float]:
  x = jax.random.normal(jax.random.key(0), (BATCH, size, size, channels))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, channels, channels))
  padding = ((1, 1), (1, 1))
  xla = jax.jit(lambda x, k: lax.conv_general_dilated(x, k, (1, 1), padding,
                                                      dimension_numbers=convolution.NHWC_HWIO))
  matmul = jax.jit(lambda x, k: convolution.im2col_conv(x, k, padding))
  return (median_ms(lambda: xla(x, kernel), repeats=repeats),
          median_ms(lambda: matmul(x, kernel), repeats=repeats))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--size', type=int, default=64, help='EBM image size (4 * 2**k).')
  parser.add_argument('--steps', type=int, default=10, help='SGLD steps per timed chain.')
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  print(f'SGLD step, energy net at {args.size}², batch {BATCH}, ms per step (median of {args.repeats}):')
  print('| conv_vjp | in lax.scan | unrolled |\n|---|---|---|')
  for conv_vjp in ('lax', 'hwio'):
    scan, unrolled = (sgld_step_ms(size=args.size, steps=args.steps, repeats=args.repeats, conv_vjp=conv_vjp,
                                   unroll=unroll) for unroll in (False, True))
    print(f'| {conv_vjp} | {scan:.1f} | {unrolled:.1f} |')
  print(f'\n3x3 stride-1 conv, batch {BATCH}, ms per call (median of {args.repeats}):')
  print('| output | channels | XLA convolution | patches @ kernel |\n|---|---|---|---|')
  for size, channels in ((1, 256), (2, 256), (4, 256), (8, 256), (16, 128), (32, 64)):
    xla, matmul = conv_ms(size=size, channels=channels, repeats=args.repeats)
    print(f'| {size}x{size} | {channels} | {xla:.2f} | {matmul:.2f} |')


if __name__ == '__main__':
  main()
