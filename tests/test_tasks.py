"""The task table: each input transformation on hand-worked ids, the cut rules, the
inputs, losses, scores and files; your own CSV; and a smoke-sized run of every
--dataset, its logged validation metrics recomputed from its saved parameters."""
import os

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics
import torch

import tasks
import runs
import train
from conftest import fails, read_log
from test_errors import one_error
from datasets import Split
from loss import ClassificationLossCompute, MultipleChoiceLossCompute, SimilarityLossCompute
from model_pytorch import Config, DoubleHeadModel
from task_files import write_task
from text_utils import write_char_vocab
from utils import Ragged

SP = tasks.Specials(start=50, delimiter=51, classify=52)
S, D, C = SP


def ids(*parts):
    return [np.array(p) for p in parts]


def as_lists(seqs):
    return [seq.tolist() for seq in seqs]


def test_classification_and_entailment_forms():
    assert as_lists(tasks.classification(ids([1, 2, 3]), SP, 512)) == [[S, 1, 2, 3, C]]
    assert as_lists(tasks.classification(ids([1, 2, 3, 4]), SP, 5)) == [[S, 1, 2, 3, C]]
    assert as_lists(tasks.entailment(ids([1, 2], [3]), SP, 512)) == [[S, 1, 2, D, 3, C]]


def test_similarity_is_both_orderings_of_one_cut():
    assert as_lists(tasks.similarity(ids([1, 2], [3]), SP, 512)) == [[S, 1, 2, D, 3, C],
                                                                      [S, 3, D, 1, 2, C]]
    # room 7 - 3 = 4: the longer text gives way first
    assert as_lists(tasks.similarity(ids([1, 2, 3, 4, 5], [6]), SP, 7)) == [[S, 1, 2, 3, D, 6, C],
                                                                           [S, 6, D, 1, 2, 3, C]]


def popping_the_longer(a, b, room):
    """The plain rule: drop the last token of the longer text (b on a tie) until they fit."""
    a, b = list(a), list(b)
    while len(a) + len(b) > room:
        (a if len(a) > len(b) else b).pop()
    return a, b


def test_cut_pair_keeps_beginnings_and_cuts_the_longer_first():
    assert [x.tolist() for x in tasks.cut_pair(*ids([1, 2, 3, 4, 5, 6], [7, 8]), 5)] == [[1, 2, 3], [7, 8]]
    assert [x.tolist() for x in tasks.cut_pair(*ids([1, 2], [3, 4, 5, 6, 7]), 5)] == [[1, 2], [3, 4, 5]]
    assert [x.tolist() for x in tasks.cut_pair(*ids([1, 2, 3, 4], [5, 6, 7, 8]), 5)] == [[1, 2, 3], [5, 6]]
    rng = np.random.default_rng(0)
    for _ in range(300):
        a, b = np.arange(rng.integers(0, 12)), np.arange(100, 100 + rng.integers(0, 12))
        room = int(rng.integers(0, 25))
        got = [x.tolist() for x in tasks.cut_pair(a, b, room)]
        assert got == list(popping_the_longer(a, b, room)), (len(a), len(b), room)


def test_story_cloze_is_openais_transform_roc():
    """Each part cut to n_ctx // 2 - 2 (OpenAI's max_len), one sequence per ending."""
    seqs = tasks.story_cloze(ids([1, 2, 3], [4], [5, 6]), SP, 8)  # max_len 2
    assert as_lists(seqs) == [[S, 1, 2, D, 4, C], [S, 1, 2, D, 5, 6, C]]


