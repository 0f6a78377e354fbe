"""Measures the convolution facts behind `adjax.models.convolution` on this machine (run it idle).

    python scripts/conv_speed.py [--size 64] [--steps 10] [--repeats 5]

1. One SGLD step of the seed-004 energy net (batch 16), inside a `lax.scan` and fully unrolled, with JAX's
   input-gradient rule (`conv_vjp='lax'`) and with `convolution.conv2d` ('hwio'): ms per step.
2. A 3x3 stride-1 conv (batch 16) through XLA's convolution and as patches @ kernel (`im2col_conv`), for
   output sizes around `IM2COL_MAX_OUTPUT_PIXELS`: ms per call.
3. A 3x3 stride-1 conv to 3 channels (an image decoder's last conv; the input gradient of an image-reading
   conv) through XLA's convolution and as `shifted_matmul_conv`: forward, and forward + kernel gradient.
4. The LAMP decoder's layers (nearest 2x upsampling, then a 3x3 conv), upsampling then convolving vs
   `upsample_conv2d`: forward + gradients.
5. The input gradient of the LAMP encoder's 3x3 stride-2 convs, one conv over zero-padded phase taps vs
   one conv per phase (`PER_PHASE_MIN_CHANNELS`) on the padded grid (as before stop 22) and on each phase's
   exact grid (`EXACT_PHASES`).
6. 2x2 max pooling (VGG, the fully convolutional CAE) after a ReLU: forward, and the gradient through
   `flax.linen.max_pool` (`select_and_scatter_add`) vs `adjax.models.pooling.max_pool_2x2`.
7. A 3x3 stride-1 conv with padding 1 (VGG's and ResNet's layers) through XLA's convolution and by
   Winograd's F(2x2, 3x3) and F(4x4, 3x3) (`adjax.models.winograd`): forward ms per call.
8. The EBM's space-to-depth layers (2x2 'VALID' convs over the phase channels; seed-004 net at 256², 128²
   and 64²) through
   XLA's convolution and by Winograd's F(2x2, 2x2), F(3x3, 2x2) and F(4x4, 2x2): forward + input gradient (an
   SGLD step's work), ms per call; then the whole SGLD step with and without F(3x3, 2x2) on those layers.
9. The EBM's stride-2 convs by each `strided_impl` (`adjax.models.energy`): one SGLD step and the forward
   pass alone at 64² and 128², calls interleaved.
10. The SSIM blur (`adjax.losses.reconstruction`, the LAMP and CAE score maps: batch 16, 256², 3 channels' 5
   moments) with the reflected padding fused into the 11 shifted sums (a gather, as before stop 19) vs
   materialised first (`_correlate_valid`): forward, and forward + gradient.
11. 2x2 max pooling outside differentiation as a reduction vs as maxima of the four window phases (the
   default, `adjax.models.pooling`), in whole `adjax.bench` cases: FCDD's and the CAE's scores and train steps.
12. The EBM's per-step work in whole `adjax.bench` cases (SGLD chain, score, train step), as before stop 21
   (`jax.nn.elu`, random draws in the images' shape, the input gradient's kernel fold left in the loop), then
   with `energy.elu`, the draws in rows of 128 (`sampling.normal`) and `convolution.HOIST_KERNEL_FOLD` added one
   by one (the last is the default).
13. OCC's projector matmuls with JAX's kernel-gradient rule vs `adjax.models.dense.matmul` (the default), in
   whole `adjax.bench` train steps at 64² and 224².
14. OCC's projector on the concatenated features (layers resized by `jax.image.resize`, as before stop 21) vs
   on the per-layer features (`occ.Projector`'s default), whole `adjax.bench` train steps and scores.
15. The EBM's stride-2 layers at 128² (forward and input gradient), XLA vs PyTorch's eager channels-last
   convolutions in the same process (needs torch, the `test` extra; not in the default list).
16. The EBM's stride-2 input gradients layer by layer, the four phases from one conv on the padded grid vs one
   exact conv per phase (`PER_PHASE_MAX_EVEN_OUTPUT_PIXELS`), then whole `adjax.bench` EBM cases as before
   stop 22, with `convolution.EXACT_PHASES`, and with `scoring.SLICED_NORM_MAX_CHANNELS` too (the default).
17. The LAMP decoder's four phase convs (`convolution.upsample_conv2d`) in whole `adjax.bench` LAMP cases, as
   before stop 24, with `tap_folding.phase_kernels`' custom VJP (`tap_folding.CUSTOM_TRANSPOSE`), and with each
   phase window's padding inside its conv too (`convolution.UPSAMPLE_PHASE_PADDING`; the default).
`--tables 2,6` runs some of them.
"""

