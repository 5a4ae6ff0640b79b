"""The paper's analyses from one command, each a grid of runs made by train.py's own code
(fine-tuning) or zeroshot.py's (zero-shot scoring), in one output folder.

    python experiments.py ablations --tasks cola,sst2,mrpc,stsb,qqp,mnli,qnli,rte \\
        --model_dir model/ --data_dir data/ --out exp/ablations -- --n_iter 3
    python experiments.py layers --tasks race,mnli --model_dir model/ --data_dir data/ \\
        --out exp/layers -- --n_iter 3
    python experiments.py zeroshot --snapshots save/books --data_dir data/ --out exp/zeroshot

ablations is Table 5, layers Figure 2 left, zeroshot Figure 2 right. Everything after `--`
goes to every train.py run. Started again on the same --out, an experiment goes on where
it stopped. docs/analyses.md says what each measures, what --out holds, how a run is
scored and resumed, and what is checked before the first run.

Exit codes: 0 done; 1 an error; 2 a bad flag; 75 interrupted (run the same command again).
"""
import argparse
import contextlib
import json
import math
import os
import re
import signal
import sys
import time
from typing import NamedTuple

import numpy as np
import torch

import analysis
import checkpoints
import generate
import tasks
import train
import zeroshot
from checkpoints import RunError, RunFolder, settings
from model_pytorch import pretrained_settings
from text_utils import find_vocabulary
from utils import Parser, atomic_write, count, file_digest, unwritable

PROG = 'experiments.py'
EXIT_INTERRUPTED = 75
# The places below --data_dir where a task's files are looked for.
DATA_PLACES = ('', 'rocstories', 'glue', 'tasks', os.path.join('tasks', 'glue'))
# Table 5's rows: variant -> (its label there, the flags that make it)
VARIANTS = {
    'full': ('Transformer w/ aux LM (full)', []),
    'no_pretraining': ('Transformer w/o pre-training', ['--n_transfer', '-1']),
    'no_aux_lm': ('Transformer w/o aux LM', ['--lm_coef', '0']),
}
SHORT = {'acc': 'acc', 'mcc': 'mc', 'f1': 'F1', 'pearson': 'pc'}  # Table 5's headers
PAPER_TASKS = {'ablations': 'cola,sst2,mrpc,stsb,qqp,mnli,qnli,rte', 'layers': 'race,mnli',
               'zeroshot': 'rocstories,race,sst2,cola'}
# train.py's flags that experiments.py sets for each run
RESERVED = ('dataset', 'desc', 'data_dir', 'model_dir', 'log_dir', 'save_dir',
            'submission_dir', 'resume', 'overwrite', 'smoke', 'download', *train.CSV_FLAGS)


class Refused(Exception):
    """The experiment cannot start or go on as asked: one line says why (exit 1)."""


# ---------------------------------------------------------------------------------------
# The command line

def task_list(choices):
    """An argparse type: tasks separated by commas, each one of choices."""
    def parse(text):
        names = list(dict.fromkeys(name.strip() for name in text.split(',')))
        if not all(name in choices for name in names):
            raise argparse.ArgumentTypeError(
                f'expected tasks among {",".join(choices)}, separated by commas; got {text!r}')
        return names
    return parse


def parser():
    p = Parser(prog=PROG, description=__doc__.split('\n\n')[0],
               epilog=__doc__.split('\n\n', 1)[1],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='experiment', required=True, metavar='EXPERIMENT')
    for name, what in (('ablations', "Table 5: the full method, without pre-training, "
                                     "without the auxiliary LM"),
                       ('layers', 'Figure 2, left: scores against the blocks transferred'),
                       ('zeroshot', "Figure 2, right: zero-shot scores against the "
                                    "pre-training updates")):
        s = sub.add_parser(name, help=what, description=what,
                           epilog="train.py's flags go after --, e.g. -- --n_iter 3 "
                                  '--device cuda' if name != 'zeroshot' else None)
        choices = sorted(zeroshot.ZERO_SHOT if name == 'zeroshot' else tasks.TASKS)
        s.add_argument('--tasks', type=task_list(choices), default=PAPER_TASKS[name],
                       help=f'comma-separated, among {",".join(choices)} (default: the '
                            f"paper's, {PAPER_TASKS[name]})")
        s.add_argument('--data_dir', default='data/',
                       help="the tasks' data (its rocstories/, glue/, tasks/, tasks/glue/ "
                            'are looked in too)')
        s.add_argument('--out', required=True,
                       help="the experiment's folder: every run's files and the results")
        if name == 'zeroshot':
            add_zeroshot_flags(s)
        else:
            s.add_argument('--model_dir', default='model/',
                           help="the pretrained weights: OpenAI's model/ folder, a "
                                "transformers checkpoint, or pretrain.py's model folder")
    return p


