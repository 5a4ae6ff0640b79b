"""Bad inputs and faults through the command-line entry points: each ends with one line
naming the flag or file and what to do, a non-zero exit code and no traceback, and an
earlier run's folder stays exactly as it was."""
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import analysis
import datasets
import generate
import train
from conftest import REPO, TINY, fails, read_log
from model_pytorch import DoubleHeadModel, save_params
from openai_shards import published_shapes, write_shards
from text_utils import write_char_vocab


@pytest.fixture(scope='module')
def done(tmp_path_factory):
    """(tmp, argv): a finished tiny run named 'done' (2 epochs, --submit), whose files
    every bad run below must leave alone; argv repeats its flags."""
    tmp = tmp_path_factory.mktemp('runs')
    data = datasets.write_story_cloze(str(tmp / 'data'), 40, 12, np.random.default_rng(0))
    encoder_path, bpe_path, _ = write_char_vocab(str(tmp / 'vocab'))
    argv = ['--data_dir', data, '--encoder_path', encoder_path, '--bpe_path', bpe_path,
            '--log_dir', str(tmp / 'log'), '--save_dir', str(tmp / 'save'),
            '--submission_dir', str(tmp / 'sub'), '--cache_dir', str(tmp / 'cache'),
            '--n_valid', '8', '--n_iter', '2', '--device', 'cpu', '--n_transfer', '-1',
            '--desc', 'done', '--submit'] + TINY
    train.main(argv)
    return tmp, argv


def snapshot(tmp, desc='done'):
    """Every file of the run desc and its content's digest."""
    found = {}
    for folder in (tmp / 'log', tmp / 'save' / desc, tmp / 'sub' / desc):
        for root, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(root, name)
                if root != str(tmp / 'log') or name.startswith(f'{desc}.'):
                    with open(path, 'rb') as f:
                        found[os.path.relpath(path, tmp)] = hashlib.sha256(f.read()).hexdigest()
    return found


def leaves_nothing(tmp, desc):
    """A refused run of desc wrote no file, lock or folder."""
    return not (tmp / 'save' / desc).exists() and not list((tmp / 'log').glob(f'*{desc}*'))


def one_error(main, argv, capsys):
    """(exit code, the one error line) of main(argv), which must exit with code != 0
    saying exactly one error and no traceback."""
    code, out, err = fails(argv, capsys, main)
    if isinstance(code, str):  # what Python prints to stderr, exiting with status 1
        err, code = err + code + '\n', 1
    errors = [line for line in (out + err).splitlines() if ': error: ' in line]
    assert code not in (0, None), out + err
    assert 'Traceback' not in out + err
    assert len(errors) == 1, out + err
    return code, errors[0]


def replace_flag(argv, flag, value):
    i = argv.index(flag)
    return argv[:i + 1] + [value] + argv[i + 2:]


# Flags: exit code 2 and the flag named, before any work.
BAD_FLAGS = [
    (['--n_batch', '-8'], "argument --n_batch: expected a whole number >= 1, got '-8'"),
    (['--n_batch', '0'], '--n_batch: expected a whole number >= 1'),
    (['--n_gpu', '0'], '--n_gpu: expected a whole number >= 1'),
    (['--keep_checkpoints', '0'], '--keep_checkpoints: expected a whole number >= 1'),
    (['--n_batch_eval', '0'], '--n_batch_eval: expected a whole number >= 1'),
    (['--n_valid', '0'], '--n_valid: expected a whole number >= 1'),
    (['--n_iter', '0'], '--n_iter: expected a whole number >= 1'),
    (['--embd_pdrop', '1.5'], "--embd_pdrop: expected a probability in [0, 1), got '1.5'"),
    (['--clf_pdrop', 'nan'], '--clf_pdrop: expected a probability in [0, 1)'),
    (['--lr', '-1'], '--lr: expected a number >= 0'),
    (['--lr_warmup', '0'], '--lr_warmup: expected a fraction in (0, 1]'),
    (['--n_transfer', '-2'], '--n_transfer: expected a whole number >= -1'),
    (['--amp', 'fp16'], '--amp fp16 needs a CUDA device'),
    (['--n_embd', '31'], '--n_embd 31 must be a multiple of --n_head 2'),
    (['--resume', '--overwrite'], '--resume continues the earlier run, --overwrite deletes it'),
    (['--desc', '../elsewhere'], "--desc '../elsewhere': use letters, digits"),
    (['--dataset', 'nope'], "argument --dataset: invalid choice: 'nope'"),
    (['--update_batch', '32', '--n_gpu', '2'], '--update_batch 32 contradicts --n_batch 4 x --n_gpu 2'),
    (['--dataset', 'csv'], '--dataset csv needs --train_file, --valid_file, --text_columns'),
    (['--choice_columns', 'a,,b'], "--choice_columns: expected column names separated by commas"),
]
if not torch.cuda.is_available():
    BAD_FLAGS.append((['--device', 'cuda'], '--device cuda: no CUDA device is available here'))