def test_reading_comprehension_cuts_the_article_only():
    article, question = list(range(1, 21)), [31, 32]
    answers = [[41], [42, 43], [44], [45, 46, 47]]
    seqs = tasks.reading_comprehension(ids(article, question, *answers), SP, 14)
    # room 14 - 3 = 11: question 2 + longest answer 3 leave 6 article tokens, for every answer
    assert as_lists(seqs) == [[S, 1, 2, 3, 4, 5, 6, 31, 32, D, *a, C] for a in answers]
    assert all(len(seq) <= 14 for seq in seqs)
    # question and answer alone overflow: the question keeps its end, the article goes
    seqs = tasks.reading_comprehension(ids(article, [31, 32, 33, 34], [41, 42, 43]), SP, 8)
    assert as_lists(seqs) == [[S, 33, 34, D, 41, 42, 43, C]]
    # only an answer longer than the whole context is cut
    seqs = tasks.reading_comprehension(ids(article, [31], list(range(60, 70))), SP, 8)
    assert as_lists(seqs) == [[S, D, 60, 61, 62, 63, 64, C]]


def test_users_multiple_choice_keeps_the_context_end():
    seqs = tasks.multiple_choice(ids([1, 2, 3, 4, 5], [6], [7, 8]), SP, 8)
    # room 8 - 3 = 5: the longest choice takes 2, the context keeps its last 3
    assert as_lists(seqs) == [[S, 3, 4, 5, D, 6, C], [S, 3, 4, 5, D, 7, 8, C]]


def split_of(*fields, labels=None):
    return Split(tuple(Ragged.from_lists(f) for f in fields), labels, None)


def test_inputs_pad_to_the_batch_and_number_positions():
    inputs = tasks.Inputs(tasks.TASKS['rocstories'], SP, 53, 512)
    split = split_of([[1, 2], [3]], [[4], [5, 6, 7]], [[8], [9]])
    x, m = inputs(split, [0, 1])
    assert x.shape == (2, 2, 8, 2)  # the longest, [S, 3, D, 5, 6, 7, C], rounded up to 8
    assert x[1, 0, :, 0].tolist() == [S, 3, D, 5, 6, 7, C, 0]
    assert x[0, 1, :, 0].tolist() == [S, 1, 2, D, 8, C, 0, 0]
    assert m[0, 1].tolist() == [1] * 6 + [0, 0]
    assert (x[..., 1] == np.arange(53, 61)).all()
    assert inputs(split, [0, 1], max_length=7)[0].shape == (2, 2, 7, 2)  # the model's n_ctx
    assert inputs(split, [0], length=10)[0].shape == (1, 2, 10, 2)
    long = split_of([list(range(1, 10))], [[4]], [[5]])  # 9 + 3 tokens: 16
    assert inputs(long, [0])[0].shape == (1, 2, 16, 2)
    single = tasks.Inputs(tasks.TASKS['sst2'], SP, 53, 512)
    x, m = single(split_of([[1, 2], [3]]), [0, 1])
    assert x.shape == (2, 8, 2) and x[1, :, 0].tolist() == [S, 3, C, 0, 0, 0, 0, 0]


def test_n_ctx_as_openai_computes_it():
    """The longest story plus its longer ending (each cut to n_ctx // 2 - 2) plus 3,
    over every split."""
    splits = [split_of([[1] * 10], [[1] * 3], [[1] * 5]), split_of([[1] * 4], [[1] * 9], [[1]])]
    longest = lambda n_ctx: tasks.Inputs(tasks.TASKS['rocstories'], SP, 53, n_ctx).longest(splits)
    assert longest(512) == 10 + 5 + 3
    assert longest(20) == 8 + 5 + 3  # max_len 8: 8 + 5 and 4 + 8
    assert longest(14) == 5 + 5 + 3  # max_len 5: 5 + 5 and 4 + 5


@pytest.mark.parametrize('name, compute, criterion', [
    ('rocstories', MultipleChoiceLossCompute, torch.nn.CrossEntropyLoss),
    ('race', MultipleChoiceLossCompute, torch.nn.CrossEntropyLoss),
    ('cola', ClassificationLossCompute, torch.nn.CrossEntropyLoss),
    ('mnli', ClassificationLossCompute, torch.nn.CrossEntropyLoss),
    ('mrpc', SimilarityLossCompute, torch.nn.CrossEntropyLoss),
    ('stsb', SimilarityLossCompute, torch.nn.MSELoss)])
