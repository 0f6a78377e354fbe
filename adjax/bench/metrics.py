"""Time and peak memory of the pixel metrics, exact and binned, on synthetic MVTec-sized data.

  python -m adjax.bench.metrics [--num_images 1725 --size 256 --num_bins 10000]

Each (metric, mode) runs in its own subprocess, which makes the same synthetic maps and masks
(float32 noise, with about `defect_fraction` of the images holding 1-3 small elliptic defects whose
pixels get a positive offset), records its peak resident memory, runs the metric once, and reports
wall and CPU seconds (the exact sort uses up to 4 threads) and the growth of the peak resident memory
over the data alone. The parent prints a table and
the absolute difference between binned and exact values.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

from adjax import metrics

METRICS = ('pixel_auroc', 'pixel_ap', 'aupro', 'pixel_metrics')


def synthetic(*, num_images: int, size: int, defect_fraction: float, seed: int):
  """maps float32 [num_images, size, size], masks uint8 of the same shape; filled image by image."""
  rng = np.random.default_rng(seed)
  maps = np.empty((num_images, size, size), np.float32)
  masks = np.zeros((num_images, size, size), np.uint8)
  rows, cols = np.mgrid[:size, :size]
  for index in range(num_images):
    rng.standard_normal((size, size), dtype=np.float32, out=maps[index])
    if rng.random() >= defect_fraction:
      continue
    for _ in range(rng.integers(1, 4)):
      center = rng.uniform(0, size, 2)
      radii = rng.uniform(0.02, 0.12, 2) * size
      inside = ((rows - center[0]) / radii[0]) ** 2 + ((cols - center[1]) / radii[1]) ** 2 <= 1
      masks[index][inside] = 1
      maps[index][inside] += rng.uniform(0.5, 3.0)
  return maps, masks


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux.


def run_one(args) -> dict:
  """Runs one metric in this process; returns its value, seconds and peak-memory growth."""
  maps, masks = synthetic(num_images=args.num_images, size=args.size,
                          defect_fraction=args.defect_fraction, seed=args.seed)
  num_bins = args.num_bins if args.mode == 'binned' else None
  call = {
      'pixel_auroc': lambda: metrics.pixel_auroc(maps, masks, num_bins=num_bins),
      'pixel_ap': lambda: metrics.pixel_ap(maps, masks, num_bins=num_bins),
      'aupro': lambda: metrics.aupro(maps, masks, fpr_limit=args.fpr_limit, num_bins=num_bins),
      'pixel_metrics': lambda: metrics.pixel_metrics(maps, masks, fpr_limit=args.fpr_limit,
                                                     num_bins=num_bins),
  }[args.metric]
  data_peak = _peak_rss_mb()
  start, start_cpu = time.perf_counter(), time.process_time()
  value = call()
  seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
  return {'metric': args.metric, 'mode': args.mode, 'value': value, 'seconds': seconds,
          'cpu_seconds': cpu_seconds,
          'extra_peak_mb': _peak_rss_mb() - data_peak, 'data_mb': (maps.nbytes + masks.nbytes) / 2**20,
          'anomalous_fraction': float(np.count_nonzero(masks)) / masks.size}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num_images', type=int, default=1725)
  parser.add_argument('--size', type=int, default=256)
  parser.add_argument('--defect_fraction', type=float, default=0.3)
  parser.add_argument('--num_bins', type=int, default=10_000)
  parser.add_argument('--fpr_limit', type=float, default=0.3)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--metrics', nargs='+', default=list(METRICS), choices=METRICS)
  parser.add_argument('--metric', choices=METRICS, help=argparse.SUPPRESS)  # Set in subprocesses.
  parser.add_argument('--mode', choices=('exact', 'binned'), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.metric:
    print(json.dumps(run_one(args)))
    return
  common = [f'--{name}={getattr(args, name)}' for name in
            ('num_images', 'size', 'defect_fraction', 'num_bins', 'fpr_limit', 'seed')]
  rows = {}
  for metric in args.metrics:
    for mode in ('exact', 'binned'):
      output = subprocess.run([sys.executable, '-m', 'adjax.bench.metrics', f'--metric={metric}',
                               f'--mode={mode}', *common], check=True, capture_output=True, text=True)
      rows[metric, mode] = row = json.loads(output.stdout.strip().splitlines()[-1])
      print(f'{metric:14s} {mode:6s} {row["seconds"]:6.2f} s (cpu {row["cpu_seconds"]:6.2f} s)  extra peak RSS '
            f'{row["extra_peak_mb"]:7.0f} MB  value {row["value"]}', flush=True)
  first = next(iter(rows.values()))
  print(f'\ndata: {args.num_images} maps of {args.size}x{args.size} float32 + uint8 masks = '
        f'{first["data_mb"]:.0f} MB, anomalous pixels {first["anomalous_fraction"]:.2%}, '
        f'num_bins={args.num_bins}')
  print('\n| metric | exact s (cpu s) | exact extra MB | binned s (cpu s) | binned extra MB | '
        'abs(binned - exact) |')
  print('|---|---|---|---|---|---|')
  for metric in args.metrics:
    exact, binned = rows[metric, 'exact'], rows[metric, 'binned']
    if isinstance(exact['value'], dict):
      difference = ', '.join(f'{name} {abs(binned["value"][name] - value):.2e}'
                             for name, value in exact['value'].items())
    else:
      difference = f'{abs(binned["value"] - exact["value"]):.2e}'
    print(f'| {metric} | {exact["seconds"]:.2f} ({exact["cpu_seconds"]:.2f}) | '
          f'{exact["extra_peak_mb"]:.0f} | {binned["seconds"]:.2f} ({binned["cpu_seconds"]:.2f}) | '
          f'{binned["extra_peak_mb"]:.0f} | {difference} |')


if __name__ == '__main__':
  main()
