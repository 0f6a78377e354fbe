"""Method benchmarks: `python -m adjax.bench [--methods ebm,fcdd] [--sizes paper,64] [--torch] [--json out.json]`.

For every method (default: all of `adjax.methods.known_methods()`), each of its variants (`adjax.bench.methods`)
and each size (`paper` = the preset's resolution, or a number), it compiles and times the train step, the
scoring pass and, for the EBM, the SGLD chain, and reports per case: median / min / max ms over `--repeats`
calls after one warm-up call, images/s, compile seconds, FLOPs from XLA's cost analysis (loop bodies
counted per iteration) and the achieved GFLOP/s next to a float32 2048² matmul rate measured just before,
XLA's buffer size per device and the growth of the process's peak RSS, and for train steps the fraction of
step time spent waiting for the input pipeline over `--input_steps` real steps on the embedded textures.
With `--torch`, equivalent PyTorch steps (`adjax.bench.torch_reference`) are timed in the same run, call by
call in turn with adjax's (so drift of the machine hits both alike), and the time ratio adjax / torch is
reported (< 1: adjax faster): of the medians, and the median of the per-round ratios. Prints a Markdown
table; `--json` writes all rows.

With more than one method each runs in its own process (`--noprocesses`: all in this one). The retained
heap (`adjax.xla_options.retain_freed_memory`) keeps a process's peak, fragmented, so the largest cases of
earlier methods stayed with later ones: all methods in one process ran out of 24 GB at the CAE's 224² train
step (23 GB when run alone, PyTorch's step included). A method whose process dies (out of memory, say)
becomes an error row and the run goes on.
"""

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import traceback

from absl import app
from absl import flags

from adjax import xla_options

xla_options.set_defaults()  # As `python -m adjax.main` does; ADJAX_XLA_DEFAULTS=0 measures without.

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from adjax import methods as methods_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax.bench import measure  # pylint: disable=g-import-not-at-top,wrong-import-position
from adjax.bench import methods as bench_methods  # pylint: disable=g-import-not-at-top,wrong-import-position

_METHODS = flags.DEFINE_list('methods', None, 'Methods to benchmark (default: all known methods).')
_SIZES = flags.DEFINE_list('sizes', ['paper', '64'], "Square image sizes; 'paper' = the preset's own.")
_BATCH = flags.DEFINE_integer('batch_size', 16, 'Global batch size of every case.')
_SGLD_STEPS = flags.DEFINE_integer('sgld_steps', 100, 'SGLD steps per chain (EBM).')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed calls per case after one warm-up call.')
_INPUT_STEPS = flags.DEFINE_integer('input_steps', 3, 'Real-pipeline train steps for the input-wait '
                                    'fraction (0: skip).')
_STRIDED_IMPL = flags.DEFINE_enum('strided_impl', None, ['strided_vjp', 'space_to_depth', 'direct'],
                                  "EBM stride-2 conv implementation (default: the config's).")
_COMPUTE_DTYPE = flags.DEFINE_enum('compute_dtype', None, ['float32', 'bfloat16'],
                                   "config.model.compute_dtype of every method (default: the preset's, float32).")
_CONV_VJP = flags.DEFINE_enum('conv_vjp', None, ['hwio', 'lax'],
                              "EBM: config.model.conv_vjp, the stride-1 convs' input gradient (default: the "
                              "preset's, 'hwio').")
_PRESET = flags.DEFINE_enum('preset', 'paper', ['paper', 'smoke'],
                             "'paper': each variant's paper preset; 'smoke': the tiny presets (quick checks).")
_TORCH = flags.DEFINE_bool('torch', False, 'Also time the PyTorch reference steps (needs torch).')
_DATA_DIR = flags.DEFINE_string('data_dir', '', "tfds data_dir of the embedded textures ('' = tfds default).")
_JSON = flags.DEFINE_string('json', None, 'Also write the environment and all rows to this JSON file (rewritten '
                            'after every row, so a run cut short keeps what it measured).')