def add_zeroshot_flags(s):
    s.add_argument('--snapshots', required=True,
                   help="pretrain.py's save/{desc}/ (snapshots/update_N/ and model/), or "
                        'its snapshots/ folder')
    s.add_argument('--final_updates', type=count(1), default=None,
                   help="the final model/ folder's number of updates (default: its newest "
                        "checkpoint's)")
    s.add_argument('--split', default='dev', choices=['dev', 'test'],
                   help='the split scored (GLUE keeps its test labels)')
    s.add_argument('--limit', type=count(1), default=None,
                   help='score only the first N examples of each split')
    s.add_argument('--n_batch', type=count(1), default=16, help='sequences per forward pass')
    s.add_argument('--device', choices=['cpu', 'cuda'], default=None,
                   help='default: cuda where there is one')


def split_argv(argv):
    """(experiments.py's flags, train.py's): those after the first --."""
    if '--' in argv:
        i = argv.index('--')
        return argv[:i], argv[i + 1:]
    return argv, []


def train_parser():
    p = train.parser()
    p.prog = f'{PROG} (a train.py flag, after --)'
    return p


def train_args(argv):
    """train.py's flags, parsed and checked as train.py does: a bad one exits 2."""
    p = train_parser()
    args = p.parse_args(argv)
    train.check_args(p, args)
    return args


def check_passthrough(p, passthrough, reserved):
    """The flags after --, parsed by train.py's parser; those experiments.py sets are
    refused (exit 2), whatever their spelling (argparse takes prefixes)."""
    given = vars(train_parser().parse_args(passthrough))
    defaults = vars(train.parser().parse_args([]))
    taken = [f'--{name}' for name in reserved if given[name] != defaults[name]]
    if taken:
        p.error(f'{", ".join(taken)} after --: experiments.py sets '
                f'{"them" if len(taken) > 1 else "it"} for each run; give the experiment its '
                '--data_dir, --model_dir and --out instead')


# ---------------------------------------------------------------------------------------
# The plan: every run, checked before the first one starts

class Planned(NamedTuple):
    name: str                 # the run's --desc
    task: str
    key: object               # its place in the results: a variant, or a number of blocks
    argv: list                # train.py's flags
    args: argparse.Namespace  # as train.py parses them


def locate(task, data_dir, load):
    """(folder, load(folder)) for the first of data_dir and its DATA_PLACES where load
    finds the task's files; a missing task, or a malformed file, is Refused."""
    name, first = tasks.TASKS[task].name, None
    for place in DATA_PLACES:
        folder = os.path.join(data_dir, place) if place else data_dir
        if not os.path.isdir(folder):
            continue
        try:
            return folder, load(folder)
        except FileNotFoundError as err:
            first = first or err
        except (OSError, ValueError) as err:
            raise Refused(f'{name} in {folder}: {err}') from None
    places = ', '.join(p + '/' for p in DATA_PLACES if p)
    raise Refused(f'--data_dir {data_dir}: no {name} data there, nor in its {places} '
                  f'({first or "not a folder"})')


