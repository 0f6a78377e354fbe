"""`config.model.compute_dtype` (adjax.methods.compute_dtype / cast_floating) across the methods."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjax import methods
from adjax import train
from adjax.data import pipeline
from adjax.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configs import cae as cae_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import fcdd as fcdd_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import lamp as lamp_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import occ as occ_config  # pylint: disable=g-import-not-at-top,wrong-import-position

# Smoke presets with overrides; the EBM's bfloat16 compute has its own test (tests/ebm_test.py).
CONFIGS = {'fcdd': (fcdd_config, {}), 'fcdd_vgg': (fcdd_config, {'trunk': 'vgg11_bn', 'frozen_until': 'pool3'}),
           'occ': (occ_config, {}), 'lamp': (lamp_config, {}), 'cae': (cae_config, {})}


def fake_batch(size, num_images=4, seed=0):
  images = np.random.default_rng(seed).uniform(-1, 1, (num_images, size, size, 3)).astype(np.float32)
  labels = np.array([0, 1] * (num_images // 2), np.int32)  # FCDD's loss needs both kinds.
  masks = np.broadcast_to(labels[:, None, None], images.shape[:3]).astype(np.float32)
  return {'image': images, 'mask': masks, 'label': labels, 'has_mask': labels.astype(bool),
          'valid': np.ones(num_images, bool)}


def cosine(a, b):
  a, b = (np.asarray(x, np.float64).reshape(len(x), -1) for x in (a, b))
  return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize('name', CONFIGS)
def test_bfloat16_compute_stays_close_to_float32_and_keeps_float32_state(name):
  """From the same float32 variables, bfloat16 compute gives per-example losses within 5% and anomaly maps
  with cosine similarity > 0.99 of float32's, in float32; a pmapped train step keeps every parameter and
  model-state leaf float32."""
  module, model_overrides = CONFIGS[name]
  config = module.get_config('smoke')
  config.model.update(model_overrides)
  built = {}
  for dtype in ('float32', 'bfloat16'):
    config.model.compute_dtype = dtype
    built[dtype] = methods.get_method(config, train_size=16)
  batch = fake_batch(config.data.image_size)
  variables = dict(jax.jit(built['float32'].init)(jax.random.PRNGKey(0), jnp.asarray(batch['image'])))
  statistics = built['float32'].fit(variables, lambda: iter([batch]))
  params = variables.pop('params')
  losses, maps = {}, {}
  for dtype, method in built.items():
    losses[dtype] = np.asarray(jax.jit(method.loss_fn)(params, variables, batch, jax.random.PRNGKey(1))[0])
    maps[dtype] = method.score({'params': params, **variables}, statistics, jnp.asarray(batch['image']))[0]
  primary = config.eval.map
  assert losses['bfloat16'].dtype == np.float32 and maps['bfloat16'][primary].dtype == jnp.float32
  np.testing.assert_allclose(losses['bfloat16'], losses['float32'], rtol=0.05,
                             atol=0.05 * np.abs(losses['float32']).max())
  assert cosine(maps['bfloat16'][primary], maps['float32'][primary]).min() > 0.99
  assert not np.array_equal(maps['bfloat16'][primary], maps['float32'][primary])  # bfloat16 really ran.

  method = built['bfloat16']
  state = train.create_train_state(method, seed=0, sample_images=batch['image'][:1])
  sharding = pipeline.device_sharding()
  state, metrics = train.make_train_step(method)(pipeline.replicate(state, sharding),
                                                 pipeline.shard(batch, sharding))
  assert bool(metrics['finite'])
  for leaf in jax.tree_util.tree_leaves((state.params, state.model_state)):
    assert leaf.dtype != jnp.bfloat16


def test_compute_dtype_names_the_key_and_cast_floating_keeps_other_leaves():
  config = fcdd_config.get_config('smoke')
  assert methods.compute_dtype(config.model) is None
  config.model.compute_dtype = 'float16'
  with pytest.raises(InputError, match='config.model.compute_dtype'):
    methods.get_method(config)
  tree = {'w': jnp.ones(2), 'n': jnp.arange(2), 'none': None}
  cast = methods.cast_floating(tree, jnp.bfloat16)
  assert cast['w'].dtype == jnp.bfloat16 and cast['n'].dtype == tree['n'].dtype and cast['none'] is None
  assert methods.cast_floating(tree, None) is tree
