"""One table of every run under some folders, and their training curves.

    python -m tools.report results/                        # markdown table on stdout
    python -m tools.report results/a results/b --csv out.csv --markdown out.md
    python -m tools.report results/ --curves curves.png    # + accuracy and loss against iteration
    python -m tools.report --paired results/a results/b    # paired difference b - a per episode

A run is a folder holding `config.json` (written by every meta_train and pretrain). Its results
are the files its test modes wrote: `meta_test.json` (and `meta_test_<bn_mode>.json`) of the MAML
family, LEO and MTL, TAML's `test_step<n>_mc<S>.json` (one row per ID/OOD dataset), and
`adv_test.json` (clean and one row per attack). Each becomes a row: method, dataset, way/shot,
iterations (of the checkpoint tested), episodes, accuracy with its 95% interval over episodes.

Runs whose flags differ only in `--seed` (or in flags that do not change the numbers, such as
`--savedir` and `--progress`) and whose results were measured the same way are grouped: the group's
row gives the mean over seeds with a 95% Student-t interval across seeds (n - 1 degrees of freedom),
next to the per-seed accuracies. A single seed's interval says how precisely its episodes measured
that one model; the interval across seeds says how much another training run would move it.

A meta_test of several checkpoints (`--checkpoints`) gives one row per checkpoint. `--paired A B`
reads two runs' per-episode files (`meta_test_episodes.csv`, or the files themselves), checks
that they hold the same episodes (fingerprint by fingerprint) and prints both accuracies and the
mean of the per-episode differences B - A with its 95% interval.

`--curves` reads each run's TensorBoard scalars (`<run>/tensorboard`) and draws training and
validation accuracy and loss against iteration, runs overlaid and labelled, in one PNG (needs
matplotlib: `pip install -e ".[plot]"`).
"""
import argparse
import csv
import glob
import io
import json
import math
import os
import re
import sys

# Flags that change neither what is trained nor what is measured.
NOT_SETTINGS = {'seed', 'savedir', 'mode', 'progress', 'gpu_id', 'max_to_keep', 'time_budget',
                'parallel_tasks', 'n_cpu_devices', 'print_freq', 'save_freq', 'test_iter',
                'pretrain_dir', 'data_root', 'folder_dir'}
# What a result record holds beside the settings it was measured with.
MEASUREMENTS = {'accuracy', 'ci95', 'cent', 'loss', 'checkpoint', 'metatest_accuracy',
                'best_step', 'best_valid_accuracy', 'per_episode', 'l1_frac', 'episodes_file'}
# TensorBoard tags of each runner, per curve.
CURVE_TAGS = {
    'train accuracy': ('meta_train/acc', 'train/id_acc', 'metatrain_acc', 'metatrain_accuracy'),
    'validation accuracy': ('meta_val/acc', 'val/id_acc', 'metavalid_accuracy'),
    'train loss': ('meta_train/cent', 'meta_train/loss', 'train/cent', 'metatrain_loss'),
    'validation loss': ('meta_val/cent', 'meta_val/loss', 'val/cent', 'metavalid_loss'),
}
COLUMNS = ('run', 'method', 'dataset', 'way', 'shot', 'result', 'iterations', 'episodes',
           'accuracy', 'ci95', 'seeds', 'per_seed')


class ReportError(Exception):
    """Bad input for the report, said in one line."""


def find_runs(folders):
    """Every folder at or below the given ones that holds a config.json, or a meta_test*.json
    (a meta_test of --checkpoints writes no config.json), sorted."""
    runs = set()
    for folder in folders:
        if not os.path.isdir(folder):
            raise ReportError(f'{folder} is not a folder')
        for name in ('config.json', 'meta_test*.json'):
            for path in glob.glob(os.path.join(folder, '**', name), recursive=True):
                runs.add(os.path.dirname(path))
    return sorted(runs)


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ReportError(f'cannot read {path}: {e}') from None


def iteration_of(record):
    """The iteration of the checkpoint a result was measured on (None if not named)."""
    if record.get('best_step') is not None:
        return int(record['best_step'])
    match = re.search(r'model-(\d+)', str(record.get('checkpoint', '')))
    return int(match.group(1)) if match else None


def results_of(run):
    """[(result name, record)] of one run's test files."""
    found = []
    for path in sorted(glob.glob(os.path.join(run, 'meta_test*.json'))):
        name = os.path.basename(path)[:-len('.json')]
        record = load_json(path)
        entries = record.get('checkpoints')
        if not isinstance(entries, list):
            found.append((name, record))
            continue
        # several checkpoints scored on the same episodes: one row each
        common = {k: v for k, v in record.items() if not isinstance(v, (list, dict))}
        for entry in entries:
            found.append((f'{name} {entry["checkpoint"]}', {**common, **entry}))
    for path in sorted(glob.glob(os.path.join(run, 'test_step*_mc*.json'))):
        record = load_json(path)
        stem = os.path.basename(path)[:-len('.json')]
        for which, entry in sorted(record.get('results', {}).items()):
            merged = {k: v for k, v in record.items() if k != 'results'}
            merged.update(entry)
            found.append((f'{stem} {which}', merged))
    adv = os.path.join(run, 'adv_test.json')
    if os.path.exists(adv):
        record = load_json(adv)
        common = {k: v for k, v in record.items()
                  if k not in ('attacks', 'per_episode', 'clean') and not isinstance(v, dict)}
        if isinstance(record.get('clean'), dict):
            found.append(('adv_test clean', {**common, **record['clean']}))
        for norm, entry in sorted(record.get('attacks', {}).items()):
            found.append((f'adv_test {norm}', {**common, **entry}))
    return found


