"""What differs between the paper's tasks, gathered in one table (TASKS): how a task's
texts become the model's input sequences (the paper's section 3.3 and Figure 1), its
head, loss, metrics and output files. train.py runs one flow for every entry.

Every input sequence is [start] ... [classify], a pair of texts joined by [delimiter]:
  classification   [start] text [classify]
  entailment       [start] premise [delimiter] hypothesis [classify]
  similarity       [start] a [delimiter] b [classify] and [start] b [delimiter] a
                   [classify], whose representations the head adds
  multiple choice  [start] context [delimiter] answer [classify] for each answer, a
                   softmax over the answers
Where a text must be cut to fit n_ctx, each transformation says what it keeps.
"""
import os
from typing import Callable, NamedTuple

import numpy as np
import torch.nn as nn

import analysis
import datasets
from loss import ClassificationLossCompute, MultipleChoiceLossCompute, SimilarityLossCompute
from utils import atomic_write


class Specials(NamedTuple):
    """Ids of the special tokens, the rows after the BPE vocabulary in the embedding."""
    start: int
    delimiter: int
    classify: int

    @classmethod
    def after(cls, n_vocab):
        return cls(n_vocab, n_vocab + 1, n_vocab + 2)


def cut_pair(a, b, room):
    """a and b cut from their ends to room tokens together, always the longer one first:
    the beginning of each text is kept, and a short text is not cut at all."""
    if len(a) + len(b) <= room:
        return a, b
    kept_b = min(len(b), max(room - len(a), room // 2))
    return a[:room - kept_b], b[:kept_b]


def classification(fields, sp, n_ctx):
    (text,) = fields
    return [np.concatenate(([sp.start], text[:n_ctx - 2], [sp.classify]))]


def entailment(fields, sp, n_ctx):
    premise, hypothesis = cut_pair(*fields, n_ctx - 3)
    return [np.concatenate(([sp.start], premise, [sp.delimiter], hypothesis, [sp.classify]))]


def similarity(fields, sp, n_ctx):
    a, b = cut_pair(*fields, n_ctx - 3)
    return [np.concatenate(([sp.start], x, [sp.delimiter], y, [sp.classify]))
            for x, y in ((a, b), (b, a))]


def story_cloze(fields, sp, n_ctx):
    """OpenAI's ROCStories transformation: story and ending each cut to n_ctx // 2 - 2."""
    story, *endings = fields
    max_len = n_ctx // 2 - 2
    return [np.concatenate(([sp.start], story[:max_len], [sp.delimiter], ending[:max_len],
                            [sp.classify])) for ending in endings]


def reading_comprehension(fields, sp, n_ctx):
    """RACE: [start] article question [delimiter] answer [classify]. The question and the
    answers stay whole and the article is cut from its end, to one length for every
    answer; only where question and answer alone overflow is the question cut from its
    start (its end leads into the answer), and only an answer longer than n_ctx is cut."""
    article, question, *answers = fields
    room = n_ctx - 3
    answers = [answer[:room] for answer in answers]
    longest = max(len(answer) for answer in answers)
    question = question[max(0, len(question) + longest - room):]
    article = article[:room - len(question) - longest]
    return [np.concatenate(([sp.start], article, question, [sp.delimiter], answer,
                            [sp.classify])) for answer in answers]


def multiple_choice(fields, sp, n_ctx):
    """A user's multiple choice (--dataset csv): [start] context [delimiter] choice
    [classify] for each choice; the choices stay whole and the context is cut from its
    start, keeping the end that leads into the choices (only a choice longer than n_ctx
    is cut)."""
    context, *choices = fields
    room = n_ctx - 3
    choices = [choice[:room] for choice in choices]
    context = context[max(0, len(context) + max(len(c) for c in choices) - room):]
    return [np.concatenate(([sp.start], context, [sp.delimiter], choice, [sp.classify]))
            for choice in choices]


def every_split(loader):
    """A loader of datasets.py as Task.load: all its splits; n_valid is ROCStories' only."""
    return lambda data_dir, n_valid, optional: loader(data_dir, optional=optional)


class Task(NamedTuple):
    name: str                # as the paper and GLUE spell it
    load: Callable           # (data_dir, n_valid, optional) -> {split name: datasets.Split},
                             # leaving out the splits in optional whose files are missing
    source: str              # where the data comes from
    transform: Callable      # (fields of one example, Specials, n_ctx) -> its sequences
    head: object             # DoubleHeadModel's task_head_type
    metrics: tuple           # keys of METRICS; the first picks the best parameters
    submission: dict         # test split -> the file --submit writes its predictions to
    labels: tuple = None     # class id -> the label a submission file names
    valid: tuple = ('dev',)  # validation splits; the first picks the best parameters
    regression: bool = False  # one score per example, mean squared error
    groups: dict = None      # group -> the name its scores are printed under (RACE-m)


METRICS = {'acc': analysis.accuracy, 'mcc': analysis.matthews_corrcoef, 'f1': analysis.f1,
           'pearson': analysis.pearson, 'spearman': analysis.spearman}
METRIC_NAMES = {'acc': 'Accuracy', 'mcc': 'Matthews Correlation', 'f1': 'F1',
                'pearson': 'Pearson Correlation', 'spearman': 'Spearman Correlation'}
L = datasets.LABELS

TASKS = {
    'rocstories': Task('ROCStories', datasets.rocstories_splits, datasets.SOURCE, story_cloze,
                       'multiple_choice', ('acc',), {'test': 'ROCStories.tsv'}, ('0', '1')),
    'cola': Task('CoLA', every_split(datasets.cola), datasets.GLUE_SOURCE, classification,
                 ('classification', 2), ('mcc',), {'test': 'CoLA.tsv'}, L['cola']),
    'sst2': Task('SST-2', every_split(datasets.sst2), datasets.GLUE_SOURCE, classification,
                 ('classification', 2), ('acc',), {'test': 'SST-2.tsv'}, L['sst2']),
    'mrpc': Task('MRPC', every_split(datasets.mrpc), datasets.GLUE_SOURCE, similarity,
                 ('similarity', 2), ('f1', 'acc'), {'test': 'MRPC.tsv'}, L['mrpc']),
    'qqp': Task('QQP', every_split(datasets.qqp), datasets.GLUE_SOURCE, similarity,
                ('similarity', 2), ('f1', 'acc'), {'test': 'QQP.tsv'}, L['qqp']),
    'stsb': Task('STS-B', every_split(datasets.stsb), datasets.GLUE_SOURCE, similarity,
                 'similarity', ('pearson', 'spearman'), {'test': 'STS-B.tsv'}, regression=True),
    'mnli': Task('MNLI', every_split(datasets.mnli), datasets.GLUE_SOURCE, entailment, 'inference',
                 ('acc',), {'test_matched': 'MNLI-m.tsv', 'test_mismatched': 'MNLI-mm.tsv',
                            'diagnostic': 'AX.tsv'}, L['mnli'],
                 valid=('dev_matched', 'dev_mismatched')),
    'qnli': Task('QNLI', every_split(datasets.qnli), datasets.GLUE_SOURCE, entailment,
                 ('classification', 2), ('acc',), {'test': 'QNLI.tsv'}, L['qnli']),
    'rte': Task('RTE', every_split(datasets.rte), datasets.GLUE_SOURCE, entailment,
                ('classification', 2), ('acc',), {'test': 'RTE.tsv'}, L['rte']),
    'wnli': Task('WNLI', every_split(datasets.wnli), datasets.GLUE_SOURCE, entailment,
                 ('classification', 2), ('acc',), {'test': 'WNLI.tsv'}, L['wnli']),
    'snli': Task('SNLI', every_split(datasets.snli), datasets.SNLI_SOURCE, entailment, 'inference',
                 ('acc',), {'test': 'SNLI.tsv'}, L['snli']),
    'scitail': Task('SciTail', every_split(datasets.scitail), datasets.SCITAIL_SOURCE, entailment,
                    ('classification', 2), ('acc',), {'test': 'SciTail.tsv'}, L['scitail']),
    'race': Task('RACE', every_split(datasets.race), datasets.RACE_SOURCE, reading_comprehension,
                 'multiple_choice', ('acc',), {'test': 'RACE.tsv'}, L['race'],
                 groups={'middle': 'RACE-m', 'high': 'RACE-h'}),  # the paper's names
}


def load(task, data_dir, n_valid, submit):
    """The task's splits. A test split's files are needed only with --submit, which
    predicts it; without, they are read where present, so that n_ctx (the longest
    sequence of every split, as OpenAI's) and the data digest that --resume checks are
    those of a run with --submit."""
    return task.load(data_dir, n_valid, () if submit else tuple(task.submission))


class FlagError(ValueError):
    """Command-line flags that contradict each other (train.py exits 2)."""


def csv_task(train_file, valid_file, test_file, text_columns, label_column,
             choice_columns=()):
    """--dataset csv, read here: a user's files with a header row (CSV, or TSV by the
    extension .tsv). One text column: classification; two: a pair, in the entailment
    form; with choice columns: multiple choice, the text columns joined as the context
    and the label naming the right choice by its column name or 0-based place. The
    classes are the training file's labels, sorted, at least two; a test file needs no
    labels."""
    check_columns(text_columns, label_column, choice_columns)
    columns = list(text_columns) + list(choice_columns)
    files = {'train': train_file, 'dev': valid_file, 'test': test_file}
    splits = {name: datasets.user_csv(path, columns, None if name == 'test' else label_column)
              for name, path in files.items() if path}
    if choice_columns:  # the text columns make one context
        n = len(text_columns)
        joined = lambda split: [' '.join(texts) for texts in zip(*split.fields[:n])]
        splits = {name: split._replace(fields=(joined(split), *split.fields[n:]))
                  for name, split in splits.items()}
    classes = tuple(choice_columns) or tuple(sorted(set(splits['train'].labels)))
    if len(classes) == 1:
        raise ValueError(f'{train_file}: every label in {label_column!r} is {classes[0]!r}: '
                         'a classifier needs examples of at least two classes')
    for name in ('train', 'dev'):
        labels = class_ids(splits[name].labels, classes, files[name], bool(choice_columns))
        splits[name] = splits[name]._replace(labels=labels)
    if choice_columns:
        transform = multiple_choice
    else:
        transform = classification if len(columns) == 1 else entailment
    head = 'multiple_choice' if choice_columns else ('classification', len(classes))
    return Task('CSV', lambda data_dir, n_valid, optional: splits,
                'your own files: --train_file, --valid_file and --test_file', transform, head,
                ('acc',), {'test': 'predictions.tsv'} if test_file else {}, classes)


def check_columns(text_columns, label_column, choice_columns):
    """--text_columns, --choice_columns and --label_column name distinct columns: a label
    read as text too would be given to the model as its answer."""
    if not choice_columns and len(text_columns) not in (1, 2):
        raise FlagError(f'--text_columns: expected one column or a pair, found '
                        f'{len(text_columns)} (with --choice_columns, any number)')
    seen = {}
    for flag, names in (('--text_columns', text_columns), ('--choice_columns', choice_columns),
                        ('--label_column', [label_column])):
        for name in names:
            if name in seen:
                again = ' twice' if seen[name] == flag else f', which {seen[name]} names too'
                raise FlagError(f'{flag} names {name!r}{again}: a column is text, a choice '
                                'or the label, and once')
            seen[name] = flag


def class_ids(labels, classes, path, by_place=False):
    """Labels as ids into classes; with by_place, a label may also be a class's 0-based
    place (a choice named by its number)."""
    ids = {str(i): i for i in range(len(classes))} if by_place else {}
    ids.update({c: i for i, c in enumerate(classes)})
    unknown = sorted(set(labels) - set(ids))
    if unknown:
        raise ValueError(f'{path}: labels {unknown[:5]} are not among {list(classes)}, the '
                         f'{"choices" if by_place else "classes of the training file"}')
    return [ids[label] for label in labels]


def loss_compute(task, lm_coef):
    """The task's training loss: its classifier loss (cross-entropy, or mean squared
    error for a score) plus lm_coef times the LM loss of every input sequence."""
    criterion = nn.MSELoss(reduction='none') if task.regression else \
        nn.CrossEntropyLoss(reduction='none')
    head = task.head[0] if isinstance(task.head, tuple) else task.head
    compute = {'multiple_choice': MultipleChoiceLossCompute, 'similarity': SimilarityLossCompute,
               'classification': ClassificationLossCompute,
               'inference': ClassificationLossCompute}[head]
    return compute(nn.CrossEntropyLoss(reduction='none'), criterion, lm_coef)


def label_array(task, labels):
    if labels is None:
        return None
    return np.asarray(labels, dtype=np.float32 if task.regression else np.int64)


def predict(task, logits):
    """Scores as they are, or the class of the highest logit."""
    return logits.numpy() if task.regression else logits.argmax(-1).numpy()


def score(task, preds, labels, group=None):
    """{metric: value} in percent, and per group (RACE's middle and high) where there
    are groups."""
    scores = {m: METRICS[m](preds, labels) for m in task.metrics}
    if group is not None:
        group = np.asarray(group)
        for g in sorted(set(group.tolist())):
            scores.update({f'{m}_{g}': METRICS[m](preds[group == g], labels[group == g])
                           for m in task.metrics})
    return scores


def valid_prefixes(task):
    """The log's name of each validation split: 'va' for the first, as OpenAI's."""
    return ['va'] + [f'va_{split}' for split in task.valid[1:]]


def log_line(task, record):
    """OpenAI's printed line: epochs, updates, the costs, then each metric for the
    training sample and each validation split."""
    prefixes = ['tr'] + valid_prefixes(task)
    metrics = [key[3:] for key in record if key.startswith('tr_') and key != 'tr_cost']
    costs = ' '.join(f'{record[f"{p}_cost"]:.3f}' for p in prefixes)
    values = ' '.join(f'{record[f"{p}_{m}"]:.2f}' for m in metrics for p in prefixes)
    return f'{record["n_epochs"]} {record["n_updates"]} {costs} {values}'


def write_predictions(task, split_name, split, preds, folder):
    """index<TAB>prediction, with the labels GLUE's server expects, atomically."""
    path = os.path.join(folder, task.submission[split_name])
    index = split.index if split.index is not None else range(len(preds))
    label = (lambda p: f'{p:.3f}') if task.regression else (lambda p: task.labels[p])
    with atomic_write(path, 'w') as f:
        f.write('index\tprediction\n')
        f.writelines(f'{i}\t{label(p)}\n' for i, p in zip(index, preds))
    return path


def report(task, log_path, test_scores, png_path):
    """--analysis: the validation lines of the best evaluation, the test lines, curves."""
    analysis.report(task.name, [(m, METRIC_NAMES[m]) for m in task.metrics], log_path,
                    test_scores.get('test', {}), png_path, task.groups)


class Inputs:
    """The model's inputs for a task's examples: each example's sequences (its transform
    with the n_ctx budget) as token and position ids, (batch, n_seq, length, 2), and the
    mask of real tokens, padded with zeros after the real tokens to `length`. By default
    that is the batch's longest sequence rounded up to a multiple of 8 (at most
    max_length): no batch pays for another's length, and batches take few distinct
    shapes, so that what a device prepares per shape (cuDNN's attention plans, compiled
    graphs) is made a few times, not once per batch; layers that skip padding pay nothing
    for it. A task of one sequence per example gets (batch, length, 2), the
    classification head's shape."""

    MULTIPLE = 8

    def __init__(self, task, specials, n_vocab_special, n_ctx):
        self.task, self.specials = task, specials
        self.n_vocab_special, self.n_ctx = n_vocab_special, n_ctx

    def sequences(self, split, i):
        return self.task.transform([field[i] for field in split.fields], self.specials,
                                   self.n_ctx)

    def longest(self, splits):
        """The longest sequence of any example: the model's n_ctx."""
        return max(len(seq) for split in splits for i in range(len(split.fields[0]))
                   for seq in self.sequences(split, i))

    def __call__(self, split, rows, length=None, max_length=None):
        examples = [self.sequences(split, i) for i in rows]
        if length is None:
            longest = max(len(seq) for seqs in examples for seq in seqs)
            length = -(-longest // self.MULTIPLE) * self.MULTIPLE
            length = min(length, max_length) if max_length else length
        x = np.zeros((len(examples), len(examples[0]), length, 2), dtype=np.int64)
        m = np.zeros(x.shape[:3], dtype=np.float32)
        for i, seqs in enumerate(examples):
            for j, seq in enumerate(seqs):
                x[i, j, :len(seq), 0] = seq
                m[i, j, :len(seq)] = 1
        x[..., 1] = np.arange(self.n_vocab_special, self.n_vocab_special + length)
        if x.shape[1] == 1:
            return x[:, 0], m[:, 0]
        return x, m
