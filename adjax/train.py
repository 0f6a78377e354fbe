"""The one train loop every method runs through.

`train_and_evaluate(config, workdir)` builds the data pipeline and the method's state, runs the per-device
train step under `jax.pmap` (axis name `batch`; gradients and model state averaged with `lax.pmean`), logs to
TensorBoard (`adjax.summaries`), checkpoints with orbax and resumes from the newest complete checkpoint, then
fits the method's post-training statistics, evaluates on the test split and writes `results.json` and figures.

Faults: a run killed at any point (even mid-save) resumes from the newest *complete* checkpoint (orbax writes
to a temporary directory and renames it; leftovers are removed) and ends bit-equal to an uninterrupted run:
batch k and the step rng are pure functions of (seed, k). A non-finite loss or parameter either stops the
run (`train.on_divergence='stop'`) or restores the last good checkpoint and continues with every update
scaled by `train.rollback_lr_factor` (`'rollback'`, at most `train.max_rollbacks` times); the scale is stored
with each checkpoint, so a resumed run keeps it.

Several processes (`jax.distributed`): the pmapped step spans every global device, each process feeds its
own slice of each global batch, and only process 0 writes results, figures and TensorBoard events (orbax
coordinates checkpoint writes). Post-training statistics and evaluation run on every process over its local
devices with the (replicated) final variables, so every process computes the same metrics.
"""

import json
import math
import time
from pathlib import Path
from typing import Any

from absl import logging
import flax
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from adjax import evaluate
from adjax import methods
from adjax import processes
from adjax import summaries
from adjax.data import pipeline
from adjax.data import semi_supervised
from adjax.data import sources
from adjax.errors import InputError


class TrainingDiverged(RuntimeError):
  """The loss or the parameters became NaN or infinite."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any
  rng: jax.Array


def create_train_state(method: methods.Method, *, seed: int, sample_images: np.ndarray) -> TrainState:
  """Initialises parameters from `sample_images [batch, height, width, channels]`."""
  init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))
  variables = jax.jit(method.init)(init_rng, jnp.asarray(sample_images))
  variables = dict(variables)
  params = variables.pop('params')
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=method.optimizer.init(params),
                    model_state=variables, rng=train_rng)


def variables_of(state: TrainState) -> dict:
  return {'params': state.params, **state.model_state}


def make_train_step(method: methods.Method, devices=None):
  """Returns `step(state, batch, update_scale=1.0) -> (state, metrics)`, pmapped over `devices`.

  `devices` defaults to all local devices; with several processes pass all global devices, and each process
  gives its local part. `state` is unreplicated (`in_axes=None`); `batch` arrays are
  `[devices, per_device_batch, ...]`. Every device derives its own rng from (state rng, step, device index),
  so a step is reproducible. `update_scale` multiplies the optimizer's updates (a learning-rate factor that
  works for any optax optimizer; 1.0 leaves them bit-identical), used after a divergence rollback.
  """

  optimizer = optax.with_extra_args_support(method.optimizer)

  def step(state: TrainState, batch, update_scale):
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), jax.lax.axis_index('batch'))

    def mean_loss(params):
      per_example, (model_state, metrics) = method.loss_fn(params, state.model_state, batch, rng)
      return jnp.mean(per_example), (model_state, metrics)

    (loss, (model_state, metrics)), grads = jax.value_and_grad(mean_loss, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, 'batch')
    model_state = method.sync_state(model_state, 'batch')
    # `value` (the loss, equal on every device) feeds optimizers that watch it, e.g. reduce-on-plateau.
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params,
                                          value=jax.lax.pmean(loss, 'batch'))
    updates = jax.tree_util.tree_map(lambda update: (update * update_scale).astype(update.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    metrics = {name: jnp.mean(value) for name, value in metrics.items()}
    metrics['loss'] = loss
    metrics['grad_norm'] = optax.global_norm(grads)
    metrics = jax.lax.pmean(metrics, 'batch')
    leaves = [loss] + jax.tree_util.tree_leaves(params)
    metrics['finite'] = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              model_state=model_state)
    return new_state, metrics

  pmapped = jax.pmap(step, axis_name='batch', in_axes=(None, 0, None), out_axes=(None, None),
                     devices=devices)

  def train_step(state: TrainState, batch, update_scale: float = 1.0):
    return pmapped(state, batch, np.float32(update_scale))

  return train_step


def _checkpoint_manager(workdir: Path, config) -> ocp.CheckpointManager:
  # Temporary directories of saves cut short by a crash are never restored; cleaning removes them.
  options = ocp.CheckpointManagerOptions(max_to_keep=config.train.get('checkpoints_to_keep', 2), create=True,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(workdir / 'checkpoints', options=options)


def _restore(manager: ocp.CheckpointManager, state: TrainState, method_name: str):
  """Restores the newest checkpoint into `state`'s structure; returns (state, seconds trained so far)."""
  state, meta = _restore_with_meta(manager, state, method_name)
  return state, float(meta.get('train_seconds', 0.0))


