"""XLA options adjax sets by default before JAX starts, because they measurably win on CPU.

`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution` keeps XLA:CPU from handing single
convolutions to YNNPACK, whose weight- and input-gradient convolutions are slow on x86 CPUs (`python -m adjax.bench` with
`ADJAX_XLA_DEFAULTS=0` measures the difference). The option only concerns the CPU backend, so setting it is
harmless on GPU/TPU hosts.

Override: any value of the same option already in `XLA_FLAGS` wins, and `ADJAX_XLA_DEFAULTS=0` turns the
defaults off.
"""

import os

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
  return flags