BAD_FLAGS.append((['--device', 'tpu'], "--device 'tpu': expected cpu, cuda or cuda:N"))


@pytest.mark.parametrize('extra, message', BAD_FLAGS, ids=[' '.join(f[0]) for f in BAD_FLAGS])
def test_bad_flag(done, capsys, extra, message):
    tmp, argv = done
    before = snapshot(tmp)
    code, line = one_error(train.main, argv + extra, capsys)
    assert code == 2 and message in line
    assert snapshot(tmp) == before


def write_csv_variant(tmp, name, edit):
    """The run's data folder copied, its validation CSV changed by edit(text) -> text."""
    folder = tmp / name
    folder.mkdir(exist_ok=True)
    for file in (datasets.VAL_NAME, datasets.TEST_NAME):
        text = (tmp / 'data' / file).read_bytes()
        (folder / file).write_bytes(edit(text) if file == datasets.VAL_NAME else text)
    return str(folder)


def blank_first_ending(text):
    lines = text.decode().split('\r\n')
    row = lines[1].split(',')
    lines[1] = ','.join(row[:5] + [''] + row[6:])
    return '\r\n'.join(lines).encode()


def drop_second_ending(text):
    lines = text.decode().splitlines()
    return '\n'.join(','.join(v for i, v in enumerate(line.split(',')) if i != 6)
                     for line in lines).encode() + b'\n'


# Inputs: exit code 1 and the file (with its line) or the fix named, before any training.
BAD_INPUTS = [
    (lambda tmp: ['--data_dir', str(tmp / 'absent')], 'is not a folder'),
    (lambda tmp: ['--data_dir', str(tmp / 'data' / datasets.VAL_NAME)], 'is not a folder'),
    (lambda tmp: ['--data_dir', write_csv_variant(tmp, 'latin1', lambda t: t.replace(b'went', b'w\xe9nt', 1))],
     'ALL_val.csv, line 2: expected UTF-8 text'),
    (lambda tmp: ['--data_dir', write_csv_variant(tmp, 'header', lambda t: t.splitlines(True)[0])],
     'ALL_val.csv holds a header but no stories'),
    (lambda tmp: ['--data_dir', write_csv_variant(tmp, 'no_ending', drop_second_ending)],
     'it lacks RandomFifthSentenceQuiz2'),
    (lambda tmp: ['--data_dir', write_csv_variant(tmp, 'empty', blank_first_ending)],
     'ALL_val.csv, line 2: RandomFifthSentenceQuiz1 is empty'),
    (lambda tmp: ['--data_dir', write_csv_variant(tmp, 'twice', lambda t: t + t.splitlines(True)[1])],
     "ALL_val.csv, line 42: story 'val0' again, first on line 2"),
    (lambda tmp: ['--n_valid', '40'], '--n_valid 40: '),
    (lambda tmp: ['--encoder_path', str(tmp / 'absent.json')], 'missing: ' ),
    (lambda tmp: ['--n_transfer', '12', '--model_dir', str(tmp / 'absent')], 'params_shapes.json'),
    (lambda tmp: ['--update_batch', '10'], '--update_batch 10 must split into 1 process(es) x --n_batch 4'),
    (lambda tmp: ['--n_valid', '8', '--update_batch', '64', '--n_batch', '8'],
     '32 training examples make no update of --update_batch 64'),
]


