"""One-class classification with a data-agnostic hypersphere center (seed 002) as an adjax method.

A frozen pretrained encoder gives features f (multi-scale backbone layers resized to the grid of the
shallowest one and concatenated, or the penultimate vector as a 1x1 grid); a trainable projector (1x1 conv)
maps them to z; training pulls every feature vector of the normal images into a tiny hypersphere around a
constant center c: loss max(||z - c||^2 - R^2, 0) (`adjax.losses.occ`). c is drawn from N(0, 1),
U(0, 1), all ones or the mean pretrained feature, L2-normalised and scaled to `center_norm` (seed 002:
norms above the feasible domain degrade detection). Scores: the pixel map max(||z - c||^2 - R^2, 0)
upsampled bilinearly to the input (optionally Gaussian-smoothed); image score = its max (or mean).

Variables: 'params' = the projector only; 'backbone' = the encoder's variables and 'center' = {'center'}:
constants in the model state, so no optimizer ever sees them. Training features of a frozen encoder are
cached in host memory by image content on a single device (see `make_feature_cache`): epochs after the
first skip the encoder.
"""

import hashlib
import threading

from absl import logging
import flax.linen as nn
import jax
from jax.experimental import io_callback
import jax.numpy as jnp
import numpy as np
import optax

from adjax import processes
from adjax import scoring
from adjax.errors import InputError
from adjax.losses import occ as occ_losses
from adjax.methods import Method, compute_dtype
from adjax.models import dense
from adjax.models import resnet
from adjax.models import upsampling
from adjax.models import weights

CENTER_DISTRIBUTIONS = ('normal', 'uniform', 'ones', 'feature_mean')
PROJECTORS = ('conv1x1', 'linear')
THRESHOLDS = ('three_sigma', 'radius', 'none')
MAPS = ('distance',)
SCORES = ('max', 'mean')


def make_center(*, dimension: int, distribution: str = 'normal', norm: float = 1.0, seed: int = 1024,
                feature_mean: np.ndarray | None = None) -> np.ndarray:
  """The hypersphere center: a draw of `distribution`, L2-normalised, times `norm`.

  Args:
    dimension: feature channels.
    distribution: 'normal' (N(0, 1), paper default), 'uniform' (U(0, 1)), 'ones' or 'feature_mean'
      (then `feature_mean [dimension]` is the vector used).
    norm: the L2 norm of the result (> 0; seed 002 default 1).
    seed: numpy seed of the draw (seed 002 fixes 1024; numpy's stream, not torch's).

  Returns:
    float32 [dimension] with ||c|| = norm.
  """
  if distribution not in CENTER_DISTRIBUTIONS:
    raise InputError(f'occ.center_distribution: unknown {distribution!r}; known: '
                     f'{", ".join(CENTER_DISTRIBUTIONS)}')
  if not norm > 0:
    raise InputError(f'occ.center_norm: must be > 0 (c = 0 lets the projector collapse), got {norm}')
  rng = np.random.default_rng(seed)
  if distribution == 'normal':
    center = rng.standard_normal(dimension)
  elif distribution == 'uniform':
    center = rng.uniform(0.0, 1.0, dimension)
  elif distribution == 'ones':
    center = np.ones(dimension)
  else:
    if feature_mean is None or np.shape(feature_mean) != (dimension,):
      raise ValueError(f'feature_mean must have shape ({dimension},), got {np.shape(feature_mean)}')
    center = np.asarray(feature_mean, np.float64)
  length = np.linalg.norm(center)
  if not length > 0:
    raise InputError('occ.center_distribution: the center direction is the zero vector')
  return (center / length * norm).astype(np.float32)


class _Conv1x1(nn.Module):
  """`nn.Dense(features)`'s parameters (same names, shapes and initialisation) applied to the per-layer maps
  [batch, h_i, w_i, c_i] (largest grid first) as to their concatenation at the first grid."""
  features: int
  use_bias: bool

  @nn.compact
  def __call__(self, parts):
    bound = 1.0 / np.sqrt(self.features)
    kernel = self.param('kernel', nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform'),
                        (sum(part.shape[-1] for part in parts), self.features), jnp.float32)
    grid = parts[0].shape[1:3]
    projected, start = None, 0
    for part in parts:
      rows = kernel[start:start + part.shape[-1]]
      start += part.shape[-1]
      term = upsampling.bilinear(dense.matmul(part, rows.astype(part.dtype)), grid)
      term = term.astype(jnp.promote_types(term.dtype, jnp.float32))  # Summed and scored in float32.
      projected = term if projected is None else projected + term
    if self.use_bias:
      projected = projected + self.param(
          'bias', lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound), (self.features,),
          jnp.float32)
    return projected


