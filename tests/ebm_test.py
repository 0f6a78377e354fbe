"""The EBM method wired into the train loop: one trace, scan inside, statistics and scores vs numpy."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjax import train
from adjax.data import pipeline
from adjax.errors import InputError
from adjax.methods import ebm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configs import ebm as ebm_config  # pylint: disable=g-import-not-at-top,wrong-import-position


def smoke_config(**ebm_overrides):
  config = ebm_config.get_config('smoke')
  config.ebm.update(ebm_overrides)
  return config


def fake_batch(num_devices=2, per_device=2, size=16, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.uniform(-1, 1, (num_devices * per_device, size, size, 3)).astype(np.float32)
  return {'image': images, 'mask': np.zeros(images.shape[:3], np.float32),
          'label': np.zeros(len(images), np.int32), 'has_mask': np.zeros(len(images), bool)}


def test_train_step_traces_once_and_runs_sgld_as_scan():
  method = ebm.make(smoke_config())
  traces = []
  counting = method._replace(loss_fn=lambda *args: (traces.append(1), method.loss_fn(*args))[1])
  state = train.create_train_state(counting, seed=0, sample_images=fake_batch()['image'][:1])
  step = train.make_train_step(counting)
  sharding = pipeline.device_sharding()
  state = pipeline.replicate(state, sharding)
  for seed in range(3):
    state, metrics = step(state, pipeline.shard(fake_batch(seed=seed), sharding))
  assert int(state.step) == 3 and bool(metrics['finite'])
  assert len(traces) == 1
  jaxpr = jax.make_jaxpr(lambda p, b, r: method.loss_fn(p, state.model_state, b, r))(
      state.params, jax.tree_util.tree_map(jnp.asarray, fake_batch(num_devices=1)), jax.random.PRNGKey(0))
  assert 'scan' in str(jaxpr)


def test_fit_and_score_match_numpy():
  config = smoke_config()
  method = ebm.make(config)
  images = fake_batch(num_devices=1, per_device=10)['image']
  variables = jax.jit(method.init)(jax.random.PRNGKey(1), images[:1])
  gradient = jax.vmap(jax.grad(lambda x: -method_energy(method, variables, x[None])[0]))(images)
  gradient = np.asarray(gradient, np.float64)

  batches = [{'image': images[:4], 'valid': np.ones(4, bool)},
             {'image': np.concatenate([images[4:], np.zeros((2,) + images.shape[1:], np.float32)]),
              'valid': np.arange(8) < 6}]  # The padded rows must not count.
  statistics = method.fit(variables, lambda: iter(batches))
  np.testing.assert_allclose(statistics['mean'], gradient.mean(0), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(statistics['std'], np.maximum(gradient.std(0), config.ebm.std_eps),
                             rtol=1e-3, atol=1e-7)

  maps, scores = method.score(variables, statistics, images)
  standardized = (gradient - gradient.mean(0)) / np.maximum(gradient.std(0), config.ebm.std_eps)
  expected_map = np.sqrt((standardized ** 2).sum(-1))  # L2 over channels (eval.norm = 'l2')
  np.testing.assert_allclose(maps['std'], expected_map, rtol=2e-3, atol=2e-3)
  np.testing.assert_allclose(maps['raw'], np.sqrt((gradient ** 2).sum(-1)), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(scores['std'], np.sqrt((expected_map ** 2).sum((1, 2))), rtol=2e-3)
  np.testing.assert_allclose(scores['std_max'], expected_map.max((1, 2)), rtol=2e-3)
  train_scores = np.asarray(scores['std'])
  assert statistics['image_threshold']['std'] == pytest.approx(
      train_scores.mean() + 3 * train_scores.std(), rel=1e-3)
  assert method.thresholds(statistics)['image'] == pytest.approx(float(statistics['image_threshold']['std']))


def method_energy(method, variables, images):
  _, scores = method.score(variables, {'mean': 0.0, 'std': 1.0}, images)
  return scores['energy']


def test_replay_buffer_stays_identical_across_devices():
  method = ebm.make(smoke_config(chain_init='replay', replay_size=32, reinit_probability=0.0))
  state = train.create_train_state(method, seed=0, sample_images=fake_batch()['image'][:1])
  before = np.asarray(state.model_state['replay'].samples)
  step = train.make_train_step(method)
  state, _ = step(state, pipeline.shard(fake_batch(), pipeline.device_sharding()))
  after = state.model_state['replay'].samples
  # out_axes=None returns one copy; both device shards must hold the same values.
  shards = [np.asarray(shard.data) for shard in after.addressable_shards]
  for shard in shards[1:]:
    np.testing.assert_array_equal(shard, shards[0])
  changed = np.any(np.asarray(after) != before, axis=(1, 2, 3))
  assert 2 <= changed.sum() <= 4  # Both devices' two chains were written (slots may coincide).


def test_exploding_training_stops_with_clear_message(tmp_path):
  config = smoke_config()
  config.optim.learning_rate = 1e30
  config.train.num_steps = 4
  config.train.checkpoint_every = 100
  config.data.update(name='digits', category='0', data_dir=str(tmp_path / 'tfds'))
  with pytest.raises(train.TrainingDiverged, match='diverged at step 2'):
    train.train_and_evaluate(config, tmp_path / 'run')
  assert not (tmp_path / 'run' / 'results.json').exists()


def test_bfloat16_compute_stays_close_to_float32_and_keeps_float32_state():
  """`model.compute_dtype='bfloat16'`: energies within 3% and gradient maps (what SGLD and scoring use)
  with cosine similarity > 0.99 of float32's, from the same float32 parameters; parameters stay float32."""
  images = jnp.asarray(fake_batch(num_devices=1, per_device=4, size=16)['image'])
  models = {}
  for dtype in ('float32', 'bfloat16'):
    config = smoke_config()
    config.model.compute_dtype = dtype
    models[dtype] = ebm.build_model(config)
  params = jax.jit(models['float32'].init)(jax.random.PRNGKey(0), images)
  energies, grads = {}, {}
  for dtype, model in models.items():
    energy_fn = lambda x, model=model: model.apply(params, x)  # pylint: disable=cell-var-from-loop
    energies[dtype] = np.asarray(jax.jit(energy_fn)(images))
    grads[dtype] = np.asarray(jax.jit(jax.grad(lambda x, f=energy_fn: jnp.sum(f(x))))(images)).reshape(4, -1)
  assert energies['bfloat16'].dtype == np.float32 and grads['bfloat16'].dtype == np.float32
  np.testing.assert_allclose(energies['bfloat16'], energies['float32'],
                             rtol=0.03, atol=0.03 * np.abs(energies['float32']).max())
  cosine = np.sum(grads['bfloat16'] * grads['float32'], 1) / (
      np.linalg.norm(grads['bfloat16'], axis=1) * np.linalg.norm(grads['float32'], axis=1))
  assert cosine.min() > 0.99
  assert not np.array_equal(energies['bfloat16'], energies['float32'])  # bfloat16 really was used.
  config = smoke_config()
  config.model.compute_dtype = 'bfloat16'
  config.ebm.sgld_steps = 1  # The state's dtypes are the point here, not the chain.
  method = ebm.make(config)
  state = train.create_train_state(method, seed=0, sample_images=np.asarray(images[:1]))
  step = train.make_train_step(method)
  sharding = pipeline.device_sharding()
  state, metrics = step(pipeline.replicate(state, sharding), pipeline.shard(fake_batch(size=16), sharding))
  assert bool(metrics['finite'])
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(state.params))
  config.model.compute_dtype = 'float16'
  with pytest.raises(InputError, match='compute_dtype'):
    ebm.make(config)