def rows_of(runs):
    """One row per (run, result), with the keys that decide which rows group together."""
    rows = []
    for run in runs:
        path = os.path.join(run, 'config.json')
        config = load_json(path) if os.path.exists(path) else {}
        settings = {k: v for k, v in config.items() if k not in NOT_SETTINGS}
        for name, record in results_of(run):
            if 'accuracy' not in record:
                continue
            measured = {k: v for k, v in record.items()
                        if k not in MEASUREMENTS and not isinstance(v, (list, dict))}
            rows.append(dict(
                run=run, method=config.get('model', record.get('model', '?')),
                dataset=record.get('test_dataset', config.get('dataset',
                                                              record.get('dataset', '?'))),
                way=record.get('way', config.get('way')), shot=record.get('shot', config.get('shot')),
                result=name, iterations=iteration_of(record),
                episodes=record.get('n_episodes'), accuracy=float(record['accuracy']),
                ci95=float(record.get('ci95', float('nan'))), seed=config.get('seed'),
                group=json.dumps([settings, name, measured], sort_keys=True, default=str)))
    return rows


def t_quantile(dof):
    """The 97.5% quantile of Student's t with dof degrees of freedom."""
    from scipy import stats
    return float(stats.t.ppf(0.975, dof))


def grouped(rows):
    """The rows, with every group of two or more seeds followed by its across-seed row."""
    groups = {}
    for row in rows:
        groups.setdefault(row['group'], []).append(row)
    table = []
    for members in groups.values():
        members.sort(key=lambda r: (r['seed'] is None, r['seed'], r['run']))
        for row in members:
            table.append({**row, 'seeds': 1, 'per_seed': ''})
        seeds = {r['seed'] for r in members}
        if len(members) > 1 and len(seeds) == len(members):
            accs = [r['accuracy'] for r in members]
            n = len(accs)
            mean = sum(accs) / n
            std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (n - 1))
            first = members[0]
            table.append(dict(
                run=f'{n} seeds: ' + ', '.join(os.path.basename(r['run']) for r in members),
                method=first['method'], dataset=first['dataset'], way=first['way'],
                shot=first['shot'], result=first['result'],
                iterations=first['iterations'], episodes=first['episodes'], accuracy=mean,
                ci95=t_quantile(n - 1) * std / math.sqrt(n), seeds=n,
                per_seed=' / '.join(f'{r["accuracy"]:.2f} (seed {r["seed"]})' for r in members)))
    return table


def fmt(value, digits=2):
    if value is None:
        return ''
    if isinstance(value, float):
        return '' if math.isnan(value) else f'{value:.{digits}f}'
    return str(value)


def markdown(table):
    head = ('run', 'method', 'dataset', 'way/shot', 'result', 'iterations', 'episodes',
            'accuracy (95% interval)', 'per seed')
    lines = ['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
    for row in table:
        acc = f'{row["accuracy"]:.2f} +- {fmt(row["ci95"])}%'
        if row['seeds'] > 1:
            acc = f'**{acc}** (across {row["seeds"]} seeds)'
        lines.append('| ' + ' | '.join([
            row['run'], str(row['method']), str(row['dataset']), f'{row["way"]}/{row["shot"]}',
            row['result'], fmt(row['iterations']), fmt(row['episodes']), acc,
            row['per_seed']]) + ' |')
    return '\n'.join(lines) + '\n'


def csv_text(table):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for row in table:
        writer.writerow([fmt(row[c], 4) if isinstance(row[c], float) else fmt(row[c])
                         for c in COLUMNS])
    return out.getvalue()


def scalars(run):
    """{tag: [(step, value)]} of a run's TensorBoard events (empty without any)."""
    folder = os.path.join(run, 'tensorboard')
    if not os.path.isdir(folder):
        return {}
    from tensorboard.backend.event_processing import event_accumulator
    accumulator = event_accumulator.EventAccumulator(
        folder, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0})
    accumulator.Reload()
    series = {}
    tags = accumulator.Tags()
    for tag in tags.get('tensors', []):
        series[tag] = [(e.step, float(_tensor_value(e.tensor_proto)))
                       for e in accumulator.Tensors(tag)]
    for tag in tags.get('scalars', []):
        series[tag] = [(e.step, float(e.value)) for e in accumulator.Scalars(tag)]
    return series


def _tensor_value(proto):
    from tensorboard.util import tensor_util
    return tensor_util.make_ndarray(proto).item()


