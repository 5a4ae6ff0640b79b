"""Distributed updates, exact resumption, atomic checkpoints and the other guards of
train.py, on the CPU with tiny models."""
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import train
import utils
from test_train import REPO, TINY, read_log, run_cli
from tiny_trainer import make_trainer


@pytest.fixture
def setup(tmp_path):
    data = train.write_story_cloze(str(tmp_path / 'data'), 72, 8, np.random.default_rng(0))
    encoder_path, bpe_path, _ = train.write_char_vocab(str(tmp_path / 'vocab'))
    common = ['--data_dir', data, '--encoder_path', encoder_path, '--bpe_path', bpe_path,
              '--cache_dir', str(tmp_path / 'cache'), '--n_valid', '8', '--device', 'cpu',
              '--n_transfer', '-1'] + TINY

    def out(name):
        return ['--log_dir', str(tmp_path / name / 'log'), '--save_dir', str(tmp_path / name / 'save'),
                '--submission_dir', str(tmp_path / name / 'sub'), '--desc', 'run']
    return tmp_path, common, out


def final_params(tmp, name):
    ckpts = sorted((tmp / name / 'save' / 'run' / 'checkpoints').glob('update_*.pt'))
    return torch.load(ckpts[-1], weights_only=True)['model']


def without_time(lines):
    return [{k: v for k, v in l.items() if k != 'time'} for l in lines]


def test_sigkill_then_resume_is_bit_identical(setup):
    tmp, common, out = setup
    args = common + ['--n_iter', '3', '--save_every', '2']
    run_cli(args + out('straight'))
    # 64 stories / 8 per update: 8 updates per epoch, 24 in all; kill once a checkpoint
    # past update 6 exists, then resume with the same command.
    proc = subprocess.Popen([sys.executable, 'train.py'] + args + out('killed'), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt_dir = tmp / 'killed' / 'save' / 'run' / 'checkpoints'
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(int(p.stem.split('_')[1]) >= 6 for p in ckpt_dir.glob('update_*.pt')):
            break
        time.sleep(0.05)
    assert proc.poll() is None, 'the run ended before it could be killed'
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_cli(args + out('killed') + ['--resume'])
    a, b = final_params(tmp, 'straight'), final_params(tmp, 'killed')
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert without_time(read_log(tmp / 'straight' / 'log' / 'run.jsonl'))[1:] == \
        without_time(read_log(tmp / 'killed' / 'log' / 'run.jsonl'))[1:]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(setup):
    tmp, common, out = setup
    proc = subprocess.Popen([sys.executable, 'train.py'] + common + out('term') + ['--n_iter', '50'],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp / 'term' / 'log' / 'run.jsonl'
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert 'checkpoint written' in stdout
    ckpts = list((tmp / 'term' / 'save' / 'run' / 'checkpoints').glob('update_*.pt'))
    assert ckpts and torch.load(max(ckpts), weights_only=True)['progress']['n_updates'] > 8


def test_mismatched_checkpoint_is_refused(setup):
    tmp, common, out = setup
    run_cli(common + out('a') + ['--n_iter', '1'])
    res = run_cli(common + out('a') + ['--n_iter', '1', '--lr', '5e-4', '--l2', '0.02', '--resume'],
                  check=False)
    assert res.returncode != 0
    assert 'other settings' in res.stderr
    assert "l2: checkpoint 0.01, now 0.02" in res.stderr and 'lr: checkpoint 0.001, now 0.0005' in res.stderr


def test_non_finite_loss_stops_with_the_update_named(setup):
    tmp, common, out = setup
    res = run_cli(common + out('nan') + ['--n_iter', '2', '--lr', '1e30', '--max_grad_norm', '-1',
                                         '--save_every', '1'], check=False)
    assert res.returncode != 0
    assert 'non-finite loss at update' in res.stderr
    bad = int(res.stderr.split('non-finite loss at update ')[1].split(':')[0])
    ckpts = sorted((tmp / 'nan' / 'save' / 'run' / 'checkpoints').glob('update_*.pt'))
    assert ckpts, 'the last good checkpoint should remain'
    state = torch.load(ckpts[-1], weights_only=True)
    assert state['progress']['n_updates'] < bad
    assert all(torch.isfinite(v).all() for v in state['model'].values())


def test_crash_mid_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    path = str(tmp_path / 'ckpt.pt')
    with utils.atomic_write(path) as f:
        torch.save({'w': model.weight.detach().clone()}, f)

    def crash(obj, f):
        f.write(b'half a checkpoint')
        raise OSError('disk full')
    monkeypatch.setattr(torch, 'save', crash)
    with pytest.raises(OSError):
        with utils.atomic_write(path) as f:
            torch.save({'w': torch.zeros(2, 3)}, f)
    assert torch.equal(torch.load(path, weights_only=True)['w'], model.weight)
    assert os.listdir(tmp_path) == ['ckpt.pt']


def test_bf16_autocast_stays_close_to_float32(setup):
    """A short run under bf16 autocast on the CPU: its validation costs stay within 0.05
    (the costs are about 0.7) of the float32 run, from the same seed."""
    tmp, common, out = setup
    run_cli(common + out('fp32') + ['--n_iter', '1'])
    run_cli(common + out('bf16') + ['--n_iter', '1', '--amp', 'bf16'])
    a = read_log(tmp / 'fp32' / 'log' / 'run.jsonl')[-1]
    b = read_log(tmp / 'bf16' / 'log' / 'run.jsonl')[-1]
    assert abs(a['va_cost'] - b['va_cost']) < 0.05 and abs(a['tr_cost'] - b['tr_cost']) < 0.05
    assert a['va_cost'] != b['va_cost']  # autocast really ran in bf16


DDP_STEP = r'''
import sys, numpy as np, torch
sys.path[:0] = [sys.argv[1], sys.argv[1] + '/tests']
from tiny_trainer import make_trainer, tiny_stories

trainer = make_trainer(12, update_batch=16, opt='adam')  # DDP-wrapped under torchrun
dd = trainer.dd
X, M, Y = tiny_stories(16, n_ctx=12, seed=1)
rows = np.arange(16)
for _ in range(2):  # OpenAIAdam's first update has learning rate 0, as TF's
    trainer.train_step(X, M, Y, rows[dd.rank * trainer.per_device:(dd.rank + 1) * trainer.per_device])
if dd.main:
    torch.save(trainer.module.state_dict(), sys.argv[2])
dd.close()
'''


def test_two_gloo_processes_make_the_single_process_update(tmp_path):
    script = tmp_path / 'step.py'
    script.write_text(DDP_STEP)
    env = dict(os.environ, MASTER_ADDR='127.0.0.1', OMP_NUM_THREADS='1')
    with socket.socket() as s:  # a port free now, for the rendezvous
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    subprocess.run([sys.executable, str(script), REPO, str(tmp_path / 'single.pt')],
                   check=True, env=env, timeout=120)
    subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
                    '--master_addr=127.0.0.1', f'--master_port={port}', str(script), REPO,
                    str(tmp_path / 'ddp.pt')], check=True, env=env, timeout=180,
                   capture_output=True)
    a = torch.load(tmp_path / 'single.pt', weights_only=True)
    b = torch.load(tmp_path / 'ddp.pt', weights_only=True)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    # the updates must have moved the weights for the comparison to mean anything
    start = make_trainer(12, update_batch=16, opt='adam').module.state_dict()
    name = 'transformer.h.0.attn.c_attn.w'
    assert not torch.allclose(start[name], a[name], rtol=0, atol=1e-5)
