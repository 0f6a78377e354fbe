"""Converts pretrained backbone weights once into adjax's Flax file.

  python -m adjax.convert_weights --arch=vgg11_bn --input=vgg11_bn-6002323d.pth --output=vgg11_bn.msgpack

The input is a torchvision/timm state dict (.pth/.pt/.bin needs torch; .safetensors does not). The output
(default: the input path with suffix .msgpack) loads with flax alone: point `model.backbone_weights` at it.
`--outputs=block4` keeps only the variables those features need (FCDD's VGG11-BN trunk: 18 MB instead of
531 MB) and accepts a file that has only them. A file that does not fit the architecture ends with one line
`adjax: error: ...` listing the missing, unexpected and mis-shaped keys, and exit code 2.
"""

import os
from pathlib import Path
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import jax
import numpy as np

from adjax.errors import InputError
from adjax.models import weights

_ARCH = flags.DEFINE_enum('arch', None, list(weights.ARCHITECTURES), 'Backbone architecture.')
_INPUT = flags.DEFINE_string('input', None, 'Weights file: .pth, .pt, .bin or .safetensors.')
_OUTPUT = flags.DEFINE_string('output', None, 'Flax file to write (default: input with suffix .msgpack).')
_OUTPUTS = flags.DEFINE_list('outputs', None, 'Keep only what these features need (default: everything).')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 1000, 'Classifier width in the file.')


def convert(arch: str, input_path: str | os.PathLike, output_path: str | os.PathLike, *,
            outputs=None, num_classes: int = 1000) -> dict:
  """Reads `input_path`, checks it against `arch`, writes `output_path`; returns the variables."""
  if Path(input_path).suffix == '.msgpack':
    raise InputError(f'{input_path}: already a converted Flax file')
  variables = weights.load_backbone_variables(arch, input_path, outputs=outputs, num_classes=num_classes)
  weights.save_variables(output_path, variables, arch=arch)
  return variables


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  output = _OUTPUT.value or str(Path(_INPUT.value).with_suffix('.msgpack'))
  try:
    variables = convert(_ARCH.value, _INPUT.value, output, outputs=_OUTPUTS.value,
                        num_classes=_NUM_CLASSES.value)
  except InputError as error:
    print(f'adjax: error: {error}', file=sys.stderr)
    sys.exit(2)
  count = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(variables.get('params', {})))
  print(f'adjax: wrote {output} ({_ARCH.value}, {count:,} parameters)')


if __name__ == '__main__':
  # Required only for the command: importing `convert` must not constrain other programs' flags.
  flags.mark_flags_as_required(['arch', 'input'])
  app.run(main)
