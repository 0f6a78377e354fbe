"""Sweeps: methods x categories x seeds, one `adjax.main` process per run, then one results table.

  python -m adjax.sweep --config=configs/ebm.py:smoke --categories=brick,grass --seeds=0,1 \\
      --workdir=runs/sweep [--set data.image_size=32 ...] [--collect_only]

`--config` may be given several times to compare methods; each value is `[NAME=]PATH[:PRESET]` optionally
followed by space-separated `key=value` overrides for that config alone (e.g.
`--config="raw=configs/ebm.py:smoke eval.score=raw"`); NAME defaults to `<file stem>[-<preset>]`.
`--set key=value` overrides apply to every config. Run `i` of a sweep lives in
`WORKDIR/<name>/<category>/seed_<seed>/` (results.json, figures, stdout.log, stderr.log). A run whose
results.json exists is skipped; a failed run is recorded (exit code, last stderr lines) and retried by the
next sweep. At the end every results.json under WORKDIR is collected into
  runs.csv        one row per run
  summary.csv/md  mean and std over seeds per (method, category), and overall per method
  statistics.csv/md, ranks.csv, cd_<metric>.png   with >= 2 methods: seed 000 §5 (adjax.statistics)
  summary.png     the summary table as a figure
  tensorboard/    summary.png and the CD diagrams as TensorBoard images (`sweep/...`)
  failures.json   the runs that failed in the last sweep
"""

import csv
import dataclasses
import io
import json
import math
import os
from pathlib import Path
import shlex
import subprocess
import sys
import time

from matplotlib import image as mpl_image
import numpy as np

from adjax import figures
from adjax import statistics
from adjax import summaries
from adjax.errors import InputError

DEFAULT_METRICS = ('image_auroc', 'pixel_auroc', 'pixel_aupro', 'pixel_ap', 'image_f1_max')
_STDERR_TAIL_LINES = 12
_SWEEP_KEYS = ('seed', 'data.category')  # Set by the sweep itself, per run.


@dataclasses.dataclass(frozen=True)
class ConfigSpec:
  """One method of a sweep: a display name, `path[:preset]` and its own overrides."""
  name: str
  argument: str
  overrides: tuple[str, ...] = ()


def parse_override(text: str) -> str:
  """`key=value` (or `config.key=value`) → `--config.key=value`."""
  key, equals, value = text.partition('=')
  key = key.strip().removeprefix('--').removeprefix('config.')
  if not equals or not key:
    raise InputError(f'--set: expected key=value, got {text!r}')
  if key in _SWEEP_KEYS:
    raise InputError(f'--set {key}: the sweep sets it per run; use --seeds / --categories')
  return f'--config.{key}={value}'


def parse_config_spec(text: str) -> ConfigSpec:
  """`[NAME=]PATH[:PRESET] [key=value ...]` → ConfigSpec with an absolute path."""
  tokens = shlex.split(text)
  if not tokens:
    raise InputError('--config: empty value')
  head, name = tokens[0], None
  if '=' in head:
    name, _, head = head.partition('=')
    if not name or '/' in name:
      raise InputError(f'--config {text!r}: NAME= must be a plain name')
  path, _, preset = head.partition(':')
  if not Path(path).is_file():
    raise InputError(f'--config: no such config file {path!r}')
  name = name or Path(path).stem + (f'-{preset}' if preset else '')
  argument = str(Path(path).absolute()) + (f':{preset}' if preset else '')
  return ConfigSpec(name=name, argument=argument,
                    overrides=tuple(parse_override(token) for token in tokens[1:]))


def run_dir(workdir, *, name: str, category: str, seed: int) -> Path:
  return Path(workdir) / name / category / f'seed_{seed}'


def _tail(path: Path, num_lines: int) -> str:
  if not path.exists():
    return ''
  return '\n'.join(path.read_text(errors='replace').splitlines()[-num_lines:])


