"""Seed 002's analyses with adjax's OCC method: norm sweep, feasible-norm guideline, center ablation, online.

  python scripts/occ_experiment.py sweep  --datasets=textures:brick,digits:0 --norms=1,4,8,16,32
  python scripts/occ_experiment.py online --dataset=textures:brick --chunk=50

`sweep` prints, per dataset, the average cosine similarity between pooled pretrained features of normal and
anomalous test images (the paper's guideline: higher similarity -> narrower feasible norm range), then the
image (and pixel) AUROC of one training run per center norm (N(0, 1) center) and per center distribution
(N, U, ones, feature mean; norm 1). `online` is protocol C: batch 1, one pass, resuming one workdir chunk by
chunk through `adjax.train.train_and_evaluate` and scoring the test split after every chunk; the train
order is one fixed permutation per epoch, so steps <= train size never revisit an image.
Without --weights the encoder is RANDOM (no ImageNet weights offline), and the output says so.
"""

import argparse
import json
from pathlib import Path
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adjax import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax.data import sources  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax.methods import occ  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax.models import weights  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import occ as occ_config  # pylint: disable=g-import-not-at-top,wrong-import-position


def base_config(dataset: str, *, preset: str = 'default', image_size: int, epochs: float,
                backbone: str, weights_path: str, data_dir: str):
  """The `configs/occ.py` preset on `name:category`, with the sizes of this experiment."""
  name, category = dataset.split(':')
  config = occ_config.get_config(preset)
  config.data.update(name=name, category=category, data_dir=data_dir, image_size=image_size)
  config.model.update(backbone=backbone, backbone_weights=weights_path)
  config.train.num_epochs = epochs
  config.train.log_every = 10 ** 6
  return config


def pooled_test_features(config) -> tuple[np.ndarray, np.ndarray]:
  """Pretrained features of the test split averaged over positions: (normal [N, D], anomalous [M, D])."""
  layers = occ.check_layers(config.model.feature_layers)
  backbone = weights.create_model(config.model.backbone)
  variables = weights.load_backbone_variables(config.model.backbone, config.model.backbone_weights,
                                              outputs=layers, rng=jax.random.PRNGKey(config.seed))
  encode = jax.jit(lambda x: jnp.mean(occ.encode(backbone, variables, x, layers=layers), axis=(1, 2)))
  data = config.data
  source, _ = sources.load_split(name=data.name, category=data.category, split='test',
                                 data_dir=data.data_dir, manual_dir=data.get('manual_dir') or None)
  features, labels = [], []
  for batch in pipeline.eval_batches(source, preprocess=data.eval_preprocess.format(
      image_size=data.image_size), batch_size=config.eval.batch_size):
    features.append(np.asarray(encode(jnp.asarray(batch['image'])))[batch['valid']])
    labels.append(batch['label'][batch['valid']])
  features, labels = np.concatenate(features), np.concatenate(labels)
  return features[labels == 0], features[labels == 1]


def run(config, workdir: Path) -> dict:
  start = time.perf_counter()
  results = train.train_and_evaluate(config, workdir)
  return {'image_auroc': results['image_auroc'], 'pixel_auroc': results['pixel_auroc'],
          'num_train_steps': results['num_train_steps'], 'seconds': time.perf_counter() - start}


def online_curve(config, workdir: Path, *, chunk: int, method=None) -> list[dict]:
  """Protocol C: trains one workdir `chunk` steps at a time (batch 1) up to one pass over the training
  set, evaluating after every chunk. Returns [{'steps', 'images_seen', 'image_auroc', 'pixel_auroc'}]."""
  if config.train.batch_size != 1:
    raise ValueError('protocol C needs train.batch_size = 1')
  data = config.data
  source, _ = sources.load_split(name=data.name, category=data.category, split='train',
                                 data_dir=data.data_dir, manual_dir=data.get('manual_dir') or None)
  curve = []
  steps = 0
  while steps < len(source):
    steps = min(steps + chunk, len(source))  # Never past one pass: no image is revisited.
    config.train.num_epochs = 0
    config.train.num_steps = steps
    config.train.checkpoint_every = steps
    results = train.train_and_evaluate(config, workdir, method=method)
    curve.append({'steps': steps, 'images_seen': steps, 'image_auroc': results['image_auroc'],
                  'pixel_auroc': results['pixel_auroc']})
  return curve