_PROCESSES = flags.DEFINE_bool('processes', True, 'With several methods, run each in its own process (module '
                               'docstring).')
_CHILD_ROWS = flags.DEFINE_string('child_rows', None, 'Internal (--processes): print only rows and keep them in '
                                  'this JSON file.')


def cpu_model(cpuinfo: str = '/proc/cpuinfo') -> str:
  """The CPU's model name and its widest vector units (Linux), e.g. 'AMD EPYC (AVX2)'; '' if unknown.

  Machines of one kind differ between sessions (an AVX-512 + AMX Xeon, an AVX2 EPYC), and the ratios to
  PyTorch with them, so every result records which it ran on.
  """
  try:
    with open(cpuinfo, encoding='utf-8') as file:
      fields = dict(line.split(':', 1) for line in file.read().split('\n\n')[0].splitlines() if ':' in line)
  except OSError:
    return ''
  fields = {key.strip(): value.strip() for key, value in fields.items()}
  flags_ = set(fields.get('flags', '').split())
  units = [name for name, flag in (('AVX2', 'avx2'), ('AVX-512', 'avx512f'), ('AMX', 'amx_tile')) if flag in flags_]
  return f"{fields.get('model name', '')} ({', '.join(units) or 'no AVX2'})".strip()


def environment() -> dict:
  return {'jax': jax.__version__, 'devices': jax.local_device_count(), 'platform': jax.default_backend(),
          'xla_flags': os.environ.get('XLA_FLAGS', ''), 'cpu_count': os.cpu_count(),
          'machine': platform.processor() or platform.machine(), 'cpu_model': cpu_model(),
          'load_average': os.getloadavg()}


# Cases whose warm-up call took less than this get an untimed settling call before each timed one when
# interleaved with PyTorch; longer ones would double the run time for an after-effect well below the noise.
SETTLE_BELOW_MS = 2000.


def run_case(case: bench_methods.Case, *, repeats: int, matmul_gflops: float, torch_step=None) -> dict:
  """Compiles, counts and times one case; returns its row.

  With `torch_step` (a PyTorch reference call), both are warmed up and then timed call by call in turn,
  so both see the same machine (calls under `SETTLE_BELOW_MS` after an untimed settling call); the row
  gains torch_* timings, `time_ratio_vs_torch` (ratio of medians) and `paired_ratio_vs_torch` (median of the
  per-round ratios).
  """
  load, rss_before = os.getloadavg()[0], measure.max_rss_mb()
  compiled, facts = measure.compile_with_cost(case.fn, *case.args)
  flops = facts.pop('flops')
  if case.loop:
    body_fn, body_args, iterations = case.loop
    flops += iterations * measure.flops_of(body_fn, *body_args)
  flops *= case.flops_scale
  call = lambda: jax.block_until_ready(compiled(*case.args))
  warm_ms = {'adjax': measure.timings_ms(call, repeats=1, warmup=0)['median_ms']}  # Warm-up, timed.
  rss_growth = measure.max_rss_mb() - rss_before  # adjax's own, before torch allocates anything.
  torch_row = {}
  if torch_step is None:
    timing = measure.timings_ms(call, repeats=repeats, warmup=0)
  else:
    torch_rss_before = measure.max_rss_mb()
    warm_ms['torch'] = measure.timings_ms(torch_step, repeats=1, warmup=0)['median_ms']
    torch_row['torch_rss_growth_mb'] = measure.max_rss_mb() - torch_rss_before
    # Short calls get a settling call after each switch of runtime (`interleaved_timings_ms`).
    settle = {name for name, ms in warm_ms.items() if ms < SETTLE_BELOW_MS}
    timings = measure.interleaved_timings_ms({'adjax': call, 'torch': torch_step}, repeats=repeats, warmup=0,
                                             settle=settle)
    timing = timings['adjax']
    torch_row['paired_ratio_vs_torch'] = timing.pop('paired_ratio_median')
    torch_row.update({f'torch_{key}': value for key, value in timings['torch'].items()})
    torch_row['time_ratio_vs_torch'] = timing['median_ms'] / timings['torch']['median_ms']
  seconds = timing['median_ms'] / 1e3
  row = dict(method=case.method, variant=case.variant, case=case.case, **timing, **facts, **case.extra,
             images_per_second=case.images / seconds, flops=flops,
             flops_counting='XLA cost analysis; scan bodies x iterations; x devices' if case.loop
             else 'XLA cost analysis; x devices',
             gflops_per_second=flops / seconds / 1e9, matmul_gflops=matmul_gflops,
             fraction_of_matmul=flops / seconds / 1e9 / matmul_gflops,
             device_peak_mb=measure.device_peak_mb(), rss_growth_mb=rss_growth, load_average_1min=load,
             **torch_row)
  if 'sgld_steps' in case.extra and case.case == 'sgld_chain':
    row['sgld_steps_per_second'] = case.extra['sgld_steps'] / seconds
  row['compiled'] = compiled  # Reused by the input-pipeline run; dropped before the row is kept.
  return row