def _restore_with_meta(manager: ocp.CheckpointManager, state: TrainState, method_name: str):
  """Restores the newest checkpoint into `state`'s structure; returns (state, its metadata dict)."""
  step = manager.latest_step()
  if step is None:
    return state, {}
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
  if meta.get('method') != method_name:
    raise InputError(f'{manager.directory}: holds a checkpoint of method {meta.get("method")!r}, '
                     f'not {method_name!r}; use another --workdir')
  try:
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  except (ValueError, KeyError) as error:
    raise InputError(f'{manager.directory}: checkpoint at step {step} does not match this config\'s '
                     f'model ({str(error).splitlines()[0]}); use another --workdir') from None
  logging.info('Resumed from %s step %d', manager.directory, step)
  return restored['state'], meta


def _save(manager, state: TrainState, *, method_name: str, train_seconds: float, update_scale: float = 1.0):
  if jax.process_count() > 1:
    # pmap's unmapped outputs are per-process copies orbax cannot save as one global array; identical
    # host copies are written once, by process 0.
    state = jax.device_get(state)
  meta = {'method': method_name, 'step': int(state.step), 'train_seconds': train_seconds,
          'update_scale': update_scale}
  manager.save(int(state.step), args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))


def _write_json_atomically(path: Path, payload: dict):
  temporary = path.with_suffix('.json.tmp')
  temporary.write_text(json.dumps(payload, indent=2, default=_json_default) + '\n')
  temporary.replace(path)


def _json_default(value):
  if isinstance(value, (np.floating, np.integer, np.bool_)):
    return value.item()
  if isinstance(value, (tuple, list)):
    return list(value)
  return str(value)


def _devices(config) -> list:
  """The devices the train step spans: all global ones with several processes, else the local ones."""
  devices = jax.local_devices()
  requested = config.train.get('num_devices', 0)
  if jax.process_count() > 1:
    if requested:
      raise InputError(f'config.train.num_devices: must be 0 (all devices) with {jax.process_count()} '
                       f'processes, got {requested}')
    return jax.devices()
  if requested:
    if requested > len(devices):
      raise InputError(f'config.train.num_devices: {requested} requested, {len(devices)} available')
    devices = devices[:requested]
  return devices


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path, *,
                       method: methods.Method | None = None, clear_jax_caches: bool = True) -> dict:
  """Trains `config.method` (or the given `method`), evaluates it and writes `workdir/results.json`.

  Returns the results dict (the contract in DESIGN.md). A workdir holding a checkpoint resumes from it.
  `clear_jax_caches` ends with `jax.clear_caches()`: a run's jitted closures are never called again, but
  JAX's caches would keep them and their executables alive, so runs in one process (notebooks, the soak
  test) would otherwise grow by ~40-170 MB each.
  """
  try:
    return _train_and_evaluate(config, workdir, method=method)
  finally:
    if clear_jax_caches:
      jax.clear_caches()


