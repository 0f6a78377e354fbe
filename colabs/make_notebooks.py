"""Writes the Colab notebooks of `colabs/` from the cell sources below: `python colabs/make_notebooks.py`.

The notebooks are generated, so they stay reviewable (this file) and regenerable; edit here, rerun, commit
both. Each notebook reads two environment variables:
  ADJAX_COLAB_TEST=1     tiny runs (a few train steps) so `tests/colabs_test.py` can execute every notebook fast
  ADJAX_COLAB_WORKDIR    where runs are written (default: <tempdir>/adjax_colabs)
and `ADJAX_REPO`, the adjax checkout to install (default: the parent of the notebook's directory).
"""

from pathlib import Path
import sys
import textwrap

import nbformat

COLABS = Path(__file__).resolve().parent


def _md(text: str):
  return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def _code(text: str):
  return nbformat.v4.new_code_cell(textwrap.dedent(text).strip())


_COLAB_NOTE = """
    **Run it.** Locally: from a checkout of adjax, `jupyter notebook colabs/{name}.ipynb` (or open it in
    VS Code) and run all cells; the first cell installs the checkout with `pip install -e` as the README does.
    On Colab: first put a copy of the adjax repository in the runtime (`!git clone` of your copy, or upload
    the repository as a zip and `!unzip` it), then `%cd <that directory>/colabs` (or set
    `os.environ['ADJAX_REPO']` to the checkout) and run all cells; a CPU runtime is enough. Everything runs on
    the embedded `textures` dataset (scikit-image's CC0 brick photo with synthetic defects): no download.
"""

_INSTALL = """
    # Install adjax from its checkout (this notebook sits in <repo>/colabs), unless it is importable already.
    import importlib.util
    import os
    import pathlib
    import sys

    REPO = pathlib.Path(os.environ.get('ADJAX_REPO', '..')).resolve()
    if not (REPO / 'pyproject.toml').is_file():
      raise FileNotFoundError(f'{REPO} is not an adjax checkout: %cd into <repo>/colabs or set ADJAX_REPO')
    if importlib.util.find_spec('adjax') is None:
      %pip install -q -e {REPO}
    sys.path.insert(0, str(REPO))  # `configs/` (and adjax, right after an install) import from the checkout.
    TEST_MODE = os.environ.get('ADJAX_COLAB_TEST') == '1'  # tests/colabs_test.py: a few steps only.
    print('adjax checkout:', REPO, '| test mode:', TEST_MODE)
"""

_SETUP = """
    from adjax import xla_options
    xla_options.set_defaults()  # Before JAX starts: faster CPU convolutions (see adjax/xla_options.py).

    import shutil
    import tempfile

    from absl import logging
    from IPython.display import Image, display
    import jax
    import matplotlib.pyplot as plt
    import numpy as np

    from adjax import train
    from adjax.data import sources
    {config_imports}

    logging.set_verbosity(logging.WARNING)  # The train loop logs every few steps; keep the output short.
    RUNS = pathlib.Path(os.environ.get('ADJAX_COLAB_WORKDIR',
                                       pathlib.Path(tempfile.gettempdir()) / 'adjax_colabs'))
    print('devices:', jax.devices(), '| runs under', RUNS)
"""

_DATA = """
    config = {first_config}
    test_source, info = sources.load_split(name=config.data.name, category=config.data.category, split='test',
                                           data_dir=config.data.data_dir)
    print({{key: info[key] for key in ('name', 'category', 'num_examples', 'has_masks')}})
    labels = np.array([test_source[i]['label'] for i in range(len(test_source))])
    shown = list(np.flatnonzero(labels == 0)[:2]) + list(np.flatnonzero(labels == 1)[:4])
    figure, axes = plt.subplots(2, len(shown), figsize=(2 * len(shown), 4.2))
    for column, index in enumerate(shown):
      example = test_source[int(index)]
      axes[0, column].imshow(example['image'])
      axes[0, column].set_title(example['defect_type'].decode(), fontsize=9)
      axes[1, column].imshow(example['mask'][..., 0], cmap='gray', vmin=0, vmax=255)
      for row in range(2):
        axes[row, column].axis('off')
    plt.show()
"""