import argparse
import contextlib
import functools
import time

from adjax import xla_options

xla_options.set_defaults()

import flax.linen as nn  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
from jax import lax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from adjax import sampling  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax import scoring  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax.bench import measure  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax.losses import reconstruction  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax.models import convolution  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax.models import energy  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax.models import pooling  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax.models import tap_folding  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax.models import winograd  # pylint: disable=g-import-not-at-top,wrong-import-position

BATCH = 16


def _blocking(fn, *args):
  """A no-argument call of fn(*args) that waits for the result (as `measure.interleaved_timings_ms` times it)."""
  return lambda: jax.block_until_ready(fn(*args))


def median_ms(fn, *, repeats: int) -> float:
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times) * 1e3)


def sgld_step_ms(*, size: int, steps: int, repeats: int, conv_vjp: str, unroll: bool) -> float:
  net = energy.EnergyNet(features=energy.features_for(size), conv_vjp=conv_vjp)
  x = jax.random.uniform(jax.random.key(0), (BATCH, size, size, 3), minval=-1, maxval=1)
  params = net.init(jax.random.key(1), x)
  grad_x = jax.grad(lambda p, x: jnp.sum(net.apply(p, x)), argnums=1)

  @jax.jit
  def chain(params, x):
    step = lambda x, _: (jnp.clip(x - grad_x(params, x), -1, 1), None)
    return lax.scan(step, x, None, length=steps, unroll=steps if unroll else 1)[0]

  return median_ms(lambda: chain(params, x), repeats=repeats) / steps


def conv_ms(*, size: int, channels: int, repeats: int) -> tuple[float, float]:
  x = jax.random.normal(jax.random.key(0), (BATCH, size, size, channels))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, channels, channels))
  padding = ((1, 1), (1, 1))
  xla = jax.jit(lambda x, k: lax.conv_general_dilated(x, k, (1, 1), padding,
                                                      dimension_numbers=convolution.NHWC_HWIO))
  matmul = jax.jit(lambda x, k: convolution.im2col_conv(x, k, padding))
  return (median_ms(lambda: xla(x, kernel), repeats=repeats),
          median_ms(lambda: matmul(x, kernel), repeats=repeats))


def few_outputs_ms(*, size: int, channels: int, repeats: int) -> dict[str, float]:
  x = jax.random.normal(jax.random.key(0), (BATCH, size, size, channels))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, channels, 3))
  padding = ((1, 1), (1, 1))
  paths = {'xla': lambda x, k: lax.conv_general_dilated(x, k, (1, 1), padding,
                                                       dimension_numbers=convolution.NHWC_HWIO),
           'shifted': lambda x, k: convolution.shifted_matmul_conv(x, k, padding)}
  times = {}
  for name, conv in paths.items():
    forward = jax.jit(conv)
    both = jax.jit(jax.value_and_grad(lambda k, x, conv=conv: jnp.sum(conv(x, k) ** 2)))
    times[name] = median_ms(lambda: forward(x, kernel), repeats=repeats)
    times[name + '_grad'] = median_ms(lambda: both(kernel, x), repeats=repeats)
  return times


def upsample_conv_ms(*, size: int, channels: int, features: int, repeats: int) -> tuple[float, float]:
  x = jax.random.normal(jax.random.key(0), (BATCH, size, size, channels))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, channels, features))
  padding = ((1, 1), (1, 1))
  upsample = lambda x: jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  paths = (lambda x, k: convolution.conv2d(upsample(x), k, padding),
           lambda x, k: convolution.upsample_conv2d(x, k, padding))
  grads = [jax.jit(jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) ** 2), (0, 1))) for f in paths]
  return tuple(median_ms(lambda g=g: g(x, kernel), repeats=repeats) for g in grads)


@contextlib.contextmanager
def _patched(patches):
  """(module, attribute, value) triples in place inside the block (traced code looks them up), then restored."""
  saved = [(module, attribute, getattr(module, attribute)) for module, attribute, _ in patches]
  try:
    for module, attribute, value in patches:
      setattr(module, attribute, value)
    yield
  finally:
    for module, attribute, value in saved:
      setattr(module, attribute, value)


def _compiled_with(fn, args, patches):
  """fn jitted and compiled for args with `patches` in place (`_patched`); a blocking call."""
  with _patched(patches):
    # A new function each time: jit would reuse the trace of the same function made under other patches.
    compiled = jax.jit(lambda *args: fn(*args)).lower(*args).compile()
  return _blocking(compiled, *args)


