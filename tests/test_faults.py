"""Interruptions, exact resumption, non-finite values, precision and several processes:
train.py on the CPU with tiny models. Only what needs a real process (SIGKILL, torchrun)
runs in one."""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import datasets
import runs
import train
from conftest import REPO, TINY, fails, read_log, terminated_at
from text_utils import write_char_vocab


@pytest.fixture
def setup(tmp_path):
    """(tmp_path, argv, out): 64 training stories (8 updates of 8 per epoch), and out(name)
    the flags that put a run's files under tmp_path/name."""
    data = datasets.write_story_cloze(str(tmp_path / 'data'), 72, 8, np.random.default_rng(0))
    encoder_path, bpe_path, _ = write_char_vocab(str(tmp_path / 'vocab'))
    argv = ['--data_dir', data, '--encoder_path', encoder_path, '--bpe_path', bpe_path,
            '--cache_dir', str(tmp_path / 'cache'), '--n_valid', '8', '--device', 'cpu',
            '--n_transfer', '-1'] + TINY

    def out(name):
        return ['--log_dir', str(tmp_path / name / 'log'), '--save_dir', str(tmp_path / name / 'save'),
                '--submission_dir', str(tmp_path / name / 'sub'), '--desc', 'run']
    return tmp_path, argv, out


def final_params(tmp, name):
    ckpts = sorted((tmp / name / 'save' / 'run' / 'checkpoints').glob('update_*.pt'))
    return torch.load(ckpts[-1], weights_only=True)['model']


def without_time(lines):
    return [{k: v for k, v in l.items() if k != 'time'} for l in lines]


def assert_same_run(tmp, a, b):
    """Bit-identical final parameters and the same log but for the wall-clock times."""
    pa, pb = final_params(tmp, a), final_params(tmp, b)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert without_time(read_log(tmp / a / 'log' / 'run.jsonl'))[1:] == \
        without_time(read_log(tmp / b / 'log' / 'run.jsonl'))[1:]


