"""Flax modules of adjax, one module per network family.

Import the submodule you need, e.g. `from adjax.models import energy`; this package imports nothing
itself so that each network family stays independent.
"""
