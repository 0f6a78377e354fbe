"""Faults: SIGKILL at random points (and mid-save) then restart; divergence stop and rollback."""

import json
import os
from pathlib import Path
import random
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from adjax import train
from adjax.data import sources
from adjax.methods import Method

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from configs import ebm as ebm_config  # pylint: disable=g-import-not-at-top,wrong-import-position
TMP_MARK = 'orbax-checkpoint-tmp'
TIMING_KEYS = ('train_seconds', 'train_images_per_second', 'eval_seconds')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """The embedded textures, built once here so concurrent runs never race to build them."""
  directory = tmp_path_factory.mktemp('tfds')
  smoke = ebm_config.get_config('smoke').data
  sources.load_split(name=smoke.name, category=smoke.category, split='train', data_dir=str(directory))
  return directory


def _command(workdir, data_dir):
  return [sys.executable, '-m', 'adjax.main', f'--config={REPO}/configs/ebm.py:smoke',
          f'--workdir={workdir}', f'--config.data.data_dir={data_dir}', '--config.train.num_steps=8',
          '--config.train.checkpoint_every=1', '--config.train.log_every=1',
          '--config.train.checkpoints_to_keep=3', '--config.ebm.sgld_steps=2']


def _start(workdir, data_dir, log_name):
  """Starts a run; the session's JAX compilation cache (tests/conftest.py) keeps the restarts quick."""
  log = open(workdir.parent / log_name, 'w')  # pylint: disable=consider-using-with
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.Popen(_command(workdir, data_dir), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                          env=env)


def _complete_steps(checkpoints: Path) -> list[int]:
  return sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) if checkpoints.is_dir() else []


def _temporary(checkpoints: Path) -> list[str]:
  return sorted(p.name for p in checkpoints.iterdir() if TMP_MARK in p.name) if checkpoints.is_dir() else []


def _kill_when(process, condition, *, timeout=400):
  """SIGKILLs `process` as soon as `condition()` holds (polled every ~2 ms); False if it ended first."""
  deadline = time.monotonic() + timeout
  while process.poll() is None and time.monotonic() < deadline:
    if condition():
      process.send_signal(signal.SIGKILL)
      process.wait()
      return True
    time.sleep(0.002)
  assert process.poll() is not None, 'run timed out'
  return False


def _final_state(workdir: Path, step: int) -> dict:
  return ocp.StandardCheckpointer().restore(workdir / 'checkpoints' / str(step) / 'state')


def _resumed_step(log: Path) -> int | None:
  found = re.findall(r'Resumed from \S+ step (\d+)', log.read_text())
  return int(found[-1]) if found else None


def test_sigkill_mid_save_and_at_a_random_time_then_restart_equals_an_uninterrupted_run(tmp_path, data_dir):
  straight_dir, faulty_dir = tmp_path / 'straight', tmp_path / 'faulty'
  checkpoints = faulty_dir / 'checkpoints'
  # The uninterrupted run goes alongside the first faulty one (they share nothing but the read-only data).
  straight = _start(straight_dir, data_dir, 'straight.log')

  # 1. Kill while a checkpoint (step >= 2) is being written: orbax's temporary directory exists.
  first = _start(faulty_dir, data_dir, 'first.log')
  in_save = lambda: any(int(name.split('.')[0]) >= 2 for name in _temporary(checkpoints))
  assert _kill_when(first, in_save), (tmp_path / 'first.log').read_text()[-3000:]
  left_over, complete = _temporary(checkpoints), _complete_steps(checkpoints)
  assert left_over, 'the save finished before the kill landed'
  assert complete and max(complete) < 8

  # 2. Restart; kill at a random moment after it has saved a new checkpoint.
  second = _start(faulty_dir, data_dir, 'second.log')
  delay = random.Random(os.getpid()).uniform(0.0, 0.6)

  def progressed_then_waited():
    if max(_complete_steps(checkpoints) or [0]) <= max(complete):
      return False
    time.sleep(delay)
    return True

  _kill_when(second, progressed_then_waited)
  # It resumed from the newest complete checkpoint, never from the partial one, and cleaned that up.
  assert _resumed_step(tmp_path / 'second.log') == max(complete)
  assert not set(left_over) & set(_temporary(checkpoints))
  complete_after_second = _complete_steps(checkpoints)
  assert straight.wait(timeout=400) == 0, (tmp_path / 'straight.log').read_text()[-3000:]

  # 3. Restart to the end.
  third = _start(faulty_dir, data_dir, 'third.log')
  assert third.wait(timeout=400) == 0, (tmp_path / 'third.log').read_text()[-3000:]
  resumed = _resumed_step(tmp_path / 'third.log')
  assert resumed is not None and resumed == max(complete_after_second)
  assert not _temporary(checkpoints)

  a, b = _final_state(straight_dir, 8), _final_state(faulty_dir, 8)
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for leaf_a, leaf_b in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(leaf_a), np.asarray(leaf_b))
  results = [json.loads((d / 'results.json').read_text()) for d in (straight_dir, faulty_dir)]
  for result in results:
    for key in TIMING_KEYS:
      result.pop(key)
  assert results[0] == results[1]
  assert results[0]['num_train_steps'] == 8 and results[0]['image_auroc'] is not None


