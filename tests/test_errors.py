"""Bad inputs and faults through the command-line entry points: each ends with one line
naming the flag or file and what to do, a non-zero exit code and no traceback, and an
earlier run's folder stays exactly as it was."""
import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import analysis
import datasets
import generate
import runs
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
    (['--seed', '-1'], "--seed: expected a whole number from 0 to 4294967295, got '-1'"),
    (['--seed', '4294967296'], "--seed: expected a whole number from 0 to 4294967295"),
    (['--update_batch', '10'], '--update_batch 10 must split into 1 process(es) x --n_batch 4 x a '
                               'whole number of steps: use --update_batch 8 or 12 (a multiple of 4)'),
    (['--train_file', 'a.csv', '--label_column', 'y'],
     '--train_file, --label_column: only --dataset csv reads them, not --dataset rocstories'),
    (['--choice_columns', 'a,b'], '--choice_columns: only --dataset csv reads them'),
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


@pytest.mark.parametrize('script', ['train.py', 'pretrain.py'])
@pytest.mark.parametrize('gpu, capability', [('Tesla K80', (3, 7)), ('Tesla V100', (7, 0))])
def test_bf16_on_a_gpu_without_it_is_refused_naming_fp16(done, capsys, monkeypatch, script,
                                                         gpu, capability):
    """A GPU older than the A100 (its compute capability asked of torch, here mocked)."""
    tmp, argv = done
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda index=0: capability)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda index=0: gpu)
    if script == 'pretrain.py':
        import pretrain
        from test_pretrain import TINY
        argv = TINY + ['--corpus', str(tmp), '--desc', 'gpu']
        main = pretrain.main
    else:
        main = train.main
    code, line = one_error(main, argv + ['--device', 'cuda', '--amp', 'bf16'], capsys)
    assert code == 2 and f'--amp bf16: {gpu}' in line and 'use --amp fp16' in line, line


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


# --overwrite deletes the earlier run only after all that can be checked before training.
OVERWRITE_REFUSED = [
    (lambda tmp: ['--encoder_path', str(tmp / 'absent.json')], 'missing: the vocabulary'),
    (lambda tmp: ['--data_dir', write_csv_variant(tmp, 'twice', lambda t: t + t.splitlines(True)[1])],
     "story 'val0' again"),
    (lambda tmp: ['--submission_dir', str(tmp / 'data' / datasets.VAL_NAME / 'sub')], 'is not a folder'),
    (lambda tmp: ['--update_batch', '32', '--n_iter', '1'], 'none has a learning rate above 0'),
]


@pytest.mark.parametrize('change, message', OVERWRITE_REFUSED, ids=[m for _, m in OVERWRITE_REFUSED])
def test_overwrite_deletes_nothing_when_the_new_run_is_refused(done, capsys, change, message):
    tmp, argv = done
    desc = 'victim-' + hashlib.sha1(message.encode()).hexdigest()[:8]
    before = copy_run(tmp, desc)
    code, line = one_error(train.main, argv + ['--desc', desc, '--overwrite'] + change(tmp), capsys)
    assert code == 1 and message in line
    assert snapshot(tmp, desc) == before


def no_work(*args, **kwargs):
    raise AssertionError('the run began its work before refusing')


@pytest.mark.parametrize('flag', ['--log_dir', '--save_dir', '--cache_dir', '--submission_dir'])
@pytest.mark.parametrize('where', ['under a file', 'a file'])
def test_a_folder_that_cannot_be_one_is_named_before_any_work(done, capsys, monkeypatch, flag, where):
    """A path through a regular file can never be made a folder, whoever runs."""
    tmp, argv = done
    path = tmp / 'data' / datasets.VAL_NAME
    path = path / 'out' if where == 'under a file' else path
    monkeypatch.setattr(train, 'check_inputs', no_work)
    code, line = one_error(train.main, argv + ['--desc', 'nowhere', flag, str(path)], capsys)
    assert code == 1 and f'{flag} {path}: {tmp / "data" / datasets.VAL_NAME} is not a folder' in line
    assert leaves_nothing(tmp, 'nowhere')


@pytest.mark.parametrize('flag', ['--log_dir', '--save_dir', '--cache_dir'])
@pytest.mark.parametrize('system', ['/proc', '/sys'])
def test_a_folder_that_cannot_be_made_is_named_before_any_work(done, capsys, monkeypatch, flag,
                                                               system):
    """Folders the system refuses to make, even to root, whatever os.access says of their
    parent: train.py and pretrain.py both try, and say so in one line."""
    tmp, argv = done
    path = os.path.join(system, 'gpt1-test', 'out')
    monkeypatch.setattr(train, 'check_inputs', no_work)
    code, line = one_error(train.main, argv + ['--desc', 'nowhere', flag, path], capsys)
    assert code == 1 and f'{flag} {path}: ' in line and 'cannot be written' in line, line
    assert leaves_nothing(tmp, 'nowhere')
    import pretrain
    from test_pretrain import TINY, write_corpus
    corpus = write_corpus(str(tmp / 'corpus'))
    monkeypatch.setattr(pretrain, 'load_corpus', no_work)
    code, line = one_error(pretrain.main, TINY + [
        '--corpus', corpus, '--desc', 'nowhere', '--encoder_path', argv[argv.index('--encoder_path') + 1],
        '--bpe_path', argv[argv.index('--bpe_path') + 1], '--log_dir', str(tmp / 'log'),
        '--save_dir', str(tmp / 'save'), '--cache_dir', str(tmp / 'cache'), flag, path], capsys)
    assert code == 1 and f'{flag} {path}: ' in line and 'cannot be written' in line, line
    assert leaves_nothing(tmp, 'nowhere')


