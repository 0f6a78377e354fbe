"""Measures what `adjax.xla_options.retain_freed_memory` changes on this machine (run it idle).

    python scripts/heap_speed.py [--repeats 9]

Runs the same cases in two fresh interpreters, with `ADJAX_RETAIN_HEAP=1` (adjax's default) and `=0` (glibc's
default), and prints ms per call (median after 5 warm-up calls) and minor page faults per call for: an
elementwise op on 64 MB, a skinny matmul [262144, 32] @ [32, 32] (a 1x1 conv at 128², batch 16), and the EBM
scoring pass (energy and input gradient of the seed-004 net, batch 16) at 64² and 128²; and each
interpreter's peak resident memory, the price of keeping freed memory.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def measure(repeats: int) -> dict:
  from adjax import xla_options  # pylint: disable=g-import-not-at-top
  xla_options.set_defaults()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from adjax import scoring  # pylint: disable=g-import-not-at-top
  from adjax.models import energy  # pylint: disable=g-import-not-at-top

  def timed(fn, *args):
    compiled = jax.jit(fn)
    for _ in range(5):  # The retained heap grows to its working size in the first calls.
      jax.block_until_ready(compiled(*args))
    times, faults = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(compiled(*args))
      times.append(time.perf_counter() - start)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / repeats
    return {'ms': float(np.median(times) * 1e3), 'page_faults': faults}

  key = jax.random.key(0)
  rows = {'elementwise x * 2 + 1, 64 MB': timed(lambda x: x * 2 + 1, jnp.ones((1 << 24,), jnp.float32)),
          'matmul [262144, 32] @ [32, 32]': timed(jnp.matmul, jax.random.normal(key, (262144, 32)),
                                                 jax.random.normal(key, (32, 32)))}
  for size in (64, 128):
    net = energy.EnergyNet(features=energy.features_for(size))
    images = jax.random.uniform(key, (16, size, size, 3), minval=-1, maxval=1)
    variables = net.init(key, images)
    rows[f'EBM score {size}²'] = timed(
        lambda v, x: scoring.energy_and_gradient_map(lambda y: net.apply(v, y), x), variables, images)
  rows['peak resident MB'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--repeats', type=int, default=9)
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(measure(args.repeats)))
    return
  results = {}
  for retain in ('1', '0'):
    out = subprocess.run([sys.executable, __file__, '--child', f'--repeats={args.repeats}'], check=True,
                         capture_output=True, text=True, env={**os.environ, 'ADJAX_RETAIN_HEAP': retain})
    results[retain] = json.loads(out.stdout.strip().splitlines()[-1])
  print(f'ms per call, median of {args.repeats} (minor page faults per call)')
  print('| case | ADJAX_RETAIN_HEAP=1 (default) | ADJAX_RETAIN_HEAP=0 |\n|---|---|---|')
  peak = {retain: rows.pop('peak resident MB') for retain, rows in results.items()}
  for case, retained in results['1'].items():
    default = results['0'][case]
    print(f"| {case} | {retained['ms']:.2f} ({retained['page_faults']:.0f}) | "
          f"{default['ms']:.2f} ({default['page_faults']:.0f}) |")
  print(f"| peak resident memory | {peak['1']:.0f} MB | {peak['0']:.0f} MB |")


if __name__ == '__main__':
  main()