def _train_and_evaluate(config, workdir, *, method):
  workdir = Path(workdir).absolute()  # orbax refuses relative paths.
  devices = _devices(config)
  batch_size = config.train.batch_size
  if batch_size % len(devices):
    raise InputError(f'config.train.batch_size: {batch_size} does not split over {len(devices)} devices')
  on_divergence = config.train.get('on_divergence', 'stop')
  if on_divergence not in ('stop', 'rollback'):
    raise InputError(f"config.train.on_divergence: must be 'stop' or 'rollback', got {on_divergence!r}")
  rollback_factor = config.train.get('rollback_lr_factor', 0.1)
  if not 0 < rollback_factor < 1:
    raise InputError(f'config.train.rollback_lr_factor: must be in (0, 1), got {rollback_factor!r}')

  data = config.data
  split_args = dict(name=data.name, category=data.category, data_dir=data.data_dir,
                    manual_dir=data.get('manual_dir') or None)
  train_preprocess = data.train_preprocess.format(image_size=data.get('image_size'))
  eval_preprocess = data.eval_preprocess.format(image_size=data.get('image_size'))
  if jax.process_count() > 1:  # Process 0 builds a missing dataset; the others wait, then read it.
    if jax.process_index() == 0:
      sources.split_names(**split_args)
    multihost_utils.sync_global_devices('adjax: dataset ready')
  train_source, _ = sources.load_split(split='train', **split_args)
  # Semi-supervised runs (data.labeled_anomalies_per_type > 0) move real anomalies from test to train.
  train_source, semi_supervised_test = semi_supervised.from_config(
      config, train_source, load_test=lambda: sources.load_split(split='test', **split_args)[0])
  if len(train_source) < jax.process_count():  # `fit` splits the training images over the processes.
    raise InputError(f'{data.name}/{data.category}: the training split has {len(train_source)} images, fewer '
                     f'than the {jax.process_count()} processes')
  method = method or methods.get_method(config, train_size=len(train_source))
  dataset = pipeline.train_dataset(
      train_source, preprocess=train_preprocess, global_batch_size=batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())

  initial_state = create_train_state(method, seed=config.seed, sample_images=dataset[0]['image'][:1])
  workdir.mkdir(parents=True, exist_ok=True)  # Only now: bad input above leaves no new workdir behind.
  manager = _checkpoint_manager(workdir, config)
  state, meta = _restore_with_meta(manager, initial_state, method.name)
  train_seconds_before = float(meta.get('train_seconds', 0.0))
  update_scale = float(meta.get('update_scale', 1.0))
  start_step, num_steps = int(state.step), num_train_steps(config, train_size=len(train_source))

  writer = summaries.create_writer(workdir, just_logging=jax.process_index() > 0)
  if start_step == 0:
    writer.write_hparams(_flat_hparams(config))
  train_step = make_train_step(method, devices)
  sharding = pipeline.device_sharding(devices)
  state = pipeline.replicate(state, sharding)
  log_every = config.train.get('log_every', 50)
  checkpoint_every = config.train.get('checkpoint_every', 1000)
  logging.info('Training %s for %d steps from step %d on %d device(s)', method.name, num_steps,
               start_step, len(devices))

  train_start = last_log_time = time.perf_counter()
  last_log_step, rollbacks, step = start_step, 0, start_step
  try:
    while step < num_steps:
      batches = pipeline.device_iterator(dataset, start_step=step, sharding=sharding)
      for step in range(step + 1, num_steps + 1):
        state, metrics = train_step(state, next(batches), update_scale)
        is_last = step == num_steps
        if step % log_every == 0 or step % checkpoint_every == 0 or is_last:
          metrics = jax.device_get(metrics)
          if not metrics.pop('finite'):
            message = (f'training diverged at step {step} (non-finite loss or parameters: {metrics}); the '
                       f'last good checkpoint in {workdir / "checkpoints"} is kept')
            if on_divergence == 'stop' or rollbacks >= config.train.get('max_rollbacks', 3):
              raise TrainingDiverged(message)
            manager.wait_until_finished()
            state, _ = _restore_with_meta(manager, initial_state, method.name)  # Step 0 if none saved.
            rollbacks, update_scale = rollbacks + 1, update_scale * rollback_factor
            logging.warning('%s; rollback %d: continuing from step %d with the updates scaled by %g',
                            message, rollbacks, int(state.step), update_scale)
            state, step = pipeline.replicate(state, sharding), int(state.step)
            last_log_step, last_log_time = step, time.perf_counter()
            break
          now = time.perf_counter()
          metrics['images_per_second'] = (step - last_log_step) * batch_size / (now - last_log_time)
          last_log_step, last_log_time = step, now
          writer.write_scalars(step, metrics | {'update_scale': update_scale})
          logging.info('step %d of %d, %.1f images/s, %.1f min to go', step, num_steps,
                       metrics['images_per_second'],
                       (num_steps - step) * batch_size / metrics['images_per_second'] / 60)
        if step % checkpoint_every == 0 or is_last:
          seconds = train_seconds_before + time.perf_counter() - train_start
          _save(manager, state, method_name=method.name, train_seconds=seconds, update_scale=update_scale)
    jax.block_until_ready(state)
  finally:
    # Finish an in-flight (asynchronous) save even when training stops with an error.
    manager.wait_until_finished()
    manager.close()
    writer.flush()
  session_seconds = time.perf_counter() - train_start
  steps_run = num_steps - start_step

  eval_start = time.perf_counter()
  variables = variables_of(state)
  fit_shard = (0, 1)
  if jax.process_count() > 1:
    # Every process fits and scores its share of the training and test splits on its local devices with the
    # same (replicated) final variables; `fit` and `evaluate.score_split` gather the shares.
    variables, devices = jax.device_get(variables), jax.local_devices()
    fit_shard = processes.shard()
    logging.info('Process %d fits on %d of %d training images', fit_shard[0],
                 len(range(fit_shard[0], len(train_source), fit_shard[1])), len(train_source))
  statistics = method.fit(variables, lambda: pipeline.eval_batches(
      train_source, preprocess=eval_preprocess, batch_size=config.eval.batch_size, shard=fit_shard))
  if 'test' in sources.split_names(**split_args):
    test_source, test_info = sources.load_split(split='test', **split_args)
    test_source = test_source if semi_supervised_test is None else semi_supervised_test
    results = evaluate.evaluate(method, variables, statistics, test_source, config=config,
                                preprocess=eval_preprocess,
                                has_masks=test_info['has_masks'], categories=test_info['categories'],
                                devices=devices,
                                figure_dir=workdir / 'figures', scores_path=workdir / 'image_scores.npz',
                                writer=writer)
  else:
    logging.warning('%s/%s has no test split: trained and fitted, nothing to evaluate.', data.name,
                    data.category)
    results = evaluate.no_test_split_metrics()
    thresholds = method.thresholds(statistics)
    results.update(threshold=thresholds.get('image'),
                   threshold_source='training_statistics' if thresholds.get('image') is not None else None)
  results.update(
      method=method.name, dataset=data.name, category=data.category, seed=config.seed,
      num_train_steps=num_steps, num_train_images=len(train_source),
      train_seconds=train_seconds_before + session_seconds,
      train_images_per_second=(steps_run * batch_size / session_seconds) if steps_run else None,
      eval_seconds=time.perf_counter() - eval_start, config=config.to_dict())
  writer.write_scalars(num_steps, {f'test/{k}': v for k, v in results.items()
                                   if isinstance(v, float) and k.startswith(('image_', 'pixel_'))})
  writer.close()
  if jax.process_index() == 0:
    _write_json_atomically(workdir / 'results.json', results)
  return results


def num_train_steps(config, *, train_size: int) -> int:
  """`config.train.num_steps`, or `ceil(num_epochs * train_size / batch_size)` when `num_epochs` is set."""
  num_epochs = config.train.get('num_epochs') or 0
  if not num_epochs:
    return config.train.num_steps
  if num_epochs < 0:
    raise InputError(f'config.train.num_epochs: must be >= 0, got {num_epochs}')
  return math.ceil(num_epochs * train_size / config.train.batch_size)


def _flat_hparams(config) -> dict:
  flat = {}

  def visit(prefix, value):
    if isinstance(value, dict):
      for key, child in value.items():
        visit(f'{prefix}{key}.', child)
    else:
      flat[prefix[:-1]] = value if isinstance(value, (int, float, str, bool)) else str(value)

  visit('', config.to_dict())
  return flat