def test_an_update_that_torchrun_s_processes_cannot_split_is_said_once(done, capsys, monkeypatch):
    """Under torchrun every process parses the same flags: the first says which
    --update_batch would do, the others exit with the same code in silence (torchrun then
    adds its own report of the failed processes, which no process can prevent)."""
    tmp, argv = done
    argv = argv + ['--update_batch', '32', '--n_batch', '8']
    monkeypatch.setenv('WORLD_SIZE', '3')
    monkeypatch.setenv('RANK', '0')
    code, line = one_error(train.main, argv, capsys)
    assert code == 2 and ('--update_batch 32 must split into 3 process(es) x --n_batch 8 x a whole '
                          'number of steps: use --update_batch 24 or 48 (a multiple of 24)') in line
    monkeypatch.setenv('RANK', '1')
    assert fails(argv, capsys) == (2, '', '')


def warmup_warnings(capsys):
    return [l for l in capsys.readouterr().err.splitlines() if l.startswith('train.py: warning: ')
            and 'ramp' in l]


def test_a_run_whose_every_update_has_learning_rate_0_is_refused(done, capsys):
    """One update: OpenAI's schedule gives update t the rate lr x schedule((t - 1) / total),
    0 for the first, whatever --lr. The advice followed, two updates: one of them past the
    warmup, which is said."""
    tmp, argv = done
    argv = argv + ['--desc', 'short', '--update_batch', '32']
    code, line = one_error(train.main, argv + ['--n_iter', '1'], capsys)
    assert code == 1 and line.endswith(
        '1 update(s) (32 training examples // --update_batch 32 x --n_iter 1): none has a learning '
        'rate above 0 (the --lr_warmup ramp starts from 0), so nothing would be trained; raise '
        '--n_iter or lower --update_batch')
    assert leaves_nothing(tmp, 'short')
    train.main(argv + ['--n_iter', '2'])
    warnings = warmup_warnings(capsys)
    assert warnings == [
        'train.py: warning: 2 update(s) (32 training examples // --update_batch 32 x --n_iter 2): '
        '1 of them in the --lr_warmup 0.1 ramp, the first at learning rate 0; to train past the '
        'warmup, raise --n_iter, lower --update_batch or lower --lr_warmup']


@pytest.mark.parametrize('warmup, ramp', [('0.25', 2), ('0.2', None)])
def test_a_warmup_of_half_the_updates_or_more_is_warned_of(done, capsys, warmup, ramp):
    """4 updates, at x = 0, 1/4, 1/2, 3/4 of the run: a warmup of 0.25 ramps over 2 of
    them (half: warned of), 0.2 over 1 (no warning)."""
    tmp, argv = done
    train.main(argv + ['--desc', f'warmup{warmup}', '--n_iter', '1', '--lr_warmup', warmup])
    assert warmup_warnings(capsys) == ([] if ramp is None else [
        'train.py: warning: 4 update(s) (32 training examples // --update_batch 8 x --n_iter 1): '
        f'{ramp} of them in the --lr_warmup {warmup} ramp, the first at learning rate 0; to train '
        'past the warmup, raise --n_iter, lower --update_batch or lower --lr_warmup'])


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
    # the flag given is named, not --n_transfer's default (experiments.py passes the rest on)
    (['--n_transfer', '12', '--n_layer', '3'], '--n_layer 3: the weights in {model} hold 2 blocks'),
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


def copy_run(tmp, desc):
    """The finished run's files copied under another --desc (for a test whose run might,
    broken, delete them); their snapshot."""
    shutil.copy(tmp / 'log' / 'done.jsonl', tmp / 'log' / f'{desc}.jsonl')
    for folder in ('save', 'sub'):
        shutil.copytree(tmp / folder / 'done', tmp / folder / desc)
    return snapshot(tmp, desc)


def finished(tmp, desc):
    """The run desc logged its last evaluation and its test score."""
    lines = read_log(tmp / 'log' / f'{desc}.jsonl')
    return [l['n_updates'] for l in lines if 'va_acc' in l] == [4, 8] and 'te_acc' in lines[-1]


# Every piece of advice, followed, leads on: none sends the user round in a loop.

def test_resume_without_a_checkpoint_or_files_says_to_drop_resume(done, capsys):
    tmp, argv = done
    argv = argv + ['--desc', 'never']
    code, line = one_error(train.main, argv + ['--resume'], capsys)
    assert code == 1 and line.endswith(f'--resume: no readable checkpoint in '
                                       f'{tmp / "save" / "never" / "checkpoints"}; run the same '
                                       'command without --resume again')
    train.main(argv)
    assert finished(tmp, 'never')


