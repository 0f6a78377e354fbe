"""Every test runs with two fake CPU devices so the pmap path is always exercised."""

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=2').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

from adjax import xla_options  # pylint: disable=g-import-not-at-top,wrong-import-position

xla_options.set_defaults()  # Tests run with the options users get from `python -m adjax.main`.


import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(name='reference')
def reference_fixture():
  """The torch reference networks (tests/torch_reference.py); skips the test when torch is absent."""
  pytest.importorskip('torch')
  import torch_reference  # pylint: disable=g-import-not-at-top
  return torch_reference