def curves(runs, path, labels=None):
    """Draws the four curves of every run into one PNG; returns the number of series drawn."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReportError('--curves needs matplotlib: pip install -e ".[plot]"') from None
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    drawn = 0
    for index, run in enumerate(runs):
        series = scalars(run)
        label = labels[index] if labels else os.path.relpath(run)
        for ax, (title, tags) in zip(axes.flat, CURVE_TAGS.items()):
            tag = next((t for t in tags if series.get(t)), None)
            if tag is None:
                continue
            steps, values = zip(*sorted(series[tag]))
            ax.plot(steps, values, marker='.' if len(steps) < 30 else None,
                    label=label, color=f'C{index % 10}')
            drawn += 1
    for ax, title in zip(axes.flat, CURVE_TAGS):
        ax.set_title(title)
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if not drawn:
        plt.close(fig)
        raise ReportError('no run has TensorBoard scalars to draw (<run>/tensorboard); '
                          'curves come from meta_train runs')
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


def episodes_file(where):
    """The per-episode file of a run folder (meta_test_episodes.csv, else its only
    *_episodes.csv), or `where` itself if it is a file."""
    if os.path.isfile(where):
        return where
    if not os.path.isdir(where):
        raise ReportError(f'{where} is neither a run folder nor a per-episode file')
    default = os.path.join(where, 'meta_test_episodes.csv')
    if os.path.exists(default):
        return default
    found = sorted(glob.glob(os.path.join(where, '*_episodes.csv')))
    if not found:
        raise ReportError(f'{where} holds no per-episode file (*_episodes.csv, written by '
                          'meta_test)')
    if len(found) > 1:
        raise ReportError(f'{where} holds several per-episode files '
                          f'({", ".join(map(os.path.basename, found))}); give one of them')
    return found[0]


def paired_text(a, b):
    """Both accuracies and the paired difference b - a over the same episodes (the first
    checkpoint column of each file), as text; ReportError if the episodes differ."""
    from model.evaluation import confidence_interval, first_mismatch, paired_difference, \
        read_episodes_csv
    files = [episodes_file(a), episodes_file(b)]
    read = []
    for path in files:
        try:
            read.append(read_episodes_csv(path))
        except (OSError, ValueError) as e:
            raise ReportError(str(e)) from None
    (fps_a, cols_a), (fps_b, cols_b) = read
    bad = first_mismatch(fps_a, fps_b)
    if bad is not None:
        raise ReportError(f'{files[0]} and {files[1]} were not measured on the same episodes '
                          f'(episode {bad} differs; {len(fps_a)} vs {len(fps_b)} episodes): '
                          'pair meta_tests of the same --seed, --n_test_iters, way/shot/query '
                          'and test dataset')
    (label_a, acc_a), (label_b, acc_b) = next(iter(cols_a.items())), next(iter(cols_b.items()))
    acc_a, acc_b = 100. * acc_a, 100. * acc_b
    lines = [f'paired over {len(fps_a)} episodes (the same ones in both files)']
    for name, path, label, acc in (('A', files[0], label_a, acc_a), ('B', files[1], label_b, acc_b)):
        mean, ci = confidence_interval(acc)
        lines.append(f'{name} = {path} ({label}): {mean:.2f} +- {ci:.2f}%')
    d, ci = paired_difference(acc_b, acc_a)
    lines.append(f'B - A: {d:.2f} +- {ci:.2f} points (95% interval of the per-episode '
                 'differences)')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m tools.report', description=__doc__.split('\n')[0])
    parser.add_argument('folders', nargs='*', help='folders holding runs (searched recursively)')
    parser.add_argument('--paired', nargs=2, metavar=('A', 'B'),
                        help='paired difference B - A of two runs measured on the same episodes '
                             '(run folders or their *_episodes.csv files)')
    parser.add_argument('--markdown', help='write the markdown table here (default: stdout)')
    parser.add_argument('--csv', help='write the table as CSV here')
    parser.add_argument('--curves', help='draw training/validation curves of the runs into this PNG')
    args = parser.parse_args(argv)
    try:
        if args.paired:
            sys.stdout.write(paired_text(*args.paired))
            if not args.folders:
                return 0
        if not args.folders:
            raise ReportError('give the folders holding runs, or --paired A B')
        runs = find_runs(args.folders)
        if not runs:
            raise ReportError(f'no run (a folder with config.json) under {", ".join(args.folders)}')
        table = grouped(rows_of(runs))
        text = markdown(table)
        if args.markdown:
            with open(args.markdown, 'w') as f:
                f.write(text)
            print(f'wrote {args.markdown} ({len(table)} rows from {len(runs)} runs)')
        else:
            sys.stdout.write(text)
        if args.csv:
            with open(args.csv, 'w', newline='') as f:
                f.write(csv_text(table))
            print(f'wrote {args.csv}')
        if args.curves:
            drawn = curves(runs, args.curves)
            print(f'wrote {args.curves} ({drawn} curves of {len(runs)} runs)')
    except (ReportError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
