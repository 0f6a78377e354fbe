"""Tests of adjax.landscape: filter normalisation against numpy, surfaces against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjax import landscape


def _params(seed=0):
  rng = np.random.default_rng(seed)
  return {'conv': {'kernel': rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
                   'bias': rng.normal(size=4).astype(np.float32)},
          'dense': {'kernel': rng.normal(size=(5, 3)).astype(np.float32)}}


def _numpy_filter_normalize(direction, params):
  """Li et al.'s loop, one output unit (last axis here) at a time; 1-D leaves zeroed."""
  if params.ndim <= 1:
    return np.zeros_like(direction)
  out = np.empty_like(direction)
  for j in range(params.shape[-1]):
    d, theta = direction[..., j], params[..., j]
    out[..., j] = d * np.linalg.norm(theta) / (np.linalg.norm(d) + 1e-10)
  return out


def test_filter_normalize_matches_numpy():
  params = _params(0)
  direction = _params(1)
  got = landscape.filter_normalize(direction, params)
  expected = jax.tree_util.tree_map(_numpy_filter_normalize, direction, params)
  for got_leaf, expected_leaf in zip(jax.tree_util.tree_leaves(got),
                                     jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(got_leaf, expected_leaf, rtol=1e-5, atol=1e-7)
  # Not ignoring 1-D leaves: the bias direction gets the bias's norm as a whole.
  kept = landscape.filter_normalize(direction, params, ignore_1d=False)
  np.testing.assert_allclose(np.linalg.norm(kept['conv']['bias']),
                             np.linalg.norm(params['conv']['bias']), rtol=1e-5)


def test_random_direction_has_parameter_filter_norms():
  params = _params(2)
  direction = landscape.random_direction(jax.random.key(0), params)
  kernel, d = params['conv']['kernel'], np.asarray(direction['conv']['kernel'])
  np.testing.assert_allclose(np.linalg.norm(d.reshape(-1, 4), axis=0),
                             np.linalg.norm(kernel.reshape(-1, 4), axis=0), rtol=1e-5)
  np.testing.assert_array_equal(direction['conv']['bias'], 0.0)
  # Two keys give two different (almost orthogonal in high dimension) directions.
  other = landscape.random_direction(jax.random.key(1), params)
  assert not np.allclose(other['dense']['kernel'], direction['dense']['kernel'])


def test_loss_surface_of_quadratic_matches_closed_form():
  params = jax.tree_util.tree_map(jnp.asarray, _params(3))
  first = landscape.random_direction(jax.random.key(0), params, ignore_1d=False)
  second = landscape.random_direction(jax.random.key(1), params, ignore_1d=False)
  loss_fn = lambda p: sum(jnp.sum(jnp.square(leaf - 0.5)) for leaf in jax.tree_util.tree_leaves(p))
  alphas = np.linspace(-1, 1, 5)
  betas = np.linspace(-0.5, 0.5, 3)
  surface = np.asarray(landscape.loss_surface(loss_fn, params, directions=(first, second),
                                              grid=(alphas, betas)))
  assert surface.shape == (5, 3)
  flat = lambda tree: np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(tree)])
  p, u, v = flat(params).astype(np.float64), flat(first), flat(second)
  expected = np.array([[np.sum(np.square(p + a * u + b * v - 0.5)) for b in betas] for a in alphas])
  np.testing.assert_allclose(surface, expected, rtol=1e-5)
  # The centre of the plane is the loss at the parameters themselves.
  np.testing.assert_allclose(surface[2, 1], loss_fn(params), rtol=1e-6)


@pytest.mark.parametrize('grid', [([0.0], [0.0]), ([-1.0, 0.0, 1.0], [0.0])])
def test_loss_surface_centre_equals_loss(grid):
  params = {'w': jnp.asarray(np.random.default_rng(4).normal(size=(6, 2)), jnp.float32)}
  data = jnp.asarray(np.random.default_rng(5).normal(size=(10, 6)), jnp.float32)
  loss_fn = lambda p: jnp.mean(jnp.square(jnp.tanh(data @ p['w'])))
  directions = (landscape.random_direction(jax.random.key(2), params),
                landscape.random_direction(jax.random.key(3), params))
  surface = landscape.loss_surface(loss_fn, params, directions=directions, grid=grid)
  centre = list(grid[0]).index(0.0)
  np.testing.assert_allclose(surface[centre, 0], loss_fn(params), rtol=1e-6)


def test_script_on_a_trained_run_views_it_with_either_loss(tmp_path, monkeypatch):
  """scripts/loss_landscape.py --run: a LAMP-trained smoke run seen through its own loss and plain L2.

  In process (the script's `main` with patched argv): a subprocess would pay JAX's start-up twice more.
  """
  import importlib.util  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  from pathlib import Path  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from adjax import train  # pylint: disable=g-import-not-at-top
  repo = Path(__file__).resolve().parents[1]
  spec = importlib.util.spec_from_file_location('loss_landscape_script', repo / 'scripts' / 'loss_landscape.py')
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  overrides = f'data.name=digits data.category=3 data.data_dir={tmp_path / "tfds"}'
  config = script._load_config(f'{repo}/configs/lamp.py:smoke', overrides.split())  # pylint: disable=protected-access
  train.train_and_evaluate(config, tmp_path / 'run')
  run = f'{repo}/configs/lamp.py:smoke@{tmp_path / "run"} {overrides}'
  argv = ['loss_landscape.py', '--run', f'LAMP={run}', '--run', f'L2={run} lamp.enabled=False', '--points=3',
          f'--out={tmp_path / "l.png"}', f'--json={tmp_path / "l.json"}']
  monkeypatch.setattr(sys, 'argv', argv)
  script.main()
  surfaces = json.loads((tmp_path / 'l.json').read_text())
  assert sorted(surfaces) == ['L2', 'LAMP'] and (tmp_path / 'l.png').stat().st_size > 1000
  # Same parameters seen through two losses: the override reached the method.
  assert surfaces['LAMP']['centre_loss'] > 0 and surfaces['L2']['centre_loss'] > 0
  assert abs(surfaces['LAMP']['centre_loss'] - surfaces['L2']['centre_loss']) > 1e-3
  assert np.isfinite(np.asarray(surfaces['L2']['surface'])).all()
  monkeypatch.setattr(sys, 'argv', argv[:1] + ['--run', f'L2={run} lamp.no_such_key=1'])
  with pytest.raises(SystemExit, match='no_such_key'):
    script.main()