def test_each_task_gets_its_loss(name, compute, criterion):
    loss = tasks.loss_compute(tasks.TASKS[name], 0.5)
    assert type(loss) is compute and type(loss.clf_criterion) is criterion
    assert loss.lm_coef == 0.5 and loss.clf_criterion.reduction == 'none'


def test_similarity_loss_regression_on_both_orderings():
    """STS-B: mean squared error on one score per pair, the LM loss over both orderings."""
    X = torch.zeros(2, 2, 4, 2, dtype=torch.long)
    X[..., 0] = torch.tensor([[[1, 2, 3, 0], [3, 2, 1, 0]], [[4, 4, 0, 0], [4, 4, 0, 0]]])
    M = (X[..., 0] != 0).float()
    lm_logits = torch.zeros(2 * 2 * 3, 5)  # uniform: log 5 per target
    scores, y = torch.tensor([1.0, 4.0]), torch.tensor([2.0, 4.5])
    loss = tasks.loss_compute(tasks.TASKS['stsb'], 0.5)(X, y, M, scores, lm_logits)
    assert loss.item() == pytest.approx((1 + 0.25) / 2 + 0.5 * np.log(5), rel=1e-6)


def test_predictions_scores_and_groups():
    logits = torch.tensor([[0.1, 0.9], [2.0, -1.0], [0.3, 0.2], [0.0, 1.0]])
    race = tasks.TASKS['race']
    preds = tasks.predict(race, logits)
    assert preds.tolist() == [1, 0, 0, 1]
    scores = tasks.score(race, preds, np.array([1, 1, 0, 0]), ['middle', 'high', 'middle', 'high'])
    assert scores == {'acc': 50.0, 'acc_high': 0.0, 'acc_middle': 100.0}
    stsb = tasks.TASKS['stsb']
    assert tasks.predict(stsb, torch.tensor([1.5, 3.0])).tolist() == [1.5, 3.0]
    assert tasks.label_array(stsb, [1, 2]).dtype == np.float32
    assert tasks.label_array(race, [1, 2]).dtype == np.int64


def test_log_line_is_openais_for_rocstories_and_adds_each_metric_and_split():
    record = dict(n_epochs=1, n_updates=40, tr_cost=0.51234, va_cost=0.6, tr_acc=80.0, va_acc=75.5)
    assert tasks.log_line(tasks.TASKS['rocstories'], record) == \
        '%d %d %.3f %.3f %.2f %.2f' % (1, 40, 0.51234, 0.6, 80.0, 75.5)
    record = dict(n_epochs=1, n_updates=2, tr_cost=1, va_cost=2, va_dev_mismatched_cost=3,
                  tr_acc=10, va_acc=20, va_dev_mismatched_acc=30)
    assert tasks.log_line(tasks.TASKS['mnli'], record) == \
        '1 2 1.000 2.000 3.000 10.00 20.00 30.00'


def test_submission_files_name_glue_labels_and_ids(tmp_path):
    split = Split((['a', 'b', 'c'],), None, ['7', '8', '9'])
    path = tasks.write_predictions(tasks.TASKS['qnli'], 'test', split, np.array([1, 0, 1]),
                                   str(tmp_path))
    assert open(path).read() == ('index\tprediction\n7\tnot_entailment\n8\tentailment\n'
                                 '9\tnot_entailment\n')
    path = tasks.write_predictions(tasks.TASKS['stsb'], 'test', Split((['a', 'b'],), None, None),
                                   np.array([1.23456, 4.5]), str(tmp_path))
    assert open(path).read() == 'index\tprediction\n0\t1.235\n1\t4.500\n'