_RUN = """
    def run(config, name):
      \"\"\"Trains and evaluates `config` in a fresh workdir RUNS/name; returns results.json as a dict.\"\"\"
      workdir = RUNS / name
      shutil.rmtree(workdir, ignore_errors=True)  # A workdir holding a checkpoint would resume instead.
      results = train.train_and_evaluate(config, workdir)
      print(f'{name}: {results["num_train_steps"]} steps in {results["train_seconds"]:.1f} s, '
            f'evaluated in {results["eval_seconds"]:.1f} s -> {workdir}')
      return results


    def metrics_table(results_by_name):
      \"\"\"The headline metrics of several runs side by side (None where a metric does not apply).\"\"\"
      keys = ('image_auroc', 'image_f1_max', 'pixel_auroc', 'pixel_ap', 'pixel_aupro', 'threshold')
      print(f'{"run":<14}' + ''.join(f'{key:>14}' for key in keys))
      for name, results in results_by_name.items():
        cells = ['None' if results[key] is None else f'{results[key]:.4f}' for key in keys]
        print(f'{name:<14}' + ''.join(f'{cell:>14}' for cell in cells))


    def show_figures(name):
      for figure in ('examples', 'histograms', 'curves'):
        display(Image(filename=str(RUNS / name / 'figures' / f'{figure}.png')))
"""

_FIGURES_NOTE = """
    ## Figures

    Every run writes three PNGs to `<workdir>/figures/` and logs them to TensorBoard
    (`%load_ext tensorboard` then `%tensorboard --logdir <workdir>`, tab *Images*):

    - `examples.png`: test images (top), ground truth (middle) and the anomaly map over the image (bottom).
      Columns are chosen by image score: *best defective* = highest-scoring defective images, *worst
      defective* = lowest-scoring defective ones (missed), *best good* = lowest-scoring good images, *worst
      good* = highest-scoring good ones (false alarms), then random ones.
    - `histograms.png`: image scores and pixel scores of good vs defective, with the thresholds.
    - `curves.png`: image and pixel ROC and precision-recall curves and the per-region-overlap (PRO) curve,
      whose area up to FPR 0.3 is AUPRO; dots mark the operating points of the thresholds.
"""

_BY_SCORE = """
    # Every score and every map the method produces is evaluated, not only the primary one.
    for name, results in {runs}.items():
      print(name, 'image AUROC by score:', {{k: v and round(v, 4) for k, v in results['image_auroc_by_score'].items()}})
      for map_name, values in results['pixel_metrics_by_map'].items():
        print(f'  pixel metrics of map {{map_name!r}}:', {{k: round(v, 4) for k, v in values.items()}})
"""


def _method_notebook(*, name: str, title: str, intro: str, config_imports: str, first_config: str,
                     runs: list[tuple[str, str, str, str]], closing: str):
  """runs: (run name, markdown before it, config code, steps in full mode) per training run."""
  cells = [
      _md(f'# {title}\n\n{textwrap.dedent(intro).strip()}\n\n{textwrap.dedent(_COLAB_NOTE.format(name=name)).strip()}'),
      _code(_INSTALL),
      _md('## Setup\n\nXLA options first (they must be set before JAX starts), then the imports. '
          'adjax uses every local device (`jax.pmap`); on a CPU runtime that is one device.'),
      _code(_SETUP.format(config_imports=config_imports.replace('\n', '\n    '))),
      _md('## The data\n\nThe test split of the embedded `textures/brick` dataset: good crops and crops with '
          'a synthetic defect (foreign patch, rotated patch, scratch, stain) and its exact mask. The '
          'dataset is built on first use (a few seconds) into tfds\' default directory.'),
      _code(_DATA.format(first_config=first_config)),
      _md('## Helpers\n\n`run` trains and evaluates one config with the one train loop '
          '(`adjax.train.train_and_evaluate`, the same call as `python -m adjax.main`); the other two '
          'print metrics and show the figures the run wrote.'),
      _code(_RUN),
  ]
  for run_name, markdown, config_code, full_steps in runs:
    cells.append(_md(markdown))
    cells.append(_code('\n'.join([
        config_code,
        f'config.train.num_steps = 2 if TEST_MODE else {full_steps}',
        f'results_{run_name} = run(config, {run_name!r})',
        f'metrics_table({{{run_name!r}: results_{run_name}}})'])))
  cells.append(_md(_FIGURES_NOTE))
  for run_name, *_ in runs:
    cells.append(_code(f'show_figures({run_name!r})'))
  run_dict = '{' + ', '.join(f'{r!r}: results_{r}' for r, *_ in runs) + '}'
  cells.append(_md('## All scores and maps\n\n`results.json` also holds the image AUROC of every image '
                   'score and the pixel metrics of every anomaly map; `config.eval.score` and '
                   '`config.eval.map` only choose the headline ones.'))
  cells.append(_code(_BY_SCORE.format(runs=run_dict)))
  if len(runs) > 1:
    cells.append(_code(f'metrics_table({run_dict})'))
  cells.append(_md(closing))
  return cells


