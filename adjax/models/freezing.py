"""Freezing a prefix of a backbone for optax: labels over the params tree and a wrapped optimizer.

A backbone (`vgg.VGG`, `resnet.ResNet`) computes its features in order and stops after the last requested
one, so "the part up to feature F" is exactly the set of variables `init(..., outputs=(F,))` creates.
Freezing that prefix takes two pieces that go together:
  - in the model call, `frozen_until=F` puts a `stop_gradient` at F (no backward pass through the prefix;
    optionally `frozen_bn_eval=True` keeps its BatchNorm layers on their running statistics);
  - in the optimizer, `freeze(optimizer, model=..., frozen_until=F)` gives the prefix exactly zero updates
    (`optax.multi_transform` with `optax.set_to_zero`), so weight decay or momentum cannot move it either.
    `label_function(...)` is the same split as a `params -> {'frozen', 'trainable'}` labels function, for
    building other `multi_transform`s or masks (`optax.masked(tx, lambda p: jax.tree.map(
    lambda label: label == TRAINABLE, labels(p)))`).
FCDD's "VGG11-BN frozen up to the 3rd max-pool": `frozen_until='pool3'` (torchvision's features[0:15]).
"""

from collections.abc import Sequence

import flax.linen as nn
from flax import traverse_util
import optax

from adjax.models import weights

FROZEN = 'frozen'
TRAINABLE = 'trainable'


def frozen_param_paths(model: nn.Module, *, frozen_until: str) -> frozenset[tuple[str, ...]]:
  """Paths (module names..., leaf) in `model`'s params tree that compute everything up to `frozen_until`."""
  shapes = weights.variable_shapes(model, outputs=(frozen_until,))
  return frozenset(path[1:] for path in shapes if path[0] == 'params')


def label_function(model: nn.Module, *, frozen_until: str | None, backbone_path: Sequence[str] = ()):
  """`params -> labels`: FROZEN for the backbone prefix up to `frozen_until`, TRAINABLE elsewhere.

  Args:
    model: the backbone module.
    frozen_until: feature name ending the frozen prefix ('pool3', 'layer2', ...); None freezes nothing.
    backbone_path: where the backbone's params sit inside the optimized params tree (e.g. ('backbone',)
      inside a method's model); () if they are the backbone's own params.
  """
  frozen = frozen_param_paths(model, frozen_until=frozen_until) if frozen_until else frozenset()
  prefix = tuple(backbone_path)

  def labels(params):
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({
        path: FROZEN if path[:len(prefix)] == prefix and path[len(prefix):] in frozen else TRAINABLE
        for path in flat})

  return labels


def freeze(optimizer: optax.GradientTransformation, *, model: nn.Module, frozen_until: str | None,
           backbone_path: Sequence[str] = ()) -> optax.GradientTransformation:
  """`optimizer` for the trainable params; exactly zero updates (and no optimizer state) for the frozen.

  Example: `freeze(optax.sgd(1e-3, momentum=0.9), model=vgg11_bn, frozen_until='pool3')`.
  """
  labels = label_function(model, frozen_until=frozen_until, backbone_path=backbone_path)
  return optax.multi_transform({TRAINABLE: optimizer, FROZEN: optax.set_to_zero()}, labels)
