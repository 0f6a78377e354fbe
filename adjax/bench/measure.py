"""Measurement primitives of `python -m adjax.bench`: timings, compile time, XLA FLOPs, memory, matmul rate.

FLOPs come from XLA's `cost_analysis()` of the compiled program. Two facts matter when reading them:
a pmapped program is analysed per device (multiply by the number of devices), and a `lax.scan` /
while-loop body is counted once whatever the trip count, so loops are counted per iteration and
multiplied by the caller (see `adjax.bench.methods`).
"""

import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def timings_ms(fn: Callable[[], Any], *, repeats: int, warmup: int = 1) -> dict:
  """Runs `fn` `warmup` times untimed, then `repeats` times; {'median_ms', 'min_ms', 'max_ms'}.

  `fn` must block until its work is done (e.g. end in `jax.block_until_ready`).
  """
  if repeats < 1:
    raise ValueError(f'repeats must be >= 1, got {repeats}')
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append((time.perf_counter() - start) * 1e3)
  return {'median_ms': statistics.median(times), 'min_ms': min(times), 'max_ms': max(times)}


def interleaved_timings_ms(fns: dict[str, Callable[[], Any]], *, repeats: int, warmup: int = 1,
                           settle: frozenset[str] | set[str] = frozenset()) -> dict[str, dict]:
  """Times several functions call by call in turn (a, b, a, b, ...), so drift of a shared machine hits all alike.

  Each function in `settle` gets an untimed call right before each timed one: a runtime's after-effects
  (another library's spinning threads, its caches and heap) slowed the next short call of the other (adjax's
  EBM score right after a PyTorch call), which one call absorbs.

  Returns {name: {'median_ms', 'min_ms', 'max_ms'}}; with two functions also 'paired_ratio_median' under the
  first name: the median over rounds of (first's time / second's time) within the same round.
  """
  if repeats < 1:
    raise ValueError(f'repeats must be >= 1, got {repeats}')
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      if name in settle:
        fn()
      start = time.perf_counter()
      fn()
      times[name].append((time.perf_counter() - start) * 1e3)
  result = {name: {'median_ms': statistics.median(t), 'min_ms': min(t), 'max_ms': max(t)}
            for name, t in times.items()}
  if len(fns) == 2:
    first, second = times.values()
    result[next(iter(fns))]['paired_ratio_median'] = statistics.median(a / b for a, b in zip(first, second))
  return result


def compile_with_cost(fn: Callable, *args) -> tuple[Any, dict]:
  """`jax.jit(fn).lower(*args).compile()`, timed; returns (compiled, facts).

  facts: `compile_seconds` (lowering + compilation), `flops` (XLA cost analysis of the program as XLA
  sees it: per device for pmapped code, loop bodies once) and `xla_buffers_mb` (arguments + outputs +
  temporaries - aliased, XLA's own static buffer assignment for one call, per device).
  """
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  seconds = time.perf_counter() - start
  return compiled, {'compile_seconds': seconds, 'flops': program_flops(compiled),
                    'xla_buffers_mb': buffer_megabytes(compiled)}


def program_flops(compiled) -> float:
  """FLOPs of one call of a compiled program per XLA's cost analysis (0.0 when XLA gives none)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older jax returned one dict per program.
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get('flops', 0.0))


def flops_of(fn: Callable, *args) -> float:
  """FLOPs of one call of `jax.jit(fn)(*args)` per XLA's cost analysis."""
  return program_flops(jax.jit(fn).lower(*args).compile())


def buffer_megabytes(compiled) -> float | None:
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  total = (stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
           - stats.alias_size_in_bytes)
  return total / 2**20


def device_peak_mb() -> float | None:
  """Peak bytes in use on the first local device (`memory_stats()`), None where the backend has none (CPU)."""
  stats = jax.local_devices()[0].memory_stats()
  if not stats or 'peak_bytes_in_use' not in stats:
    return None
  return stats['peak_bytes_in_use'] / 2**20


def max_rss_mb() -> float:
  """The process's resident-memory high-water mark so far (MiB)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak / 2**20 if sys.platform == 'darwin' else peak / 2**10  # Bytes on macOS, KiB on Linux.


def matmul_gflops(*, size: int = 2048, repeats: int = 5) -> float:
  """Achieved float32 GFLOP/s of a jitted `size` x `size` matmul on the default device (median run)."""
  rng = np.random.default_rng(0)
  a, b = (jnp.asarray(rng.standard_normal((size, size)), jnp.float32) for _ in range(2))
  matmul = jax.jit(jnp.matmul)
  timing = timings_ms(lambda: jax.block_until_ready(matmul(a, b)), repeats=repeats)
  return 2 * size**3 / (timing['median_ms'] / 1e3) / 1e9