def strided_input_gradient_ms(*, size: int, channels: int, features: int, repeats: int) -> dict[str, float]:
  grad_out = jax.random.normal(jax.random.key(0), (BATCH, size // 2, size // 2, features))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, channels, features))
  shape, padding = (BATCH, size, size, channels), ((0, 1), (0, 1))
  fn = lambda g, k: convolution.strided_input_gradient(g, k, padding, shape)
  forms = {'one conv': [(convolution, 'PER_PHASE_MIN_CHANNELS', 10**9)],
           'per phase, padded grid': [(convolution, 'EXACT_PHASES', False)], 'per phase, exact (default)': []}
  calls = {name: _compiled_with(fn, (grad_out, kernel), patches) for name, patches in forms.items()}
  return {name: t['median_ms'] for name, t in measure.interleaved_timings_ms(calls, repeats=repeats).items()}


def max_pool_ms(*, size: int, channels: int, repeats: int) -> tuple[float, float, float]:
  x = jax.nn.relu(jax.random.normal(jax.random.key(0), (BATCH, size, size, channels)))
  grad_out = jax.random.normal(jax.random.key(1), (BATCH, size // 2, size // 2, channels))
  forward = jax.jit(pooling.max_pool_2x2)
  grads = [jax.jit(lambda x, g, pool=pool: jax.vjp(pool, x)[1](g)[0])
           for pool in (lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)), pooling.max_pool_2x2)]
  return (median_ms(lambda: forward(x), repeats=repeats),
          *(median_ms(lambda grad=grad: grad(x, grad_out), repeats=repeats) for grad in grads))


def winograd_ms(*, size: int, channels: int, features: int, repeats: int) -> tuple[float, ...]:
  x = jax.random.normal(jax.random.key(0), (BATCH, size, size, channels))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, channels, features)) / np.sqrt(9 * channels)
  pads = ((1, 1), (1, 1))
  convs = [lambda x, k: lax.conv_general_dilated(x, k, (1, 1), pads, dimension_numbers=convolution.NHWC_HWIO)]
  convs += [lambda x, k, m=m: winograd.conv(x, k, pads, output_tile=m) for m in (2, 4)]
  return tuple(median_ms(lambda conv=jax.jit(conv): conv(x, kernel), repeats=repeats) for conv in convs)


def winograd_2x2_ms(*, size: int, channels: int, features: int, repeats: int) -> tuple[float, ...]:
  x = jax.random.normal(jax.random.key(0), (BATCH, size + 1, size + 1, channels))
  kernel = jax.random.normal(jax.random.key(1), (2, 2, channels, features)) / np.sqrt(4 * channels)
  pads = ((0, 0), (0, 0))
  convs = [lambda x, k: lax.conv_general_dilated(x, k, (1, 1), pads, dimension_numbers=convolution.NHWC_HWIO)]
  convs += [lambda x, k, m=m: winograd.conv(x, k, pads, output_tile=m) for m in (2, 3, 4)]
  # Forward and input gradient, as an SGLD step needs them; the cotangent is a fixed random map.
  grad_out = jax.random.normal(jax.random.key(2), (BATCH, size, size, features))
  def step(x, k, grad_out, conv):
    value, vjp = jax.vjp(lambda x: conv(x, k), x)
    return value, vjp(grad_out)[0]

  steps = [jax.jit(functools.partial(step, conv=conv)) for conv in convs]
  return tuple(median_ms(lambda step=step: step(x, kernel, grad_out), repeats=repeats) for step in steps)


def sgld_table(args):
  print(f'\nSGLD step, energy net at {args.size}², batch {BATCH}, ms per step (median of {args.repeats}):')
  print('| conv_vjp | in lax.scan | unrolled |\n|---|---|---|')
  for conv_vjp in ('lax', 'hwio'):
    scan, unrolled = (sgld_step_ms(size=args.size, steps=args.steps, repeats=args.repeats, conv_vjp=conv_vjp,
                                   unroll=unroll) for unroll in (False, True))
    print(f'| {conv_vjp} | {scan:.1f} | {unrolled:.1f} |')


def im2col_table(args):
  print(f'\n3x3 stride-1 conv, batch {BATCH}, ms per call (median of {args.repeats}):')
  print('| output | channels | XLA convolution | patches @ kernel |\n|---|---|---|---|')
  for size, channels in ((1, 256), (2, 256), (4, 256), (8, 256), (16, 128), (32, 64)):
    xla, matmul = conv_ms(size=size, channels=channels, repeats=args.repeats)
    print(f'| {size}x{size} | {channels} | {xla:.2f} | {matmul:.2f} |')