def ebm_notebook():
  return _method_notebook(
      name='ebm', title='Energy-based model (seed 004): contrastive divergence with SGLD negatives',
      intro="""
          An energy network E(x) is trained so that training images get low energy and samples drawn from the
          model by stochastic gradient Langevin dynamics (SGLD, one `jax.lax.scan`) get high energy
          (`adjax.losses.contrastive_divergence`). The anomaly map is the gradient dE/dx, standardised per
          pixel with the mean and standard deviation of the training gradients (`vmap`); the image score is
          its norm. This notebook uses the `smoke` preset of `configs/ebm.py` (16x16 images, a tiny network,
          5 SGLD steps) with more train steps: numbers are only meant to show the workflow.
      """,
      config_imports='from configs import ebm as ebm_config',
      first_config="ebm_config.get_config('smoke')",
      runs=[('ebm', '## Train and evaluate\n\nThe `smoke` preset, with more steps outside test mode. '
             'Any key can be changed here, exactly as `--config.key=value` on the command line.',
             "config = ebm_config.get_config('smoke')", '300')],
      closing="""
          ## Next

          - The default preset (`configs/ebm.py`, 64x64, 40 SGLD steps) runs in about 9 minutes on 2 CPU cores
            and is clearly better than chance; `configs/ebm.py:paper` holds seed 004's settings for a GPU and
            MVTec AD: `python -m adjax.main --config=configs/ebm.py:paper --config.data.manual_dir=...`.
          - `config.eval.map='raw'` scores with unstandardised gradients; `config.ebm.chain_init='replay'` uses a
            persistent replay buffer.
      """)


def fcdd_notebook():
  return _method_notebook(
      name='fcdd', title='FCDD and pixel-wise HSC (seed 000)',
      intro="""
          Fully convolutional data description: a convolutional trunk and a 1x1 convolution give a map
          A = sqrt(phi(x)^2 + 1) - 1 that should be small on normal images. Training sees normal images and
          synthetic anomalies (*confetti noise*, which also gives their masks), with the FCDD loss of Eq. 4
          (`adjax.losses.fcdd_loss`: mean of A on normal pixels, a push term on anomalous ones) or the
          pixel-wise hypersphere-classifier loss of Eq. 5 (`adjax.losses.pixel_hsc_loss`). The map is upsampled
          to the input by the receptive field's Gaussian. Both runs use the `smoke` preset (32x32, a small CNN
          trunk trained from scratch: no ImageNet weights here) with more steps.
      """,
      config_imports='from configs import fcdd as fcdd_config',
      first_config="fcdd_config.get_config('smoke')",
      runs=[('fcdd', '## FCDD loss (Eq. 4)\n\n`configs/fcdd.py:smoke`: confetti noise on half of the '
             'training draws, then FCDD\'s augmentation (jitter, noise, local contrast normalisation).',
             "config = fcdd_config.get_config('smoke')", '300'),
            ('hsc', '## Pixel-wise HSC loss (Eq. 5)\n\nThe same network and data with the other loss: '
             "`get_config('smoke,hsc')` is `configs/fcdd.py:smoke,hsc` on the command line "
             '(`configs/hsc.py` has the same presets).',
             "config = fcdd_config.get_config('smoke,hsc')", '300')],
      closing="""
          ## Next

          - `configs/fcdd.py` (default) trains for a few minutes on 64x64 crops; `configs/fcdd.py:paper` is seed
            000's setting (VGG11-BN trunk with ImageNet weights from `--config.model.backbone_weights=FILE`,
            MVTec AD), and `:paper_semi` the semi-supervised variant with one real anomaly per defect type.
      """)


