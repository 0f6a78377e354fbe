"""Tests of adjax.xla_options: defaults added once, user values and the off switch respected."""

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