# What each task's submission must write for an example labelled so in the task's files:
# (label as the files spell it, prediction as the submission writes it), from GLUE's
# documentation (CoLA, SST-2, MRPC, QQP and WNLI 0/1; MNLI's matched, mismatched and AX
# entailment/neutral/contradiction; QNLI and RTE entailment/not_entailment), SNLI's and
# SciTail's labels, RACE's letters, and OpenAI's ROCStories.tsv (the right ending's
# 0-based place, where the CSV numbers it 1 or 2). Written by hand: not read from
# datasets.LABELS, whose strings parse the files.
SUBMITTED = {
    'cola': [('0', '0'), ('1', '1')],
    'sst2': [('0', '0'), ('1', '1')],
    'mrpc': [('0', '0'), ('1', '1')],
    'qqp': [('0', '0'), ('1', '1')],
    'wnli': [('0', '0'), ('1', '1')],
    'mnli': [('entailment', 'entailment'), ('neutral', 'neutral'),
             ('contradiction', 'contradiction')],
    'qnli': [('entailment', 'entailment'), ('not_entailment', 'not_entailment')],
    'rte': [('entailment', 'entailment'), ('not_entailment', 'not_entailment')],
    'snli': [('entailment', 'entailment'), ('neutral', 'neutral'),
             ('contradiction', 'contradiction')],
    'scitail': [('entails', 'entails'), ('neutral', 'neutral')],
    'race': [('A', 'A'), ('B', 'B'), ('C', 'C'), ('D', 'D')],
    'rocstories': [('1', '0'), ('2', '1')],
    'stsb': [('0.000', '0.000'), ('2.5', '2.500'), ('5', '5.000')],  # a score, 3 decimals
}


def test_every_task_has_its_submission_labels_written_down():
    assert set(SUBMITTED) == set(tasks.TASKS)
    assert tasks.TASKS['mnli'].submission == {'test_matched': 'MNLI-m.tsv',
                                              'test_mismatched': 'MNLI-mm.tsv',
                                              'diagnostic': 'AX.tsv'}


@pytest.mark.parametrize('name', sorted(SUBMITTED))
def test_submissions_write_each_label_as_documented(name, tmp_path):
    """Files whose every example has one label, loaded as train.py loads them, predicted
    right: each submission file of the task writes that label's documented string."""
    task = tasks.TASKS[name]
    for i, (in_file, submitted) in enumerate(SUBMITTED[name]):
        data = write_task(name, str(tmp_path / str(i)), sizes=(4, 4, 4), labels=[in_file])
        split = tasks.load(task, data, 2, submit=True)['train']
        for split_name, file in task.submission.items():
            folder = str(tmp_path / f'sub{i}')
            tasks.write_predictions(task, split_name, split, np.array(split.labels), folder)
            written = open(os.path.join(folder, file)).read().splitlines()
            expected = [f'{k}\t{submitted}' for k in range(len(split.labels))]
            assert written == ['index\tprediction'] + expected, (file, in_file)


def write_csv(path, header, rows, sep=','):
    with open(path, 'w') as f:
        f.writelines(sep.join(row) + '\n' for row in [header] + rows)
    return str(path)


def test_csv_task_forms_and_classes(tmp_path):
    train_path = write_csv(tmp_path / 'train.csv', ['text', 'other', 'label'],
                           [['a b.', 'c.', 'pos'], ['"d, e."', 'f.', 'neg'], ['g.', 'h.', 'pos']])
    dev_path = write_csv(tmp_path / 'dev.tsv', ['text', 'other', 'label'], [['x.', 'y.', 'neg']],
                         sep='\t')
    task = tasks.csv_task(train_path, dev_path, None, ('text',), 'label')
    splits = task.load(None, None, ())
    assert task.head == ('classification', 2) and task.labels == ('neg', 'pos')
    assert splits['train'].fields == (['a b.', 'd, e.', 'g.'],) and splits['train'].labels == [1, 0, 1]
    assert task.transform is tasks.classification and task.submission == {}
    pair = tasks.csv_task(train_path, dev_path, None, ('text', 'other'), 'label')
    assert pair.transform is tasks.entailment and len(pair.load(None, None, ())['dev'].fields) == 2
    with pytest.raises(ValueError, match='--text_columns: expected one column or a pair, found 3'):
        tasks.csv_task(train_path, dev_path, None, ('text', 'other', 'label'), 'label')
    bad_dev = write_csv(tmp_path / 'bad.csv', ['text', 'other', 'label'], [['x.', 'y.', 'maybe']])
    with pytest.raises(ValueError, match=r"bad.csv: labels \['maybe'\] are not among \['neg', 'pos'\]"):
        tasks.csv_task(train_path, bad_dev, None, ('text',), 'label')


