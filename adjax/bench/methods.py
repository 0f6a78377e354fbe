"""The benchmark cases of every method: its config's paper preset at a given size, as jit-able functions.

Each method (`adjax.methods.known_methods()`) maps to one or more variants: a config file under `configs/`,
a preset and overrides (`VARIANTS`; a method without an entry uses `configs/<name>.py:paper`). Each
variant gives the cases
  train_step   the pmapped train step of `adjax.train.make_train_step` on device-resident random batches
               (labels and masks zero), the state not carried over between calls;
  score        `method.score` pmapped over the devices as `adjax.evaluate` runs it, after `method.fit` on
               two random batches;
  sgld_chain   (EBM only) the SGLD chain of the train step alone, pmapped over the devices.
The data of every case is uniform in [-1, 1]; the image pipeline is measured apart (`input_wait`).

FLOPs: XLA counts a loop body once, so a case whose program holds a `lax.scan` of T iterations names the
body (`Case.loop`) and gets T - 1 more copies of its cost; pmapped programs are counted per device and
scaled by the number of devices (`Case.flops_scale`).
"""

import functools
import importlib.util
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from adjax import methods
from adjax import sampling
from adjax import train
from adjax.data import pipeline
from adjax.data import sources
from adjax.errors import InputError

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs'


class Variant(NamedTuple):
  name: str  # Row label, e.g. 'fcdd_unfrozen'.
  config_file: str  # Under CONFIG_DIR.
  preset: str
  overrides: dict  # Dotted config key -> value.


VARIANTS = {
    'ebm': (Variant('ebm', 'ebm.py', 'paper', {}),),
    'fcdd': (Variant('fcdd', 'fcdd.py', 'paper', {}),  # VGG11-BN to block4, frozen to pool3 (seed 000).
             Variant('fcdd_unfrozen', 'fcdd.py', 'paper', {'model.frozen_until': ''})),
    # Encoder every step (first epoch, or augmentation). The feature-cache path is not benchmarked: its host
    # callbacks deadlocked the pmapped step's all-reduce when timed here (2 CPU devices).
    'occ': (Variant('occ', 'occ.py', 'paper_b', {'occ.cache_features': False}),),
    'reconstruction': (Variant('lamp', 'lamp.py', 'paper', {}),  # seed 001 conv AE, 6 + 6 blocks, 256².
                       Variant('cae', 'cae.py', 'paper', {})),  # seed 003 Table 2 CO+DE AE, 224².
}


def variants_of(method_name: str) -> tuple[Variant, ...]:
  return VARIANTS.get(method_name, (Variant(method_name, f'{method_name}.py', 'paper', {}),))


class Case(NamedTuple):
  method: str
  variant: str
  case: str
  fn: Callable  # Jit-able; called as fn(*args).
  args: tuple
  images: int  # Images processed per call.
  flops_scale: int = 1  # Devices, for pmapped programs (cost analysis is per device).
  loop: tuple | None = None  # (body_fn, body_args, iterations) of a lax.scan inside `fn`.
  train_step: Callable | None = None  # The real train step and state, for the input-pipeline run.
  state: Any = None
  extra: dict = {}