def fine_tuning_plan(opts, passthrough, base):
    """Every run of ablations or layers, its data found and its flags parsed; base:
    the flags after --, parsed."""
    plan, n_train = [], {}
    for task in opts.tasks:
        folder, splits = locate(task, opts.data_dir,
                                lambda d: tasks.load(tasks.TASKS[task], d, base.n_valid,
                                                     base.submit))
        n_train[task] = len(splits['train'].labels)
        del splits  # a large task's texts are not kept for the runs, which read them again
        for key, name, flags in grid(opts.experiment, task, base):
            argv = (['--cache_dir', os.path.join(opts.out, 'cache')] + passthrough
                    + ['--dataset', task, '--desc', name, '--data_dir', folder,
                       '--model_dir', opts.model_dir,
                       '--log_dir', os.path.join(opts.out, 'log'),
                       '--save_dir', os.path.join(opts.out, 'save'),
                       '--submission_dir', os.path.join(opts.out, 'submission')] + flags)
            plan.append(Planned(name, task, key, argv, train_args(argv)))
    return plan, n_train


def grid(experiment, task, base):
    """(key, run name, flags) of each run of a task."""
    if experiment == 'ablations':
        return [(v, f'{task}-{v}', flags) for v, (_, flags) in VARIANTS.items()]
    return [(k, f'{task}-transfer{k:02d}', ['--n_transfer', str(k)])
            for k in range(base.n_layer + 1)]


def check_runs(plan, n_train):
    """train.py's checks of each run before its work: the files it needs, the weights
    against its flags, the vocabulary, its number of updates."""
    for run in plan:
        try:
            train.check_inputs(run.args, main=False)  # the runs warn themselves
            train.count_updates(run.args, n_train[run.task], main=False)
        except RunError as err:
            raise Refused(f'run {run.name}: {err}') from None


def check_out(out):
    if os.path.exists(out) and not os.path.isdir(out):
        raise Refused(f'--out {out} is a file, not a folder')
    why = unwritable(out)
    if why:
        raise Refused(f'--out {out}: {why}')


# ---------------------------------------------------------------------------------------
# What each run came to: out/runs/{name}.json

class Ledger:
    """The state of each run (started, done, stopped, failed), the settings it was made
    with and the seconds it took, in out/runs/{name}.json."""

    def __init__(self, out):
        self.dir = os.path.join(out, 'runs')

    def path(self, name):
        return os.path.join(self.dir, f'{name}.json')

    def read(self, name):
        try:
            with open(self.path(name)) as f:
                record = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            record = err
        if not isinstance(record, dict) or not {'state', 'settings'} <= set(record):
            raise Refused(f'{self.path(name)} is not a record of experiments.py '
                          f"({record!r:.80}): delete it and that run's files to run it again")
        return record

    def write(self, name, **record):
        with atomic_write(self.path(name), 'w') as f:
            json.dump(record, f, indent=1, allow_nan=False)

    def done(self, name):
        record = self.read(name)
        return record is not None and record['state'] == 'done'

    def seconds_done(self, names):
        return [self.read(n)['seconds'] for n in names if self.done(n)]


def run_settings(args):
    """What a run computes with (checkpoints.settings: no paths), as JSON gives it back."""
    return json.loads(json.dumps(settings(args, 1, {})))


def check_recorded(ledger, name, current, out):
    """A run recorded with other settings is refused: its results are not this plan's."""
    record = ledger.read(name)
    if record is None or record['settings'] == current:
        return
    saved = record['settings']
    diff = '; '.join(f'{k}: then {saved.get(k)!r}, now {current.get(k)!r}'
                     for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k))
    raise Refused(f'--out {out} holds run {name} made with other settings ({diff}): give the '
                  'same flags to go on with it, or another --out')


def check_ledger(plan, ledger, out):
    """Before any run: each recorded run's settings are the plan's; a finished run's log
    holds its last evaluation; and a run's files exist only where experiments.py
    started it (its own to resume or replace)."""
    for run in plan:
        check_recorded(ledger, run.name, run_settings(run.args), out)
        if ledger.done(run.name):
            evaluations(run)
            continue
        found = [] if ledger.read(run.name) else RunFolder(run.args).earlier_files()
        if found:
            raise Refused(f'--out {out} holds files of a run {run.name} that experiments.py '
                          f'did not start ({checkpoints.listed(found)}): give another --out')


def go_on_flags(run):
    """The flags that go on with a run that has not finished: --resume from its newest
    readable checkpoint, --overwrite over its own files without one (check_ledger saw
    that experiments.py started it), none where it left no files."""
    folder = RunFolder(run.args)
    if not folder.earlier_files():
        return []
    return ['--resume'] if folder.checkpoints.newest(say=False)[0] else ['--overwrite']


