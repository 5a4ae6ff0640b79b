"""Scores a ROCStories run as OpenAI's analysis.py does, and draws its learning curves;
report() prints the same lines for every task of the paper.

Also the paper's metrics for its tasks, in percent: accuracy, Matthews correlation
(CoLA), F1 (MRPC, QQP), Pearson and Spearman correlation (STS-B).

    python analysis.py --data_dir data/ --pred_path submission/rocstories/ROCStories.tsv \
        --log_path log/rocstories.jsonl
"""
import csv
import json
import os

import numpy as np

from datasets import rocstories_test_labels
from utils import Parser, atomic_write


def read_predictions(pred_path, labels=('0', '1')):
    """The prediction column of a submission TSV (`index<TAB>prediction`) as class ids,
    each prediction one of labels (class id i written as labels[i])."""
    with open(pred_path, newline='') as f:
        rows = csv.DictReader(f, delimiter='\t')
        if rows.fieldnames is None or 'prediction' not in rows.fieldnames:
            raise ValueError(f'{pred_path}, line 1: expected the header index<TAB>prediction')
        ids = {label: i for i, label in enumerate(labels)}
        preds = []
        for row in rows:
            if row['prediction'] not in ids:
                raise ValueError(f'{pred_path}, line {rows.line_num}: expected a prediction in '
                                 f'{list(labels)}, found {row["prediction"]!r}')
            preds.append(ids[row['prediction']])
    return np.array(preds)


def read_evaluations(log_path, fields=('tr_acc', 'va_acc')):
    """The evaluation lines of a run's JSON-lines log: those after the first (the run's
    arguments) with n_updates or a tr_ or va_ field, each holding a number in n_updates,
    tr_cost, va_cost and every one of fields; a test line (te_ fields) is not one."""
    needed = ['n_updates', 'tr_cost', 'va_cost', *fields]
    evaluations = []
    with open(log_path) as f:
        for number, line in enumerate(f, 1):
            if number == 1 or not line.strip():
                continue
            record = log_record(line, f'{log_path}, line {number}')
            if 'n_updates' in record or any(k.startswith(('tr_', 'va_')) for k in record):
                check_fields(record, needed, f'{log_path}, line {number}')
                evaluations.append(record)
    if not evaluations:
        raise ValueError(f'{log_path} has no evaluation lines (n_updates, {", ".join(needed[1:])}, '
                         '...): the run stopped before its first evaluation, or this is not a '
                         'training log')
    return evaluations


def log_record(line, where):
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f'{where}: expected a JSON object, {err.msg}') from None
    if not isinstance(record, dict):
        raise ValueError(f'{where}: expected a JSON object, found {type(record).__name__}')
    return record


def check_fields(record, needed, where):
    """Each needed field present and a number (nan allowed: an undefined correlation)."""
    for field in needed:
        if field not in record:
            raise ValueError(f'{where}: an evaluation line lacks the field {field!r} (expected '
                             f'{", ".join(needed)})')
        value = record[field]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'{where}: expected a number in {field!r}, found {value!r}')


def rocstories(data_dir, pred_path, log_path):
    """Prints and returns (valid accuracy, test accuracy) in percent: the validation
    accuracy of the best evaluation in the log, and the test accuracy of the predictions,
    whose parameters are the ones saved at that evaluation."""
    preds = read_predictions(pred_path)
    labels = rocstories_test_labels(data_dir)
    if labels is None:
        raise ValueError(f'the test CSV in {data_dir} has no AnswerRightEnding column to score '
                         'predictions against')
    if len(preds) != len(labels):
        raise ValueError(f'{pred_path} has {len(preds)} predictions but the test set in '
                         f'{data_dir} has {len(labels)} stories')
    test_accuracy = accuracy(preds, labels)
    best = report('ROCStories', [('acc', 'Accuracy')], log_path, {'acc': test_accuracy})
    return best['va_acc'], test_accuracy


def report(name, metrics, log_path, test_scores=None, png_path=None, groups=None):
    """Prints '<name> Valid <Metric>: xx.xx' for each (key, Metric) of metrics at the best
    evaluation of the log (by the first metric), then '<name> Test <Metric>:  xx.xx' for
    each test score given, and draws the learning curves; returns the best evaluation.
    groups ({group: name}, as RACE's {'middle': 'RACE-m'}) adds each group's lines, under
    its name, after the whole set's: its scores are logged as <metric>_<group>."""
    parts = [(name, '')] + [(title, f'_{group}') for group, title in (groups or {}).items()]
    fields = [f'tr_{metrics[0][0]}'] + [f'va_{key}{suffix}' for _, suffix in parts
                                        for key, _ in metrics]
    evaluations = read_evaluations(log_path, fields)
    # argmax keeps the first of equal scores, as training saves only on improvement; a
    # nan (an undefined correlation) never counts as the best
    firsts = np.array([e[f'va_{metrics[0][0]}'] for e in evaluations], dtype=float)
    best = evaluations[int(np.argmax(np.nan_to_num(firsts, nan=-np.inf)))]
    for title, suffix in parts:
        for key, label in metrics:
            print(f'{title} Valid {label}: {best[f"va_{key}{suffix}"]:.2f}')
    for title, suffix in parts:
        for key, label in metrics:
            if key + suffix in (test_scores or {}):
                print(f'{title} Test {label}:  {test_scores[key + suffix]:.2f}')
    print(f'Learning curves: {plot_learning_curves(log_path, png_path, metrics[0])}')
    return best


