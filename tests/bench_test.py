"""The benchmark command measures what it promises: timings, FLOPs (hand-counted here), memory, input wait."""

import importlib.util
import json
import os
from pathlib import Path
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjax.bench import __main__ as bench_main
from adjax.bench import measure
from adjax.bench import methods as bench_methods

REPO = Path(__file__).resolve().parents[1]
HAS_TORCH = importlib.util.find_spec('torch') is not None


def _conv(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _tiny_net(kernels, x):
  """3x3 'VALID' conv 3 -> 5 then 1x1 conv 5 -> 2, no bias, no activation: FLOPs are 2 x multiply-adds."""
  return _conv(_conv(x, kernels[0]), kernels[1])


def _tiny_net_flops(batch, size):
  inner = size - 2
  return 2 * batch * inner * inner * (3 * 3 * 3 * 5 + 5 * 2)


def test_flops_of_a_tiny_conv_net_equal_the_hand_count():
  kernels = (jnp.ones((3, 3, 3, 5)), jnp.ones((1, 1, 5, 2)))
  assert measure.flops_of(_tiny_net, kernels, jnp.ones((4, 8, 8, 3))) == _tiny_net_flops(4, 8)


def test_run_case_scales_pmapped_and_scanned_flops_to_the_hand_count():
  devices, batch, size, iterations = jax.local_device_count(), 4, 8, 5
  kernels = (jnp.ones((3, 3, 3, 5)), jnp.ones((1, 1, 5, 2)))

  def scanned(kernels, x, num):  # `num` applications of the net (XLA counts the body once).
    body = lambda carry, _: (carry + jnp.sum(_tiny_net(kernels, x)), None)
    return jax.lax.scan(body, 0.0, None, length=num)[0]

  images = jnp.ones((devices, batch // devices, size, size, 3))
  pmapped = jax.pmap(lambda k, x: scanned(k, x, iterations), in_axes=(None, 0))
  body = (lambda k, x: scanned(k, x, 1), (kernels, images[0]), iterations - 1)
  case = bench_methods.Case(method='toy', variant='toy', case='net', fn=pmapped, args=(kernels, images),
                            images=batch, flops_scale=devices, loop=body)
  row = bench_main.run_case(case, repeats=3, matmul_gflops=100.0)
  # Sums of the outputs add one flop per output element per iteration.
  summed = batch * (size - 2) ** 2 * 2 * iterations
  assert row['flops'] == pytest.approx(iterations * _tiny_net_flops(batch, size) + summed, rel=1e-3)
  assert 0 < row['min_ms'] <= row['median_ms'] <= row['max_ms']
  assert row['images_per_second'] == pytest.approx(batch / (row['median_ms'] / 1e3))
  assert row['gflops_per_second'] == pytest.approx(row['flops'] / row['median_ms'] / 1e6)
  assert row['fraction_of_matmul'] == pytest.approx(row['gflops_per_second'] / 100.0)
  assert row['compile_seconds'] > 0 and row['xla_buffers_mb'] > 0 and row['rss_growth_mb'] >= 0
  assert row['device_peak_mb'] is None or row['device_peak_mb'] > 0  # None on CPU (no memory_stats).


def test_matmul_rate_and_timings():
  assert measure.matmul_gflops(size=256, repeats=2) > 0.1
  calls = []
  timing = measure.timings_ms(lambda: calls.append(1), repeats=3, warmup=2)
  assert len(calls) == 5 and timing['min_ms'] <= timing['median_ms'] <= timing['max_ms']
  with pytest.raises(ValueError, match='repeats'):
    measure.timings_ms(lambda: None, repeats=0)


def test_interleaved_timings_alternate_and_pair_the_rounds(monkeypatch):
  order = []
  ticks = {'value': 0.0}  # A fake clock that only the timed functions advance: 'slow' 3 ms, 'fast' 2 ms.

  def perf_counter():
    return ticks['value']

  def make(name, ms):
    def fn():
      order.append(name)
      ticks['value'] += ms / 1e3
    return fn

  monkeypatch.setattr(measure.time, 'perf_counter', perf_counter)
  timings = measure.interleaved_timings_ms({'slow': make('slow', 3.), 'fast': make('fast', 2.)}, repeats=3,
                                           warmup=1)
  assert order == ['slow', 'fast'] + ['slow', 'fast'] * 3  # Warm-ups, then strictly alternating rounds.
  assert timings['slow']['median_ms'] == pytest.approx(3.) and timings['fast']['max_ms'] == pytest.approx(2.)
  assert timings['slow']['paired_ratio_median'] == pytest.approx(1.5)
  assert 'paired_ratio_median' not in timings['fast']
  order.clear()
  measure.interleaved_timings_ms({'slow': make('slow', 3.), 'fast': make('fast', 2.)}, repeats=2, warmup=0,
                                 settle={'fast'})
  assert order == ['slow', 'fast', 'fast'] * 2  # An untimed settling call before each timed 'fast' call.
  with pytest.raises(ValueError, match='repeats'):
    measure.interleaved_timings_ms({'a': lambda: None}, repeats=0)


def test_cpu_model_names_the_cpu_and_its_vector_units(tmp_path):
  cpuinfo = tmp_path / 'cpuinfo'
  processor = 'processor\t: {}\nmodel name\t: Example CPU 9000\nflags\t\t: fpu sse2 avx2 fma{}\n'
  cpuinfo.write_text(processor.format(0, ' avx512f amx_tile') + '\n' + processor.format(1, ' avx512f amx_tile'))
  assert bench_main.cpu_model(str(cpuinfo)) == 'Example CPU 9000 (AVX2, AVX-512, AMX)'
  cpuinfo.write_text(processor.format(0, ''))
  assert bench_main.cpu_model(str(cpuinfo)) == 'Example CPU 9000 (AVX2)'
  assert bench_main.cpu_model(str(tmp_path / 'missing')) == ''
  assert 'cpu_model' in bench_main.environment()


def test_leading_resize_scales_with_the_size():
  spec = 'resize(240)|confetti(0.5)|crop_or_resize({image_size})'
  assert bench_methods._rescale_leading_resize(spec, size=112, paper_size=224) == (
      'resize(120)|confetti(0.5)|crop_or_resize({image_size})')
  assert bench_methods._rescale_leading_resize('value_range(-1, 1)', size=64, paper_size=128) == (
      'value_range(-1, 1)')


def test_every_method_has_a_config_with_a_paper_size():
  from adjax import methods  # pylint: disable=g-import-not-at-top
  for name in methods.known_methods():
    for variant in bench_methods.variants_of(name):
      config = bench_methods.load_config(variant)
      assert config.method == name and config.data.image_size >= 64, variant


def test_ebm_smoke_rows_are_complete_and_sane():
  rows = bench_main.benchmark(method_names=['ebm'], sizes=['paper', '12'], batch_size=4, sgld_steps=2,
                              repeats=2, input_steps=1, with_torch=HAS_TORCH, preset='smoke',
                              log=lambda line: None)
  good = [row for row in rows if 'error' not in row]
  assert [row['case'] for row in good] == ['train_step', 'sgld_chain', 'score']
  bad = [row for row in rows if 'error' in row]  # 12 is not 4 * 2**k: one error row, the run goes on.
  assert len(bad) == 1 and 'InputError' in bad[0]['error']
  for row in good:
    assert 0 < row['min_ms'] <= row['median_ms'] <= row['max_ms'], row
    assert row['flops'] > 0 and row['gflops_per_second'] > 0 and row['matmul_gflops'] > 0
    assert row['image_size'] == 16 and row['size'] == 'paper' and row['devices'] == 2
    if HAS_TORCH:
      assert row['torch_min_ms'] <= row['torch_median_ms'] <= row['torch_max_ms']
      assert row['time_ratio_vs_torch'] == pytest.approx(row['median_ms'] / row['torch_median_ms'])
      assert row['paired_ratio_vs_torch'] > 0 and row['torch_rss_growth_mb'] >= 0
  train, chain, score = good
  assert 0 <= train['input_wait_fraction'] < 1 and train['input_run_steps'] == 1
  assert train['input_run_path'] == 'compiled'  # The pipeline's batches fit the compiled step.
  assert chain['sgld_steps_per_second'] * chain['median_ms'] / 1e3 == pytest.approx(2)
  # The train step runs the 2-step chain plus 2 forward passes and a backward pass: more FLOPs.
  assert train['flops'] > chain['flops'] > score['flops'] / 2
  table = bench_main.markdown_table(rows)
  assert table.count('\n') == len(rows) + 1 and '| ebm | sgld_chain | 16² (paper) |' in table


@pytest.mark.skipif(not HAS_TORCH, reason='torch not installed (optional benchmark extra)')
def test_torch_networks_have_the_flax_parameter_counts():
  from adjax.bench import torch_reference  # pylint: disable=g-import-not-at-top
  from adjax.methods import reconstruction  # pylint: disable=g-import-not-at-top
  from adjax.models import energy  # pylint: disable=g-import-not-at-top
  count = lambda tree: sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(tree))
  config = bench_methods.sized_config(bench_methods.variants_of('ebm')[0], size=32, batch_size=2,
                                      sgld_steps=1)
  flax_net = energy.EnergyNet(first_features=config.model.first_features, features=config.model.features)
  flax_params = flax_net.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))['params']
  assert count(flax_params) == sum(p.numel() for p in torch_reference.energy_net(config).parameters())
  config = bench_methods.sized_config(bench_methods.variants_of('reconstruction')[0], size=64, batch_size=2,
                                      sgld_steps=1)
  variables = reconstruction.make(config).init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
  assert count(variables['params']) == sum(
      p.numel() for p in torch_reference.lamp_autoencoder(config).parameters())
  config = _tiny_cae_config()
  variables = reconstruction.make(config).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  torch_net = torch_reference.FullyConvAutoencoder(config.model.features)
  assert count(variables['params']) == sum(p.numel() for p in torch_net.parameters())
  assert count(variables['batch_stats']) == sum(b.numel() for b in torch_net.buffers() if b.ndim == 1)


