"""The CUDA paths: autocast in bf16 and fp16 (with the gradient scaler), the CUDA random
generators in checkpoints and --resume, the fast paths, --compile, and NCCL across two
GPUs, and pretrain.py under autocast. Skipped without CUDA. Run with `python -m pytest -m cuda`; on a machine without
spaCy, point GPT1_TEST_CACHE at a cache folder that holds the tiny run's encoding."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

import runs
import train
from conftest import REPO, fails, read_log, terminated_at
from test_pretrain import corpus_run  # noqa: F401 (a fixture)
from tiny_trainer import make_trainer, tiny_stories

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')]


@pytest.fixture
def cuda_run(tiny_run):
    """tiny_run's run on the GPU, with 8 updates per epoch and the encoding cache of
    GPT1_TEST_CACHE when given."""
    tmp, argv = tiny_run
    argv = [a for a in argv]
    argv[argv.index('--device') + 1] = 'cuda'
    if os.environ.get('GPT1_TEST_CACHE'):
        argv[argv.index('--cache_dir') + 1] = os.environ['GPT1_TEST_CACHE']
    return tmp, argv + ['--update_batch', '4']


def last_eval(tmp, desc):
    return [line for line in read_log(tmp / 'log' / f'{desc}.jsonl') if 'va_cost' in line][-1]


def final_state(tmp, desc):
    ckpts = sorted((tmp / 'save' / desc / 'checkpoints').glob('update_*.pt'))
    return torch.load(ckpts[-1], weights_only=True)


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_autocast_stays_close_to_float32(cuda_run, amp):
    """The same run in float32 and under CUDA autocast: validation and training costs
    within 0.05 (they are about 0.7); fp16 goes through the gradient scaler, whose state
    the checkpoint keeps."""
    tmp, argv = cuda_run
    train.main(argv + ['--desc', 'fp32', '--n_iter', '1'])
    train.main(argv + ['--desc', amp, '--n_iter', '1', '--amp', amp])
    a, b = last_eval(tmp, 'fp32'), last_eval(tmp, amp)
    assert abs(a['va_cost'] - b['va_cost']) < 0.05 and abs(a['tr_cost'] - b['tr_cost']) < 0.05
    assert a['va_cost'] != b['va_cost']  # autocast really ran
    scaler = final_state(tmp, amp)['scaler']
    assert (scaler.get('scale', 0) > 0) == (amp == 'fp16')
    assert all(torch.isfinite(v).all() for v in final_state(tmp, amp)['model'].values())


def test_sigterm_and_resume_keep_the_cuda_generators(cuda_run, capsys, monkeypatch):
    """Interrupted at update 5 and resumed: the checkpoint holds the CUDA generators'
    state, and the resumed run ends as the one never stopped (dropout on)."""
    tmp, argv = cuda_run
    argv = argv + ['--n_iter', '2']
    train.main(argv + ['--desc', 'straight'])
    update = train.Trainer.update
    monkeypatch.setattr(train.Trainer, 'update', terminated_at(5))
    code, _, _ = fails(argv + ['--desc', 'term'], capsys)
    assert code == runs.EXIT_INTERRUPTED
    assert 'cuda' in final_state(tmp, 'term')['rng'][0]
    monkeypatch.setattr(train.Trainer, 'update', update)
    train.main(argv + ['--desc', 'term', '--resume'])
    a, b = final_state(tmp, 'straight')['model'], final_state(tmp, 'term')['model']
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    assert last_eval(tmp, 'straight')['va_cost'] == pytest.approx(last_eval(tmp, 'term')['va_cost'])


@pytest.mark.parametrize('lm_coef', [0.5, 0.0])
def test_fast_paths_give_the_reference_update_on_the_gpu(lm_coef):
    split = tiny_stories(16)
    fast = make_trainer(reference=False, lm_coef=lm_coef)
    ref = make_trainer(reference=True, lm_coef=lm_coef)
    for trainer in (fast, ref):
        trainer.module.cuda()
        trainer.device = torch.device('cuda')
        trainer.first_bad = trainer.first_bad.cuda()
        trainer.opt = torch.optim.SGD(trainer.module.parameters(), lr=0.5)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for n, rows in enumerate((np.arange(8), np.arange(8, 16)), 1):
        torch.testing.assert_close(fast.update(split, rows, n), ref.update(split, rows, n),
                                   rtol=1e-5, atol=0)
    for name, p in ref.module.state_dict().items():
        torch.testing.assert_close(fast.module.state_dict()[name], p, rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(fast.logits(split), ref.logits(split), rtol=1e-5, atol=1e-5)


def test_compile_gives_the_uncompiled_run(cuda_run):
    tmp, argv = cuda_run
    argv = argv + ['--n_iter', '1', '--embd_pdrop', '0', '--attn_pdrop', '0', '--resid_pdrop',
                   '0', '--clf_pdrop', '0']
    train.main(argv + ['--desc', 'eager'])
    train.main(argv + ['--desc', 'compiled', '--compile'])
    a, b = last_eval(tmp, 'eager'), last_eval(tmp, 'compiled')
    assert b['va_cost'] == pytest.approx(a['va_cost'], rel=1e-3)
    assert b['tr_cost'] == pytest.approx(a['tr_cost'], rel=1e-3)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs two CUDA devices')
def test_two_nccl_processes_equal_one(cuda_run, tmp_path):
    tmp, argv = cuda_run
    argv = argv + ['--n_iter', '1', '--embd_pdrop', '0', '--attn_pdrop', '0', '--resid_pdrop',
                   '0', '--clf_pdrop', '0', '--adam_eps', '1e-3', '--update_batch', '8']
    train.main(argv + ['--desc', 'single'])
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    res = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
                          '--master_addr=127.0.0.1', f'--master_port={port}', 'train.py']
                         + argv + ['--desc', 'nccl'], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = final_state(tmp, 'single')['model'], final_state(tmp, 'nccl')['model']
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_pretraining_under_autocast_stays_close_to_float32(corpus_run, amp):
    """pretrain.py on the GPU in float32 and under autocast (fp16: the logits' loss
    through the gradient scaler; bf16: the fused loss): validation losses within 0.05."""
    import pretrain
    tmp, argv = corpus_run
    argv = [a for a in argv]
    argv[argv.index('--device') + 1] = 'cuda'
    pretrain.main(argv + ['--desc', 'fp32'])
    pretrain.main(argv + ['--desc', amp, '--amp', amp])
    a, b = (read_log(tmp / 'log' / f'{d}.jsonl')[-1] for d in ('fp32', amp))
    assert abs(a['va_loss'] - b['va_loss']) < 0.05 and a['va_loss'] != b['va_loss']
