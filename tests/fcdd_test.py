"""FCDD method: smoke run through the train loop, training lowers the loss, freezing, weights, scores."""

import json
import sys
from pathlib import Path

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjax import train
from adjax.data import pipeline
from adjax.errors import InputError
from adjax.methods import fcdd
from adjax.models import fcdd as fcdd_models
from adjax.models import weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configs import fcdd as fcdd_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import hsc as hsc_config  # pylint: disable=g-import-not-at-top,wrong-import-position


def fixed_batch(size=32, per_device=2, num_devices=2, seed=0):
  """Half normal images, half with an 8x8 anomalous square (label 1, pixel mask)."""
  rng = np.random.default_rng(seed)
  count = per_device * num_devices
  images = rng.uniform(0, 1, (count, size, size, 3)).astype(np.float32)
  masks = np.zeros((count, size, size), np.float32)
  labels = np.zeros(count, np.int32)
  for index in range(1, count, 2):
    top, left = rng.integers(0, size - 8, 2)
    masks[index, top:top + 8, left:left + 8] = 1
    images[index, top:top + 8, left:left + 8] = 1.0
    labels[index] = 1
  return {'image': images, 'mask': masks, 'label': labels, 'has_mask': np.ones(count, bool)}


def test_smoke_run_writes_sane_results(tmp_path):
  config = fcdd_config.get_config('smoke,hsc')
  config.data.data_dir = str(tmp_path / 'tfds')
  results = train.train_and_evaluate(config, tmp_path / 'run')
  written = json.loads((tmp_path / 'run' / 'results.json').read_text())
  assert written['method'] == 'fcdd' and written['config']['fcdd']['loss'] == 'hsc'
  assert written['num_train_steps'] == 4 and written['dataset'] == 'textures'
  for key in ('image_auroc', 'pixel_auroc', 'pixel_ap', 'pixel_aupro', 'image_f1_max'):
    assert 0 <= written[key] <= 1, key
  assert set(results['image_auroc_by_score']) == {'mean', 'max'}
  assert set(results['pixel_metrics_by_map']) == {'heatmap'}


@pytest.mark.parametrize('loss', ['fcdd', 'hsc'])
def test_training_steps_lower_the_loss_on_a_fixed_batch(loss):
  config = fcdd_config.get_config(f'smoke,{loss}')
  config.optim.learning_rate = 1e-2
  method = fcdd.make(config, train_size=100)
  batch = fixed_batch()
  state = train.create_train_state(method, seed=0, sample_images=batch['image'][:1])
  step = train.make_train_step(method)
  sharding = pipeline.device_sharding()
  state = pipeline.replicate(state, sharding)
  device_batch = pipeline.shard(batch, sharding)
  losses = []
  for _ in range(6):
    state, metrics = step(state, device_batch)
    losses.append(float(metrics['loss']))
  assert np.all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses
  assert float(metrics['heat_anomalous']) > float(metrics['heat_normal'])