def _tiny_cae_config():
  config = bench_methods.sized_config(bench_methods.variants_of('reconstruction')[1], size=32, batch_size=2,
                                      sgld_steps=1)
  config.model.features = (4, 8, 16)
  return config


@pytest.mark.skipif(not HAS_TORCH, reason='torch not installed (optional benchmark extra)')
def test_torch_occ_and_cae_cases_train_and_score():
  import torch  # pylint: disable=g-import-not-at-top
  from adjax.bench import torch_reference  # pylint: disable=g-import-not-at-top
  config = bench_methods.sized_config(bench_methods.variants_of('occ')[0], size=32, batch_size=2,
                                      sgld_steps=1)
  config.model.backbone = 'resnet18'
  torch_reference.make_case('occ', 'train_step', config=config)()
  maps, max_scores, mean_scores = torch_reference.make_case('occ', 'score', config=config)()
  assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all()
  assert torch.equal(max_scores, maps.amax(dim=(1, 2))) and (mean_scores <= max_scores).all()
  config = _tiny_cae_config()
  step = torch_reference.make_case('cae', 'train_step', config=config)
  step()  # Contractive term: a second-order gradient through the encoder.
  maps, scores = torch_reference.make_case('cae', 'score', config=config)()
  assert maps['l2'].shape == (2, 32, 32) and all(torch.isfinite(value).all() for value in scores.values())
  config.contractive.num_projections = 2  # Not what the reference computes: no case.
  assert torch_reference.make_case('cae', 'train_step', config=config) is None