def torch_reference_step(variant: str, case: str, *, config):
  """The PyTorch reference call of a case (`adjax.bench.torch_reference`), or None where there is none."""
  from adjax.bench import torch_reference  # pylint: disable=g-import-not-at-top
  return torch_reference.make_case(variant, case, config=config)


def benchmark(*, method_names, sizes, batch_size: int, sgld_steps: int, repeats: int, input_steps: int,
              with_torch: bool, data_dir: str = '', ebm_model: dict | None = None,
              compute_dtype: str | None = None, preset: str = 'paper', log=print, on_rows=None) -> list[dict]:
  """All rows for `method_names` x their variants x `sizes` ('paper' = the preset's size, or int).

  `log` gets each row as a Markdown line, `on_rows` (optional) the list of rows so far after each row.

  `ebm_model` overrides keys of the EBM's `config.model` (strided_impl, conv_vjp); `compute_dtype` (None: the
  presets' float32) sets every method's `config.model.compute_dtype`.

  `preset` 'smoke' swaps every variant's paper preset for its smoke preset. A failing case becomes a row
  with an `error` (the traceback goes to stderr) and the run goes on.
  """
  rows = []
  for name in method_names:
    for variant in bench_methods.variants_of(name):
      if preset != 'paper':
        variant = variant._replace(preset=preset)
      for size in sizes:
        label = 'paper' if size == 'paper' else 'small'
        try:
          paper_size = bench_methods.load_config(variant).data.image_size
          side = paper_size if size == 'paper' else int(size)
          if label == 'small' and side == paper_size:
            label = 'paper'
          config = bench_methods.sized_config(variant, size=side, batch_size=batch_size,
                                              sgld_steps=sgld_steps, data_dir=data_dir)
          if config.method == 'ebm':
            config.model.update(ebm_model or {})
          if compute_dtype:
            config.model.compute_dtype = compute_dtype
          matmul = measure.matmul_gflops()
          for case in bench_methods.build_cases(variant, config, method_name=name):
            reference = torch_reference_step(variant.name, case.case, config=config) if with_torch else None
            row = run_case(case, repeats=repeats, matmul_gflops=matmul, torch_step=reference)
            if with_torch and reference is None:
              row['torch_note'] = f'no torch reference for {variant.name}/{case.case}'
            del reference
            row.update(image_size=side, size=label, batch_size=batch_size, repeats=repeats,
                       devices=jax.local_device_count(), compute_dtype=config.model.get('compute_dtype', 'float32'))
            compiled = row.pop('compiled')
            if case.train_step is not None and input_steps > 0:
              row.update(bench_methods.input_wait(config, case, compiled=compiled, steps=input_steps))
            rows.append(row)
            log(format_row(row))
            if on_rows:
              on_rows(rows)
        except Exception as error:  # pylint: disable=broad-except  (one broken case must not end a long run)
          traceback.print_exc()
          message = f'{type(error).__name__}: {error}'.splitlines()[0]
          print(f'adjax.bench: {name}/{variant.name} at {size}: {message}', file=sys.stderr)
          rows.append(dict(method=name, variant=variant.name, size=label, error=message))
          log(format_row(rows[-1]))
          if on_rows:
            on_rows(rows)
  return rows