def accuracy(preds, labels):
    """Percent of predictions equal to their labels."""
    preds, labels = _paired(preds, labels)
    return float(np.mean(preds == labels) * 100.)


def matthews_corrcoef(preds, labels):
    """Matthews correlation x 100 of 0/1 predictions, as GLUE reports CoLA's; 0 where it is
    undefined (all predictions or all labels of one class), as sklearn gives it."""
    tp, fp, fn, tn = _confusion(preds, labels)
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denominator * 100.) if denominator else 0.


def f1(preds, labels):
    """F1 x 100 of 0/1 predictions, class 1 positive; 0 where neither predictions nor labels
    hold a 1, as sklearn gives it."""
    tp, fp, fn, _ = _confusion(preds, labels)
    return float(200. * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.


def pearson(x, y):
    """Pearson correlation x 100; nan where it is undefined (x or y constant), as
    scipy.stats.pearsonr gives it."""
    x, y = _paired(x, y, dtype=np.float64)
    # Tested on the values, not on the deviations, which rounding may leave non-zero.
    if (x == x[0]).all() or (y == y[0]).all():
        return float('nan')
    dx, dy = x - x.mean(), y - y.mean()
    r = np.dot(dx, dy) / np.sqrt(np.dot(dx, dx) * np.dot(dy, dy))
    return float(np.clip(r, -1., 1.) * 100.)


def spearman(x, y):
    """Spearman rank correlation x 100, tied values sharing their average rank; nan where
    it is undefined, as scipy.stats.spearmanr gives it."""
    x, y = _paired(x, y, dtype=np.float64)
    return pearson(_average_ranks(x), _average_ranks(y))


def _paired(a, b, dtype=None):
    a, b = np.asarray(a, dtype=dtype), np.asarray(b, dtype=dtype)
    if a.ndim != 1 or a.shape != b.shape or not len(a):
        raise ValueError(f'expected two non-empty sequences of one length, found shapes '
                         f'{a.shape} and {b.shape}')
    return a, b


def _confusion(preds, labels):
    """(true positives, false positives, false negatives, true negatives) as floats, whose
    products do not overflow as int64 could on large sets."""
    preds, labels = _paired(preds, labels)
    for name, values in (('predictions', preds), ('labels', labels)):
        if not np.isin(values, (0, 1)).all():
            raise ValueError(f'expected binary {name} (0 or 1), found {np.unique(values)}')
    pos, true = preds == 1, labels == 1
    return tuple(float(np.sum(a & b)) for a, b in
                 ((pos, true), (pos, ~true), (~pos, true), (~pos, ~true)))


def _average_ranks(x):
    """1-based ranks of x, each run of equal values given the mean of its ranks."""
    order = np.argsort(x, kind='stable')
    ordered = x[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(x)]
    run_of = np.repeat(np.arange(len(starts)), ends - starts)
    ranks = np.empty(len(x))
    ranks[order] = ((starts + 1 + ends) / 2.)[run_of]
    return ranks


def plot_learning_curves(log_path, png_path=None, metric=('acc', 'Accuracy')):
    """Draws the metric (key, name) and the cost on the training sample and the
    validation set against updates; writes the PNG beside the log (log/foo.jsonl ->
    log/foo.png) unless png_path says otherwise, and returns its path."""
    # Imported here so that scoring needs no matplotlib; the Agg canvas draws without a
    # display and leaves pyplot's global backend alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    evaluations = read_evaluations(log_path, [f'tr_{metric[0]}', f'va_{metric[0]}'])
    png_path = png_path or os.path.splitext(log_path)[0] + '.png'
    updates = [e['n_updates'] for e in evaluations]
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    panels = ((metric[0], f'{metric[1]} (%)'), ('cost', 'cost'))
    for ax, (key, label) in zip(fig.subplots(1, 2), panels):
        for split, name in (('tr', 'train'), ('va', 'valid')):
            ax.plot(updates, [e[f'{split}_{key}'] for e in evaluations], marker='o', label=name)
        ax.set_xlabel('updates')
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(os.path.basename(log_path))
    fig.tight_layout()
    with atomic_write(png_path) as f:
        fig.savefig(f, format='png')
    return png_path


def main(argv=None):
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument('--data_dir', default='data/',
                   help='folder holding the Story Cloze test CSV')
    p.add_argument('--pred_path', default='submission/rocstories/ROCStories.tsv',
                   help='test predictions written by train.py --submit')
    p.add_argument('--log_path', default='log/rocstories.jsonl', help="the run's log")
    args = p.parse_args(argv)
    try:
        rocstories(args.data_dir, args.pred_path, args.log_path)
    except (OSError, ValueError) as err:
        raise SystemExit(f'analysis.py: error: {err}')


if __name__ == '__main__':
    main()
