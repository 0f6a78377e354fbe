"""Pretrained backbone weights: torchvision/timm files -> Flax variables, and adjax's converted Flax file.

Files `load_backbone_variables` reads (chosen by extension):
  .safetensors          read with `safetensors.numpy` (no torch needed); torchvision or timm key names
  .pth / .pt / .bin     torch pickles of a state dict (torchvision's downloads); needs torch
  .msgpack              written by `python -m adjax.convert_weights` (`flax.serialization` msgpack)

Key mapping, torch -> Flax (Flax names in `vgg.py`, `resnet.py`):
  conv   weight [out, in, kh, kw] -> params kernel [kh, kw, in, out]; bias -> bias
  linear weight [out, in]         -> params kernel [in, out];           bias -> bias
  BatchNorm weight, bias          -> params scale, bias
            running_mean, running_var -> batch_stats mean, var          (num_batches_tracked ignored)
timm's VGG head (`pre_logits.fc1`/`fc2` as 7x7/1x1 convs, `head.fc`) is read as torchvision's classifier,
and a `module.` prefix on every key (torch DataParallel) is dropped. Matching is strict: keys the file
lacks, keys the architecture does not have and arrays of the wrong shape are all listed in one InputError.
With `outputs`, only the variables those features need are required and returned (e.g. a trunk-only file
for `outputs=('block4',)`); keys of the rest of the architecture are then ignored.

Converted files are `flax.serialization.msgpack_serialize` of {'format', 'arch', 'variables'}: one file,
exact float32 bytes, restored into plain dicts by flax alone (no orbax, TensorFlow or torch), and the
stored architecture name is checked on load.
"""

from collections.abc import Mapping, Sequence
import functools
import os
from pathlib import Path
from typing import Any

from absl import logging
import flax
import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from adjax import errors
from adjax.models import resnet
from adjax.models import vgg

ARCHITECTURES = {**vgg.ARCHITECTURES, **resnet.ARCHITECTURES}
FLAX_FORMAT = 'adjax-backbone-1'
TORCH_SUFFIXES = ('.pth', '.pt', '.bin')
# Variable shapes do not depend on the image size; 32x32 is the smallest every architecture accepts.
SAMPLE_SHAPE = (1, 32, 32, 3)
_SHOWN_PER_KIND = 5
_TORCH_LEAF = {('params', 'kernel'): 'weight', ('params', 'scale'): 'weight', ('params', 'bias'): 'bias',
               ('batch_stats', 'mean'): 'running_mean', ('batch_stats', 'var'): 'running_var'}
_TIMM_VGG_HEAD = {'pre_logits.fc1.': 'classifier.0.', 'pre_logits.fc2.': 'classifier.3.',
                  'head.fc.': 'classifier.6.'}


def create_model(arch: str, **model_kwargs) -> nn.Module:
  """The Flax module of `arch` (a key of ARCHITECTURES), e.g. `create_model('vgg11_bn')`."""
  if arch not in ARCHITECTURES:
    raise errors.InputError(f'unknown backbone {arch!r}; known: {", ".join(ARCHITECTURES)}')
  return ARCHITECTURES[arch](**model_kwargs)


def variable_shapes(model: nn.Module, *, outputs: Sequence[str] | None = None) -> dict[tuple, tuple]:
  """{(collection, *module path, leaf): shape} of the variables that `outputs` (None: all) need."""
  tree = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(SAMPLE_SHAPE), outputs=outputs or ('logits',)))
  return {path: leaf.shape for path, leaf in traverse_util.flatten_dict(tree).items()}


def _torch_module_names(model: nn.Module) -> dict[str, str]:
  """Flax top-level module name -> torchvision module name, for VGG (whose torch names are indices)."""
  names, index = {}, 0
  for block, count in enumerate(model.convs_per_block, start=1):
    for conv in range(1, count + 1):
      names[f'conv{block}_{conv}'] = f'features.{index}'
      if model.batch_norm:
        names[f'bn{block}_{conv}'] = f'features.{index + 1}'
      index += 3 if model.batch_norm else 2  # conv, [bn,] relu
    index += 1  # max-pool
  return names | {'fc6': 'classifier.0', 'fc7': 'classifier.3', 'fc8': 'classifier.6'}


def _torch_key(path: tuple[str, ...], vgg_names: dict[str, str] | None) -> str:
  collection, *modules, leaf = path
  if vgg_names is not None:
    prefix = vgg_names[modules[0]]
  else:  # layer1_0/downsample_bn -> layer1.0.downsample.1
    prefix = '.'.join(modules).replace('_', '.').replace('downsample.conv', 'downsample.0').replace(
        'downsample.bn', 'downsample.1')
  return f'{prefix}.{_TORCH_LEAF[(collection, leaf)]}'