# ---------------------------------------------------------------------------------------
# Running the plan

def duration(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'
    return f'{seconds // 60}m{seconds % 60:02d}s' if seconds >= 60 else f'{seconds}s'


def progress(ledger, names):
    """'3 of 9 runs done, 6 left, about 12m00s left' (the finished runs' mean duration)."""
    seconds = ledger.seconds_done(names)
    left = len(names) - len(seconds)
    line = f'{len(seconds)} of {len(names)} runs done, {left} left'
    if left and seconds:
        line += f', about {duration(np.mean(seconds) * left)} left'
    return line


def say(text):
    print(f'{PROG}: {text}', flush=True)


def attempt(run, ledger):
    """One train.py run (train.main, in this process), going on from where it stopped;
    returns its exit code. Its record says 'started' while it runs."""
    record = ledger.read(run.name) or {}
    spent, flags = record.get('seconds', 0.0), go_on_flags(run)
    current = run_settings(run.args)
    ledger.write(run.name, state='started', settings=current, seconds=spent)
    how = {'--resume': ', from its newest checkpoint',
           '--overwrite': ', again over its own files (it stopped before a checkpoint)'}
    say(f'run {run.name}{how.get(flags[0], "") if flags else ""}')
    start, code = time.time(), 0
    try:
        train.main(run.argv + flags)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    state = {0: 'done', EXIT_INTERRUPTED: 'stopped'}.get(code, 'failed')
    ledger.write(run.name, state=state, settings=current, exit=code,
                 seconds=spent + time.time() - start)
    return code


def execute(plan, ledger, write_results):
    """Every run not done, in order, the progress said after each; the results written
    after each (the figures at the end, and where the experiment stops)."""
    names = [run.name for run in plan]
    say(progress(ledger, names))
    for run in plan:
        if ledger.done(run.name):
            continue
        code = attempt(run, ledger)
        if code == EXIT_INTERRUPTED:
            write_results(figures=True)
            say(f'stopped during run {run.name}; {progress(ledger, names)}: run the same '
                'command again to go on')
            sys.exit(EXIT_INTERRUPTED)
        if code:
            write_results(figures=True)
            raise Refused(f'run {run.name} failed (exit {code}, said above); run the same '
                          'command again to go on from it')
        evaluations(run)  # its log holds its last evaluation
        write_results(figures=False)
        say(f'run {run.name} done; {progress(ledger, names)}')
    write_results(figures=True)


# ---------------------------------------------------------------------------------------
# Scores, from the runs' own logs

def metric_of(task):
    return tasks.TASKS[task].metrics[0]


def evaluations(run):
    """The evaluation lines of a finished run's log, the last of its last epoch."""
    log, metric = RunFolder(run.args).log, metric_of(run.task)
    try:
        found = analysis.read_evaluations(log, [f'tr_{metric}', f'va_{metric}'])
    except (OSError, ValueError) as err:
        raise Refused(f'run {run.name} finished, but its log cannot be read ({err}): delete '
                      'its files and its runs/ record to run it again') from None
    if found[-1].get('n_epochs') != run.args.n_iter:
        raise Refused(f'{log}: its last evaluation is not that of epoch {run.args.n_iter}, '
                      f'though run {run.name} finished: the log was changed since; delete its '
                      'files and its runs/ record to run it again')
    return found


def best_evaluation(found, metric):
    """The first evaluation of the highest validation score, as train.py --submit keeps
    its parameters (a tie keeps the earlier; nan, an undefined correlation, is never
    the best)."""
    values = np.array([e[f'va_{metric}'] for e in found], dtype=float)
    return found[int(np.argmax(np.nan_to_num(values, nan=-np.inf)))]


def finite(value):
    """A number for JSON: None for nan (an undefined correlation) or a missing one."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def mean(values):
    return None if any(v is None for v in values) else float(np.mean(values))


def run_results(plan, ledger):
    """For each run: its name, task, key, log, seconds, and, once done, the best
    evaluation and its validation (score) and training scores."""
    out = []
    for run in plan:
        metric, record = metric_of(run.task), ledger.read(run.name) or {}
        result = dict(name=run.name, task=run.task, key=run.key, metric=metric,
                      log=RunFolder(run.args).log, state=record.get('state', 'not started'),
                      seconds=record.get('seconds'), score=None, train_score=None, best=None)
        if result['state'] == 'done':
            best = {k: finite(v) for k, v in best_evaluation(evaluations(run), metric).items()}
            result.update(best=best, score=best[f'va_{metric}'], train_score=best[f'tr_{metric}'])
        out.append(result)
    return out


# ---------------------------------------------------------------------------------------
# Results: JSON, markdown, figures

def cell(value):
    return '–' if value is None else f'{value:.2f}'


def markdown(header, rows, note):
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    return '\n'.join(lines) + f'\n\n{note}\n'


def column(task):
    return f'{tasks.TASKS[task].name} ({SHORT.get(metric_of(task), metric_of(task))})'


def write_text(path, text):
    with atomic_write(path, 'w') as f:
        f.write(text)


def write_json(path, results):
    write_text(path, json.dumps(results, indent=1, allow_nan=False) + '\n')


def figure(width=6, height=4):
    # Agg draws without a display; imported here, as analysis.py does, so that the runs
    # need no matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path):
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format='png', dpi=100)


def ablation_results(opts, plan, ledger):
    found = run_results(plan, ledger)
    scores = {v: {r['task']: r['score'] for r in found if r['key'] == v} for v in VARIANTS}
    for row in scores.values():
        row['average'] = mean([row[t] for t in opts.tasks])
    return dict(experiment='ablations', complete=all(r['state'] == 'done' for r in found),
                tasks=opts.tasks, metrics={t: metric_of(t) for t in opts.tasks},
                variants={v: label for v, (label, _) in VARIANTS.items()}, scores=scores,
                runs=found)


def ablation_table(results):
    header = ['Method', 'Avg. Score'] + [column(t) for t in results['tasks']]
    rows = [[label, cell(results['scores'][v]['average'])]
            + [cell(results['scores'][v][t]) for t in results['tasks']]
            for v, label in results['variants'].items()]
    return markdown(header, rows, "Validation scores (%) as the paper's Table 5 lays them "
                    "out: each the run's best evaluation; the average is the row's mean.")


def ablation_figure(results, path):
    fig = figure(width=max(6, 1.5 * len(results['tasks'])))
    ax = fig.subplots()
    names = [column(t) for t in results['tasks']] + ['Avg. Score']
    width = 0.8 / len(VARIANTS)
    for i, (v, label) in enumerate(results['variants'].items()):
        row = results['scores'][v]
        values = [row[t] for t in results['tasks']] + [row['average']]
        ax.bar(np.arange(len(names)) + i * width, [np.nan if x is None else x for x in values],
               width, label=label)
    ax.set_xticks(np.arange(len(names)) + width * (len(VARIANTS) - 1) / 2, names,
                  rotation=20, fontsize=8)
    ax.set_ylabel('validation score (%)')
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis='y')
    save_figure(fig, path)


def layer_results(opts, plan, ledger):
    found = run_results(plan, ledger)
    scores = {t: [dict(n_transfer=r['key'], valid=r['score'], train=r['train_score'])
                  for r in found if r['task'] == t] for t in opts.tasks}
    return dict(experiment='layers', complete=all(r['state'] == 'done' for r in found),
                tasks=opts.tasks, metrics={t: metric_of(t) for t in opts.tasks},
                n_layer=plan[0].args.n_layer, scores=scores, runs=found)


def layer_table(results):
    header = ['blocks transferred'] + [f'{column(t)} {split}' for t in results['tasks']
                                       for split in ('valid', 'train')]
    rows = [[str(k)] + [cell(results['scores'][t][k][split]) for t in results['tasks']
                        for split in ('valid', 'train')]
            for k in range(results['n_layer'] + 1)]
    return markdown(header, rows, "Scores (%) at each run's best evaluation: validation, "
                    'and the --n_valid training examples train.py scores there.')


def layer_figure(results, path):
    fig = figure()
    ax = fig.subplots()
    for i, t in enumerate(results['tasks']):
        points = results['scores'][t]
        x = [p['n_transfer'] for p in points]
        for split, style in (('valid', '-'), ('train', '--')):
            ax.plot(x, [np.nan if p[split] is None else p[split] for p in points], style,
                    marker='o', color=f'C{i}', label=f'{column(t)} {split}')
    ax.set_xticks(range(results['n_layer'] + 1))
    ax.set_xlabel('number of layers transferred')
    ax.set_ylabel('score (%)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def results_writer(opts, plan, ledger):
    """write(figures): the results of the runs (or zeroshot's units) done so far, as JSON
    and markdown, and with figures the PNG too."""
    collect, table, draw = WRITERS[opts.experiment]
    base = os.path.join(opts.out, opts.experiment)

    def write(figures):
        results = collect(opts, plan, ledger)
        write_json(base + '.json', results)
        write_text(base + '.md', table(results))
        if figures:
            draw(results, base + '.png')
        return results
    return write


# ---------------------------------------------------------------------------------------
# zeroshot: zeroshot.py's heuristics with every model folder of a pre-training run

class Unit(NamedTuple):
    name: str       # its record in out/runs/
    task: str
    updates: int    # the model's pre-training updates
    model_dir: str


def chance(task):
    """What guessing scores: Matthews correlation 0, or one right answer among the
    task's choices or classes."""
    return 0.0 if metric_of(task) == 'mcc' else 100.0 / len(tasks.TASKS[task].labels)


def update_number(path):
    found = re.fullmatch(r'update_(\d+)(\.pt)?', os.path.basename(path))
    return int(found.group(1)) if found else None


def model_folders(snapshots, final_updates):
    """{updates: model folder}: pretrain.py's snapshots/update_N/ and its final model/,
    whose update is --final_updates or that of the newest checkpoint (pretrain.py writes
    one at its last update). The final folder stands for a snapshot of its update."""
    if not os.path.isdir(snapshots):
        raise Refused(f'--snapshots {snapshots} is not a folder')
    # save/{desc}/ holds model/ and (with --snapshot_every) snapshots/; or this is snapshots/
    inside = os.path.join(snapshots, 'snapshots')
    is_save = os.path.isdir(inside) or os.path.isdir(os.path.join(snapshots, 'model'))
    save = snapshots if is_save else os.path.dirname(os.path.abspath(snapshots))
    folder = inside if is_save else snapshots
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    found = {update_number(n): os.path.join(folder, n) for n in names
             if update_number(n) is not None and os.path.isdir(os.path.join(folder, n))}
    final = os.path.join(save, 'model')
    if os.path.isdir(final):
        saved = checkpoints.Checkpoints(os.path.join(save, 'checkpoints'), 1).paths()
        n = final_updates or (update_number(saved[-1]) if saved else None)
        if n is None:
            raise Refused(f'{final}: its number of updates is unknown (no checkpoint beside '
                          'it): give it as --final_updates')
        found[n] = final
    if not found:
        raise Refused(f'--snapshots {snapshots}: no update_N/ model folders in it, nor a '
                      "model/ folder: give pretrain.py's save/{desc}/ folder")
    return dict(sorted(found.items()))


def check_model_folder(folder):
    """Before any scoring: its vocabulary and weights, as zeroshot.py checks them, and
    that they agree. Returns the vocabulary's paths."""
    encoder_path, bpe_path = find_vocabulary(folder)
    try:
        n_vocab = generate.check_files(encoder_path, bpe_path, folder)
        _, n_weights, _ = pretrained_settings(folder)
    except (OSError, ValueError, KeyError) as err:
        raise Refused(f'model folder {folder}: {err}') from None
    if n_vocab != n_weights:
        raise Refused(f'model folder {folder}: {encoder_path} holds {n_vocab} tokens, its '
                      f'weights embed {n_weights}')
    return encoder_path, bpe_path


class SharedEncoding:
    """A TextEncoder whose encodings are kept: every model folder scores the same texts,
    which are encoded (spaCy, ftfy, BPE) once."""

    def __init__(self, encoder_path, bpe_path):
        self.paths, self.encoder, self.kept = (encoder_path, bpe_path), None, {}

    def encode(self, texts, verbose=True):
        key = tuple(texts)
        if key not in self.kept:
            if self.encoder is None:  # spaCy loads only where something is encoded
                self.encoder = generate.load_text_encoder(*self.paths)
            self.kept[key] = self.encoder.encode(list(texts), verbose=verbose)
        return self.kept[key]


def zeroshot_plan(opts):
    """The units (model folder x task), each folder's vocabulary, and every task's
    splits, all checked before any scoring."""
    folders = model_folders(opts.snapshots, opts.final_updates)
    vocabularies = {n: check_model_folder(folder) for n, folder in folders.items()}
    splits = {t: locate(t, opts.data_dir,
                        lambda d: zeroshot.load_splits(t, d, opts.split, opts.limit))[1]
              for t in opts.tasks}
    units = [Unit(f'zeroshot-{t}-update_{n:08d}', t, n, folder)
             for n, folder in folders.items() for t in opts.tasks]
    return units, vocabularies, splits


def unit_settings(unit, opts):
    return dict(task=unit.task, split=opts.split, limit=opts.limit, updates=unit.updates,
                model_dir=os.path.abspath(unit.model_dir))


def score_units(opts, units, vocabularies, splits, ledger, write_results):
    """Each unit not done, one model folder loaded at a time, the texts encoded once per
    vocabulary; the results written after each folder."""
    names, encoders = [u.name for u in units], {}
    say(progress(ledger, names))
    for updates in dict.fromkeys(u.updates for u in units):
        todo = [u for u in units if u.updates == updates and not ledger.done(u.name)]
        if not todo:
            continue
        paths = vocabularies[updates]
        digest = tuple(file_digest(p) for p in paths)
        encoder = encoders.setdefault(digest, SharedEncoding(*paths))
        model, dims = generate.load_lm(model_dir=todo[0].model_dir, device=opts.device)
        lm = zeroshot.LanguageModel(model, dims['n_vocab'], opts.n_batch, verbose=True)
        for unit in todo:
            start = time.time()
            scores, details = zeroshot.evaluate(unit.task, lm, encoder, splits[unit.task],
                                                opts.split)
            ledger.write(unit.name, state='done', settings=unit_settings(unit, opts),
                         seconds=time.time() - start,
                         scores={k: finite(v) for k, v in scores.items()}, details=details)
            n = len(splits[unit.task][opts.split].labels)
            say(f'{zeroshot.summary(unit.task, scores, n, details)} after {updates} updates; '
                f'{progress(ledger, names)}')
        write_results(figures=False)
    write_results(figures=True)


def zeroshot_results(opts, units, ledger):
    scores = {t: [] for t in opts.tasks}
    for unit in units:
        record = ledger.read(unit.name)
        if record is None or record['state'] != 'done':
            continue
        scores[unit.task].append(dict(updates=unit.updates, model_dir=unit.model_dir,
                                      score=record['scores'][metric_of(unit.task)],
                                      scores=record['scores'], details=record['details']))
    return dict(experiment='zeroshot', complete=all(ledger.done(u.name) for u in units),
                tasks=opts.tasks, metrics={t: metric_of(t) for t in opts.tasks},
                split=opts.split, limit=opts.limit,
                chance={t: chance(t) for t in opts.tasks},
                updates=sorted({u.updates for u in units}), scores=scores)


def zeroshot_table(results):
    header = ['updates'] + [column(t) for t in results['tasks']]
    by_task = {t: {p['updates']: p['score'] for p in results['scores'][t]}
               for t in results['tasks']}
    rows = [['chance'] + [cell(results['chance'][t]) for t in results['tasks']]]
    rows += [[str(n)] + [cell(by_task[t].get(n)) for t in results['tasks']]
             for n in results['updates']]
    return markdown(header, rows, f"Zero-shot scores (%) on the {results['split']} split, "
                    "by zeroshot.py's heuristics, against the pre-training updates of each "
                    'model folder; chance is what guessing scores.')


def zeroshot_figure(results, path):
    n = len(results['tasks'])
    rows, cols = (1, n) if n < 3 else (2, (n + 1) // 2)
    fig = figure(5 * cols, 4 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, t in zip(axes, results['tasks']):
        points = results['scores'][t]
        ax.plot([p['updates'] for p in points],
                [np.nan if p['score'] is None else p['score'] for p in points],
                marker='o', label='zero-shot')
        ax.axhline(results['chance'][t], linestyle='--', color='gray',
                   label=f"chance ({results['chance'][t]:.0f})")
        ax.set_title(column(t))
        ax.set_xlabel('pre-training updates')
        ax.set_ylabel('score (%)')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[n:]:
        ax.set_visible(False)
    save_figure(fig, path)


WRITERS = {'ablations': (ablation_results, ablation_table, ablation_figure),
           'layers': (layer_results, layer_table, layer_figure),
           'zeroshot': (zeroshot_results, zeroshot_table, zeroshot_figure)}


# ---------------------------------------------------------------------------------------
# The entry point

@contextlib.contextmanager
def locked(out, experiment):
    """One experiments.py of this experiment at a time in out."""
    if checkpoints.fcntl is None:  # Windows: no locks, as for runs
        yield
        return
    path = os.path.join(out, f'.{experiment}.lock')
    try:
        held = checkpoints.take_lock(path, experiment)
    except RunError:
        raise Refused(f'--out {out}: another experiments.py {experiment} is running there '
                      f'({path}); wait for it to end, or give another --out') from None
    try:
        yield
    finally:
        os.unlink(path)
        held.close()


@contextlib.contextmanager
def sigterm_stops():
    """SIGTERM between runs (a run handles its own) stops the experiment as Ctrl-C does."""
    def stop(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_flags(p, opts, passthrough):
    """The flags, first (exit 2): train.py's after -- (the fine-tuning experiments'),
    or zeroshot's device. Returns train.py's, parsed (None for zeroshot)."""
    if int(os.environ.get('WORLD_SIZE', 1)) > 1:
        p.error('runs in one process: start it without torchrun (its runs take one device)')
    if opts.experiment == 'zeroshot':
        if passthrough:
            p.error('zeroshot takes no train.py flags (after --)')
        if opts.device == 'cuda' and not torch.cuda.is_available():
            p.error('--device cuda: no CUDA device is available here; use --device cpu')
        opts.device = opts.device or ('cuda' if torch.cuda.is_available() else 'cpu')
        return None
    check_passthrough(p, passthrough,
                      RESERVED + (('n_transfer',) if opts.experiment == 'layers' else ()))
    return train_args(passthrough)


class Experiment(NamedTuple):
    names: list        # its runs'
    ledger: Ledger
    run: object        # () -> runs what is left
    write: object      # (figures) -> writes the results of the runs done


def prepare(p, opts, passthrough):
    """The experiment, everything checked before its first run."""
    base = check_flags(p, opts, passthrough)
    check_out(opts.out)
    ledger = Ledger(opts.out)
    if opts.experiment == 'zeroshot':
        units, vocabularies, splits = zeroshot_plan(opts)
        for unit in units:
            check_recorded(ledger, unit.name, unit_settings(unit, opts), opts.out)
        write = results_writer(opts, units, ledger)
        return Experiment([u.name for u in units], ledger,
                          lambda: score_units(opts, units, vocabularies, splits, ledger, write),
                          write)
    plan, n_train = fine_tuning_plan(opts, passthrough, base)
    check_runs(plan, n_train)
    check_ledger(plan, ledger, opts.out)
    write = results_writer(opts, plan, ledger)
    return Experiment([run.name for run in plan], ledger,
                      lambda: execute(plan, ledger, write), write)


def main(argv=None):
    ours, passthrough = split_argv(list(sys.argv[1:] if argv is None else argv))
    p = parser()
    opts = p.parse_args(ours)
    try:
        experiment = prepare(p, opts, passthrough)
        with locked(opts.out, opts.experiment), sigterm_stops():
            try:
                experiment.run()
            except KeyboardInterrupt:
                experiment.write(figures=True)
                say(f'interrupted; {progress(experiment.ledger, experiment.names)}: run the '
                    'same command again to go on')
                sys.exit(EXIT_INTERRUPTED)
    except Refused as err:
        sys.exit(f'{PROG}: error: {err}')
    say(f'done: the results are {os.path.join(opts.out, opts.experiment)}.json, .md and .png')


if __name__ == '__main__':
    main()