def test_cli_rejects_unknown_methods_with_one_message():
  result = subprocess.run([sys.executable, '-m', 'adjax.bench', '--methods=nope', '--sizes=paper'],
                          cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=120)
  assert result.returncode == 2 and "unknown ['nope']" in result.stderr
  assert 'Traceback' not in result.stderr


def test_a_method_whose_process_dies_becomes_an_error_row_after_its_finished_rows():
  child = ('import json, os, signal, sys\n'
           'args = dict(arg[2:].split("=", 1) for arg in sys.argv[1:])\n'
           'json.dump([{"method": args["methods"], "case": "score"}], open(args["child_rows"], "w"))\n'
           'if args["methods"] == "dies": os.kill(os.getpid(), signal.SIGKILL)\n')
  seen = []
  rows = bench_main.run_in_processes(['lives', 'dies', 'lives'], [sys.executable, '-c', child], log=seen.append,
                                     on_rows=lambda rows: seen.append(len(rows)))
  assert [row['method'] for row in rows] == ['lives', 'dies', 'dies', 'lives']
  assert 'error' not in rows[1] and 'SIGKILL' in rows[2]['error'] and 'after 1 rows' in rows[2]['error']
  assert seen[0] == 1 and 'SIGKILL' in seen[1] and seen[2:] == [3, 4]


def test_child_processes_get_this_runs_flags():
  values = dict(sizes=['8', 'paper'], batch_size=4, sgld_steps=7, repeats=1, input_steps=0, preset='smoke',
                data_dir='/some/where', torch=True, strided_impl=None, compute_dtype='bfloat16', conv_vjp='lax')
  command = bench_main.child_command(values)
  assert command[:3] == [sys.executable, '-m', 'adjax.bench']
  parsed = {name: None for name in bench_main.CHILD_FLAGS}
  for arg in command[3:]:  # Each argument parsed back by its own flag's parser (the global flags stay unparsed).
    name, _, text = arg[2:].partition('=')
    if not text:  # A boolean: --torch or --notorch.
      flag = name.removeprefix('no')
      parsed[flag] = name == flag
    else:
      parsed[name] = bench_main.flags.FLAGS[name].parser.parse(text)
  assert parsed == values