def test_csv_multiple_choice_labels_by_name_or_place(tmp_path):
    header = ['start', 'end1', 'end2', 'right']
    train_path = write_csv(tmp_path / 'train.csv', header, [['a', 'b.', 'c.', 'end2'], ['d', 'e.', 'f.', '0']])
    test_path = write_csv(tmp_path / 'test.csv', header[:3], [['g', 'h.', 'i.']])
    task = tasks.csv_task(train_path, train_path, test_path, ('start',), 'right', ('end1', 'end2'))
    splits = task.load(None, None, ())
    assert task.head == 'multiple_choice' and task.transform is tasks.multiple_choice
    assert splits['train'].labels == [1, 0] and splits['test'].labels is None
    assert splits['test'].fields == (['g'], ['h.'], ['i.'])
    assert task.submission == {'test': 'predictions.tsv'} and task.labels == ('end1', 'end2')


# ---- every --dataset, end to end ------------------------------------------------------

SKLEARN = {'acc': lambda p, y: 100 * sklearn.metrics.accuracy_score(y, p),
           'mcc': lambda p, y: 100 * sklearn.metrics.matthews_corrcoef(y, p),
           'f1': lambda p, y: 100 * sklearn.metrics.f1_score(y, p, zero_division=0),
           'pearson': lambda p, y: 100 * scipy.stats.pearsonr(p, y)[0],
           'spearman': lambda p, y: 100 * scipy.stats.spearmanr(p, y)[0]}


def plain_predictions(task, state, split, n_vocab):
    """The checkpoint's predictions on split, through the plain model on batches padded
    to n_ctx (no fast path)."""
    meta = state['meta']
    model = DoubleHeadModel(Config(meta['cfg']), meta['clf_token'], meta['task_head_type'],
                            vocab=n_vocab + 3 + meta['n_ctx'], n_ctx=meta['n_ctx'])
    model.load_state_dict(state['model'])
    inputs = tasks.Inputs(task, tasks.Specials.after(n_vocab), n_vocab + 3, 512)
    x, _ = inputs(split, np.arange(len(split.labels)), length=meta['n_ctx'])
    with torch.no_grad():
        return tasks.predict(task, model.eval()(torch.from_numpy(x))[1])


def tiny_argv(tmp_path, dataset):
    """Flags of a one-epoch run of a 1-layer, 16-wide model from scratch on --dataset, the
    character vocabulary and every output under tmp_path."""
    encoder_path, bpe_path, _ = write_char_vocab(str(tmp_path / 'vocab'))
    return ['--dataset', dataset, '--encoder_path', encoder_path, '--bpe_path', bpe_path,
            '--log_dir', str(tmp_path / 'log'), '--save_dir', str(tmp_path / 'save'),
            '--submission_dir', str(tmp_path / 'sub'), '--cache_dir', str(tmp_path / 'cache'),
            '--n_transfer', '-1', '--n_embd', '16', '--n_head', '2', '--n_layer', '1',
            '--n_batch', '4', '--update_batch', '8', '--n_iter', '1']