COLUMNS = ('variant', 'case', 'size', 'ms median (min-max)', 'images/s', 'compile s', 'GFLOP',
           'GFLOP/s (% matmul)', 'XLA buffers MB', 'RSS +MB', 'input wait', 'torch ms', 'adjax/torch',
           'paired')


def _cells(row: dict) -> list[str]:
  if 'error' in row:
    return [row['variant'], 'error', row['size'], row['error']] + [''] * (len(COLUMNS) - 4)
  optional = lambda key, form: form.format(row[key]) if row.get(key) is not None else '-'
  return [row['variant'], row['case'], f'{row["image_size"]}² ({row["size"]})',
          f'{row["median_ms"]:.1f} ({row["min_ms"]:.1f}-{row["max_ms"]:.1f})',
          f'{row["images_per_second"]:.2f}', f'{row["compile_seconds"]:.1f}', f'{row["flops"] / 1e9:.2f}',
          f'{row["gflops_per_second"]:.1f} ({100 * row["fraction_of_matmul"]:.0f}%)',
          optional('xla_buffers_mb', '{:.0f}'), f'{row["rss_growth_mb"]:.0f}',
          optional('input_wait_fraction', '{:.1%}'), optional('torch_median_ms', '{:.1f}'),
          optional('time_ratio_vs_torch', '{:.2f}'), optional('paired_ratio_vs_torch', '{:.2f}')]


def format_row(row: dict) -> str:
  return '| ' + ' | '.join(_cells(row)) + ' |'


def markdown_table(rows: list[dict]) -> str:
  lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
  return '\n'.join(lines + [format_row(row) for row in rows])


def write_json(path: str, content) -> None:
  """Writes `content` as JSON to `path` through a temporary file: a reader never sees half a file."""
  temporary = f'{path}.tmp'
  with open(temporary, 'w', encoding='utf-8') as file:
    json.dump(content, file, indent=2, default=str)
  os.replace(temporary, path)


def run_in_processes(method_names, command, log=print, on_rows=None) -> list[dict]:
  """Rows of each method from its own process: `command + ['--methods=<name>', '--child_rows=<file>']`.

  The child prints its rows as it measures them (they pass through to this process's output) and keeps them
  in the file; a child that dies leaves the rows it finished, and an error row names how it ended.
  """
  rows = []
  for name in method_names:
    with tempfile.TemporaryDirectory(prefix='adjax-bench-') as directory:
      path = os.path.join(directory, 'rows.json')
      result = subprocess.run(command + [f'--methods={name}', f'--child_rows={path}'], check=False)
      finished = []
      if os.path.exists(path):
        with open(path, encoding='utf-8') as file:
          finished = json.load(file)
    rows += finished
    # Exit code 1 with rows: some cases failed (their error rows are among them); anything else is a crash.
    if result.returncode not in (0, 1) or (result.returncode == 1 and not finished):
      how = (f'killed by {signal.Signals(-result.returncode).name}' if result.returncode < 0
             else f'exit code {result.returncode}')
      rows.append(dict(method=name, variant=name, size='-', error=f'its process ended early ({how}; out of '
                       f'memory?) after {len(finished)} rows'))
      log(format_row(rows[-1]))
    if on_rows:
      on_rows(rows)
  return rows