def load_config(variant: Variant, *, config_dir: Path = CONFIG_DIR):
  """The variant's preset from `config_dir / variant.config_file`, with its overrides applied."""
  path = Path(config_dir) / variant.config_file
  if not path.exists():
    raise InputError(f'{path}: no config file for benchmark variant {variant.name!r}')
  spec = importlib.util.spec_from_file_location(f'adjax_bench_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant.preset)
  for key, value in variant.overrides.items():
    parent = config
    *path_keys, last = key.split('.')
    for part in path_keys:
      parent = parent[part]
    parent[last] = value
  return config


def _rescale_leading_resize(spec: str, *, size: int, paper_size: int) -> str:
  """'resize(240)|...' for 224 -> 'resize(round(240 * size / 224))|...': keeps crop margins at any size."""
  head, _, rest = spec.partition('|')
  if head.startswith('resize(') and head.endswith(')') and head[7:-1].isdigit():
    return f'resize({round(int(head[7:-1]) * size / paper_size)})|{rest}'
  return spec


def sized_config(variant: Variant, *, size: int, batch_size: int, sgld_steps: int, data_dir: str = '',
                 config_dir: Path = CONFIG_DIR):
  """The variant's config at `size`², batch `batch_size`, on the embedded brick textures."""
  config = load_config(variant, config_dir=config_dir)
  paper_size = config.data.image_size
  config.data.image_size = size
  config.data.name, config.data.category, config.data.data_dir = 'textures', 'brick', data_dir
  config.data.manual_dir = ''
  for key in ('train_preprocess', 'eval_preprocess'):
    config.data[key] = _rescale_leading_resize(config.data[key], size=size, paper_size=paper_size)
  config.train.batch_size = config.eval.batch_size = batch_size
  if config.method == 'ebm':
    from adjax.models import energy  # pylint: disable=g-import-not-at-top
    config.model.features = energy.features_for(size)
    config.ebm.sgld_steps = sgld_steps
  return config


def random_batch(*, batch_size: int, size: int, seed: int = 0) -> dict:
  """Host batch as the train pipeline gives it: images U(-1, 1), zero masks and labels."""
  rng = np.random.default_rng(seed)
  images = rng.uniform(-1, 1, (batch_size, size, size, 3)).astype(np.float32)
  return {'image': images, 'mask': np.zeros(images.shape[:3], np.float32),
          'label': np.zeros(batch_size, np.int64), 'has_mask': np.zeros(batch_size, bool),
          'category_index': np.zeros(batch_size, np.int64)}


def _sgld_fn(config):
  """`sampling.sgld` with the method's chain settings (as `adjax.methods.ebm` builds it)."""
  hp = config.ebm
  return functools.partial(
      sampling.sgld, step_size=hp.step_size, noise_scale=hp.noise_scale,
      grad_clip=hp.get('grad_clip') or None,
      value_range=tuple(hp.value_range) if hp.get('value_range') else None)


def build_cases(variant: Variant, config, *, method_name: str) -> list[Case]:
  """train_step, score (and sgld_chain for the EBM) of one sized config."""
  batch_size, size = config.train.batch_size, config.data.image_size
  num_devices = jax.local_device_count()
  if batch_size % num_devices:
    raise InputError(f'--batch_size: {batch_size} does not split over {num_devices} devices')
  # A nominal training-set size: only schedules and the OCC cache capacity depend on it.
  method = methods.get_method(config, train_size=4 * batch_size)
  host_batch = random_batch(batch_size=batch_size, size=size)
  sharding = pipeline.device_sharding()
  state = train.create_train_state(method, seed=0, sample_images=host_batch['image'][:1])
  replicated = pipeline.replicate(state, sharding)
  device_batch = pipeline.shard(host_batch, sharding)
  step = train.make_train_step(method)
  common = dict(method=method_name, variant=variant.name, images=batch_size)
  cases = []

  loop = None
  if method_name == 'ebm':
    from adjax.methods import ebm  # pylint: disable=g-import-not-at-top
    model = ebm.build_model(config)
    sgld = _sgld_fn(config)
    steps = config.ebm.sgld_steps

    def chain(params, x, key, num_steps):
      return sgld(lambda images: model.apply({'params': params}, images), x, key, num_steps=num_steps)

    per_device = jax.numpy.asarray(host_batch['image'][:batch_size // num_devices])
    key = jax.random.PRNGKey(0)
    loop = (functools.partial(chain, num_steps=1), (state.params, per_device, key), steps - 1)
    pchain = jax.pmap(functools.partial(chain, num_steps=steps), in_axes=(None, 0, None))
    cases.append(Case(case='sgld_chain', fn=pchain, args=(replicated.params, device_batch['image'], key),
                      flops_scale=num_devices, loop=loop, extra={'sgld_steps': steps}, **common))

  cases.insert(0, Case(case='train_step', fn=lambda s, b: step(s, b), args=(replicated, device_batch),
                       flops_scale=num_devices, loop=loop, train_step=step, state=replicated,
                       extra={'sgld_steps': config.ebm.sgld_steps} if method_name == 'ebm' else {},
                       **common))

  variables = train.variables_of(state)
  fit_batches = [dict(random_batch(batch_size=batch_size, size=size, seed=seed),
                      valid=np.ones(batch_size, bool)) for seed in (1, 2)]
  statistics = method.fit(variables, lambda: iter(fit_batches))
  pscore = jax.pmap(method.score, in_axes=(None, None, 0))
  cases.append(Case(case='score', fn=pscore, args=(variables, statistics, device_batch['image']),
                    flops_scale=num_devices, **common))
  return cases


def input_wait(config, case: Case, *, steps: int, compiled=None) -> dict:
  """Fraction of step time spent in `next(batches)` over `steps` real train steps on the embedded data.

  Batches come from `adjax.data.pipeline.device_iterator` over the config's train split and
  preprocessing; one untimed step first. The step is `compiled` (the case's compiled train step) when the
  pipeline's batches fit its signature, else the real train step (compiled by that first step). The state
  is carried as in training.
  """
  data = config.data
  source, _ = sources.load_split(name=data.name, category=data.category, split='train',
                                 data_dir=data.data_dir, manual_dir=None)
  dataset = pipeline.train_dataset(source, preprocess=data.train_preprocess.format(image_size=data.image_size),
                                   global_batch_size=config.train.batch_size, seed=0)
  batches = pipeline.device_iterator(dataset, start_step=0, sharding=pipeline.device_sharding())
  state, step, first = case.state, case.train_step, next(batches)
  if compiled is not None:
    try:
      state, _ = jax.block_until_ready(compiled(state, first))
      step = compiled
    except (TypeError, ValueError):  # Dtypes or shapes of the real batches differ from the random ones.
      pass
  if step is case.train_step:
    state, _ = jax.block_until_ready(step(state, first))
  waits, totals = [], []
  for _ in range(steps):
    start = time.perf_counter()
    batch = next(batches)
    fetched = time.perf_counter()
    state, _ = jax.block_until_ready(step(state, batch))
    waits.append(fetched - start)
    totals.append(time.perf_counter() - start)
  return {'input_wait_fraction': sum(waits) / sum(totals),
          'input_run_step_ms': float(np.median(totals)) * 1e3, 'input_run_steps': steps,
          'input_run_path': 'compiled' if step is compiled else 'train_step'}