def _fmt(value) -> str:
  return '—' if value is None else f'{value:.3f}'


def sweep(args) -> dict:
  report = {'backbone': args.backbone, 'random_backbone': not args.weights, 'datasets': {}}
  for dataset in args.datasets.split(','):
    config = base_config(dataset, image_size=args.image_size, epochs=args.epochs, backbone=args.backbone,
                         weights_path=args.weights, data_dir=args.data_dir)
    normal, anomalous = pooled_test_features(config)
    entry = {'cosine_normal_anomalous': occ.mean_cosine_similarity(normal, anomalous),
             'cosine_normal_normal': occ.mean_cosine_similarity(normal, normal), 'norms': {},
             'distributions': {}}
    print(f'\n## {dataset}  (mean cosine similarity normal vs anomalous '
          f'{entry["cosine_normal_anomalous"]:.3f}, normal vs normal {entry["cosine_normal_normal"]:.3f})')
    print('| center | norm | image AUROC | pixel AUROC | steps | seconds |\n|---|---|---|---|---|---|')
    runs = [('normal', float(norm)) for norm in args.norms.split(',')]
    runs += [(name, 1.0) for name in args.distributions.split(',') if (name, 1.0) not in runs]
    for distribution, norm in runs:
      config.occ.center_distribution = distribution
      config.occ.center_norm = norm
      name = dataset.replace(':', '_')
      result = run(config, Path(args.workdir) / f'{name}_{distribution}_{norm:g}')
      if distribution == 'normal':
        entry['norms'][norm] = result
      if norm == 1.0:
        entry['distributions'][distribution] = result
      print(f'| {distribution} | {norm:g} | {_fmt(result["image_auroc"])} | {_fmt(result["pixel_auroc"])} '
            f'| {result["num_train_steps"]} | {result["seconds"]:.0f} |', flush=True)
    report['datasets'][dataset] = entry
  return report


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('command', choices=('sweep', 'online'))
  parser.add_argument('--datasets', default='textures:brick,digits:0', help='name:category,... (sweep)')
  parser.add_argument('--dataset', default='textures:brick', help='name:category (online)')
  parser.add_argument('--norms', default='1,4,8,16,32')
  parser.add_argument('--distributions', default='normal,uniform,ones,feature_mean')
  parser.add_argument('--image_size', type=int, default=64)
  parser.add_argument('--epochs', type=int, default=20)
  parser.add_argument('--chunk', type=int, default=50, help='steps between evaluations (online)')
  parser.add_argument('--backbone', default='resnet18')
  parser.add_argument('--weights', default='', help='backbone weights file; empty: RANDOM encoder')
  parser.add_argument('--data_dir', default='')
  parser.add_argument('--workdir', default='runs/occ_experiment')
  parser.add_argument('--output', default='', help='also write the report as JSON here')
  args = parser.parse_args()
  print(f'# OCC (seed 002) {args.command}: backbone {args.backbone}, '
        + ('RANDOM weights (no pretrained file given; not the paper\'s ImageNet features)' if not args.weights
           else f'weights {args.weights}') + f', images {args.image_size}px')
  if args.command == 'sweep':
    report = sweep(args)
  else:
    config = base_config(args.dataset, preset='paper_c', image_size=args.image_size, epochs=1,
                         backbone=args.backbone, weights_path=args.weights, data_dir=args.data_dir)
    spec = 'resize({image_size})|normalize("imagenet")'
    config.data.update(train_preprocess=spec, eval_preprocess=spec)
    config.model.feature_layers = ('layer1', 'layer2', 'layer3')
    curve = online_curve(config, Path(args.workdir) / f'online_{args.dataset.replace(":", "_")}',
                         chunk=args.chunk)
    print('| images seen | image AUROC | pixel AUROC |\n|---|---|---|')
    for point in curve:
      print(f'| {point["images_seen"]} | {_fmt(point["image_auroc"])} | {_fmt(point["pixel_auroc"])} |')
    report = {'backbone': args.backbone, 'random_backbone': not args.weights, 'online': curve}
  if args.output:
    Path(args.output).write_text(json.dumps(report, indent=2) + '\n')


if __name__ == '__main__':
  main()
