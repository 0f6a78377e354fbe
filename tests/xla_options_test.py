"""Tests of adjax.xla_options: defaults added once, user values and the off switches respected; the heap setting."""

import os
from pathlib import Path
import platform
import subprocess
import sys

import pytest

from adjax import xla_options

FLAG = xla_options.CPU_DEFAULTS[0]


def test_defaults_are_added_to_existing_flags_once():
  environ = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  xla_options.set_defaults(environ)
  xla_options.set_defaults(environ)
  assert environ['XLA_FLAGS'].split() == ['--xla_force_host_platform_device_count=2', FLAG]


def test_a_user_value_of_the_same_option_wins():
  option = FLAG.split('=')[0]
  environ = {'XLA_FLAGS': f'{option}=default'}
  assert xla_options.set_defaults(environ) == f'{option}=default'


def test_defaults_can_be_switched_off():
  environ = {'ADJAX_XLA_DEFAULTS': '0'}
  xla_options.set_defaults(environ)
  assert 'XLA_FLAGS' not in environ


_HEAP_PROBE = """
import ctypes, sys, threading
from adjax import xla_options

class MallInfo2(ctypes.Structure):
  _fields_ = [(name, ctypes.c_size_t) for name in
              ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks', 'uordblks', 'fordblks',
               'keepcost')]

libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype = ctypes.c_void_p
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == 'retain':
  assert xla_options.retain_freed_memory()
found = {}

def allocate_and_free():  # On another thread, as XLA:CPU's worker threads allocate.
  block = libc.malloc(256 << 20)
  ctypes.memset(block, 1, 256 << 20)
  found['mapped'] = libc.mallinfo2().hblkhd
  libc.free(ctypes.c_void_p(block))

thread = threading.Thread(target=allocate_and_free)
thread.start()
thread.join()
print(found['mapped'] >> 20, libc.mallinfo2().arena >> 20)
"""


@pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc', reason='glibc only')
@pytest.mark.parametrize('mode', ['retain', 'default'])
def test_retain_freed_memory_keeps_large_blocks_in_the_heap(mode):
  # A fresh interpreter: this one already runs with the setting (conftest). 256 MB is far above glibc's
  # largest mmap threshold (32 MB) and a thread arena's size (64 MB), so by default the block is its own
  # mapping, unmapped again by free(); retained, it comes from the main heap and stays there.
  out = subprocess.run([sys.executable, '-c', _HEAP_PROBE, mode], check=True, capture_output=True, text=True,
                       env={**os.environ, 'PYTHONPATH': str(Path(__file__).parents[1])}).stdout
  mapped_mb, heap_after_free_mb = map(int, out.split())
  if mode == 'retain':
    assert mapped_mb == 0 and heap_after_free_mb >= 256
  else:
    assert mapped_mb >= 256 and heap_after_free_mb < 256


def test_the_heap_setting_has_its_own_off_switch(monkeypatch):
  calls = []
  monkeypatch.setattr(xla_options, 'retain_freed_memory', lambda: calls.append(1))
  xla_options.set_defaults({'ADJAX_RETAIN_HEAP': '0'})
  xla_options.set_defaults({'ADJAX_XLA_DEFAULTS': '0'})
  assert not calls
  xla_options.set_defaults({})
  assert calls == [1]