def run_one(spec: ConfigSpec, *, category: str, seed: int, workdir, overrides=(),
            timeout_seconds: float | None = None) -> dict:
  """Runs `python -m adjax.main` for one (config, category, seed) unless its results.json exists.

  Returns a record: name, category, seed, run_dir, status ('done' | 'skipped' | 'failed'), returncode,
  seconds, error (last stderr lines of a failed run).
  """
  directory = run_dir(workdir, name=spec.name, category=category, seed=seed)
  record = dict(name=spec.name, category=category, seed=seed, run_dir=str(directory), status='skipped',
                returncode=None, seconds=0.0, error='')
  if (directory / 'results.json').exists():
    return record
  directory.mkdir(parents=True, exist_ok=True)
  command = [sys.executable, '-m', 'adjax.main', f'--config={spec.argument}',
             f'--workdir={directory.absolute()}', *overrides, *spec.overrides,
             f'--config.seed={seed}', f'--config.data.category={category}']
  (directory / 'command.txt').write_text(shlex.join(command) + '\n')
  start = time.perf_counter()
  with open(directory / 'stdout.log', 'w') as stdout, open(directory / 'stderr.log', 'w') as stderr:
    try:
      returncode = subprocess.run(command, stdout=stdout, stderr=stderr, timeout=timeout_seconds,
                                  env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'), check=False).returncode
    except subprocess.TimeoutExpired:
      returncode = None
  record.update(seconds=time.perf_counter() - start, returncode=returncode)
  if returncode == 0 and (directory / 'results.json').exists():
    record['status'] = 'done'
  else:
    reason = f'timed out after {timeout_seconds} s' if returncode is None else f'exit code {returncode}'
    record.update(status='failed', error=f'{reason}\n{_tail(directory / "stderr.log", _STDERR_TAIL_LINES)}')
  return record


def run_sweep(specs, *, categories, seeds, workdir, overrides=(), timeout_seconds=None,
              log=print) -> list[dict]:
  """Runs every (spec, category, seed) in turn; returns the records and writes failures.json."""
  names = [spec.name for spec in specs]
  if len(set(names)) != len(names):
    raise InputError(f'--config: method names must be unique, got {names}; name them with NAME=')
  jobs = [(spec, category, seed) for spec in specs for category in categories for seed in seeds]
  records = []
  for index, (spec, category, seed) in enumerate(jobs, 1):
    record = run_one(spec, category=category, seed=seed, workdir=workdir, overrides=overrides,
                     timeout_seconds=timeout_seconds)
    records.append(record)
    last_line = record['error'].splitlines()[-1] if record['error'] else ''
    log(f'[{index}/{len(jobs)}] {spec.name} {category} seed {seed}: {record["status"]}'
        + (f' in {record["seconds"]:.0f} s' if record['status'] == 'done' else '')
        + (f' ({last_line})' if record['status'] == 'failed' else ''))
  failures = [r for r in records if r['status'] == 'failed']
  _write_text(Path(workdir) / 'failures.json', json.dumps(failures, indent=2) + '\n')
  return records


def metric_value(results: dict, metric: str):
  """`results[metric]`, following dots into nested dicts (`image_auroc_by_score.energy`); None if absent."""
  value = results
  for key in metric.split('.'):
    value = value.get(key) if isinstance(value, dict) else None
  return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def collect(workdir, *, metrics=DEFAULT_METRICS) -> list[dict]:
  """One row per results.json under `workdir`: method (the run's folder name), category, seed, metrics."""
  rows = []
  for path in sorted(Path(workdir).rglob('results.json')):
    try:
      results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
      raise InputError(f'{path}: not a readable results.json ({error})') from error
    relative = path.parent.relative_to(workdir).parts
    method = '/'.join(relative[:-2]) if len(relative) >= 3 else results.get('method', 'unknown')
    row = dict(method=method, dataset=results.get('dataset'), category=str(results.get('category')),
               seed=results.get('seed'), train_seconds=metric_value(results, 'train_seconds'))
    row.update({metric: metric_value(results, metric) for metric in metrics})
    row['run_dir'] = str(path.parent)
    rows.append(row)
  return rows


def _mean_std(values) -> tuple[float | None, float | None, int]:
  """Mean, sample std (ddof 1; None for one value) and count of the non-null values."""
  values = [v for v in values if v is not None and math.isfinite(v)]
  if not values:
    return None, None, 0
  return (float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None,
          len(values))


def summarize(rows, *, metrics=DEFAULT_METRICS) -> list[dict]:
  """Mean/std over seeds per (method, category), then an `overall` row per method.

  Overall mean = mean of the category means; overall std = std over seeds of the per-seed mean over
  categories, using only the seeds that have every category of that method.
  """
  columns = (*metrics, 'train_seconds')
  summary = []
  for method in sorted({row['method'] for row in rows}):
    method_rows = [row for row in rows if row['method'] == method]
    categories = sorted({row['category'] for row in method_rows})
    category_means = {}
    for category in categories:
      group = [row for row in method_rows if row['category'] == category]
      entry = dict(method=method, category=category, num_runs=len(group))
      for column in columns:
        mean, std, _ = _mean_std([row[column] for row in group])
        entry[f'{column}_mean'], entry[f'{column}_std'] = mean, std
        category_means[category, column] = mean
      summary.append(entry)
    overall = dict(method=method, category='overall', num_runs=len(method_rows))
    for column in columns:
      means = [category_means[category, column] for category in categories]
      overall[f'{column}_mean'] = (float(np.mean(means)) if all(m is not None for m in means) else None)
      per_seed = []
      for seed in sorted({row['seed'] for row in method_rows}):
        values = {row['category']: row[column] for row in method_rows if row['seed'] == seed}
        if set(values) == set(categories) and all(v is not None for v in values.values()):
          per_seed.append(float(np.mean(list(values.values()))))
      overall[f'{column}_std'] = _mean_std(per_seed)[1]
    summary.append(overall)
  return summary


def category_scores(rows, *, metric: str) -> tuple[list[str], list[str], np.ndarray]:
  """(categories, methods, seed-averaged scores `[num_categories, num_methods]`) on the categories
  where every method has a value for `metric`."""
  methods = sorted({row['method'] for row in rows})
  table = {}
  for row in rows:
    if row[metric] is not None:
      table.setdefault((row['category'], row['method']), []).append(row[metric])
  categories = sorted(c for c in {row['category'] for row in rows}
                      if all((c, m) in table for m in methods))
  scores = np.array([[np.mean(table[c, m]) for m in methods] for c in categories]).reshape(
      len(categories), len(methods))
  return categories, methods, scores


def _format(mean, std, *, digits: int = 4) -> str:
  if mean is None:
    return 'n/a'
  return f'{mean:.{digits}f}' + (f' ± {std:.{digits}f}' if std is not None else '')


def _write_text(path: Path, text: str):
  """Temp file + rename, so readers never see half a table."""
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
  temporary.write_text(text)
  temporary.replace(path)


def _csv_text(rows, fieldnames) -> str:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=fieldnames, extrasaction='ignore', lineterminator='\n')
  writer.writeheader()
  writer.writerows({k: ('' if v is None else v) for k, v in row.items()} for row in rows)
  return buffer.getvalue()