def few_outputs_table(args):
  print(f'\n3x3 stride-1 conv to 3 channels, batch {BATCH}, ms per call (median of {args.repeats}); forward '
        '(forward + kernel gradient):')
  print('| input | XLA convolution | shifted matmul |\n|---|---|---|')
  for size, channels in ((64, 32), (128, 32), (256, 32), (224, 64)):
    times = few_outputs_ms(size=size, channels=channels, repeats=args.repeats)
    print(f"| {size}², {channels} ch | {times['xla']:.2f} ({times['xla_grad']:.2f}) | "
          f"{times['shifted']:.2f} ({times['shifted_grad']:.2f}) |")


def upsample_table(args):
  print(f'\nLAMP decoder layer at 256² (upsampling + 3x3 conv), batch {BATCH}, forward + gradients, ms:')
  print('| layer | upsample, then conv | upsample_conv2d |\n|---|---|---|')
  for size, channels, features in ((128, 32, 3), (64, 64, 32), (32, 128, 64), (16, 256, 128), (8, 256, 256)):
    plain, fused = upsample_conv_ms(size=size, channels=channels, features=features, repeats=args.repeats)
    print(f'| {size}² -> {2 * size}², {channels} -> {features} | {plain:.2f} | {fused:.2f} |')


def strided_table(args):
  print(f'\nInput gradient of a 3x3 stride-2 conv (LAMP encoder at 256²), batch {BATCH}, ms (median of '
        f'{args.repeats} interleaved calls):')
  print('| input | one conv, zero taps | one conv per phase, padded grid | one conv per phase, exact grid (default) |\n'
        '|---|---|---|---|')
  for size, channels, features in ((128, 32, 64), (64, 64, 128), (32, 128, 256), (16, 256, 256)):
    times = strided_input_gradient_ms(size=size, channels=channels, features=features, repeats=args.repeats)
    print(f'| {size}², {channels} -> {features} | ' + ' | '.join(f'{t:.2f}' for t in times.values()) + ' |')


def pool_table(args):
  print(f'\n2x2 max pooling after a ReLU, batch {BATCH}, ms per call (median of {args.repeats}):')
  print('| input | forward | gradient, flax max_pool | gradient, max_pool_2x2 |\n|---|---|---|---|')
  for size, channels in ((224, 64), (112, 128), (56, 256), (28, 512)):
    forward, flax_grad, ours = max_pool_ms(size=size, channels=channels, repeats=args.repeats)
    print(f'| {size}², {channels} ch | {forward:.2f} | {flax_grad:.2f} | {ours:.2f} |')


def winograd_table(args):
  print(f'\n3x3 stride-1 conv, padding 1, batch {BATCH}, forward ms per call (median of {args.repeats}):')
  print('| input | XLA convolution | Winograd F(2x2, 3x3) | F(4x4, 3x3) |\n|---|---|---|---|')
  for size, channels, features in ((224, 64, 64), (112, 64, 128), (112, 128, 128), (56, 128, 256),
                                   (56, 256, 256), (28, 256, 512), (28, 512, 512), (14, 512, 512),
                                   (56, 128, 128), (28, 256, 256), (14, 256, 256), (7, 512, 512)):
    xla, f2, f4 = winograd_ms(size=size, channels=channels, features=features, repeats=args.repeats)
    print(f'| {size}², {channels} -> {features} | {xla:.2f} | {f2:.2f} | {f4:.2f} |')


def winograd_2x2_table(args):
  print(f'\nEBM space-to-depth layer (2x2 conv), batch {BATCH}, forward + input gradient ms per call '
        f'(median of {args.repeats}):')
  print('| output, channels | XLA convolution | F(2x2, 2x2) | F(3x3, 2x2) | F(4x4, 2x2) |\n|---|---|---|---|---|')
  for size, channels, features in ((128, 128, 64), (64, 128, 64), (32, 256, 128), (16, 512, 256), (8, 1024, 256),
                                   (4, 1024, 256), (32, 128, 64), (16, 256, 128), (8, 512, 256)):
    times = winograd_2x2_ms(size=size, channels=channels, features=features, repeats=args.repeats)
    print(f'| {size}², {channels} -> {features} | ' + ' | '.join(f'{t:.2f}' for t in times) + ' |')
  # The whole SGLD step with and without F(3x3, 2x2) on every 2x2 layer, calls interleaved (the machine drifts).
  rules = convolution.WINOGRAD_RULES
  variants = {'direct': rules, 'F(3x3, 2x2)': {**rules, 2: convolution.WinogradRule(3, 64, 12)}}
  for size in (64, 128):
    net = energy.EnergyNet(features=energy.features_for(size), strided_impl='space_to_depth')
    x = jax.random.uniform(jax.random.key(0), (BATCH, size, size, 3), minval=-1, maxval=1)
    params = net.init(jax.random.key(1), x)
    steps = {}
    for name, variant in variants.items():
      convolution.WINOGRAD_RULES = variant  # Read while tracing: each compiled step keeps its own rule.
      step = lambda p, x: jnp.clip(x - jax.grad(lambda x: jnp.sum(net.apply(p, x)))(x), -1, 1)
      steps[name] = jax.jit(step).lower(params, x).compile()
    convolution.WINOGRAD_RULES = rules
    times = measure.interleaved_timings_ms({name: _blocking(step, params, x) for name, step in steps.items()},
                                           repeats=3 * args.repeats)
    print(f'SGLD step at {size}², ms (median, min over {3 * args.repeats} interleaved calls): ' +
          ', '.join(f"{name} {t['median_ms']:.1f} ({t['min_ms']:.1f})" for name, t in times.items()))