def reconstruction_notebook():
  return _method_notebook(
      name='reconstruction', title='Reconstruction: LAMP (seed 001) and the CAE family (seed 003)',
      intro="""
          An autoencoder learns to reconstruct normal images; the reconstruction error is the anomaly map and
          its mean the image score. **LAMP** (`configs/lamp.py`) trains a conv autoencoder with the amplified
          loss -log(1 - L / max L (1 - epsilon)) (`adjax.losses.lamp`), which weights the hardest pixels most.
          The **CAE family** (`configs/cae.py`) trains a convolutional autoencoder as a denoising (input
          noise) and contractive (Jacobian penalty, `adjax.losses.contractive_penalty`) autoencoder and takes
          its thresholds from training scores (seed 003 Eq. 6). Both use their `smoke` presets (16x16 images)
          with more steps.
      """,
      config_imports='from configs import cae as cae_config\nfrom configs import lamp as lamp_config',
      first_config="lamp_config.get_config('smoke')",
      runs=[('lamp', '## LAMP\n\nL2 base loss amplified by LAMP, Adam. `config.lamp.enabled = False` gives '
             'the plain L2 loss; `config.loss.base` picks `l1` or `ssim`.',
             "config = lamp_config.get_config('smoke')", '300'),
            ('cae', '## Denoising + contractive autoencoder\n\n`config.denoising.scale = 0` turns off the '
             'input noise, `config.contractive.weight = 0` the Jacobian penalty. The image threshold comes '
             'from training data (`threshold_source` in `results.json`).',
             "config = cae_config.get_config('smoke')", '300')],
      closing="""
          ## Next

          - `scripts/reconstruction_experiment.py` sweeps loss x LAMP x optimizer on one-vs-rest digits (seed 001
            Table 2 style); `scripts/loss_landscape.py` draws L2 vs L2-LAMP loss landscapes.
          - `configs/lamp.py:paper` and `configs/cae.py:paper` hold the seeds' MVTec AD settings.
      """)


def occ_notebook():
  return _method_notebook(
      name='occ', title='OCC with a data-agnostic center (seed 002)',
      intro="""
          Frozen multi-scale backbone features (ResNet-18 layers 1-3 here) go through a trainable 1x1 projector; a soft-boundary loss pulls
          every projected feature of a normal image towards a fixed, random, data-agnostic center
          (`adjax/losses/occ.py`). The anomaly map is the distance to the center per feature position, upsampled;
          the image score its maximum. **No pretrained weights can be downloaded here**: without
          `config.model.backbone_weights` the backbone is randomly initialised (a warning says so), so the
          numbers are those of random features. The `smoke` preset (32x32) with more steps.
      """,
      config_imports='from configs import occ as occ_config',
      first_config="occ_config.get_config('smoke')",
      runs=[('occ', '## Train and evaluate\n\nSet `config.model.backbone_weights` to a local torchvision / '
             'timm file for ImageNet features.', "config = occ_config.get_config('smoke')", '200')],
      closing="""
          ## Next

          - `configs/occ.py:paper_b` is seed 002's protocol B (Wide-ResNet-50-2 features, MVTec AD) and
            `:paper_c` the online protocol; `scripts/occ_experiment.py` runs them.
      """)


_LOSSES_INTRO = """
    # Use the pure losses in your own code

    `adjax.losses` holds every loss as a pure function of arrays, in the style of optax: unreduced
    (per-example or per-pixel) values, keyword-only hyperparameters, shapes in the docstrings. You can use them
    without adjax's train loop. Here three tiny Flax models are trained with optax on the embedded brick
    texture, each with one loss:

    1. `losses.fcdd_loss` (seed 000 Eq. 4) on a fully convolutional net, with confetti-noise anomalies;
    2. `losses.lamp` on top of `losses.l2_map` (seed 001) for a conv autoencoder;
    3. `losses.contrastive_divergence` (seed 004) for an energy net with negatives from `adjax.sampling.sgld`.

    Each is then scored on the test split with `adjax.metrics`. The models are tiny and train for a few
    hundred steps on 32x32 crops: their numbers show the API at work, not the seeds' results.
""" + _COLAB_NOTE.format(name='losses')


