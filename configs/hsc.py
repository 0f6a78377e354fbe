"""Pixel-wise HSC (seed 000, Eq. 5): `configs/fcdd.py` with `fcdd.loss = 'hsc'`; same presets.

`python -m adjax.main --config=configs/hsc.py[:smoke|:paper|:paper_semi]` (runs go to runs/hsc-<preset>).
"""

import importlib.util
from pathlib import Path

# Loaded by file path: config files are read by path (ml_collections), not imported as a package.
_SPEC = importlib.util.spec_from_file_location('adjax_configs_fcdd', Path(__file__).with_name('fcdd.py'))
_FCDD = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_FCDD)


def get_config(arg: str | None = None):
  preset, _ = _FCDD.parse_arg(arg)
  return _FCDD.get_config(f'{preset},hsc')