def strided_impl_table(args):
  print(f'\nEBM stride-2 convs by strided_impl, batch {BATCH}, ms per call (median (min) of '
        f'{3 * args.repeats} interleaved calls):')
  print('| size | pass | ' + ' | '.join(energy.STRIDED_IMPLS) + ' |\n|---|---|' + '---|' * len(energy.STRIDED_IMPLS))
  for size in (64, 128):
    x = jax.random.uniform(jax.random.key(0), (BATCH, size, size, 3), minval=-1, maxval=1)
    nets = {impl: energy.EnergyNet(features=energy.features_for(size), strided_impl=impl)
            for impl in energy.STRIDED_IMPLS}
    params = nets['direct'].init(jax.random.key(1), x)  # The same parameters for every implementation.
    passes = {'SGLD step': lambda net, p, x: jnp.clip(x - jax.grad(lambda x: jnp.sum(net.apply(p, x)))(x), -1, 1),
              'forward': lambda net, p, x: net.apply(p, x)}
    for name, fn in passes.items():
      compiled = {impl: jax.jit(functools.partial(fn, net)).lower(params, x).compile() for impl, net in nets.items()}
      times = measure.interleaved_timings_ms({impl: _blocking(c, params, x) for impl, c in compiled.items()},
                                             repeats=3 * args.repeats)
      print(f'| {size}² | {name} | ' + ' | '.join(f"{t['median_ms']:.1f} ({t['min_ms']:.1f})" for t in times.values())
            + ' |')