def losses_notebook():
  cells = [
      _md(_LOSSES_INTRO),
      _code(_INSTALL),
      _md('## Setup and data\n\n`pipeline.eval_batches` applies a preprocessing spec to every example; with '
          '`batch_size=len(source)` it returns the whole split as arrays. `confetti(...)` is the one op that '
          'also writes masks and labels: the synthetic anomalies FCDD trains with.'),
      _code("""
          from adjax import xla_options
          xla_options.set_defaults()  # Before JAX starts: faster CPU convolutions.

          import flax.linen as nn
          import jax
          import jax.numpy as jnp
          import matplotlib.pyplot as plt
          import numpy as np
          import optax

          from adjax import losses
          from adjax import metrics
          from adjax import sampling
          from adjax.data import pipeline
          from adjax.data import sources

          SIZE = 32
          STEPS = 3 if TEST_MODE else 300


          def load(split, spec, seed=0):
            source, _ = sources.load_split(name='textures', category='brick', split=split, data_dir='')
            batch = next(pipeline.eval_batches(source, preprocess=spec, batch_size=len(source), seed=seed))
            return {key: jnp.asarray(batch[key]) for key in ('image', 'mask', 'label')}  # Device arrays.


          train_images = load('train', f'resize({SIZE})|value_range(-1, 1)')['image']
          confetti = load('train', f'resize({SIZE})|confetti(0.5, "pixels", blur_sigma=0.0)|value_range(-1, 1)')
          test = load('test', f'resize({SIZE})|value_range(-1, 1)')
          print('train images', train_images.shape, '| confetti images', confetti['image'].shape,
                'masks', confetti['mask'].shape, 'anomalous:', int(confetti['label'].sum()))
          print('test images', test['image'].shape, 'masks', test['mask'].shape, 'labels', test['label'].shape)


          def train_loop(loss_fn, params, *, learning_rate=1e-3, steps=STEPS, batch_size=32):
            \"\"\"Adam on `loss_fn(params, indices, rng) -> scalar`; returns params and the loss curve.\"\"\"
            optimizer = optax.adam(learning_rate)

            @jax.jit
            def step(params, opt_state, indices, rng):
              loss, grads = jax.value_and_grad(loss_fn)(params, indices, rng)
              updates, opt_state = optimizer.update(grads, opt_state, params)
              return optax.apply_updates(params, updates), opt_state, loss

            opt_state, history = optimizer.init(params), []
            rng, numpy_rng = jax.random.PRNGKey(0), np.random.default_rng(0)
            for _ in range(steps):
              rng, key = jax.random.split(rng)
              indices = numpy_rng.choice(len(train_images), batch_size, replace=False)
              params, opt_state, loss = step(params, opt_state, indices, key)
              history.append(float(loss))
            return params, history


          def report(name, maps, image_scores):
            \"\"\"Metrics of maps [N, H, W] and image scores [N] on the test split.\"\"\"
            masks, labels = test['mask'], test['label']
            print(f'{name}: image AUROC {metrics.image_auroc(image_scores, labels):.3f}, '
                  f'pixel AUROC {metrics.pixel_auroc(maps, masks):.3f}, AUPRO {metrics.aupro(maps, masks):.3f}')
      """),
      _md('## 1. FCDD loss\n\nA fully convolutional net maps an image `[batch, 32, 32, 3]` to '
          '`A = pseudo_huber(conv(x))` of shape `[batch, 32, 32]` (no downsampling, so no upsampling is '
          'needed). `fcdd_loss(A, masks)` is `[batch]`: the mean of A over normal pixels, plus the push '
          'term `-log(1 - exp(-mean of A over anomalous pixels))` for images with anomalous pixels.'),
      _code("""
          class TinyFCDD(nn.Module):
            @nn.compact
            def __call__(self, x):
              x = nn.relu(nn.Conv(16, (3, 3))(x))
              x = nn.relu(nn.Conv(16, (3, 3))(x))
              return losses.pseudo_huber(nn.Conv(1, (1, 1))(x)[..., 0])  # [batch, height, width] >= 0


          fcdd_net = TinyFCDD()
          fcdd_params = fcdd_net.init(jax.random.PRNGKey(1), train_images[:1])
          heatmaps = fcdd_net.apply(fcdd_params, confetti['image'][:4])
          per_image = losses.fcdd_loss(heatmaps, confetti['mask'][:4])
          print('heatmaps', heatmaps.shape, '-> fcdd_loss', per_image.shape, np.round(np.asarray(per_image), 3),
                'for labels', confetti['label'][:4])


          def fcdd_objective(params, indices, rng):
            del rng
            return losses.fcdd_loss(fcdd_net.apply(params, confetti['image'][indices]),
                                    confetti['mask'][indices]).mean()


          fcdd_params, fcdd_history = train_loop(fcdd_objective, fcdd_params)
          fcdd_maps = np.asarray(fcdd_net.apply(fcdd_params, test['image']))
          report('FCDD', fcdd_maps, fcdd_maps.mean(axis=(1, 2)))
      """),
      _md('## 2. LAMP on an L2 reconstruction loss\n\n`l2_map(x, y)` is the per-pixel squared error '
          '`[batch, 32, 32, 3]`; `lamp(map, epsilon=...)` normalises it by its maximum over the batch and '
          'sums `-log(1 - L\')` per image, giving `[batch]`. The largest errors are amplified most.'),
      _code("""
          class TinyAutoencoder(nn.Module):
            @nn.compact
            def __call__(self, x):
              h = nn.relu(nn.Conv(16, (4, 4), strides=2)(x))  # 16x16
              h = nn.relu(nn.Conv(32, (4, 4), strides=2)(h))  # 8x8
              h = nn.relu(nn.ConvTranspose(16, (4, 4), strides=(2, 2))(h))  # 16x16
              return jnp.tanh(nn.ConvTranspose(3, (4, 4), strides=(2, 2))(h))  # 32x32, in [-1, 1]


          autoencoder = TinyAutoencoder()
          ae_params = autoencoder.init(jax.random.PRNGKey(2), train_images[:1])
          batch = train_images[:4]
          error_map = losses.l2_map(batch, autoencoder.apply(ae_params, batch))
          print('l2_map', error_map.shape, '| plain L2 per image', np.round(np.asarray(error_map.sum((1, 2, 3))), 2),
                '| LAMP per image', np.round(np.asarray(losses.lamp(error_map, epsilon=1e-3)), 2))


          def lamp_objective(params, indices, rng):
            del rng
            images = train_images[indices]
            return losses.lamp(losses.l2_map(images, autoencoder.apply(params, images)), epsilon=1e-3).mean()


          ae_params, lamp_history = train_loop(lamp_objective, ae_params)
          ae_maps = np.asarray(losses.l2_map(test['image'], autoencoder.apply(ae_params, test['image'])).mean(-1))
          report('LAMP autoencoder', ae_maps, ae_maps.mean(axis=(1, 2)))
      """),
      _md('## 3. Contrastive divergence with SGLD negatives\n\nAn energy net maps `[batch, 32, 32, 3]` to '
          '`[batch]` energies. `sampling.sgld` runs the Langevin chain in one `lax.scan` from uniform noise; '
          '`contrastive_divergence(E(data), E(samples))` is `[batch]` and lowers the energy of data while '
          'raising it on samples. The anomaly map is the norm of dE/dx over channels.'),
      _code("""
          class TinyEnergy(nn.Module):
            @nn.compact
            def __call__(self, x):
              h = nn.swish(nn.Conv(16, (3, 3), strides=2)(x))
              h = nn.swish(nn.Conv(32, (3, 3), strides=2)(h))
              return nn.Dense(1)(h.reshape(h.shape[0], -1))[:, 0]  # [batch]


          energy_net = TinyEnergy()
          energy_params = energy_net.init(jax.random.PRNGKey(3), train_images[:1])


          def ebm_objective(params, indices, rng):
            frozen = jax.lax.stop_gradient(params)  # The chain needs dE/dx only, not dE/dparams.
            start_key, chain_key = jax.random.split(rng)
            start = jax.random.uniform(start_key, (len(indices), SIZE, SIZE, 3), minval=-1, maxval=1)
            negatives = sampling.sgld(lambda x: energy_net.apply(frozen, x), start, chain_key, num_steps=20,
                                      step_size=1.0, noise_scale=0.01)
            return losses.contrastive_divergence(energy_net.apply(params, train_images[indices]),
                                                 energy_net.apply(params, negatives)).mean()


          print('contrastive_divergence of 4 images against 4 noise images:',
                losses.contrastive_divergence(energy_net.apply(energy_params, train_images[:4]),
                                              energy_net.apply(energy_params, -train_images[:4])).shape)
          energy_params, ebm_history = train_loop(ebm_objective, energy_params)
          energy_gradients = jax.vmap(jax.grad(lambda x: energy_net.apply(energy_params, x[None])[0]))(test['image'])
          ebm_maps = np.asarray(jnp.linalg.norm(energy_gradients, axis=-1))
          report('EBM gradient map', ebm_maps, np.asarray(energy_net.apply(energy_params, test['image'])))
      """),
      _md('## Loss curves and maps\n\nThe three training curves, then a few defective test images with their '
          'ground truth and the three anomaly maps.'),
      _code("""
          figure, axes = plt.subplots(1, 3, figsize=(12, 3))
          for axis, (name, history) in zip(axes, [('FCDD', fcdd_history), ('LAMP', lamp_history),
                                                  ('contrastive divergence', ebm_history)]):
            axis.plot(history)
            axis.set(title=name, xlabel='step')
          plt.show()

          defective = np.flatnonzero(test['label'] == 1)[:5]
          rows = [('image', (test['image'] + 1) / 2), ('ground truth', test['mask']), ('FCDD', fcdd_maps),
                  ('LAMP AE error', ae_maps), ('EBM |dE/dx|', ebm_maps)]
          figure, axes = plt.subplots(len(rows), len(defective), figsize=(2 * len(defective), 2 * len(rows)))
          for row, (name, values) in enumerate(rows):
            for column, index in enumerate(defective):
              cmap = None if values.ndim == 4 else 'gray' if name == 'ground truth' else 'jet'
              axes[row, column].imshow(values[index], cmap=cmap)
              axes[row, column].set_xticks([])
              axes[row, column].set_yticks([])
            axes[row, 0].set_ylabel(name)
          plt.show()
      """),
      _md("""
          ## Next

          The same losses drive adjax's methods (`adjax/methods/*.py`), which add the seeds' networks,
          preprocessing, statistics and scoring; see the other notebooks, and `adjax.losses`' docstrings for
          every loss (`pixel_hsc_loss`, `ssim_loss_map`, `contractive_penalty`, ...).
      """),
  ]
  return cells


NOTEBOOKS = {
    'ebm': ebm_notebook,
    'fcdd': fcdd_notebook,
    'reconstruction': reconstruction_notebook,
    'occ': occ_notebook,
    'losses': losses_notebook,
}


def render(name: str) -> str:
  """The .ipynb text of notebook `name` (deterministic: the same text on every run)."""
  notebook = nbformat.v4.new_notebook(cells=NOTEBOOKS[name]())
  for index, cell in enumerate(notebook.cells):
    cell.id = f'{name}-{index:02d}'  # Stable ids: regenerating an unchanged notebook changes no byte.
  notebook.metadata.update(kernelspec={'name': 'python3', 'display_name': 'Python 3', 'language': 'python'},
                           language_info={'name': 'python'}, colab={'provenance': []})
  nbformat.validate(notebook)
  return nbformat.writes(notebook) + '\n'


def write(name: str) -> Path:
  path = COLABS / f'{name}.ipynb'
  path.write_text(render(name))
  return path


if __name__ == '__main__':
  for notebook_name in sys.argv[1:] or NOTEBOOKS:
    print('wrote', write(notebook_name))
