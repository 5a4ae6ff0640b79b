"""analysis.py on a hand-made test CSV, submission and log."""
import csv
import json
import os
import subprocess
import sys

import pytest

import analysis
import tasks
from conftest import REPO
from test_errors import one_error

TEST_CSV = 'cloze_test_test__spring2016 - cloze_test_ALL_test.csv'
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
# AnswerRightEnding 1, 2, 2, 1 -> labels 0, 1, 1, 0
RIGHT_ENDINGS = [1, 2, 2, 1]
EVALUATIONS = [  # the best va_acc, 80.5, comes twice: the first one is the best evaluation
    dict(n_epochs=0, n_updates=10, tr_cost=0.69, va_cost=0.70, tr_acc=55.0, va_acc=60.0),
    dict(n_epochs=1, n_updates=20, tr_cost=0.50, va_cost=0.55, tr_acc=75.0, va_acc=80.5),
    dict(n_epochs=2, n_updates=30, tr_cost=0.40, va_cost=0.52, tr_acc=85.0, va_acc=80.5),
    dict(n_epochs=3, n_updates=40, tr_cost=0.30, va_cost=0.60, tr_acc=90.0, va_acc=70.0),
]


def write_test_csv(folder):
    with open(os.path.join(folder, TEST_CSV), 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['InputStoryid', 'InputSentence1', 'InputSentence2', 'InputSentence3',
                    'InputSentence4', 'RandomFifthSentenceQuiz1', 'RandomFifthSentenceQuiz2',
                    'AnswerRightEnding'])
        for i, right in enumerate(RIGHT_ENDINGS):
            w.writerow([f's{i}', 'Ann woke up.', 'She was hungry, very.', 'She cooked.',
                        'She ate.', 'She was full.', 'She flew away.', right])


def write_predictions(path, predictions):
    with open(path, 'w') as f:
        f.write('index\tprediction\n')
        f.writelines(f'{i}\t{p}\n' for i, p in enumerate(predictions))


def write_log(path, evaluations):
    with open(path, 'w') as f:
        f.write(json.dumps(dict(desc='rocstories', lr=6.25e-5, time=0.0)) + '\n')
        f.writelines(json.dumps(dict(e, time=1.0 + i)) + '\n' for i, e in enumerate(evaluations))


@pytest.fixture
def run_files(tmp_path):
    write_test_csv(tmp_path)
    pred_path, log_path = tmp_path / 'ROCStories.tsv', tmp_path / 'log' / 'rocstories.jsonl'
    log_path.parent.mkdir()
    write_predictions(pred_path, [0, 1, 0, 0])  # 3 of 4 right
    write_log(log_path, EVALUATIONS)
    return str(tmp_path), str(pred_path), str(log_path)


def assert_png(path):
    with open(path, 'rb') as f:
        data = f.read()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 5000  # two plotted panels, not an empty canvas


def test_scores_print_openai_lines_and_return_numbers(run_files, capsys):
    data_dir, pred_path, log_path = run_files
    assert analysis.rocstories(data_dir, pred_path, log_path) == (80.5, 75.0)
    png_path = os.path.join(os.path.dirname(log_path), 'rocstories.png')
    assert capsys.readouterr().out.splitlines() == [
        'ROCStories Valid Accuracy: 80.50',
        'ROCStories Test Accuracy:  75.00',
        f'Learning curves: {png_path}',
    ]
    assert_png(png_path)


def test_learning_curves_written_atomically_where_asked(run_files, tmp_path):
    _, _, log_path = run_files
    png_path = str(tmp_path / 'curves.png')
    assert analysis.plot_learning_curves(log_path, png_path) == png_path
    assert_png(png_path)
    assert sorted(os.listdir(tmp_path / 'log')) == ['rocstories.jsonl']
    assert not os.path.exists(png_path + '.tmp')


def test_single_evaluation_still_plots(run_files):
    _, _, log_path = run_files
    write_log(log_path, EVALUATIONS[:1])
    assert_png(analysis.plot_learning_curves(log_path))


def test_wrong_number_of_predictions_names_counts_and_file(run_files):
    data_dir, pred_path, log_path = run_files
    write_predictions(pred_path, [0, 1, 0])
    with pytest.raises(ValueError) as err:
        analysis.rocstories(data_dir, pred_path, log_path)
    assert pred_path in str(err.value)
    assert '3 predictions' in str(err.value) and '4 stories' in str(err.value)