def _torch_shape(flax_shape: tuple) -> tuple:
  if len(flax_shape) == 4:  # [kh, kw, in, out] -> [out, in, kh, kw]
    return tuple(flax_shape[i] for i in (3, 2, 0, 1))
  return tuple(reversed(flax_shape))  # [in, out] -> [out, in]; vectors unchanged


def _to_flax(array: np.ndarray) -> np.ndarray:
  array = np.asarray(array, np.float32)
  if array.ndim == 4:
    return np.ascontiguousarray(array.transpose(2, 3, 1, 0))
  return np.ascontiguousarray(array.T)


def torch_layout(model: nn.Module, *, outputs: Sequence[str] | None = None) -> dict[str, tuple]:
  """{torchvision key: (Flax variable path, torch shape)} for the variables `outputs` (None: all) need."""
  vgg_names = _torch_module_names(model) if isinstance(model, vgg.VGG) else None
  return {_torch_key(path, vgg_names): (path, _torch_shape(shape))
          for path, shape in variable_shapes(model, outputs=outputs).items()}


def _listing(noun: str, items: list[str]) -> str:
  shown = ', '.join(items[:_SHOWN_PER_KIND]) + (
      f', ... ({len(items) - _SHOWN_PER_KIND} more)' if len(items) > _SHOWN_PER_KIND else '')
  return f'{len(items)} {noun}{"s" if len(items) != 1 else ""} ({shown})'


def _check_match(found: Mapping[str, tuple], known: set[str], needed: Mapping[str, tuple], *,
                 source: str, target: str):
  """Raises one InputError listing needed-but-missing, unknown and mis-shaped keys."""
  missing = [key for key in needed if key not in found]
  unexpected = sorted(key for key in found if key not in known)
  misshaped = [f'{key} {tuple(found[key])} instead of {tuple(shape)}'
               for key, shape in needed.items() if key in found and tuple(found[key]) != tuple(shape)]
  problems = [_listing(kind, items) for kind, items in (
      ('missing key', missing), ('unexpected key', unexpected), ('mis-shaped key', misshaped)) if items]
  if problems:
    raise errors.InputError(f'{source}: weights do not fit {target}: ' + '; '.join(problems))


def _normalized_keys(state_dict: Mapping[str, np.ndarray], model: nn.Module) -> dict[str, np.ndarray]:
  """Drops num_batches_tracked and a DataParallel `module.` prefix; maps timm's VGG head names."""
  arrays = {key: value for key, value in state_dict.items() if not key.endswith('num_batches_tracked')}
  if arrays and all(key.startswith('module.') for key in arrays):
    arrays = {key[len('module.'):]: value for key, value in arrays.items()}
  if isinstance(model, vgg.VGG):
    renamed = {}
    for key, value in arrays.items():
      for timm_prefix, torch_prefix in _TIMM_VGG_HEAD.items():
        if key.startswith(timm_prefix):
          key = torch_prefix + key[len(timm_prefix):]
          # timm's fc1 is a 7x7 conv over [512, 7, 7] = torchvision's Linear over the NCHW flattening.
          value = value.reshape(value.shape[0], -1) if np.ndim(value) == 4 else value
      renamed[key] = value
    arrays = renamed
  return arrays


def _unflatten(flat: Mapping[tuple, Any]) -> dict:
  return traverse_util.unflatten_dict({path: jnp.asarray(value) for path, value in flat.items()})


def variables_from_state_dict(state_dict: Mapping[str, np.ndarray], model: nn.Module, *,
                              outputs: Sequence[str] | None = None, source: str = 'state dict',
                              target: str | None = None) -> dict:
  """Flax variables {'params', 'batch_stats'?} of `model` from a torchvision/timm state dict of arrays.

  Raises InputError naming `source` if keys are missing, unexpected or of the wrong shape.
  """
  arrays = _normalized_keys(state_dict, model)
  needed = torch_layout(model, outputs=outputs)
  known = needed.keys() if outputs is None else torch_layout(model).keys()
  _check_match({key: np.shape(value) for key, value in arrays.items()}, set(known),
               {key: shape for key, (_, shape) in needed.items()}, source=source,
               target=target or type(model).__name__)
  return _unflatten({path: _to_flax(arrays[key]) for key, (path, _) in needed.items()})


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """{key: numpy array} from a .safetensors file (no torch) or a torch .pth/.pt/.bin state dict.

  Floating arrays are converted to float32 when mapped; numpy cannot hold bfloat16, so a bfloat16
  .safetensors file raises InputError (convert it to float32 first).
  """
  path = Path(path)
  if path.suffix == '.safetensors':
    from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
    try:
      return safetensors_numpy.load_file(str(path))
    except Exception as error:  # pylint: disable=broad-except  (safetensors raises several types)
      raise errors.InputError(f'{path}: cannot read as safetensors: {error}') from error
  if path.suffix not in TORCH_SUFFIXES:
    raise errors.InputError(f'{path}: unknown weights file type {path.suffix!r}; expected .safetensors, '
                            f'{", ".join(TORCH_SUFFIXES)} or .msgpack')
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise errors.InputError(f'{path}: reading torch files needs torch (pip install torch), or convert '
                            'the file to .safetensors') from error
  try:
    loaded = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as error:  # pylint: disable=broad-except  (unpickling raises many types)
    raise errors.InputError(f'{path}: cannot read as a torch state dict: {error}') from error
  for wrapper in ('state_dict', 'model'):  # Training checkpoints nest the state dict.
    if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
      loaded = loaded[wrapper]
  tensors = {key: value for key, value in loaded.items() if torch.is_tensor(value)} if isinstance(
      loaded, Mapping) else {}
  if not tensors:
    raise errors.InputError(f'{path}: holds no state dict of tensors (got {type(loaded).__name__})')
  return {key: value.detach().to(torch.float32).numpy() for key, value in tensors.items()}