class Projector(nn.Module):
  """1x1 convolution over the channel axis of the features, keeping the channel count: [..., C] -> [..., C].

  `use_bias=True` is the paper's 1x1 conv; False is the 'linear' (bias-free) projector. Init as torch's
  Conv2d/Linear: kernel and bias U(±1/sqrt(C)).

  Called on the per-layer features of `encode_layers` (a list, shallowest and largest grid first), it
  computes the same function as on their concatenation `encode`: bilinear upsampling treats every channel
  alike, so it commutes with the channel mixing, and each layer's rows of the kernel are applied at the
  layer's own resolution before upsampling and summing (up to float rounding; at 224² with layers 1-3 of a
  wide ResNet, 4x fewer multiplications, and no concatenated map). A single array is one part.
  """
  use_bias: bool = True

  @nn.compact
  def __call__(self, features) -> jax.Array:
    parts = list(features) if isinstance(features, (list, tuple)) else [features]
    return _Conv1x1(sum(part.shape[-1] for part in parts), self.use_bias, name='conv1x1')(parts)


def check_layers(layers) -> tuple[str, ...]:
  """Feature names ordered shallow to deep; 'penultimate' only alone."""
  layers = tuple(layers)
  unknown = [name for name in layers if name not in resnet.FEATURE_NAMES or name == 'logits']
  if not layers or unknown:
    raise InputError(f'model.feature_layers: unknown {unknown or "empty"}; choose from '
                     f'{", ".join(resnet.FEATURE_NAMES[:-1])}')
  if 'penultimate' in layers and len(layers) > 1:
    raise InputError('model.feature_layers: "penultimate" (protocol A) cannot be mixed with spatial layers')
  return tuple(sorted(set(layers), key=resnet.FEATURE_NAMES.index))


def encode_layers(backbone: nn.Module, backbone_variables, images: jax.Array, *, layers) -> list[jax.Array]:
  """Frozen features of images [batch, height, width, 3], one [batch, h_i, w_i, channels_i] per layer.

  'penultimate' gives a 1x1 grid. BatchNorm runs on its running statistics; no gradient flows back
  (stop_gradient).
  """
  outputs = backbone.apply(backbone_variables, images, train=False, outputs=layers)
  if layers == ('penultimate',):
    return [jax.lax.stop_gradient(outputs['penultimate'][:, None, None, :])]
  return [jax.lax.stop_gradient(outputs[name]) for name in layers]


def encode(backbone: nn.Module, backbone_variables, images: jax.Array, *, layers) -> jax.Array:
  """Frozen features [batch, h, w, channels] of images [batch, height, width, 3]: the layers of
  `encode_layers` resized bilinearly to the grid of the shallowest one and concatenated."""
  parts = encode_layers(backbone, backbone_variables, images, layers=layers)
  grid = parts[0].shape[1:3]
  return jnp.concatenate([upsampling.bilinear(part, grid) for part in parts], axis=-1)


def gaussian_smooth(maps: jax.Array, *, sigma: float, truncate: float = 4.0) -> jax.Array:
  """Separable Gaussian blur of maps [batch, height, width], like scipy.ndimage.gaussian_filter per map
  (mode 'reflect', radius int(truncate * sigma + 0.5)); sigma in pixels, 0 returns `maps`."""
  if sigma <= 0:
    return maps
  radius = int(truncate * sigma + 0.5)
  offsets = np.arange(-radius, radius + 1)
  kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
  kernel = jnp.asarray(kernel / kernel.sum(), maps.dtype)
  padded = jnp.pad(maps, ((0, 0), (radius, radius), (radius, radius)), mode='symmetric')

  def blur(image):
    image = jax.scipy.signal.convolve(image, kernel[:, None], mode='valid')
    return jax.scipy.signal.convolve(image, kernel[None, :], mode='valid')

  return jax.vmap(blur)(padded)


def anomaly_maps(distances: jax.Array, *, size: tuple[int, int], sigma: float = 0.0) -> jax.Array:
  """Low-resolution scores [batch, h, w] -> [batch, height, width] (bilinear, then optional blur)."""
  upsampled = upsampling.bilinear(distances[..., None], size)[..., 0]
  return gaussian_smooth(upsampled, sigma=sigma)


def mean_cosine_similarity(normal: np.ndarray, anomalous: np.ndarray) -> float:
  """Average cosine similarity over all (normal, anomalous) pairs of features [N, D] and [M, D].

  Seed 002's feasible-norm guideline: the higher it is (0.19 CIFAR-10, 0.61 MVTec AD with ImageNet
  features), the smaller the center norms that keep detection good.
  """
  normal = np.asarray(normal, np.float64)
  anomalous = np.asarray(anomalous, np.float64)
  normal = normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
  anomalous = anomalous / np.maximum(np.linalg.norm(anomalous, axis=1, keepdims=True), 1e-12)
  return float(np.mean(normal @ anomalous.T))