def _markdown_table(header, rows) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(str(cell) for cell in row) + ' |' for row in rows]
  return '\n'.join(lines) + '\n'


def write_statistics(workdir, rows, *, metrics=DEFAULT_METRICS, alpha: float = 0.1) -> str:
  """statistics.csv, ranks.csv and cd_<metric>.png for >= 2 methods; returns the Markdown section."""
  workdir = Path(workdir)
  pair_rows, rank_rows, sections = [], [], []
  for metric in metrics:
    categories, methods, scores = category_scores(rows, metric=metric)
    if len(methods) < 2:
      return ''
    if len(categories) < 2:
      sections.append(f'### {metric}\n\nNot enough categories where every method has a value '
                      f'({len(categories)}); no statistics.\n')
      continue
    result = statistics.compare(scores, method_names=methods, alpha=alpha)
    figure = statistics.write_cd_diagram(
        workdir / f'cd_{metric}.png', mean_ranks=result['average_ranks'], clique_names=result['cliques'],
        critical_difference=result['critical_difference'],
        title=f'{metric}: average ranks over {len(categories)} categories (Wilcoxon-Holm, alpha {alpha:g})')
    cd = result['critical_difference']
    rank_rows += [dict(metric=metric, method=m, average_rank=r, num_categories=len(categories),
                       nemenyi_cd=cd) for m, r in result['average_ranks'].items()]
    pair_rows += [dict(metric=metric, **pair) for pair in result['pairs']]
    ranked = sorted(result['average_ranks'].items(), key=lambda item: item[1])
    sections.append(
        f'### {metric}\n\n![CD diagram]({figure.name})\n\n'
        + _markdown_table(['method', 'average rank'], [(m, f'{r:.2f}') for m, r in ranked])
        + f'\nNemenyi CD (alpha {alpha:g}, {len(methods)} methods, {len(categories)} categories): '
        f'{cd:.3f}\n\n'
        + _markdown_table(['method A', 'method B', 'W', 'p', 'p (Holm)', f'significant at {alpha:g}'],
                          [(p['method_a'], p['method_b'], f'{p["statistic"]:g}', f'{p["p_value"]:.4g}',
                            f'{p["p_holm"]:.4g}', 'yes' if p['significant'] else 'no')
                           for p in result['pairs']]))
  _write_text(workdir / 'statistics.csv', _csv_text(pair_rows, [
      'metric', 'method_a', 'method_b', 'statistic', 'p_value', 'p_holm', 'significant', 'better']))
  _write_text(workdir / 'ranks.csv', _csv_text(rank_rows, [
      'metric', 'method', 'average_rank', 'num_categories', 'nemenyi_cd']))
  text = ('## Statistics (seed 000 §5)\n\nPaired two-sided Wilcoxon signed-rank tests across categories '
          '(seed means), Holm-Bonferroni over all pairs; rank 1 = best; bars join methods that are not '
          'significantly different.\n\n' + '\n'.join(sections))
  _write_text(workdir / 'statistics.md', text)
  return text


