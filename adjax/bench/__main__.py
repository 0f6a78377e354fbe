"""Method benchmarks: `python -m adjax.bench [--methods ebm] [--sizes 64,128] [--json out.json]`.

For every method and image size it times, after compilation, the whole training iteration (the pmapped
train step of `adjax.train` on device-resident batches) and reports the median over `--repeats` runs as
ms and images/s. For the EBM it also times the SGLD chain alone and reports SGLD steps/s.
"""

import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags

from adjax import xla_options

xla_options.set_defaults()  # As `python -m adjax.main` does; ADJAX_XLA_DEFAULTS=0 measures without.

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

_METHODS = flags.DEFINE_list('methods', ['ebm'], 'Methods to benchmark.')
_SIZES = flags.DEFINE_list('sizes', ['64', '128'], 'Square image sizes.')
_BATCH = flags.DEFINE_integer('batch_size', 16, 'Global batch size.')
_SGLD_STEPS = flags.DEFINE_integer('sgld_steps', 100, 'SGLD steps per chain (EBM).')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed runs per case (median reported).')
_STRIDED_IMPL = flags.DEFINE_enum('strided_impl', 'space_to_depth', ['space_to_depth', 'direct'],
                                  'EBM stride-2 conv implementation.')
_JSON = flags.DEFINE_string('json', None, 'Also write the results to this JSON file.')


def _median_seconds(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # Compile and warm up.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def ebm_cases(size: int, *, batch_size: int, sgld_steps: int, repeats: int) -> list[dict]:
  """Times one CD iteration (chain + update) and the SGLD chain alone at `size`²."""
  from adjax import sampling  # pylint: disable=g-import-not-at-top
  from adjax import train
  from adjax.data import pipeline
  from adjax.methods import ebm
  from adjax.models import energy
  from configs import ebm as ebm_config

  config = ebm_config.get_config('paper')
  config.data.image_size = size
  config.model.features = energy.features_for(size)
  config.ebm.sgld_steps = sgld_steps
  config.model.strided_impl = _STRIDED_IMPL.value
  method = ebm.make(config)
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (batch_size, size, size, 3)).astype(np.float32)
  batch = {'image': images, 'mask': np.zeros(images.shape[:3], np.float32),
           'label': np.zeros(batch_size, np.int32), 'has_mask': np.zeros(batch_size, bool)}
  sharding = pipeline.device_sharding()
  state = pipeline.replicate(train.create_train_state(method, seed=0, sample_images=images[:1]), sharding)
  device_batch = pipeline.shard(batch, sharding)
  step = train.make_train_step(method)
  iteration = _median_seconds(lambda: step(state, device_batch)[0].params, repeats)

  model = energy.EnergyNet(first_features=config.model.first_features, features=tuple(config.model.features),
                           strided_impl=config.model.strided_impl)
  energy_fn = lambda x: model.apply({'params': state.params}, x)
  chain = jax.jit(lambda x, key: sampling.sgld(energy_fn, x, key, num_steps=sgld_steps, step_size=1.0,
                                               noise_scale=0.01))
  x0, key = jax.numpy.asarray(images), jax.random.PRNGKey(0)
  chain_seconds = _median_seconds(lambda: chain(x0, key), repeats)
  common = dict(method='ebm', strided_impl=config.model.strided_impl, image_size=size, batch_size=batch_size, sgld_steps=sgld_steps,
                devices=jax.local_device_count(), repeats=repeats)
  return [
      dict(common, case='train_iteration', ms=iteration * 1e3, images_per_second=batch_size / iteration),
      dict(common, case='sgld_chain', ms=chain_seconds * 1e3,
           sgld_steps_per_second=sgld_steps / chain_seconds,
           images_per_second=batch_size / chain_seconds),
  ]


CASES = {'ebm': ebm_cases}


def main(argv):
  del argv
  sys.path.insert(0, os.getcwd())
  unknown = [m for m in _METHODS.value if m not in CASES]
  if unknown:
    print(f'adjax: error: --methods: unknown {unknown}; known: {sorted(CASES)}', file=sys.stderr)
    sys.exit(2)
  rows = []
  print(f'jax {jax.__version__}, {jax.local_device_count()} device(s), '
        f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}')
  for name in _METHODS.value:
    for size in _SIZES.value:
      for row in CASES[name](int(size), batch_size=_BATCH.value, sgld_steps=_SGLD_STEPS.value,
                             repeats=_REPEATS.value):
        rows.append(row)
        extra = (f', {row["sgld_steps_per_second"]:.1f} SGLD steps/s'
                 if 'sgld_steps_per_second' in row else '')
        print(f'{row["method"]:5s} {row["case"]:16s} {size:>4s}² batch {row["batch_size"]}: '
              f'{row["ms"]:9.1f} ms, {row["images_per_second"]:8.2f} images/s{extra}', flush=True)
  if _JSON.value:
    with open(_JSON.value, 'w') as file:
      json.dump(rows, file, indent=2)


if __name__ == '__main__':
  app.run(main)
