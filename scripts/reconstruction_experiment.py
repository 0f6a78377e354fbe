"""Seed 001 Table 2 style sweep: {L2, L1, SSIM} x {plain, LAMP} x {SGD, RMSprop, Adam} on digits or textures.

    python scripts/reconstruction_experiment.py --digits=0,1,2 --num_steps=300 --output=/tmp/lamp.md
    python scripts/reconstruction_experiment.py --losses=l2 --optimizers=sgd,adam   # a subset of cells
    python scripts/reconstruction_experiment.py --dataset=textures --categories=brick,gravel --num_steps=200

`--dataset=digits` (one-vs-rest, 16x16, seed 001 Table 1's protocol) or `textures` (the embedded defects,
64x64). For every normal category and every cell, trains the `reconstruction` method (configs/lamp.py with the
given overrides) through the train loop's own step function, scores the digit's test split with the
image score `l2` (seed 001) and prints a Markdown table of image AUROC "plain -> LAMP" per digit, their
average, and the number of cells where LAMP is equal or better. One compiled step per cell is reused
for every digit; no checkpoints or figures are written.
"""

import argparse
import itertools
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from adjax import metrics
from adjax import train
from adjax.data import pipeline
from adjax.data import sources
from adjax.methods import reconstruction

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configs import lamp as lamp_config  # pylint: disable=g-import-not-at-top,wrong-import-position

LOSSES = ('l2', 'l1', 'ssim')
OPTIMIZERS = {'sgd': 0.05, 'rmsprop': 1e-3, 'adam': 1e-3}  # Learning rate per optimizer.


DEFAULTS = {  # Per dataset: categories, image size, encoder widths.
    'digits': ('0,1,2,3,4,5,6,7,8,9', 16, '16,32,64,64'),
    'textures': ('brick,grass,gravel', 64, '32,64,128,256'),
}


def cell_config(*, base: str, amplified: bool, optimizer: str, args) -> ml_collections.ConfigDict:
  config = lamp_config.get_config()
  config.data.update(name=args.dataset, image_size=args.image_size, data_dir=args.data_dir)
  config.model.update(num_blocks=4, features=tuple(args.features))
  config.loss.base = base
  config.lamp.update(enabled=amplified, epsilon=args.epsilon)
  config.optim.update(name=optimizer, learning_rate=OPTIMIZERS[optimizer])
  config.train.update(batch_size=args.batch_size, num_steps=args.num_steps)
  return config


def split_arrays(config, category: str, split: str) -> dict:
  source, _ = sources.load_split(name=config.data.name, category=category, split=split,
                                 data_dir=config.data.data_dir)
  preprocess = config.data.eval_preprocess.format(image_size=config.data.image_size)
  batches = list(pipeline.eval_batches(source, preprocess=preprocess, batch_size=len(source)))
  return {'image': batches[0]['image'], 'label': batches[0]['label']}


def run_cell(method, step, config, data: dict, *, seed: int) -> float:
  """Trains on `data[digit]['train']` and returns the image AUROC of score `l2` on its test split."""
  train_images = data['train']['image']
  state = train.create_train_state(method, seed=seed, sample_images=train_images[:1])
  sharding = pipeline.device_sharding()
  state = pipeline.replicate(state, sharding)
  rng = np.random.default_rng(seed)
  batch_size = config.train.batch_size
  for _ in range(config.train.num_steps):
    images = train_images[rng.choice(len(train_images), batch_size, replace=len(train_images) < batch_size)]
    batch = {'image': images, 'mask': np.zeros(images.shape[:3], np.float32),
             'label': np.zeros(batch_size, np.int32), 'has_mask': np.zeros(batch_size, bool)}
    state, step_metrics = step(state, pipeline.shard(batch, sharding))
  if not bool(step_metrics['finite']):
    return float('nan')
  variables = jax.device_get(train.variables_of(state))
  statistics = {'class_thresholds': {'l2': jnp.zeros(1)}}  # Only the ranking of `l2` is used here.
  _, scores = method.score(variables, statistics, jnp.asarray(data['test']['image']))
  return metrics.image_auroc(np.asarray(scores['l2']), data['test']['label'])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--dataset', default='digits', choices=sorted(DEFAULTS))
  parser.add_argument('--categories', default='', help='normal categories (default: all of the dataset)')
  parser.add_argument('--digits', default='', help='digits: same as --categories')
  parser.add_argument('--num_steps', type=int, default=300)
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--image_size', type=int, default=0, help='0: 16 for digits, 64 for textures')
  parser.add_argument('--features', default='', help='encoder widths (default per dataset)')
  parser.add_argument('--epsilon', type=float, default=1e-3)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--data_dir', default='')
  parser.add_argument('--losses', default=','.join(LOSSES), help='subset of l2,l1,ssim')
  parser.add_argument('--optimizers', default=','.join(OPTIMIZERS), help='subset of sgd,rmsprop,adam')
  parser.add_argument('--output', default='')
  args = parser.parse_args(argv)
  default_categories, default_size, default_features = DEFAULTS[args.dataset]
  args.image_size = args.image_size or default_size
  args.features = [int(width) for width in (args.features or default_features).split(',')]
  digits = (args.categories or args.digits or default_categories).split(',')
  start = time.perf_counter()
  data = {}
  cells = list(itertools.product(args.losses.split(','), args.optimizers.split(',')))
  auroc = {}
  for base, optimizer in cells:
    for amplified in (False, True):
      config = cell_config(base=base, amplified=amplified, optimizer=optimizer, args=args)
      method = reconstruction.make(config)
      step = train.make_train_step(method)
      for digit in digits:
        if digit not in data:
          data[digit] = {split: split_arrays(config, digit, split) for split in ('train', 'test')}
        auroc[base, optimizer, amplified, digit] = run_cell(method, step, config, data[digit], seed=args.seed)
      print(f'{base}/{optimizer}/{"lamp" if amplified else "plain"} done at '
            f'{time.perf_counter() - start:.0f} s', file=sys.stderr)

  names = {'l2': 'L2', 'l1': 'L1', 'ssim': 'SSIM'}
  header = f'| normal {"digit" if args.dataset == "digits" else "category"} | ' + ' | '.join(f'{names[b]} {o}' for b, o in cells) + ' |'
  protocol = 'digits one-vs-rest' if args.dataset == 'digits' else f'{args.dataset} test splits'
  lines = [f'Image AUROC (score: mean squared error), plain -> LAMP; {protocol}, '
           f'{args.num_steps} steps of batch {args.batch_size}, {args.image_size}x{args.image_size}, '
           f'epsilon {args.epsilon}, seed {args.seed}.', '', header,
           '|' + '---|' * (len(cells) + 1)]
  for digit in digits + ['average']:
    row = []
    for base, optimizer in cells:
      pair = []
      for amplified in (False, True):
        values = [auroc[base, optimizer, amplified, d] for d in (digits if digit == 'average' else [digit])]
        pair.append(float(np.mean(values)))
      row.append(f'{pair[0]:.3f} → {pair[1]:.3f}')
    lines.append(f'| {digit} | ' + ' | '.join(row) + ' |')
  better = sum(np.mean([auroc[b, o, True, d] for d in digits]) >= np.mean([auroc[b, o, False, d] for d in digits])
               for b, o in cells)
  lines += ['', f'LAMP equal or better on average in {better} of {len(cells)} settings; '
            f'{time.perf_counter() - start:.0f} s in total.']
  text = '\n'.join(lines)
  print(text)
  if args.output:
    Path(args.output).write_text(text + '\n')


if __name__ == '__main__':
  main()