def test_resume_with_no_readable_checkpoint_says_to_start_afresh_naming_what_goes(done, capsys):
    """Every checkpoint damaged: --resume names the --overwrite that starts afresh and what
    it deletes (the run without either flag is refused, the earlier files being there)."""
    tmp, argv = done
    copy_run(tmp, 'damaged')
    for path in (tmp / 'save' / 'damaged' / 'checkpoints').glob('update_*.pt'):
        path.write_bytes(b'not a checkpoint')
    argv = argv + ['--desc', 'damaged']
    code, line = one_error(train.main, argv + ['--resume'], capsys)
    assert code == 1 and (
        f'--resume: no readable checkpoint in {tmp / "save" / "damaged" / "checkpoints"}; start '
        'afresh with the same command and --overwrite in place of --resume, which deletes '
        f'{tmp / "log" / "damaged.jsonl"}, {tmp / "save" / "damaged" / "best_params.safetensors"}'
        ) in line, line
    train.main(argv + ['--overwrite'])
    assert finished(tmp, 'damaged')


def test_resume_with_its_log_gone_says_to_start_afresh(done, capsys):
    tmp, argv = done
    copy_run(tmp, 'nolog')
    (tmp / 'log' / 'nolog.jsonl').unlink()
    code, line = one_error(train.main, argv + ['--desc', 'nolog', '--resume'], capsys)
    assert code == 1 and f'--resume: cannot resume the log {tmp / "log" / "nolog.jsonl"}' in line
    assert ('start afresh with the same command and --overwrite in place of --resume, which '
            f'deletes {tmp / "save" / "nolog" / "best_params.safetensors"}') in line


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
    assert proc.returncode == runs.EXIT_INTERRUPTED, err


def enospc(fd):
    raise OSError(errno.ENOSPC, 'No space left on device')


def no_temporary(tmp):
    return not [n for root in ('save', 'log', 'cache_full') for _, _, names in os.walk(tmp / root)
                for n in names if n.endswith('.tmp')]


def test_a_full_disk_before_training_says_to_run_the_command_again(done, capsys, monkeypatch):
    """Full while encoding the data into the cache: nothing of the run is written yet."""
    tmp, argv = done
    argv = argv + ['--desc', 'full_early', '--cache_dir', str(tmp / 'cache_full')]
    monkeypatch.setattr(os, 'fsync', enospc)
    code, line = one_error(train.main, argv, capsys)
    assert code == 1 and f'No space left on device while writing {tmp / "cache_full"}' in line
    assert line.endswith('nothing was left half-written: free space, then run the same command again')
    assert no_temporary(tmp)
    monkeypatch.undo()
    train.main(argv)
    assert finished(tmp, 'full_early')


def test_a_full_disk_before_a_checkpoint_says_to_start_afresh(done, capsys, monkeypatch):
    """Full at the first parameters kept: the log is written, no checkpoint, so --resume
    could not go on and the same command alone would be refused."""
    tmp, argv = done
    argv = argv + ['--desc', 'full']
    monkeypatch.setattr(os, 'fsync', enospc)
    code, line = one_error(train.main, argv, capsys)
    best = tmp / 'save' / 'full' / 'best_params.safetensors'
    assert code == 1 and f'No space left on device while writing {best}' in line
    assert line.endswith('free space, then start afresh with the same command and --overwrite, '
                         f'which deletes {tmp / "log" / "full.jsonl"}')
    assert no_temporary(tmp)
    monkeypatch.undo()
    train.main(argv + ['--overwrite'])
    assert finished(tmp, 'full')


def test_a_full_disk_after_a_checkpoint_says_to_resume(done, capsys, monkeypatch):
    tmp, argv = done
    argv = argv + ['--desc', 'full_late', '--save_every', '1']
    checkpoints = tmp / 'save' / 'full_late' / 'checkpoints'
    fsync = os.fsync

    def full_after_a_checkpoint(fd):  # files only: the first checkpoint's folder is synced
        if any(checkpoints.glob('update_*.pt')) and not stat.S_ISDIR(os.fstat(fd).st_mode):
            enospc(fd)
        fsync(fd)
    monkeypatch.setattr(os, 'fsync', full_after_a_checkpoint)
    code, line = one_error(train.main, argv, capsys)
    assert code == 1 and f'while writing {checkpoints / "update_00000002.pt"}' in line
    assert line.endswith('free space, then continue with the same command and --resume')
    monkeypatch.undo()
    train.main(argv + ['--resume'])
    assert 'resuming from' in capsys.readouterr().out and finished(tmp, 'full_late')


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
    model = DoubleHeadModel(runs.model_config(train.parse_args(TINY)), 60, 'multiple_choice',
                            vocab=61 + 8, n_ctx=8)
    save_params(str(path), model, cfg=dict(runs.model_config(train.parse_args(TINY))),
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
    assert json.dumps(runs.EXIT_INTERRUPTED) == '75'