def _digest(image: np.ndarray) -> bytes:
  return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()


def make_feature_cache(*, capacity: int | None):
  """Host-memory feature cache keyed by image content: returns (lookup, store, stats).

  `lookup(images [b, ...], shapes, dtype) -> (features, all_hit)` and `store(images, features, all_hit)`
  run as host callbacks inside the jitted loss; features are a list of arrays [b, *shape], one per entry of
  `shapes` (the encoder's layers). Keys are hashes of the exact preprocessed pixels, so a hit returns the
  encoder's output for that very image; with augmentation every lookup misses (still correct, just no
  speed-up), and at most `capacity` images (the training set size) are ever stored.
  """
  entries, lock, counts = {}, threading.Lock(), {'hits': 0, 'misses': 0}

  def lookup(images, shapes, dtype):
    keys = [_digest(image) for image in np.asarray(images)]
    with lock:
      found = [entries.get(key) for key in keys]
      hit = all(value is not None for value in found)
      counts['hits' if hit else 'misses'] += len(keys)
    if not hit:
      return [np.zeros((len(keys),) + tuple(shape), dtype) for shape in shapes], np.bool_(False)
    stacked = [np.stack([value[index] for value in found]).astype(dtype) for index in range(len(shapes))]
    return stacked, np.bool_(True)

  def store(images, features, all_hit):
    if all_hit:
      return
    keys = [_digest(image) for image in np.asarray(images)]
    values = [np.array(part) for part in features]
    with lock:
      for row, key in enumerate(keys):
        if capacity is not None and len(entries) >= capacity:
          break
        entries[key] = tuple(part[row] for part in values)

  def stats():
    with lock:
      return {'entries': len(entries), **counts}

  return lookup, store, stats


def _training_feature_mean(config, encode_fn) -> np.ndarray:
  """Mean pretrained feature vector over every position of every training image (eval preprocessing)."""
  from adjax.data import pipeline  # pylint: disable=g-import-not-at-top  (only for the data-based center)
  from adjax.data import sources  # pylint: disable=g-import-not-at-top
  data = config.data
  source, _ = sources.load_split(name=data.name, category=data.category, split='train',
                                 data_dir=data.data_dir, manual_dir=data.get('manual_dir') or None)
  total, count = 0.0, 0
  for batch in pipeline.eval_batches(source, preprocess=data.eval_preprocess.format(
      image_size=data.get('image_size')), batch_size=config.eval.batch_size):
    features = np.asarray(encode_fn(jnp.asarray(batch['image'])), np.float64)[batch['valid']]
    total = total + features.sum(axis=(0, 1, 2))
    count += features.shape[0] * features.shape[1] * features.shape[2]
  return total / count


def make_optimizer(optim) -> optax.GradientTransformation:
  """Adam with L2 weight decay added to the gradient (torch's Adam(weight_decay=...)); seed 002: 1e-4, 5e-4."""
  return optax.chain(optax.add_decayed_weights(optim.weight_decay), optax.adam(optim.learning_rate))