@pytest.mark.parametrize('name', sorted(tasks.TASKS))
def test_every_dataset_end_to_end(name, tmp_path, capsys):
    task = tasks.TASKS[name]
    data = write_task(name, str(tmp_path / 'data'))
    argv = tiny_argv(tmp_path, name) + ['--data_dir', data, '--n_valid', '8']
    encoder_path, bpe_path = argv[3], argv[5]
    n_vocab = write_char_vocab(str(tmp_path / 'vocab'))[2]
    train.main(argv + ['--submit', '--analysis'])
    out = capsys.readouterr().out
    log = read_log(tmp_path / 'log' / f'{name}.jsonl')
    (last,) = [line for line in log[1:] if 'va_cost' in line]
    ckpt, = (tmp_path / 'save' / name / 'checkpoints').glob('update_*.pt')
    state = torch.load(ckpt, weights_only=True)
    # the validation metrics are those of the parameters' predictions
    encoded = train.load_task(train.parse_args(['--dataset', name, '--data_dir', data,
                                                '--encoder_path', encoder_path,
                                                '--bpe_path', bpe_path, '--n_valid', '8',
                                                '--cache_dir', str(tmp_path / 'cache')]),
                              runs.Distributed('cpu'))[1]
    for prefix, split_name in zip(tasks.valid_prefixes(task), task.valid):
        split = encoded[split_name]
        preds = plain_predictions(task, state, split, n_vocab)
        for metric in task.metrics:
            assert last[f'{prefix}_{metric}'] == pytest.approx(
                SKLEARN[metric](preds, split.labels), rel=1e-5, abs=1e-9, nan_ok=True), metric
    files = sorted(os.listdir(tmp_path / 'sub' / name))
    assert files == sorted(task.submission.values())
    if name == 'mnli':
        assert files == ['AX.tsv', 'MNLI-m.tsv', 'MNLI-mm.tsv']
    for split_name, file in task.submission.items():
        lines = (tmp_path / 'sub' / name / file).read_text().splitlines()
        assert lines[0] == 'index\tprediction' and len(lines) == 1 + 6
        assert all(line.split('\t')[1] in (task.labels or []) or task.regression for line in lines[1:])
    test = encoded[next(iter(task.submission))]
    if test.labels is not None:  # public test labels: the score is printed and logged
        label = tasks.METRIC_NAMES[task.metrics[0]]
        assert f'{task.name} Test {label}:  {log[-1]["te_" + task.metrics[0]]:.2f}' in out
    assert f'{task.name} Valid {tasks.METRIC_NAMES[task.metrics[0]]}:' in out
    for group, title in (task.groups or {}).items():  # RACE-m and RACE-h, as the paper's
        assert f'{title} Valid Accuracy: {last[f"va_acc_{group}"]:.2f}\n' in out
        assert f'{title} Test Accuracy:  {log[-1][f"te_acc_{group}"]:.2f}\n' in out


def test_own_csv_end_to_end(tmp_path, capsys):
    rows = [[f'{w} {w}.', lab] for w, lab in zip('abcdefghijklmnop', 'xy' * 8)]
    train_path = write_csv(tmp_path / 'train.csv', ['text', 'label'], rows)
    test_path = write_csv(tmp_path / 'test.csv', ['text'], [[r[0]] for r in rows[:5]])
    base = tiny_argv(tmp_path, 'csv') + ['--n_valid', '4']
    code, _, err = fails(base + ['--train_file', train_path], capsys)
    assert code == 2 and '--dataset csv needs --valid_file, --text_columns, --label_column' in err
    train.main(base + ['--train_file', train_path, '--valid_file', train_path, '--test_file',
                       test_path, '--text_columns', 'text', '--label_column', 'label', '--submit'])
    assert '16 training examples' in capsys.readouterr().out
    lines = (tmp_path / 'sub' / 'csv' / 'predictions.tsv').read_text().splitlines()
    assert lines[0] == 'index\tprediction' and len(lines) == 6
    assert {line.split('\t')[1] for line in lines[1:]} <= {'x', 'y'}