def test_sigkill_then_resume_is_bit_identical(setup):
    tmp, argv, out = setup
    argv += ['--n_iter', '3', '--save_every', '2']
    train.main(argv + out('straight'))
    # 12 checkpoints written, exactly --keep_checkpoints (2) kept: the newest
    kept = sorted(p.name for p in (tmp / 'straight' / 'save' / 'run' / 'checkpoints').iterdir())
    assert kept == ['update_00000022.pt', 'update_00000024.pt']
    # 24 updates in all; kill once a checkpoint past update 6 exists, then resume
    proc = subprocess.Popen([sys.executable, 'train.py'] + argv + out('killed'), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt_dir = tmp / 'killed' / 'save' / 'run' / 'checkpoints'
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(int(p.stem.split('_')[1]) >= 6 for p in ckpt_dir.glob('update_*.pt')):
            break
        time.sleep(0.02)
    assert proc.poll() is None, 'the run ended before it could be killed'
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    train.main(argv + out('killed') + ['--resume'])
    assert_same_run(tmp, 'straight', 'killed')


def test_sigterm_checkpoints_exits_75_and_resumes_exactly(setup, capsys, monkeypatch):
    """SIGTERM during the 5th update: a checkpoint of update 5, exit code 75 (not 0, so a
    scheduler sees the job unfinished), and --resume ends as a run never stopped."""
    tmp, argv, out = setup
    train.main(argv + out('straight'))
    update = train.Trainer.update
    monkeypatch.setattr(train.Trainer, 'update', terminated_at(5))
    code, _, err = fails(argv + out('term'), capsys)
    assert code == runs.EXIT_INTERRUPTED == 75
    assert 'stopped at update 5: checkpoint written' in err and '--resume' in err
    ckpts = list((tmp / 'term' / 'save' / 'run' / 'checkpoints').glob('update_*.pt'))
    assert [p.name for p in ckpts] == ['update_00000005.pt']
    monkeypatch.setattr(train.Trainer, 'update', update)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is given back
    train.main(argv + out('term') + ['--resume'])
    assert_same_run(tmp, 'straight', 'term')


def test_ctrl_c_outside_the_stop_request_exits_75_in_one_line(capsys):
    """A Ctrl-C that StopRequest does not catch (before it is entered, or a second one once
    the run has stopped and handed back the handlers) is said in one line, not a
    traceback, with the code of an interrupted run."""
    def work():
        raise KeyboardInterrupt
    with pytest.raises(SystemExit) as stop:
        runs.run_main('train.py', work)
    assert stop.value.code == 75
    assert capsys.readouterr().err == 'train.py: interrupted\n'


def test_interrupts_while_encoding_end_in_one_line_and_leave_no_process(tmp_path):
    """Ctrl-C or SIGTERM while train.py encodes its texts in worker processes, 12 times at
    random moments (SIGINT and SIGTERM, to the run's process alone or to its whole group,
    as a terminal's Ctrl-C): every run exits 75 within seconds, says so in one line
    without a traceback, and leaves no worker behind, running, orphaned or a zombie.

    Each run is a real process, for real signals, but not a fresh interpreter: they are
    forked from one driver (tests/interrupt_encoding.py) that has imported torch and spaCy
    once, where `python train.py` would spend some 4 s on them, 12 times over. The forked
    run calls train.main(argv) as the script does, and the exit handlers it would run."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip('one CPU: texts are encoded without worker processes')
    seed = random.randrange(2 ** 32)
    res = subprocess.run([sys.executable, 'tests/interrupt_encoding.py', str(tmp_path), '12',
                          str(seed)], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    trials = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(trials) == 12
    assert {(r['signal'], r['to']) for r in trials} == {
        (s, to) for s in ('SIGINT', 'SIGTERM') for to in ('process', 'group')}
    for run in trials:
        said = f'seed {seed}: {run}'
        # each line as a terminal shows it, after the progress bar's redraws; the
        # character vocabulary's warning aside
        lines = [shown for line in run['stderr'].split('\n')
                 if (shown := line.split('\r')[-1].strip())
                 and not shown.startswith('train.py: warning:')]
        assert len(run['workers']) == 2 and run['code'] == 75 and run['seconds'] < 5, said
        assert lines == ['interrupted before training began: nothing to resume; run the '
                         'same command again'], said
        assert 'Traceback' not in run['stderr'] and run['left'] == [], said


def test_non_finite_loss_stops_with_the_update_named(setup, capsys):
    tmp, argv, out = setup
    code, _, err = fails(argv + out('nan') + ['--n_iter', '2', '--lr', '1e30', '--max_grad_norm',
                                              '-1', '--save_every', '1'], capsys)
    assert code == 1 and 'Traceback' not in err
    assert 'non-finite loss at update' in err
    bad = int(err.split('non-finite loss at update ')[1].split(':')[0])
    ckpts = sorted((tmp / 'nan' / 'save' / 'run' / 'checkpoints').glob('update_*.pt'))
    assert ckpts, 'the last good checkpoint should remain'
    assert f'The last good checkpoint is {ckpts[-1]}' in err
    state = torch.load(ckpts[-1], weights_only=True)
    assert state['progress']['n_updates'] < bad
    assert all(torch.isfinite(v).all() for v in state['model'].values())


def test_bf16_autocast_stays_close_to_float32(setup):
    """A short run under bf16 autocast on the CPU: its validation costs stay within 0.05
    (the costs are about 0.7) of the float32 run, from the same seed."""
    tmp, argv, out = setup
    train.main(argv + out('fp32') + ['--n_iter', '1'])
    train.main(argv + out('bf16') + ['--n_iter', '1', '--amp', 'bf16'])
    a = read_log(tmp / 'fp32' / 'log' / 'run.jsonl')[-1]
    b = read_log(tmp / 'bf16' / 'log' / 'run.jsonl')[-1]
    assert abs(a['va_cost'] - b['va_cost']) < 0.05 and abs(a['tr_cost'] - b['tr_cost']) < 0.05
    assert a['va_cost'] != b['va_cost']  # autocast really ran in bf16


def torchrun(tmp_path, script_and_argv):
    """Two gloo processes of a script under torchrun, one thread each."""
    with socket.socket() as s:  # a port free now, for the rendezvous
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS='1', TMPDIR=str(tmp_path))
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
                           '--master_addr=127.0.0.1', f'--master_port={port}'] + script_and_argv,
                          cwd=REPO, env=env, timeout=180, capture_output=True, text=True)


# Dropout off, so that one process and two compute one function; Adam's epsilon 1e-3, so
# that gradients that are zero but for rounding (which the two sums of the halves round
# differently) move nothing, where at 1e-8 Adam would step them by +-lr. (--e: torchrun's
# parser takes it.)
ONE_FUNCTION = ['--embd_pdrop', '0', '--attn_pdrop', '0', '--resid_pdrop', '0',
                '--clf_pdrop', '0', '--adam_eps', '1e-3']


def assert_close_runs(tmp, single, ddp):
    a, b = final_params(tmp, single), final_params(tmp, ddp)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    la, lb = (without_time(read_log(tmp / n / 'log' / 'run.jsonl'))[1:] for n in (single, ddp))
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.keys() == y.keys() and all(y[k] == pytest.approx(x[k], rel=1e-5) for k in x)


def test_two_gloo_processes_equal_one_through_a_sigterm_to_one_and_resume(setup, tmp_path):
    """torchrun with 2 processes, each training its own half of every update, against one
    process training both halves by accumulation: the same parameters and log, through a
    stop. SIGTERM reaches the second process alone, during update 5: both stop together at
    the next point where they meet (update 6, with --save_every 2) after its checkpoint,
    each exits 75, neither aborts on the way out; --resume under torchrun then ends as the
    one process that was never stopped."""
    tmp, argv, out = setup
    argv += ['--n_iter', '2', '--save_every', '2'] + ONE_FUNCTION
    train.main(argv + out('single'))
    res = torchrun(tmp_path, ['tests/one_rank_fault.py', 'sigterm'] + argv + out('ddp'))
    assert res.returncode != 0
    assert '16 updates on cpu' in res.stdout and '1 accumulation step(s) x 2 device(s)' in res.stdout
    assert res.stderr.count('stopped at update 6: checkpoint written') == 2, res.stderr[-3000:]
    assert 'exitcode  : 75' in res.stderr and 'terminate called' not in res.stderr
    ckpts = sorted(p.name for p in (tmp / 'ddp' / 'save' / 'run' / 'checkpoints').iterdir())
    assert ckpts == ['update_00000004.pt', 'update_00000006.pt']
    res = torchrun(tmp_path, ['train.py'] + argv + out('ddp') + ['--resume'])
    assert res.returncode == 0, res.stderr[-3000:]
    assert_close_runs(tmp, 'single', 'ddp')


def test_non_finite_loss_in_one_of_two_processes_stops_both(setup, tmp_path):
    """A non-finite loss in the second process's share of update 9 alone: both stop at the
    next point where they meet (update 10), each with the same one line, where the first
    would otherwise train on into a collective that the second has left."""
    tmp, argv, out = setup
    argv += ['--n_iter', '2', '--save_every', '2'] + ONE_FUNCTION
    res = torchrun(tmp_path, ['tests/one_rank_fault.py', 'nan'] + argv + out('ddp'))
    assert res.returncode != 0
    line = ('train.py: error: non-finite loss at update 9: training stopped. The last good '
            f'checkpoint is {tmp / "ddp" / "save" / "run" / "checkpoints" / "update_00000008.pt"}')
    assert res.stderr.count(line) == 2, res.stderr[-3000:]
    assert 'terminate called' not in res.stderr


def test_full_disk_at_the_first_process_s_submission_ends_the_others_quietly(setup, tmp_path):
    """The first process finds the disk full writing the submission, after the others have
    done their share and wait for it at the end: it says so in one line, and they end
    without a traceback of their own (torchrun's own report is the one traceback)."""
    tmp, argv, out = setup
    argv += ['--n_iter', '1', '--submit']
    res = torchrun(tmp_path, ['tests/one_rank_fault.py', 'full_disk'] + argv + out('ddp'))
    assert res.returncode != 0
    assert res.stderr.count('train.py: error: No space left on device while writing '
                            f'{tmp / "ddp" / "sub" / "run" / "ROCStories.tsv"}') == 1, res.stderr[-3000:]
    assert res.stderr.count('Traceback (most recent call last)') == 1, res.stderr[-3000:]


# ---- every writer, crashed mid-write, leaves the previous file and no temporary ----------

def crash_after_partial_write(*args, **kwargs):
    """Stands in for a serializer (torch.save, np.savez, Figure.savefig): writes a few
    bytes to the file or path it is given, then fails as a full disk would."""
    f = next(a for a in args if hasattr(a, 'write') or isinstance(a, (str, os.PathLike)))
    if isinstance(f, (str, os.PathLike)):
        f = open(f, 'wb')
    f.write(b'half a file')
    f.flush()
    raise OSError(28, 'No space left on device')


def write_checkpoint(path, version, monkeypatch):
    from checkpoints import Checkpoints
    if version == 2:
        monkeypatch.setattr(torch, 'save', crash_after_partial_write)
    Checkpoints(os.path.dirname(path), keep=5).save({'v': torch.tensor(version)}, 1)


def write_params(path, version, monkeypatch):
    from model_pytorch import save_params
    if version == 2:  # safetensors serializes to bytes first: fail as the disk fills up
        monkeypatch.setattr(os, 'fsync', lambda fd: crash_after_partial_write(os.fdopen(os.dup(fd), 'wb')))
    save_params(path, torch.nn.Linear(2, 2), version=version)


def write_submission(path, version, monkeypatch):
    import tasks
    split = datasets.Split((['a'] * 4,), None, None)
    # version 2 predicts a class that has no label: the writer fails at its third line
    preds = np.array([0, 1, 0, 0]) if version == 1 else np.array([0, 1, 7, 0])
    task = tasks.TASKS['rocstories']._replace(submission={'test': os.path.basename(path)})
    tasks.write_predictions(task, 'test', split, preds, os.path.dirname(path))


def write_curves(path, version, monkeypatch):
    import analysis
    from matplotlib.figure import Figure
    log = os.path.join(os.path.dirname(path), 'run.jsonl')
    with open(log, 'w') as f:
        f.write('{}\n{"n_updates": 1, "tr_cost": 1, "va_cost": 1, "tr_acc": 50, "va_acc": 50}\n')
    if version == 2:
        monkeypatch.setattr(Figure, 'savefig', crash_after_partial_write)
    analysis.plot_learning_curves(log, path)


def write_cache_entry(path, version, monkeypatch):
    import utils
    if version == 2:
        monkeypatch.setattr(np, 'savez', crash_after_partial_write)
    arrays = {}
    layout = utils.pack([np.array([version])], arrays)
    utils.save_entry(path, 'key', layout, arrays)


@pytest.mark.parametrize('write, name', [
    (write_checkpoint, 'update_00000001.pt'), (write_params, 'best_params.safetensors'),
    (write_submission, 'ROCStories.tsv'), (write_curves, 'run.png'),
    (write_cache_entry, 'entry.npz')])
def test_a_writer_crashed_mid_write_leaves_the_previous_file(tmp_path, monkeypatch, write, name):
    path = str(tmp_path / name)
    write(path, 1, monkeypatch)
    before = open(path, 'rb').read()
    with pytest.raises((OSError, IndexError)):
        write(path, 2, monkeypatch)
    assert open(path, 'rb').read() == before
    assert set(os.listdir(tmp_path)) - {'run.jsonl'} == {name}