def make(config, *, train_size: int | None = None) -> Method:
  """Builds the method from `config.model`, `config.occ`, `config.optim`, `config.eval`.

  `train_size` bounds the feature cache (a cache never needs more entries than training images).
  """
  model_config, hp = config.model, config.occ
  layers = check_layers(model_config.feature_layers)
  if model_config.projector not in PROJECTORS:
    raise InputError(f'model.projector: unknown {model_config.projector!r}; known: {", ".join(PROJECTORS)}')
  if hp.threshold not in THRESHOLDS:
    raise InputError(f'occ.threshold: unknown {hp.threshold!r}; known: {", ".join(THRESHOLDS)}')
  if config.eval.map not in MAPS or config.eval.score not in SCORES:
    raise InputError(f'eval.map / eval.score: got {config.eval.map!r} / {config.eval.score!r}; known '
                     f'maps {", ".join(MAPS)}, scores {", ".join(SCORES)}')
  radius, sigma = float(hp.radius), float(config.eval.get('smoothing_sigma', 0.0))
  backbone = weights.create_model(model_config.backbone, dtype=compute_dtype(model_config))
  # Empty model.backbone_weights: random initialisation, announced by a loud warning.
  backbone_variables = weights.load_backbone_variables(
      model_config.backbone, model_config.backbone_weights, outputs=layers,
      rng=jax.random.PRNGKey(config.seed))
  projector = Projector(use_bias=model_config.projector == 'conv1x1')

  def features_of(backbone_vars, images):
    return encode(backbone, backbone_vars, images, layers=layers)

  def layers_of(backbone_vars, images):
    return encode_layers(backbone, backbone_vars, images, layers=layers)

  dimension = jax.eval_shape(features_of, backbone_variables, jnp.zeros(weights.SAMPLE_SHAPE)).shape[-1]
  feature_mean = None
  if hp.center_distribution == 'feature_mean':
    feature_mean = _training_feature_mean(config, jax.jit(lambda x: features_of(backbone_variables, x)))
  center = make_center(dimension=dimension, distribution=hp.center_distribution, norm=hp.center_norm,
                       seed=hp.center_seed, feature_mean=feature_mean)
  lookup, store, cache_stats = make_feature_cache(capacity=train_size)
  # Host callbacks inside a pmapped step over several devices deadlocked here (jax 0.10 moves their
  # operands to CPU device 0 while the devices wait for each other): cache on one device only.
  cache = hp.cache_features and (config.train.get('num_devices') or jax.local_device_count()) == 1
  if hp.cache_features and not cache:
    logging.warning('occ.cache_features: off, the feature cache needs train.num_devices = 1')

  def init(rng, images):
    variables = dict(projector.init(rng, layers_of(backbone_variables, images)))
    variables['backbone'] = backbone_variables
    variables['center'] = {'center': jnp.asarray(center)}
    return variables

  def train_features(backbone_vars, images):
    if not cache:
      return layers_of(backbone_vars, images)
    shapes = jax.eval_shape(layers_of, backbone_vars, images)
    cached, all_hit = jax.pure_callback(
        lambda x: lookup(x, [shape.shape[1:] for shape in shapes], np.dtype(shapes[0].dtype)),
        (shapes, jax.ShapeDtypeStruct((), jnp.bool_)), images)
    features = jax.lax.cond(all_hit, lambda: cached, lambda: layers_of(backbone_vars, images))
    io_callback(store, None, images, features, all_hit, ordered=False)
    return features

  def loss_fn(params, model_state, batch, rng):
    del rng
    features = train_features(model_state['backbone'], batch['image'])
    projected = projector.apply({'params': params}, features)
    center = jax.lax.stop_gradient(model_state['center']['center'])  # A constant, never trained.
    per_position = occ_losses.soft_boundary(projected, center, radius=radius)
    distance = jnp.sqrt(occ_losses.squared_distance(projected, center))
    return jnp.mean(per_position, axis=(1, 2)), (model_state, {'distance': jnp.mean(distance, axis=(1, 2))})

  @jax.jit
  def score(variables, statistics, images):
    del statistics
    projected = projector.apply({'params': variables['params']}, layers_of(variables['backbone'], images))
    distances = occ_losses.soft_boundary(projected, variables['center']['center'], radius=radius)
    maps = anomaly_maps(distances, size=images.shape[1:3], sigma=sigma)
    return {'distance': maps}, {'max': jnp.max(maps, axis=(1, 2)), 'mean': jnp.mean(maps, axis=(1, 2))}

  def fit(variables, make_batches):
    """Thresholds from training data: three sigma of training scores, or the radius rule d > R."""
    stats = cache_stats()
    if stats['hits'] + stats['misses']:
      logging.info('Feature cache: %d images stored, %d hits, %d misses', stats['entries'], stats['hits'],
                   stats['misses'])
    if hp.threshold == 'none':
      return {'image_threshold': jnp.float32(jnp.nan), 'pixel_threshold': jnp.float32(jnp.nan)}
    if hp.threshold == 'radius':  # d > R  <=>  max(d^2 - R^2, 0) > 0
      return {'image_threshold': jnp.float32(0.0), 'pixel_threshold': jnp.float32(0.0)}
    image_values, pixel_values = [], []
    for batch in make_batches():
      maps, scores = score(variables, {}, jnp.asarray(batch['image']))
      image_values.append(np.asarray(scores[config.eval.score])[batch['valid']])
      pixel_values.append(np.asarray(maps[config.eval.map])[batch['valid']])
    # Several processes: each scored its share of the training split; the thresholds see all of it.
    gathered = processes.gather_rows({'image': np.concatenate(image_values), 'pixel': np.concatenate(pixel_values)})
    return {'image_threshold': jnp.float32(scoring.three_sigma_threshold(gathered['image'])),
            'pixel_threshold': jnp.float32(scoring.three_sigma_threshold(np.ravel(gathered['pixel'])))}

  def thresholds(statistics):
    if hp.threshold == 'none':
      return {'image': None, 'pixel': None}
    return {'image': float(statistics['image_threshold']), 'pixel': float(statistics['pixel_threshold'])}

  # Nothing in the model state changes during training (encoder and center are constants).
  return Method(name='occ', init=init, loss_fn=loss_fn, fit=fit, score=score,
                optimizer=make_optimizer(config.optim), thresholds=thresholds,
                sync_state=lambda model_state, axis_name: model_state)
