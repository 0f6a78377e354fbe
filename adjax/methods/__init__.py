"""Methods plug into the one train loop through `Method`, a bundle of pure functions.

A method module `adjax/methods/<name>.py` defines `make(config, *, train_size=None) -> Method`;
`get_method(config)` picks it by `config.method` (every module here with a `make` is a method). Only `make`
reads the config; the functions it returns take arrays. `train_size` (number of training images, given by
the loop) lets a method express schedules in epochs.

The contract between a method and the loop (shapes per device; the loop adds `pmap`, `pmean`, reductions):
  init(rng, images) -> variables            `{'params': ..., <other collections, e.g. 'batch_stats'>}`
  loss_fn(params, model_state, batch, rng) -> (per_example_loss [batch], (new_model_state, metrics))
      `model_state` is `variables` without 'params'; `metrics` maps names to per-example `[batch]` or scalar
      values (averaged by the loop). The loop averages the loss over the batch and the devices.
  fit(variables, make_batches) -> statistics   post-training statistics; `make_batches()` gives a fresh
      iterator over the training split in eval preprocessing (host batches with a `valid [batch]` flag).
      In a multi-process run each process sees only its share (`adjax.processes.shard()`): per-image values
      go through `processes.gather_rows`, running statistics through `processes.merge_across`.
  score(variables, statistics, images) -> (maps, scores)
      `maps`: name -> `[batch, height, width]` anomaly maps at input resolution (higher = more anomalous);
      `scores`: name -> `[batch]` image scores. `config.eval.map` / `config.eval.score` pick the primary ones.
  optimizer: an optax GradientTransformation.
  thresholds(statistics) -> {'image': float | None, 'pixel': float | None}: the method's own decision thresholds
      from training data only (e.g. three sigma); None where it has none. Optionally 'image_by_category':
      `[num_categories]` thresholds, image i decided by `T[category_index[i]]` (multi-category datasets).
  sync_state(model_state, axis_name) -> model_state: makes per-device model state agree after a step
      (default: `lax.pmean`, right for BatchNorm statistics).
"""

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from adjax.errors import InputError


class Method(NamedTuple):
  name: str
  init: Callable[..., Any]
  loss_fn: Callable[..., Any]
  fit: Callable[[Any, Callable[[], Iterable[dict]]], Any]
  score: Callable[..., Any]
  optimizer: optax.GradientTransformation
  thresholds: Callable[[Any], dict] = lambda statistics: {'image': None, 'pixel': None}
  sync_state: Callable[[Any, str], Any] = lambda model_state, axis_name: jax.lax.pmean(model_state, axis_name)


def known_methods() -> tuple[str, ...]:
  """Names of the method modules in this package."""
  return tuple(sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith('_')))


def get_method(config, *, train_size: int | None = None) -> Method:
  """The Method of `config.method`; `train_size` = number of training images (for epoch schedules)."""
  name = config.method
  if name not in known_methods():
    raise InputError(f'config.method: unknown method {name!r}; known: {", ".join(known_methods())}')
  return importlib.import_module(f'adjax.methods.{name}').make(config, train_size=train_size)


# `config.model.compute_dtype`: the dtype convs and matmuls compute in. Parameters, optimizer state, batch
# statistics, losses and scores stay float32 (mixed precision for accelerators; README, Performance).
COMPUTE_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}


def compute_dtype(model_config):
  """The module `dtype` for `model_config.compute_dtype` ('float32', the default, gives None: from the inputs)."""
  name = model_config.get('compute_dtype', 'float32')
  if name not in COMPUTE_DTYPES:
    raise InputError(f"config.model.compute_dtype: 'float32' or 'bfloat16', got {name!r}")
  return COMPUTE_DTYPES[name]


def cast_floating(tree, dtype):
  """Every floating-point array leaf of `tree` as `dtype` (other leaves unchanged); dtype None: tree as it is.

  Mixed precision for modules without a `dtype` attribute: apply them to `cast_floating(params, bf16)` and
  bf16 inputs (gradients flow back through the casts to the float32 parameters), then cast the outputs back
  with `cast_floating(outputs, jnp.float32)`.
  """
  if dtype is None:
    return tree
  return jax.tree_util.tree_map(
      lambda leaf: leaf.astype(dtype) if jnp.issubdtype(jnp.result_type(leaf), jnp.floating) else leaf, tree)
