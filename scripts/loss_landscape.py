"""Loss-landscape contours around trained parameters (seed 001 Figs. 1 and 3): L2 against L2-LAMP.

  # Trained adjax runs: NAME=CONFIG[:PRESET]@WORKDIR [key=value ...] (the overrides the run was trained
  # with), each evaluated with its own training loss.
  python -m adjax.main --config=configs/lamp.py --config.lamp.enabled=False --workdir=runs/l2
  python -m adjax.main --config=configs/lamp.py --workdir=runs/lamp
  python scripts/loss_landscape.py --run "L2=configs/lamp.py@runs/l2 lamp.enabled=False" \
                                   --run LAMP=configs/lamp.py@runs/lamp --out landscape.png
  # Self-contained demo: two small dense autoencoders on one sklearn digit, per batch size.
  python scripts/loss_landscape.py --demo --batch_sizes 128,16,4 --out landscape.png

Each model's plane is spanned by two filter-normalised Gaussian directions (Li et al. 2018; the same
two keys for every model, normalised to that model's own filters); `adjax.landscape` does the maths.
The printed `edge_rise` is the mean loss on the border of the plane divided by the loss at its
centre, `edge_increase` their difference: a steeper (sharper) landscape rises more. L2 and LAMP losses
have different units, so compare the relative rise (or the contour shapes), not the raw values.
"""

import argparse
import ast
import importlib.util
import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use('Agg')
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

from adjax import landscape  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax.errors import InputError  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax.losses import reconstruction  # pylint: disable=g-import-not-at-top,wrong-import-position


def _dense_autoencoder_init(rng, sizes=(64, 32, 8, 32, 64)):
  keys = jax.random.split(rng, len(sizes) - 1)
  return [{'kernel': jax.random.normal(key, (n_in, n_out)) / np.sqrt(n_in), 'bias': jnp.zeros(n_out)}
          for key, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])]


def _dense_autoencoder(params, images):
  """[batch, 8, 8, 1] in [-1, 1] -> reconstruction of the same shape (tanh layers)."""
  hidden = images.reshape(images.shape[0], -1)
  for layer in params:
    hidden = jnp.tanh(hidden @ layer['kernel'] + layer['bias'])
  return hidden.reshape(images.shape)