def test_scores_are_the_upsampled_heatmap_and_its_reductions():
  config = fcdd_config.get_config('smoke')
  method = fcdd.make(config)
  images = fixed_batch(num_devices=1)['image']
  variables = jax.jit(method.init)(jax.random.PRNGKey(0), images[:1])
  maps, scores = method.score(variables, {}, images)
  model = fcdd_models.FCDDNet(trunk='cnn', cnn_layers=tuple(config.model.cnn_layers))
  low = np.asarray(model.apply(variables, images), np.float64)
  huber = np.sqrt(low ** 2 + 1) - 1
  field = fcdd_models.receptive_field(
      fcdd_models.trunk_layers('cnn', cnn_layers=config.model.cnn_layers), input_size=32)
  matrix = fcdd_models.upsampling_matrix(field, output_size=32, std=fcdd_models.default_std(field.size))
  expected = np.einsum('Hh,bhw,Ww->bHW', matrix, huber, matrix)
  np.testing.assert_allclose(maps['heatmap'], expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(scores['mean'], huber.mean((1, 2)), rtol=1e-4)
  np.testing.assert_allclose(scores['max'], expected.max((1, 2)), rtol=1e-4)


def test_empty_mask_of_an_anomalous_image_means_the_whole_image():
  masks = np.zeros((3, 4, 4), np.float32)
  masks[2, 1, 1] = 1
  out = np.asarray(fcdd.effective_masks(jnp.asarray(masks), jnp.asarray([0, 1, 1])))
  np.testing.assert_array_equal(out[0], 0)
  np.testing.assert_array_equal(out[1], 1)
  np.testing.assert_array_equal(out[2], masks[2])


def test_learning_rate_decays_per_fcdd_epoch():
  config = fcdd_config.get_config('paper')
  steps = fcdd.fcdd_steps_per_epoch(config, train_size=256)
  assert steps == 10 * 256 / 128  # an FCDD epoch = 10 passes over the training images
  schedule = fcdd.learning_rate_schedule(config.optim, steps_per_epoch=steps)
  assert float(schedule(0)) == pytest.approx(1e-3)
  assert float(schedule(steps - 1)) == pytest.approx(1e-3)
  assert float(schedule(3 * steps)) == pytest.approx(1e-3 * 0.985 ** 3)
  semi = fcdd_config.get_config('paper_semi')
  # The training split of 256 items holds 128 normal images and 128 anomaly slots.
  assert fcdd.fcdd_steps_per_epoch(semi, train_size=256) == steps / 2


def test_vgg_trunk_loads_weights_freezes_up_to_pool3_and_keeps_bn_updating(tmp_path):
  rng = np.random.default_rng(7)  # A weights file of random values (variances positive).
  backbone = traverse_util.unflatten_dict({
      path: rng.uniform(0.5, 1.5, shape).astype(np.float32)
      for path, shape in weights.variable_shapes(weights.create_model('vgg11_bn'),
                                                 outputs=('block4',)).items()})
  path = tmp_path / 'vgg11_bn.msgpack'
  weights.save_variables(path, backbone, arch='vgg11_bn')
  config = fcdd_config.get_config('smoke')
  config.model.update(trunk='vgg11_bn', frozen_until='pool3', backbone_weights=str(path))
  config.optim.learning_rate = 1e-2
  method = fcdd.make(config, train_size=8)
  batch = fixed_batch(num_devices=2, per_device=1)
  state = train.create_train_state(method, seed=0, sample_images=batch['image'][:1])
  loaded = jax.tree.map(np.asarray, state.params['backbone'])
  for name, tree in backbone['params'].items():
    np.testing.assert_array_equal(loaded[name]['kernel' if 'conv' in name else 'scale'],
                                  tree['kernel' if 'conv' in name else 'scale'])
  step = train.make_train_step(method)
  new_state, metrics = step(state, pipeline.shard(batch, pipeline.device_sharding()))
  assert bool(metrics['finite'])
  old, new = state.params['backbone'], new_state.params['backbone']
  for name in old:
    changed = any(np.any(np.asarray(a) != np.asarray(b))
                  for a, b in zip(jax.tree.leaves(old[name]), jax.tree.leaves(new[name])))
    frozen = name.split('_')[0] in ('conv1', 'conv2', 'conv3', 'bn1', 'bn2', 'bn3')
    assert changed != frozen, name  # Frozen prefix: not one value moves; block 4 trains.
  assert np.any(np.asarray(new_state.params['head']['kernel']) != np.asarray(state.params['head']['kernel']))
  # Reference behaviour: BatchNorm statistics of the frozen prefix still update in training mode.
  assert np.any(np.asarray(new_state.model_state['batch_stats']['backbone']['bn1_1']['mean']) !=
                np.asarray(state.model_state['batch_stats']['backbone']['bn1_1']['mean']))


def test_bad_config_values_raise_input_error():
  config = fcdd_config.get_config('smoke')
  config.fcdd.loss = 'l2'
  with pytest.raises(InputError, match='config.fcdd.loss'):
    fcdd.make(config)
  config = fcdd_config.get_config('smoke')
  config.model.frozen_until = 'pool3'
  with pytest.raises(InputError, match='frozen_until'):
    fcdd.make(config)
  with pytest.raises(ValueError, match='unknown preset or loss'):
    fcdd_config.get_config('smoke,l1')
  assert fcdd_config.parse_arg('paper_semi,hsc') == ('paper_semi', 'hsc')
  assert fcdd_config.parse_arg(None) == ('default', 'fcdd')


def test_presets():
  assert hsc_config.get_config('smoke').fcdd.loss == 'hsc'
  assert hsc_config.get_config('paper_semi').to_dict() == fcdd_config.get_config('paper_semi,hsc').to_dict()
  paper, semi = fcdd_config.get_config('paper'), fcdd_config.get_config('paper_semi')
  assert (paper.model.trunk, paper.model.frozen_until, paper.data.image_size) == ('vgg11_bn', 'pool3', 224)
  assert 'confetti' in paper.data.train_preprocess and 'confetti' not in semi.data.train_preprocess
  assert semi.data.labeled_anomalies_per_type == 1 and paper.data.labeled_anomalies_per_type == 0
  assert fcdd_config.get_config().model.trunk == 'cnn'  # The default trains from scratch.