def save_variables(path: str | os.PathLike, variables: Mapping, *, arch: str):
  """Writes `variables` of backbone `arch` as adjax's Flax msgpack file (atomically)."""
  path = Path(path)
  payload = {'format': FLAX_FORMAT, 'arch': arch,
             'variables': jax.tree.map(lambda leaf: np.asarray(leaf, np.float32), dict(variables))}
  temporary = path.with_name(path.name + '.tmp')
  temporary.write_bytes(flax.serialization.msgpack_serialize(payload))
  temporary.replace(path)


def _read_flax_file(path: Path, model: nn.Module, *, arch: str, outputs) -> dict:
  try:
    payload = flax.serialization.msgpack_restore(path.read_bytes())
  except Exception as error:  # pylint: disable=broad-except  (msgpack raises several types)
    raise errors.InputError(f'{path}: cannot read as a Flax msgpack file: {error}') from error
  if (not isinstance(payload, dict) or payload.get('format') != FLAX_FORMAT or
      not isinstance(payload.get('variables'), dict)):
    raise errors.InputError(f'{path}: not a backbone file written by python -m adjax.convert_weights')
  if payload['arch'] != arch:
    raise errors.InputError(f'{path}: holds {payload["arch"]} weights, but the backbone is {arch}')
  found = traverse_util.flatten_dict(payload['variables'])
  needed = variable_shapes(model, outputs=outputs)
  known = needed.keys() if outputs is None else variable_shapes(model).keys()
  as_name = '/'.join
  _check_match({as_name(key): np.shape(value) for key, value in found.items()},
               {as_name(key) for key in known}, {as_name(key): shape for key, shape in needed.items()},
               source=str(path), target=arch)
  return _unflatten({key: found[key] for key in needed})


def load_backbone_variables(arch: str, path: str | os.PathLike | None, *,
                            outputs: Sequence[str] | None = None, rng: jax.Array | None = None,
                            **model_kwargs) -> dict:
  """Flax variables of backbone `arch` from the file `path` (the `model.backbone_weights` config key).

  Args:
    arch: a key of ARCHITECTURES ('vgg11_bn', 'wide_resnet50_2', ...).
    path: .safetensors, .pth/.pt/.bin or .msgpack file. Empty or None: random initialisation from
      `rng` (default PRNGKey(0)), announced with a loud warning.
    outputs: feature names the caller will request; only the variables they need are read and returned.
    rng: key for the random initialisation.
    **model_kwargs: passed to the architecture (e.g. num_classes).

  Returns:
    {'params': ..., 'batch_stats': ...} ('batch_stats' only for networks with BatchNorm).
  """
  model = create_model(arch, **model_kwargs)
  if not path:
    logging.warning('model.backbone_weights is empty: backbone %s is RANDOMLY initialised, not '
                    'pretrained. Give a .safetensors/.pth/.msgpack file to use pretrained weights.', arch)
    rng = jax.random.PRNGKey(0) if rng is None else rng
    init = jax.jit(functools.partial(model.init, outputs=outputs or ('logits',)))  # One compilation.
    return dict(init(rng, jnp.zeros(SAMPLE_SHAPE)))
  path = Path(path)
  if not path.is_file():
    raise errors.InputError(f'{path}: backbone weights file not found')
  if path.suffix == '.msgpack':
    return _read_flax_file(path, model, arch=arch, outputs=outputs)
  return variables_from_state_dict(read_state_dict(path), model, outputs=outputs, source=str(path),
                                   target=arch)
