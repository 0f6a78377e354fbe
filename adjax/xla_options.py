"""XLA options adjax sets by default before JAX starts, because they measurably win on CPU.

`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution` keeps XLA:CPU from handing single
convolutions to YNNPACK, whose weight- and input-gradient convolutions are slow on x86 CPUs (`python -m
adjax.bench` with `ADJAX_XLA_DEFAULTS=0` measures the difference). The option only concerns the CPU backend, so setting it is
harmless on GPU/TPU hosts.

`retain_freed_memory()` (Linux with glibc) tells malloc to keep freed memory for reuse instead of returning
it to the operating system. XLA:CPU allocates each computation's buffers afresh on every call; glibc maps
large blocks (above its mmap threshold, at most 32 MB, or a thread arena's 64 MB) afresh each time, and the
kernel faults in and zeroes every page on first touch, call after call. Memory-bound steps (copies,
concatenations, elementwise ops, convolutions with few channels) spent most of their time in those page
faults: `x * 2 + 1` on 64 MB took 23 ms instead of 5 (`python scripts/heap_speed.py`). The price is that the
process keeps its peak heap size until it exits, as a caching allocator does.

Override: any value of the same option already in `XLA_FLAGS` wins, `ADJAX_RETAIN_HEAP=0` leaves malloc
alone, and `ADJAX_XLA_DEFAULTS=0` turns all defaults off.
"""

import ctypes
import ctypes.util
import os
import platform

CPU_DEFAULTS = ('--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',)


def set_defaults(environ=os.environ) -> str:
  """Adds the default options missing from `environ['XLA_FLAGS']`; returns the resulting value.

  Call before JAX creates its backends (before the first computation); later calls have no effect on a
  running backend.
  """
  flags = environ.get('XLA_FLAGS', '')
  if environ.get('ADJAX_XLA_DEFAULTS', '1') != '0':
    present = {flag.split('=')[0] for flag in flags.split()}
    missing = [flag for flag in CPU_DEFAULTS if flag.split('=')[0] not in present]
    flags = ' '.join([flags] + missing).strip()
    environ['XLA_FLAGS'] = flags
    if environ.get('ADJAX_RETAIN_HEAP', '1') != '0':
      retain_freed_memory()
  return flags


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def retain_freed_memory() -> bool:
  """Serves every allocation from one malloc heap and never trims it; True if glibc took the settings.

  Equivalent to starting Python with MALLOC_MMAP_MAX_=0 MALLOC_ARENA_MAX=1 and trimming off.
  One arena: a thread's own arena is at most 64 MB and glibc maps anything larger afresh even with mmap
  off, and XLA:CPU allocates from its worker threads. Call before JAX starts its threads (threads that
  already have an arena keep it). Does nothing (False) off Linux or without glibc.
  """
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    # A trim threshold of -1 turns trimming off (mallopt(3)); any int would still trim a freed block above
    # 2 GB, and XLA's buffers for one step reach that (FCDD trained end to end at 224²: 2.7 GB).
    settings = ((_M_MMAP_MAX, 0), (_M_ARENA_MAX, 1), (_M_TRIM_THRESHOLD, -1))
    return all([bool(libc.mallopt(parameter, value)) for parameter, value in settings])
  except (OSError, AttributeError):
    return False