# Bad files and flags of --dataset csv, through train.main: one line, naming the file and
# line or the flag; exit 1 for a file, 2 for a flag. Each edit(rows, header) -> (rows, header)
# of a good training file.
OWN_CSV_REFUSALS = [
    ('one class', lambda rows, header: ([[r[0], 'x'] for r in rows], header), [], 1,
     "train.csv: every label in 'label' is 'x': a classifier needs examples of at least two "
     'classes'),
    ('empty label', lambda rows, header: (rows[:1] + [[rows[1][0], '']] + rows[2:], header), [],
     1, "train.csv, line 3: expected a label in 'label', found ''"),
    ('header twice', lambda rows, header: ([r + [r[0]] for r in rows], header + ['text']), [], 1,
     "train.csv, line 1: the header names 'text' 2 times (columns 1, 3); rename all but one"),
    ('control', lambda rows, header: ([[rows[0][0] + '\x0b', 'x']] + rows[1:], header), [], 1,
     "train.csv, line 2: 'text' holds the control character U+000B at character 5"),
    ('nul', lambda rows, header: (rows[:3] + [['a\x00b', 'y']] + rows[4:], header), [], 1,
     'train.csv, line 5: the line holds a NUL character (U+0000) at character 2'),
    ('header only', lambda rows, header: ([], header), [], 1,
     'train.csv holds a header but no rows'),
    ('label as text', lambda rows, header: (rows, header), ['--text_columns', 'text,label'], 2,
     "--label_column names 'label', which --text_columns names too: a column is text, a "
     'choice or the label, and once'),
    ('choice twice', lambda rows, header: (rows, header), ['--choice_columns', 'e,e'], 2,
     "--choice_columns names 'e' twice"),
]


@pytest.mark.parametrize('edit, flags, code, message', [r[1:] for r in OWN_CSV_REFUSALS],
                         ids=[r[0] for r in OWN_CSV_REFUSALS])
def test_own_csv_refusals_are_one_line(tmp_path, capsys, edit, flags, code, message):
    rows, header = edit([[f'{w} {w}.', lab] for w, lab in zip('abcdefgh', 'xy' * 4)],
                        ['text', 'label'])
    train_path = write_csv(tmp_path / 'train.csv', header, rows)
    argv = tiny_argv(tmp_path, 'csv') + ['--train_file', train_path, '--valid_file', train_path,
                                         '--text_columns', 'text', '--label_column', 'label']
    got, line = one_error(train.main, argv + flags, capsys)
    assert got == code and message in line, line


# Test files: needed only where --submit predicts them (hand-listed per task).
TEST_FILES = {'sst2': ['SST-2/test.tsv'],
              'rocstories': ['cloze_test_test__spring2016 - cloze_test_ALL_test.csv'],
              'mnli': ['MNLI/test_matched.tsv', 'MNLI/test_mismatched.tsv',
                       'diagnostic/diagnostic.tsv']}


@pytest.mark.parametrize('name', sorted(TEST_FILES))
def test_test_files_are_needed_only_with_submit(name, tmp_path, capsys):
    data = write_task(name, str(tmp_path / 'data'), sizes=(16, 4, 4))
    argv = tiny_argv(tmp_path, name) + ['--data_dir', data, '--n_valid', '4']
    # where present they are read all the same: the same n_ctx and data digest either way
    with_test = [train.load_task(train.parse_args(argv + submit), runs.Distributed('cpu'))
                 for submit in ([], ['--submit'])]
    assert with_test[0][2] == with_test[1][2]
    assert set(with_test[0][1]) == set(with_test[1][1]) >= set(tasks.TASKS[name].submission)
    for file in TEST_FILES[name]:
        os.remove(os.path.join(data, file))
    train.main(argv + ['--desc', 'no_submit'])
    assert read_log(tmp_path / 'log' / 'no_submit.jsonl')[-1]['n_epochs'] == 1
    code, line = one_error(train.main, argv + ['--desc', 'submit', '--submit'], capsys)
    assert code == 1 and TEST_FILES[name][0].split('/')[-1] in line