def _gather_blur(images, window):
  """The SSIM blur as before stop 19: reflected indices gathered inside the shifted sums."""
  for axis in (1, 2):
    length = images.shape[axis]
    padded = jnp.take(images, np.pad(np.arange(length), len(window) // 2, mode='symmetric'), axis=axis)
    images = sum(tap * lax.slice_in_dim(padded, k, k + length, axis=axis) for k, tap in enumerate(window))
  return images


def ssim_blur_table(args):
  print(f'\nSSIM Gaussian blur (11 taps, sigma 1.5) of [{BATCH}, 256, 256, 15], ms per call (median (min) of '
        f'{3 * args.repeats} interleaved calls):')
  print('| pass | padding fused into the sums (gather) | padding materialised (default) |\n|---|---|---|')
  window = reconstruction._gaussian_window(11, 1.5)  # pylint: disable=protected-access
  x = jax.random.normal(jax.random.key(0), (BATCH, 256, 256, 15))
  blurs = {'gather': _gather_blur, 'materialised': reconstruction._gaussian_blur}  # pylint: disable=protected-access
  for name, wrap in (('forward', lambda blur: lambda x: blur(x, window)),
                     ('forward + gradient', lambda blur: jax.grad(lambda x: jnp.sum(jnp.sin(blur(x, window)))))):
    compiled = {impl: jax.jit(wrap(blur)).lower(x).compile() for impl, blur in blurs.items()}
    times = measure.interleaved_timings_ms({impl: _blocking(c, x) for impl, c in compiled.items()},
                                           repeats=3 * args.repeats)
    print(f'| {name} | ' + ' | '.join(f"{t['median_ms']:.1f} ({t['min_ms']:.1f})" for t in times.values()) + ' |')


@jax.custom_vjp
def _reduce_max_pool(x):
  """`pooling.max_pool_2x2` with its differentiated forward (the reduction) everywhere, as before stop 20."""
  return pooling._forward(x)[0]  # pylint: disable=protected-access


_reduce_max_pool.defvjp(pooling._forward, pooling._backward)  # pylint: disable=protected-access


def _compiled_bench_case(name, size, case, *, sgld_steps=1, patches=()):
  """A no-argument blocking call of `adjax.bench`'s case, compiled with module attributes patched.

  patches: (module, attribute, value) triples, in place while the case is traced and compiled (the
  models and samplers look them up when traced), restored afterwards.
  """
  from adjax.bench import methods as bench_methods  # pylint: disable=g-import-not-at-top
  variants = {v.name: (method, v) for method, group in bench_methods.VARIANTS.items() for v in group}
  method, variant = variants[name]
  config = bench_methods.sized_config(variant, size=size, batch_size=BATCH, sgld_steps=sgld_steps)
  with _patched(patches):
    built = {c.case: c for c in bench_methods.build_cases(variant, config, method_name=method)}
    fn = built[case].fn
    compiled = (fn if hasattr(fn, 'lower') else jax.jit(fn)).lower(*built[case].args).compile()
  return _blocking(compiled, *built[case].args)


def _ab_row(label, calls, args):
  times = measure.interleaved_timings_ms(calls, repeats=3 * args.repeats)
  medians = [t['median_ms'] for t in times.values()]
  print(f'| {label} | ' + ' | '.join(f"{t['median_ms']:.1f} ({t['min_ms']:.1f})" for t in times.values())
        + f' | {medians[-1] / medians[0]:.2f} |')


def pool_form_table(args):
  print(f'\nMax pooling outside differentiation, whole bench cases (batch {BATCH}), ms per call (median (min) of '
        f'{3 * args.repeats} interleaved calls):')
  print('| variant | case | size | reduction | window phases (default) | ratio of medians |\n|---|---|---|---|---|---|')
  for name, size, case in (('fcdd', 64, 'score'), ('fcdd', 224, 'score'), ('cae', 64, 'score'),
                           ('fcdd', 64, 'train_step'), ('fcdd', 224, 'train_step'),
                           ('fcdd_unfrozen', 224, 'train_step'), ('cae', 64, 'train_step')):
    calls = {form: _compiled_bench_case(name, size, case, patches=[(pooling, 'max_pool_2x2', pool)])
             for form, pool in (('reduction', _reduce_max_pool), ('phases', pooling.max_pool_2x2))}
    _ab_row(f'{name} | {case} | {size}²', calls, args)


def ebm_per_step_table(args):
  print(f'\nEBM per-step work, whole bench cases (batch {BATCH}, chains of {args.steps} SGLD steps), ms per call '
        f'(median (min) of {3 * args.repeats} interleaved calls):')
  print('| case | size | before stop 21 | + `energy.elu` | + noise in rows of 128 | + kernel fold hoisted (default) '
        '| ratio of medians |\n|---|---|---|---|---|---|---|')
  draws_in_image_shape = [(sampling, 'normal', jax.random.normal),
                          (sampling, 'uniform', lambda rng, shape, dtype, *, low, high: jax.random.uniform(
                              rng, shape, dtype, low, high))]
  unhoisted = [(convolution, 'HOIST_KERNEL_FOLD', False)]
  forms = {'before': [(energy, 'elu', jax.nn.elu)] + draws_in_image_shape + unhoisted,
           'elu': draws_in_image_shape + unhoisted, 'draws': unhoisted, 'default': []}
  for size, case in ((64, 'sgld_chain'), (128, 'sgld_chain'), (64, 'score'), (128, 'score'), (128, 'train_step')):
    calls = {form: _compiled_bench_case('ebm', size, case, sgld_steps=args.steps, patches=patches)
             for form, patches in forms.items()}
    _ab_row(f'{case} | {size}²', calls, args)
  shape = (BATCH, 128, 128, 3)
  draws = {'image shape': jax.jit(lambda key: jax.random.normal(key, shape)),
           'rows of 128': jax.jit(lambda key: sampling.normal(key, shape))}
  times = measure.interleaved_timings_ms({name: _blocking(draw, jax.random.key(0)) for name, draw in draws.items()},
                                         repeats=10 * args.repeats)
  print(f'One normal draw of {list(shape)}, ms (median (min) of {10 * args.repeats} interleaved calls): ' +
        ', '.join(f"{name} {t['median_ms']:.2f} ({t['min_ms']:.2f})" for name, t in times.items()))


def _lax_matmul(x, kernel):
  return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def dense_gradient_table(args):
  from adjax.models import dense  # pylint: disable=g-import-not-at-top
  print(f'\nOCC projector matmuls, whole bench train steps (batch {BATCH}), ms per call (median (min) of '
        f'{3 * args.repeats} interleaved calls):')
  print("| case | size | JAX's rule (`lax.dot_general`) | `dense.matmul` (default) | ratio of medians |\n"
        '|---|---|---|---|---|')
  for size in (64, 224):
    calls = {form: _compiled_bench_case('occ', size, 'train_step', patches=patches)
             for form, patches in (('lax', [(dense, 'matmul', _lax_matmul)]), ('dense', []))}
    _ab_row(f'train_step | {size}²', calls, args)


def occ_projector_table(args):
  from adjax.methods import occ  # pylint: disable=g-import-not-at-top
  per_layer = occ.encode_layers

  def concatenated(backbone, variables, images, *, layers):
    """One part: the layers resized by `jax.image.resize` and concatenated, as before stop 21."""
    parts = per_layer(backbone, variables, images, layers=layers)
    shape = parts[0].shape[:3]
    return [jnp.concatenate([jax.image.resize(part, shape + part.shape[3:], 'bilinear') for part in parts], -1)]

  print(f'\nOCC projector on concatenated vs per-layer features, whole bench cases (batch {BATCH}), ms per call '
        f'(median (min) of {3 * args.repeats} interleaved calls):')
  print('| case | size | concatenated (before) | per layer (default) | ratio of medians |\n|---|---|---|---|---|')
  for size, case in ((64, 'train_step'), (64, 'score'), (224, 'train_step'), (224, 'score')):
    calls = {form: _compiled_bench_case('occ', size, case, patches=patches)
             for form, patches in (('concatenated', [(occ, 'encode_layers', concatenated)]), ('per_layer', []))}
    _ab_row(f'{case} | {size}²', calls, args)


def ebm_layers_vs_torch_table(args):
  import torch  # pylint: disable=g-import-not-at-top  (the `test` extra's CPU wheel)
  print(f'\nEBM stride-2 layers at 128², batch {BATCH}: XLA vs PyTorch (channels-last, eager), ms per call '
        f'(median of {3 * args.repeats} interleaved calls) and GFLOP/s:')
  print('| layer | GFLOP | XLA forward | PyTorch forward | XLA input gradient | PyTorch input gradient |\n'
        '|---|---|---|---|---|---|')
  rng = np.random.default_rng(0)
  padding = ((1, 1), (1, 1))
  channels, size = 32, 128
  for features in energy.features_for(size):
    x, kernel, grad = (rng.standard_normal(shape).astype(np.float32) for shape in (
        (BATCH, size, size, channels), (4, 4, channels, features), (BATCH, size // 2, size // 2, features)))
    forward = jax.jit(lambda x, k: lax.conv_general_dilated(x, k, (2, 2), padding,
                                                            dimension_numbers=convolution.NHWC_HWIO))
    input_shape = x.shape
    backward = jax.jit(lambda g, k: convolution.strided_input_gradient(g, k, padding, input_shape))
    to_torch = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    tx, tg = to_torch(x), to_torch(grad)
    tk = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)

    def torch_forward():
      with torch.no_grad():
        return torch.nn.functional.conv2d(tx, tk, stride=2, padding=1)

    def torch_input_gradient():
      with torch.no_grad():
        return torch.ops.aten.convolution_backward(tg, tx, tk, None, (2, 2), (1, 1), (1, 1), False, (0, 0), 1,
                                                   (True, False, False))[0]

    jx, jk, jg = map(jnp.asarray, (x, kernel, grad))
    calls = {'xla forward': _blocking(forward, jx, jk), 'torch forward': torch_forward,
             'xla input gradient': _blocking(backward, jg, jk), 'torch input gradient': torch_input_gradient}
    times = measure.interleaved_timings_ms(calls, repeats=3 * args.repeats,
                                           settle=set(calls) if args.settle else set())
    gflop = 2 * BATCH * (size // 2) ** 2 * 16 * channels * features / 1e9
    print(f'| {size}², {channels} -> {features} | {gflop:.2f} | ' + ' | '.join(
        f"{t['median_ms']:.1f} ({gflop / t['median_ms'] * 1e3:.0f})" for t in times.values()) + ' |')
    channels, size = features, size // 2


def ebm_exact_phases_table(args):
  print(f'\nEBM stride-2 input gradients (batch {BATCH}), all four phases from one conv on the padded grid vs one '
        f'exact conv per phase, ms per call (median (min) of {3 * args.repeats} interleaved calls):')
  print('| layer (net at 128²) | one conv | per phase, exact | ratio of medians |\n|---|---|---|---|')
  padding = ((1, 1), (1, 1))
  channels, size = 32, 128
  for features in energy.features_for(size):
    grad_out = jax.random.normal(jax.random.key(0), (BATCH, size // 2, size // 2, features))
    kernel = jax.random.normal(jax.random.key(1), (4, 4, channels, features))
    shape = (BATCH, size, size, channels)
    fn = lambda g, k, shape=shape: convolution.strided_input_gradient(g, k, padding, shape)
    calls = {form: _compiled_with(fn, (grad_out, kernel), [(convolution, 'PER_PHASE_MAX_EVEN_OUTPUT_PIXELS', pixels)])
             for form, pixels in (('one', 0), ('exact', 10**9))}
    _ab_row(f'{size}², {channels} -> {features}', calls, args)
    channels, size = features, size // 2
  print(f'\nWhole bench cases (chains of {args.steps} SGLD steps): before stop 22, + exact phases (up to '
        f'{convolution.PER_PHASE_MAX_EVEN_OUTPUT_PIXELS} output pixels), + pixel scores as sums of channel slices '
        '(`scoring.SLICED_NORM_MAX_CHANNELS`; the default):')
  print('| case | size | before | + exact phases | + sliced norms (default) | ratio of medians |\n|---|---|---|---|---|---|')
  forms = {'before': [(convolution, 'EXACT_PHASES', False), (scoring, 'SLICED_NORM_MAX_CHANNELS', 0)],
           'exact': [(scoring, 'SLICED_NORM_MAX_CHANNELS', 0)], 'default': []}
  for size, case in ((64, 'score'), (128, 'score'), (64, 'sgld_chain'), (128, 'sgld_chain')):
    calls = {form: _compiled_bench_case('ebm', size, case, sgld_steps=args.steps, patches=patches)
             for form, patches in forms.items()}
    _ab_row(f'{case} | {size}²', calls, args)
  print('\nThe autoencoders (3x3 stride-2 encoder convs; the CAE\'s 2x2 transposed convs), `EXACT_PHASES` off / on:')
  print('| variant | case | size | phases on the padded grid | exact (default) | ratio of medians |\n'
        '|---|---|---|---|---|---|')
  for name, size, case in (('lamp', 64, 'train_step'), ('lamp', 256, 'train_step'), ('cae', 64, 'train_step'),
                           ('cae', 64, 'score')):
    calls = {form: _compiled_bench_case(name, size, case, patches=patches)
             for form, patches in (('padded', [(convolution, 'EXACT_PHASES', False)]), ('exact', []))}
    _ab_row(f'{name} | {case} | {size}²', calls, args)


def tap_folding_table(args):
  print(f'\nThe LAMP decoder\'s four phase convs (`upsample_conv2d`), whole bench cases (batch {BATCH}): as before '
        'stop 24 (folded kernels differentiated by JAX\'s transpose of the tap sums, phase windows sliced from x '
        'padded once), + `tap_folding.phase_kernels`\' custom VJP, + each window\'s padding inside its conv '
        f'(`convolution.UPSAMPLE_PHASE_PADDING`; the default), ms per call (median (min) of {3 * args.repeats} '
        'interleaved calls):')
  print('| variant | case | size | before | + custom VJP | + padding in the conv (default) | ratio of medians |\n'
        '|---|---|---|---|---|---|---|')
  sliced = [(convolution, 'UPSAMPLE_PHASE_PADDING', False)]
  forms = {'before': sliced + [(tap_folding, 'CUSTOM_TRANSPOSE', False)], 'vjp': sliced, 'default': []}
  for name, size, case in (('lamp', 64, 'train_step'), ('lamp', 256, 'train_step'), ('lamp', 64, 'score'),
                           ('lamp', 256, 'score')):
    calls = {form: _compiled_bench_case(name, size, case, patches=patches) for form, patches in forms.items()}
    _ab_row(f'{name} | {case} | {size}²', calls, args)


TABLES = (sgld_table, im2col_table, few_outputs_table, upsample_table, strided_table, pool_table,
          winograd_table, winograd_2x2_table, strided_impl_table, ssim_blur_table, pool_form_table,
          ebm_per_step_table, dense_gradient_table, occ_projector_table,
          ebm_layers_vs_torch_table, ebm_exact_phases_table, tap_folding_table)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--size', type=int, default=64, help='EBM image size (4 * 2**k).')
  parser.add_argument('--steps', type=int, default=10, help='SGLD steps per timed chain.')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--settle', action=argparse.BooleanOptionalAction, default=True,
                      help='Table 15: an untimed call right before each timed one, as adjax.bench does for short '
                           'cases (the other library\'s after-effects otherwise slow the next call).')
  parser.add_argument('--tables', default='1,2,3,4,5,6,7,8,9,10,11,12,13,14,16,17',
                      help='Which of the tables above to measure.')
  args = parser.parse_args()
  for number in sorted({int(number) for number in args.tables.split(',')}):
    TABLES[number - 1](args)


if __name__ == '__main__':
  main()
