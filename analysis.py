"""Scores a ROCStories run as OpenAI's analysis.py does, and draws its learning curves.

    python analysis.py --data_dir data/ --pred_path submission/ROCStories.tsv --log_path log/rocstories.jsonl
"""
import argparse
import csv
import json
import os

import numpy as np

from datasets import rocstories_test_labels
from utils import atomic_write


def read_predictions(pred_path):
    """The prediction column of a submission TSV (`index<TAB>prediction`)."""
    with open(pred_path, newline='') as f:
        rows = list(csv.DictReader(f, delimiter='\t'))
    if rows and 'prediction' not in rows[0]:
        raise ValueError(f'{pred_path} has no prediction column; expected the header '
                         'index<TAB>prediction')
    return np.array([int(row['prediction']) for row in rows])


def read_evaluations(log_path):
    """The evaluation lines of a run's JSON-lines log; its first line holds the run's
    arguments, not results."""
    with open(log_path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    evaluations = [r for r in records[1:] if 'va_acc' in r]
    if not evaluations:
        raise ValueError(f'{log_path} has no evaluation lines (n_updates, va_acc, ...): the run '
                         'stopped before its first evaluation, or this is not a training log')
    return evaluations


def rocstories(data_dir, pred_path, log_path):
    """Prints and returns (valid accuracy, test accuracy) in percent: the validation
    accuracy of the best evaluation in the log, and the test accuracy of the predictions,
    whose parameters are the ones saved at that evaluation."""
    preds = read_predictions(pred_path)
    labels = rocstories_test_labels(data_dir)
    if len(preds) != len(labels):
        raise ValueError(f'{pred_path} has {len(preds)} predictions but the test set in '
                         f'{data_dir} has {len(labels)} stories')
    test_accuracy = float(np.mean(preds == labels) * 100.)
    evaluations = read_evaluations(log_path)
    # argmax keeps the first of equal scores, as training saves only on improvement
    best = evaluations[int(np.argmax([e['va_acc'] for e in evaluations]))]
    valid_accuracy = best['va_acc']
    print('ROCStories Valid Accuracy: %.2f' % valid_accuracy)
    print('ROCStories Test Accuracy:  %.2f' % test_accuracy)
    print(f'Learning curves: {plot_learning_curves(log_path)}')
    return valid_accuracy, test_accuracy


def plot_learning_curves(log_path, png_path=None):
    """Draws accuracy and cost on the training sample and the validation set against
    updates; writes the PNG beside the log (log/foo.jsonl -> log/foo.png) unless png_path
    says otherwise, and returns its path."""
    # Imported here so that scoring needs no matplotlib; the Agg canvas draws without a
    # display and leaves pyplot's global backend alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    evaluations = read_evaluations(log_path)
    png_path = png_path or os.path.splitext(log_path)[0] + '.png'
    updates = [e['n_updates'] for e in evaluations]
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    for ax, metric, label in zip(fig.subplots(1, 2), ('acc', 'cost'), ('accuracy (%)', 'cost')):
        for split, name in (('tr', 'train'), ('va', 'valid')):
            ax.plot(updates, [e[f'{split}_{metric}'] for e in evaluations], marker='o', label=name)
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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data_dir', default='data/',
                   help='folder holding the Story Cloze test CSV')
    p.add_argument('--pred_path', default='submission/ROCStories.tsv',
                   help='test predictions written by train.py --submit')
    p.add_argument('--log_path', default='log/rocstories.jsonl', help="the run's log")
    args = p.parse_args(argv)
    try:
        rocstories(args.data_dir, args.pred_path, args.log_path)
    except (OSError, ValueError) as err:
        raise SystemExit(f'analysis.py: {err}')


if __name__ == '__main__':
    main()