def test_log_without_evaluations_says_so(run_files):
    data_dir, pred_path, log_path = run_files
    write_log(log_path, [])
    with pytest.raises(ValueError, match='no evaluation lines'):
        analysis.rocstories(data_dir, pred_path, log_path)
    with pytest.raises(ValueError, match='no evaluation lines'):
        analysis.plot_learning_curves(log_path)


def test_cli_scores_a_run_and_reports_errors(run_files, capsys):
    data_dir, pred_path, log_path = run_files
    analysis.main(['--data_dir', data_dir, '--pred_path', pred_path, '--log_path', log_path])
    assert 'ROCStories Test Accuracy:  75.00' in capsys.readouterr().out
    with pytest.raises(SystemExit, match='No such file'):
        analysis.main(['--data_dir', data_dir, '--pred_path', pred_path + '.missing',
                       '--log_path', log_path])


@pytest.mark.parametrize('line, said', [
    (lambda e: {k: v for k, v in e.items() if k != 'va_cost'},
     "line 3: an evaluation line lacks the field 'va_cost' (expected n_updates, tr_cost, "
     'va_cost, tr_acc, va_acc)'),
    (lambda e: {k: v for k, v in e.items() if k != 'n_updates'},
     "line 3: an evaluation line lacks the field 'n_updates'"),
    (lambda e: {k: v for k, v in e.items() if k != 'va_acc'},
     "line 3: an evaluation line lacks the field 'va_acc'"),
    (lambda e: dict(e, tr_acc='high'), "line 3: expected a number in 'tr_acc', found 'high'"),
    (lambda e: '{"n_updates": 20, "tr_cost"', 'line 3: expected a JSON object, '),
    (lambda e: [1, 2], 'line 3: expected a JSON object, found list'),
])
def test_a_bad_log_line_is_one_line_naming_the_log_line_and_field(run_files, capsys, line, said):
    data_dir, pred_path, log_path = run_files
    bad = line(EVALUATIONS[1])
    write_log(log_path, EVALUATIONS)
    lines = open(log_path).read().splitlines()
    lines[2] = bad if isinstance(bad, str) else json.dumps(bad)  # the second evaluation
    open(log_path, 'w').write('\n'.join(lines) + '\n')
    code, line = one_error(analysis.main, ['--data_dir', data_dir, '--pred_path', pred_path,
                                           '--log_path', log_path], capsys)
    assert code == 1 and line.startswith(f'analysis.py: error: {log_path}, {said}'), line


def test_a_test_line_is_no_evaluation(run_files, capsys):
    data_dir, pred_path, log_path = run_files
    with open(log_path, 'a') as f:
        f.write(json.dumps(dict(te_acc=75.0, time=9.0)) + '\n')
    assert analysis.rocstories(data_dir, pred_path, log_path) == (80.5, 75.0)


RACE_EVALUATIONS = [dict(e, va_acc_middle=e['va_acc'] + 1, va_acc_high=e['va_acc'] - 2)
                    for e in EVALUATIONS]


def test_race_middle_and_high_lines_as_the_paper_names_them(tmp_path, capsys):
    """tasks.report for RACE: the best evaluation's lines for all of RACE, then RACE-m and
    RACE-h, then the test lines in the same order."""
    log_path = str(tmp_path / 'race.jsonl')
    write_log(log_path, RACE_EVALUATIONS)
    png_path = str(tmp_path / 'race.png')
    tasks.report(tasks.TASKS['race'], log_path,
                 {'test': {'acc': 60.0, 'acc_middle': 70.25, 'acc_high': 55.5}}, png_path)
    assert capsys.readouterr().out.splitlines() == [
        'RACE Valid Accuracy: 80.50',
        'RACE-m Valid Accuracy: 81.50',
        'RACE-h Valid Accuracy: 78.50',
        'RACE Test Accuracy:  60.00',
        'RACE-m Test Accuracy:  70.25',
        'RACE-h Test Accuracy:  55.50',
        f'Learning curves: {png_path}',
    ]
    write_log(log_path, EVALUATIONS)  # a log without them says which is missing
    with pytest.raises(ValueError, match=r"race\.jsonl, line 2: an evaluation line lacks the "
                                         r"field 'va_acc_middle'"):
        tasks.report(tasks.TASKS['race'], log_path, {}, png_path)


def test_import_does_not_load_matplotlib():
    code = 'import sys, analysis; assert "matplotlib" not in sys.modules'
    subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True)