def demo_models(*, normal_digit: int, batch_size: int, steps: int, epsilon: float, seed: int = 0):
  """Trains the demo autoencoder with L2 and with L2-LAMP; returns {name: (params, loss_fn)}.

  Both start from the same initialisation and see the same batches (Adam 1e-3). L2 is the per-image
  sum of squared errors (the base of LAMP's sum over H, W, C); LAMP takes its max over the batch.
  The returned loss_fn is the model's own training loss averaged over batches of `batch_size` of
  up to 256 fixed training images (so LAMP's batch max spans as many images as in training).
  """
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  images = digits.images[digits.target == normal_digit].astype(np.float32) / 8.0 - 1.0
  images = jnp.asarray(images[..., None])  # [n, 8, 8, 1] in [-1, 1]
  rng = np.random.default_rng(seed)
  order = rng.integers(0, len(images), size=(steps, batch_size))
  num_chunks = max(1, min(256, len(images)) // batch_size)
  if batch_size > len(images):
    raise InputError(f'--batch_sizes: {batch_size} exceeds the {len(images)} images of digit '
                     f'{normal_digit}')
  evaluation = images[rng.permutation(len(images))[:num_chunks * batch_size]]
  evaluation = evaluation.reshape(num_chunks, batch_size, *images.shape[1:])
  losses = {
      'L2': lambda recon, x: jnp.sum(reconstruction.l2_map(x, recon), axis=(1, 2, 3)),
      'L2-LAMP': lambda recon, x: reconstruction.lamp(reconstruction.l2_map(x, recon),
                                                      epsilon=epsilon),
  }
  optimizer = optax.adam(1e-3)
  init = _dense_autoencoder_init(jax.random.key(seed))
  models = {}
  for name, per_image in losses.items():
    objective = lambda params, x, per_image=per_image: jnp.mean(
        per_image(_dense_autoencoder(params, x), x))

    def train_step(carry, batch_index, objective=objective):
      params, opt_state = carry
      grads = jax.grad(objective)(params, images[batch_index])
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.jit(lambda p, o, order, step=train_step: jax.lax.scan(step, (p, o), order))(
        init, optimizer.init(init), jnp.asarray(order))
    models[name] = (params, lambda p, objective=objective: jnp.mean(
        jax.vmap(objective, in_axes=(None, 0))(p, evaluation)))
  return models


def _load_config(spec: str, overrides=()):
  """`CONFIG[:PRESET]` with `key=value` overrides (Python literals unless the key holds a string), as the
  run was trained."""
  path, _, preset = spec.partition(':')
  if not os.path.isfile(path):
    raise InputError(f'--run: config file {path} does not exist')
  module_spec = importlib.util.spec_from_file_location('landscape_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(preset or None)
  for text in overrides:
    key, separator, value = text.partition('=')
    if not separator:
      raise InputError(f'--run: override {text!r} is not key=value')
    try:
      current = config
      for part in key.split('.'):
        current = current[part]
    except (KeyError, TypeError):
      raise InputError(f'--run: override {text!r}: the config has no key {key!r}') from None
    if not isinstance(current, str):  # Keys holding strings take the text as it is.
      try:
        value = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        pass
    try:
      config.update_from_flattened_dict({key: value})
    except (KeyError, TypeError, AttributeError) as error:
      raise InputError(f'--run: override {text!r}: {error}') from None
  return config


def run_model(config_spec: str, workdir: str, *, num_batches: int = 2, overrides=()):
  """Restores a trained adjax run; returns (params, loss_fn) with its method's loss on train batches.

  The loss is the mean per-example `method.loss_fn` over `num_batches` fixed training batches, with
  the trained model state and a fixed rng (one device, no pmap).
  """
  # Imported here so the demo needs no datasets.
  from pathlib import Path  # pylint: disable=g-import-not-at-top
  from adjax import methods, train  # pylint: disable=g-import-not-at-top
  from adjax.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  config = _load_config(config_spec, overrides)
  workdir = Path(workdir).absolute()
  if not (workdir / 'checkpoints').is_dir():
    raise InputError(f'--run: {workdir} holds no checkpoints/ (train it with adjax.main first)')
  data = config.data
  train_source, _ = sources.load_split(name=data.name, category=data.category, split='train',
                                       data_dir=data.data_dir, manual_dir=data.get('manual_dir') or None)
  method = methods.get_method(config, train_size=len(train_source))
  dataset = pipeline.train_dataset(
      train_source, preprocess=data.train_preprocess.format(image_size=data.get('image_size')),
      global_batch_size=config.train.batch_size, seed=config.seed, process_index=0, process_count=1)
  state = train.create_train_state(method, seed=config.seed, sample_images=dataset[0]['image'][:1])
  # TODO(lead): a public restore in adjax.train would avoid these private helpers.
  state, _ = train._restore(train._checkpoint_manager(workdir, config), state, method.name)  # pylint: disable=protected-access
  if int(state.step) == 0:
    raise InputError(f'--run: {workdir} holds no trained checkpoint')
  batches = [jax.tree_util.tree_map(jnp.asarray, dataset[i]) for i in range(num_batches)]
  rng = jax.random.key(0)

  def loss_fn(params):
    return jnp.mean(jnp.stack([jnp.mean(method.loss_fn(params, state.model_state, batch, rng)[0])
                               for batch in batches]))

  return state.params, loss_fn


def surfaces_for(models: dict, *, span: float, points: int, seed: int = 0) -> dict:
  """{name: (params, loss_fn)} -> {name: (coordinates [points], surface [points, points])}."""
  coordinates = np.linspace(-span, span, points)
  key_1, key_2 = jax.random.split(jax.random.key(seed))
  result = {}
  for name, (params, loss_fn) in models.items():
    directions = (landscape.random_direction(key_1, params), landscape.random_direction(key_2, params))
    surface = landscape.loss_surface(loss_fn, params, directions=directions,
                                     grid=(coordinates, coordinates))
    result[name] = (coordinates, np.asarray(surface))
  return result


def _border_and_centre(surface: np.ndarray) -> tuple[float, float]:
  border = np.concatenate([surface[0], surface[-1], surface[1:-1, 0], surface[1:-1, -1]])
  return float(np.mean(border)), float(surface[surface.shape[0] // 2, surface.shape[1] // 2])


def edge_rise(surface: np.ndarray) -> float:
  """Mean loss on the border of the grid / loss at its centre (odd grid sizes)."""
  border, centre = _border_and_centre(surface)
  return border / centre


def edge_increase(surface: np.ndarray) -> float:
  """Mean loss on the border of the grid minus the loss at its centre (in the loss's own units)."""
  border, centre = _border_and_centre(surface)
  return border - centre


def plot_contours(panels: dict, path: str, *, columns: int | None = None, levels: int = 20):
  """panels: {title: (coordinates, surface)} -> one contour plot each, row by row, to `path`."""
  columns = columns or len(panels)
  rows = -(-len(panels) // columns)
  figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.4 * rows), squeeze=False)
  for axis in axes.flat[len(panels):]:
    axis.set_visible(False)
  for axis, (title, (coordinates, surface)) in zip(axes.flat, panels.items()):
    contours = axis.contour(coordinates, coordinates, surface.T, levels=levels, cmap='viridis')
    axis.clabel(contours, fontsize=6, fmt='%.3g')
    axis.plot(0, 0, 'r+')
    axis.set_title(f'{title}\nedge rise {edge_rise(surface):.2f}x', fontsize=9)
    axis.set_xlabel('direction 1')
    axis.set_ylabel('direction 2')
    axis.set_aspect('equal')
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--run', action='append', default=[],
                      help='NAME=CONFIG[:PRESET]@WORKDIR of a trained adjax run (repeatable)')
  parser.add_argument('--demo', action='store_true', help='train the digits demo models instead')
  parser.add_argument('--batch_sizes', default='32', help='demo: comma-separated batch sizes')
  parser.add_argument('--normal_digit', type=int, default=0)
  parser.add_argument('--steps', type=int, default=1500)
  parser.add_argument('--epsilon', type=float, default=0.01, help='demo: LAMP epsilon')
  parser.add_argument('--span', type=float, default=1.0, help='grid half-width along each direction')
  parser.add_argument('--points', type=int, default=21, help='grid points per axis (odd)')
  parser.add_argument('--out', default='loss_landscape.png')
  parser.add_argument('--json', default=None, help='also write the surfaces and edge rises here')
  args = parser.parse_args()
  if bool(args.run) == args.demo:
    parser.error('give either --demo or at least one --run')
  if args.points < 3 or args.points % 2 == 0:
    parser.error('--points must be odd and >= 3 (the centre is the trained point)')

  models = {}
  try:
    if args.demo:
      batch_sizes = [int(size) for size in args.batch_sizes.split(',')]
      trained = {size: demo_models(normal_digit=args.normal_digit, batch_size=size,
                                   steps=args.steps, epsilon=args.epsilon) for size in batch_sizes}
      # One row per loss, one column per batch size, as seed 001 Fig. 3.
      for name in ('L2', 'L2-LAMP'):
        models.update({f'{name} (batch {size})': trained[size][name] for size in batch_sizes})
    for spec in args.run:
      head, *overrides = spec.split()
      name, _, rest = head.partition('=')
      config_spec, _, workdir = rest.partition('@')
      if not name or not config_spec or not workdir:
        raise InputError(f'--run {spec!r}: expected NAME=CONFIG[:PRESET]@WORKDIR [key=value ...]')
      models[name] = run_model(config_spec, workdir, overrides=overrides)
  except InputError as error:
    raise SystemExit(f'error: {error}') from None

  panels = surfaces_for(models, span=args.span, points=args.points)
  plot_contours(panels, args.out, columns=len(batch_sizes) if args.demo else None)
  summary = {name: {'centre_loss': float(surface[args.points // 2, args.points // 2]),
                    'edge_rise': edge_rise(surface), 'edge_increase': edge_increase(surface)}
             for name, (_, surface) in panels.items()}
  print(json.dumps(summary, indent=1))
  print(f'wrote {args.out}')
  if args.json:
    with open(args.json, 'w') as file:
      json.dump({name: {**summary[name], 'coordinates': coordinates.tolist(),
                        'surface': surface.tolist()} for name, (coordinates, surface) in panels.items()},
                file)


if __name__ == '__main__':
  main()