def write_tables(workdir, rows, *, metrics=DEFAULT_METRICS, alpha: float = 0.1,
                 failures=()) -> str:
  """runs.csv, summary.csv, summary.md (+ statistics for >= 2 methods); returns the Markdown."""
  workdir = Path(workdir)
  summary = summarize(rows, metrics=metrics)
  columns = (*metrics, 'train_seconds')
  _write_text(workdir / 'runs.csv', _csv_text(rows, [
      'method', 'dataset', 'category', 'seed', *columns, 'run_dir']))
  _write_text(workdir / 'summary.csv', _csv_text(summary, [
      'method', 'category', 'num_runs', *(f'{c}_{s}' for c in columns for s in ('mean', 'std'))]))
  text = (f'# Sweep results ({len(rows)} runs)\n\nMean ± std over seeds; `overall` = mean of the '
          'category means ± std over seeds of the mean over categories.\n\n'
          + _markdown_table(['method', 'category', 'runs', *columns],
                            [(e['method'], f'**{e["category"]}**' if e['category'] == 'overall'
                              else e['category'], e['num_runs'],
                              *(_format(e[f'{c}_mean'], e[f'{c}_std'], digits=1 if c.endswith('_seconds') else 4)
                                for c in columns))
                             for e in summary]))
  if failures:
    text += f'\n## Failed runs ({len(failures)})\n\n' + '\n'.join(
        f'- {f["name"]} {f["category"]} seed {f["seed"]} ({f["run_dir"]}):\n  ```\n  '
        + f['error'].replace('\n', '\n  ') + '\n  ```' for f in failures) + '\n'
  images = {'sweep/results_table': figures.table_figure(
      ['method', 'category', 'runs', *columns],
      [(e['method'], e['category'], e['num_runs'],
        *(_format(e[f'{c}_mean'], e[f'{c}_std'], digits=1 if c.endswith('_seconds') else 3) for c in columns))
       for e in summary], path=workdir / 'summary.png', title=f'Sweep results ({len(rows)} runs)')}
  if len({row['method'] for row in rows}) >= 2:
    text += '\n' + write_statistics(workdir, rows, metrics=metrics, alpha=alpha)
    for metric in metrics:
      if (workdir / f'cd_{metric}.png').is_file():
        images[f'sweep/cd_{metric}'] = (mpl_image.imread(workdir / f'cd_{metric}.png')[..., :3] * 255).astype(
            np.uint8)
  _write_text(workdir / 'summary.md', text)
  _log_images(workdir, images)
  return text


def _log_images(workdir: Path, images: dict):
  """The sweep's figures into TensorBoard (`tensorboard --logdir WORKDIR`), tab `images`, under `sweep/`."""
  writer = summaries.create_writer(workdir / 'tensorboard')
  writer.write_images(0, {name: image[None] for name, image in images.items()})
  writer.close()


def recorded_failures(workdir: Path) -> list[dict]:
  """failures.json of the last sweep, minus runs that have since succeeded."""
  path = workdir / 'failures.json'
  if not path.exists():
    return []
  return [f for f in json.loads(path.read_text())
          if not (Path(f['run_dir']) / 'results.json').exists()]