@pytest.mark.parametrize('change, message', BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input(done, capsys, change, message):
    tmp, argv = done
    before = snapshot(tmp)
    desc = 'bad-' + hashlib.sha1(message.encode()).hexdigest()[:8]
    code, line = one_error(train.main, argv + ['--desc', desc] + change(tmp), capsys)
    assert code == 1 and message in line and line.startswith('train.py: error: ')
    assert snapshot(tmp) == before and leaves_nothing(tmp, desc)


@pytest.fixture(scope='module')
def shards(done):
    """OpenAI-format weights for the tiny run's shape (2 blocks, 16 wide, 64 positions)
    and a vocabulary padded to their 100 token rows."""
    tmp, _ = done
    write_shards(tmp / 'model', published_shapes(n_layer=2, n_embd=16, n_vocab=100, n_ctx=64))
    return str(tmp / 'model'), write_char_vocab(str(tmp / 'vocab100'), n_vocab=100)[:2]


@pytest.mark.parametrize('extra, message', [
    (['--n_embd', '32'], '--n_embd 32: the weights in'),
    (['--n_ctx', '512'], '--n_ctx 512: the weights in {model} have 64 positions'),
    (['--n_transfer', '3', '--n_layer', '3'], '--n_transfer 3: the weights in {model} hold 2 blocks'),
    (['--vocab'], 'holds 58 tokens, the weights in {model} embed 100'),
])
def test_weights_that_do_not_fit_the_flags(done, shards, capsys, extra, message):
    tmp, argv = done
    model, (encoder_path, bpe_path) = shards
    argv = argv + ['--desc', 'bad', '--n_transfer', '2', '--model_dir', model, '--n_ctx', '64']
    if extra == ['--vocab']:
        extra = []
    else:
        argv = replace_flag(replace_flag(argv, '--encoder_path', encoder_path), '--bpe_path', bpe_path)
    before = snapshot(tmp)
    code, line = one_error(train.main, argv + extra, capsys)
    assert code == 1 and message.format(model=model) in line
    assert snapshot(tmp) == before and leaves_nothing(tmp, 'bad')


def test_a_corrupt_shard_is_named(done, shards, capsys):
    tmp, argv = done
    model, (encoder_path, bpe_path) = shards
    broken = tmp / 'broken_model'
    broken.mkdir()
    for name in os.listdir(model):
        data = open(os.path.join(model, name), 'rb').read()
        (broken / name).write_bytes(data[:-8] if name == 'params_3.npy' else data)
    argv = replace_flag(replace_flag(argv, '--encoder_path', encoder_path), '--bpe_path', bpe_path)
    code, line = one_error(train.main, argv + ['--desc', 'bad', '--n_transfer', '2', '--n_ctx',
                                               '64', '--model_dir', str(broken)], capsys)
    assert code == 1 and 'params_3.npy is truncated or corrupt' in line


def test_another_vocabulary_is_used_with_a_warning(done, capsys):
    """A truncated vocab_40000.bpe gives other token ids: said, never silently."""
    tmp, argv = done
    truncated = tmp / 'vocab' / 'truncated.bpe'
    truncated.write_text('#version: 0.2\nt h\n')
    train.main(replace_flag(argv, '--bpe_path', str(truncated)) + ['--desc', 'other_vocab', '--n_iter', '1'])
    err = capsys.readouterr().err
    assert f'train.py: warning: {argv[argv.index("--encoder_path") + 1]} (58 tokens) and {truncated} (1 merges) ' \
           "are not OpenAI's vocabulary" in err


# ---- checkpoints and run folders -------------------------------------------------------

def test_a_fresh_run_over_an_earlier_one_is_refused(done, capsys):
    tmp, argv = done
    before = snapshot(tmp)
    code, line = one_error(train.main, argv, capsys)
    assert code == 1 and '--desc done already has the files of an earlier run' in line
    assert '--resume' in line and '--overwrite' in line
    assert snapshot(tmp) == before


@pytest.mark.parametrize('change, differs', [
    (lambda argv, tmp: argv + ['--lr', '5e-4', '--l2', '0.02'], ['l2: checkpoint 0.01, now 0.02', 'lr: checkpoint 0.001, now 0.0005']),
    (lambda argv, tmp: replace_flag(argv, '--data_dir', write_csv_variant(tmp, 'other', lambda t: t.replace(b'went home', b'ran home'))),
     ['data: checkpoint']),
    (lambda argv, tmp: replace_flag(argv, '--bpe_path', str(tmp / 'vocab' / 'truncated.bpe')), ['vocabulary: checkpoint']),
])
def test_resume_refuses_other_settings_data_or_vocabulary(done, capsys, change, differs):
    tmp, argv = done
    (tmp / 'vocab' / 'truncated.bpe').write_text('#version: 0.2\nt h\n')
    before = snapshot(tmp)
    code, line = one_error(train.main, change(argv, tmp) + ['--resume'], capsys)
    assert code == 1 and 'was written by a run with other settings or inputs' in line
    assert all(d in line for d in differs), line
    assert snapshot(tmp) == before


def test_resume_without_a_checkpoint(done, capsys):
    tmp, argv = done
    code, line = one_error(train.main, argv + ['--desc', 'never', '--resume'], capsys)
    assert code == 1 and '--resume: no checkpoint in' in line


def test_overwrite_says_what_it_removes_and_old_checkpoints_cannot_outrank_new_ones(done, capsys):
    """An old run of 8 updates, a checkpoint at each; the new one over it with --overwrite
    runs 4: its checkpoints are its own, and --resume continues it, not the old run."""
    tmp, argv = done
    old = argv + ['--desc', 'reused', '--save_every', '1', '--keep_checkpoints', '20']
    train.main(old)
    capsys.readouterr()
    folder = tmp / 'save' / 'reused' / 'checkpoints'
    assert len(list(folder.glob('update_*.pt'))) == 8
    train.main(replace_flag(old, '--n_iter', '1') + ['--overwrite'])
    out = capsys.readouterr().out
    assert "--overwrite: removed the earlier run's" in out and 'update_00000008.pt' in out
    ckpts = sorted(folder.glob('update_*.pt'))
    assert [p.name for p in ckpts] == [f'update_{n:08d}.pt' for n in range(1, 5)]
    assert all(torch.load(p, weights_only=True)['settings']['n_iter'] == 1 for p in ckpts)
    train.main(replace_flag(old, '--n_iter', '1') + ['--resume'])
    assert 'resuming from' in capsys.readouterr().out and 'update_00000004.pt' in str(ckpts[-1])
    lines = read_log(tmp / 'log' / 'reused.jsonl')
    assert lines[0]['n_iter'] == 1 and [l['n_updates'] for l in lines[1:] if 'va_acc' in l] == [4]


def test_a_second_run_of_a_desc_is_refused_while_the_first_runs(done, capsys):
    tmp, argv = done
    first = argv + ['--desc', 'busy', '--n_iter', '200']
    proc = subprocess.Popen([sys.executable, 'train.py'] + first, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        log = tmp / 'log' / 'busy.jsonl'
        deadline = time.time() + 60
        while time.time() < deadline and not log.exists():
            time.sleep(0.05)
        assert log.exists(), 'the first run did not start'
        code, line = one_error(train.main, first + ['--resume'], capsys)
        assert code == 1 and f'another run (process {proc.pid}) is using --desc busy' in line
        assert proc.poll() is None, 'the first run must go on'
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == train.EXIT_INTERRUPTED, err


def test_a_full_disk_is_one_line_and_leaves_no_temporary(done, capsys, monkeypatch):
    tmp, argv = done

    def full(fd):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(os, 'fsync', full)
    code, line = one_error(train.main, argv + ['--desc', 'full'], capsys)
    assert code == 1 and 'No space left on device while writing' in line
    assert '--resume' in line
    leftovers = [n for root in ('save', 'log') for _, _, names in os.walk(tmp / root)
                 for n in names if n.endswith('.tmp')]
    assert leftovers == []


def test_interrupted_while_encoding_is_one_line_and_exit_75(done, capsys, monkeypatch):
    tmp, argv = done

    def interrupted(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)
    monkeypatch.setattr(datasets, 'encoded', interrupted)
    with pytest.raises(SystemExit) as stop:
        train.main(argv + ['--desc', 'early'])
    err = capsys.readouterr().err
    assert stop.value.code == 75 and 'Traceback' not in err
    assert err.strip().splitlines()[-1] == ('interrupted before training began: nothing to '
                                            'resume; run the same command again')


# ---- the other scripts ---------------------------------------------------------------

def test_analysis_refuses_predictions_outside_the_labels(done, capsys):
    tmp, argv = done
    pred = tmp / 'preds.tsv'
    pred.write_text('index\tprediction\n0\t1\n1\t7\n')
    code, line = one_error(analysis.main, ['--data_dir', str(tmp / 'data'), '--pred_path', str(pred),
                                           '--log_path', str(tmp / 'log' / 'done.jsonl')], capsys)
    assert code != 0 and f"{pred}, line 3: expected a prediction in ['0', '1'], found '7'" in line


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp('gen') / 'best_params.safetensors'
    # the character vocabulary's 58 tokens, 3 special ones, 8 positions
    model = DoubleHeadModel(train.model_config(train.parse_args(TINY)), 60, 'multiple_choice',
                            vocab=61 + 8, n_ctx=8)
    save_params(str(path), model, cfg=dict(train.model_config(train.parse_args(TINY))),
                n_vocab=58, n_special=3, n_ctx=8, clf_token=60, task_head_type='multiple_choice')
    return path


@pytest.mark.parametrize('damage, message', [
    (lambda data: data[:len(data) // 2], 'is not a parameters file of this project'),
    (lambda data: b'garbage' * 10, 'is not a parameters file of this project'),
])
def test_generate_names_a_damaged_checkpoint(done, checkpoint, capsys, damage, message, tmp_path):
    tmp, argv = done
    broken = tmp_path / 'broken.safetensors'
    broken.write_bytes(damage(checkpoint.read_bytes()))
    vocab = ['--encoder_path', str(tmp / 'vocab' / 'encoder.json'), '--bpe_path', str(tmp / 'vocab' / 'vocab.bpe')]
    code, line = one_error(generate.main, ['abc', '--checkpoint', str(broken)] + vocab, capsys)
    assert code != 0 and str(broken) in line and message in line


def test_generate_refuses_a_huge_length_and_warns_of_unknown_characters(done, checkpoint, capsys):
    tmp, argv = done
    vocab = ['--encoder_path', str(tmp / 'vocab' / 'encoder.json'), '--bpe_path', str(tmp / 'vocab' / 'vocab.bpe')]
    code, line = one_error(generate.main, ['abc', '--checkpoint', str(checkpoint), '--length',
                                           '100000000'] + vocab, capsys)
    assert code != 0 and '--length' in line
    generate.main(['ab 7%', '--checkpoint', str(checkpoint), '--length', '2'] + vocab)
    err = capsys.readouterr().err
    assert 'warning' in err and "'7'" in err and "'%'" in err


def test_exit_codes_are_those_the_readme_lists():
    with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as f:
        readme = f.read()
    for code, meaning in ((0, 'finished'), (1, 'error'), (2, 'flag'), (75, 'interrupted')):
        assert f'| {code} |' in readme and meaning in readme
    assert json.dumps(train.EXIT_INTERRUPTED) == '75'