def unstable_method(*, learning_rate: float) -> Method:
  """SGD on (w - 1)^2: with `learning_rate` > 1 the error grows by |1 - 2 lr| per step, and the loss is NaN
  once |w| > 10 (at step 8 from w = 0 with lr 1.2); with lr below 1 it converges to w = 1."""

  def init(rng, images):
    del rng, images
    return {'params': {'w': jnp.zeros((), jnp.float32)}}

  def loss_fn(params, model_state, batch, rng):
    del rng
    loss = (params['w'] - 1.0) ** 2 * jnp.ones(batch['image'].shape[0])
    return jnp.where(jnp.abs(params['w']) > 10, jnp.nan, loss), (model_state, {})

  def score(variables, statistics, images):
    del statistics
    maps = jnp.mean(images, axis=-1) * variables['params']['w']
    return {'map': maps}, {'score': jnp.mean(maps, axis=(1, 2))}

  return Method(name='unstable', init=init, loss_fn=loss_fn, fit=lambda variables, batches: {},
                score=score, optimizer=optax.sgd(learning_rate))


def unstable_config(data_dir, **train_overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.method = 'unstable'
  config.seed = 0
  config.data = ml_collections.ConfigDict(dict(
      name='digits', category='1', data_dir=str(data_dir), manual_dir='', image_size=8,
      train_preprocess='value_range(0, 1)', eval_preprocess='value_range(0, 1)'))
  config.train = ml_collections.ConfigDict(dict(
      batch_size=4, num_steps=20, num_devices=0, log_every=1, checkpoint_every=4, checkpoints_to_keep=2,
      on_divergence='rollback', rollback_lr_factor=0.1, max_rollbacks=3))
  config.train.update(train_overrides)
  config.eval = ml_collections.ConfigDict(dict(batch_size=256, map='map', score='score'))
  return config


def simulate(schedule) -> np.float32:
  """w after plain float32 SGD on (w - 1)^2 with the given per-step learning rates."""
  w = np.float32(0)
  for learning_rate in schedule:
    w = w - np.float32(learning_rate) * (np.float32(2) * (w - np.float32(1)))
  return w


def _meta(workdir: Path, step: int) -> dict:
  return json.loads((workdir / 'checkpoints' / str(step) / 'meta' / 'metadata').read_text())


def test_divergence_stop_rollback_and_resume_with_the_lowered_rate(tmp_path):
  data_dir, method = tmp_path / 'tfds', unstable_method(learning_rate=1.2)
  with pytest.raises(train.TrainingDiverged, match='step 8'):
    train.train_and_evaluate(unstable_config(data_dir, on_divergence='stop'), tmp_path / 'stop', method=method)
  assert not (tmp_path / 'stop' / 'results.json').exists()

  # Diverges at step 8; rolls back to the step-4 checkpoint; 16 more steps at a tenth of the rate.
  workdir = tmp_path / 'rollback'
  results = train.train_and_evaluate(unstable_config(data_dir), workdir, method=method)
  w = _final_state(workdir, 20)['params']['w']
  assert float(w) == pytest.approx(float(simulate([1.2] * 4 + [0.12] * 16)), rel=1e-6)
  assert abs(float(w) - 1) < 0.1 and _meta(workdir, 20)['update_scale'] == pytest.approx(0.1)
  assert results['num_train_steps'] == 20 and (workdir / 'results.json').exists()
  # The lowered rate is stored with the checkpoints: a resumed run keeps it.
  train.train_and_evaluate(unstable_config(data_dir, num_steps=24), workdir, method=method)
  w = _final_state(workdir, 24)['params']['w']
  assert float(w) == pytest.approx(float(simulate([1.2] * 4 + [0.12] * 20)), rel=1e-6)

  # Without a checkpoint yet it restarts from step 0; a rate still too high exhausts max_rollbacks.
  workdir = tmp_path / 'from_start'
  train.train_and_evaluate(unstable_config(data_dir, checkpoint_every=100), workdir, method=method)
  w = _final_state(workdir, 20)['params']['w']
  assert float(w) == pytest.approx(float(simulate([0.12] * 20)), rel=1e-6)
  with pytest.raises(train.TrainingDiverged):
    train.train_and_evaluate(unstable_config(data_dir, rollback_lr_factor=0.95, max_rollbacks=1),
                             tmp_path / 'exhausted', method=method)