# The flags a child process of `run_in_processes` gets from this run (all but the methods, the JSON file and
# the process mode).
CHILD_FLAGS = ('sizes', 'batch_size', 'sgld_steps', 'repeats', 'input_steps', 'preset', 'data_dir', 'torch',
               'strided_impl', 'compute_dtype', 'conv_vjp')


def child_command(values: dict) -> list[str]:
  """`python -m adjax.bench` with the flag values {name: value} of `CHILD_FLAGS` (None: not given)."""
  command = [sys.executable, '-m', 'adjax.bench']
  for name in CHILD_FLAGS:
    value = values[name]
    if isinstance(value, bool):
      command.append(f'--{name}' if value else f'--no{name}')
    elif value not in (None, ''):
      command.append(f'--{name}={",".join(value) if isinstance(value, list) else value}')
  return command


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  known = methods_lib.known_methods()
  names = _METHODS.value or list(known)
  unknown = [name for name in names if name not in known]
  bad_sizes = [size for size in _SIZES.value if size != 'paper' and not (size.isdigit() and int(size) > 0)]
  if unknown or bad_sizes or _REPEATS.value < 1:
    print(f'adjax.bench: error: --methods unknown {unknown} (known: {", ".join(known)}); --sizes invalid '
          f'{bad_sizes} (paper or positive ints); --repeats {_REPEATS.value} (>= 1)', file=sys.stderr)
    sys.exit(2)
  if _TORCH.value:
    try:
      import torch  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      print('adjax.bench: --torch: torch is not installed; skipping the PyTorch comparison '
            '(pip install torch==2.13.0)', file=sys.stderr)
      _TORCH.value = False
  env = environment()
  log = lambda line: print(line, flush=True)
  child = _CHILD_ROWS.value
  if not child:
    print(f'jax {env["jax"]}, {env["devices"]} device(s) ({env["platform"]}, {env["cpu_count"]} CPUs, '
          f'{env["cpu_model"] or "CPU model unknown"}), '
          f'XLA_FLAGS={env["xla_flags"]!r}, load average {env["load_average"]}, compute dtype '
          f'{_COMPUTE_DTYPE.value or "float32 (presets)"}', flush=True)
    print('| ' + ' | '.join(COLUMNS) + ' |\n' + '|' + '---|' * len(COLUMNS), flush=True)

  def keep(rows_so_far):  # After every row (method): a run cut short keeps what it measured.
    if child:
      write_json(child, rows_so_far)
    elif _JSON.value:
      write_json(_JSON.value, {'environment': env, 'rows': rows_so_far})

  if _PROCESSES.value and len(names) > 1 and not child:
    command = child_command({name: flags.FLAGS[name].value for name in CHILD_FLAGS})
    rows = run_in_processes(names, command, log=log, on_rows=keep)
  else:
    rows = benchmark(method_names=names, sizes=_SIZES.value, batch_size=_BATCH.value,
                     sgld_steps=_SGLD_STEPS.value, repeats=_REPEATS.value, input_steps=_INPUT_STEPS.value,
                     with_torch=_TORCH.value, data_dir=_DATA_DIR.value,
                     ebm_model={key: flag.value for key, flag in (('strided_impl', _STRIDED_IMPL),
                                ('conv_vjp', _CONV_VJP)) if flag.value}, compute_dtype=_COMPUTE_DTYPE.value,
                     preset=_PRESET.value, log=log, on_rows=keep)
  if child:
    sys.exit(1 if any('error' in row for row in rows) else 0)
  env['load_average_end'] = os.getloadavg()
  print('\n' + markdown_table(rows))
  print(f'load average at the end {env["load_average_end"]}; ms per call (SGLD row: per chain); '
        'adjax/torch = ratio of medians, paired = median of per-round ratios (calls interleaved; < 1: adjax '
        'faster)')
  if _JSON.value:
    write_json(_JSON.value, {'environment': env, 'rows': rows})
  if any('error' in row for row in rows):
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
