"""Every test runs with two fake CPU devices so the pmap path is always exercised."""

import atexit
import os
import shutil
import tempfile

# Test programs are small and compile-bound: LLVM at optimisation level 1 instead of XLA's default 2 cuts
# compile times (README, Tests); XLA's HLO passes (fusion, layouts) still run, so what is computed is the
# same. Level 0 compiles faster still, but XLA's own convolution loops (lhs-dilated input gradients) then
# run so slowly that SGLD chains dominate. An optimisation level already in XLA_FLAGS wins.
_flags = [flag for flag in os.environ.get('XLA_FLAGS', '').split()
          if not flag.startswith('--xla_force_host_platform_device_count=')]
if not any(flag.startswith('--xla_backend_optimization_level=') for flag in _flags):
  _flags.append('--xla_backend_optimization_level=1')
os.environ['XLA_FLAGS'] = ' '.join(_flags + ['--xla_force_host_platform_device_count=2'])
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# One persistent compilation cache for the session, shared with the subprocess runs (CLI, notebooks, sweep,
# kill-and-resume): they compile the same programs as each other and as this process. Fresh per session, so
# no test depends on an earlier run's state; JAX keys entries by program, options and backend.
_COMPILATION_CACHE = tempfile.mkdtemp(prefix='adjax-test-jax-cache-')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _COMPILATION_CACHE)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')  # Every entry, whatever its size.
atexit.register(shutil.rmtree, _COMPILATION_CACHE, ignore_errors=True)

from adjax import xla_options  # pylint: disable=g-import-not-at-top,wrong-import-position

xla_options.set_defaults()  # The XLA options users get from `python -m adjax.main`.


import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(name='reference')
def reference_fixture():
  """The torch reference networks (tests/torch_reference.py); skips the test when torch is absent."""
  pytest.importorskip('torch')
  import torch_reference  # pylint: disable=g-import-not-at-top
  return torch_reference
