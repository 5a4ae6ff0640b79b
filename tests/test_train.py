"""train.py end to end with tiny models, and its pieces against hand-worked cases."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import train
from datasets import VAL_NAME
from model_pytorch import DoubleHeadModel, load_params
from openai_shards import published_shapes, write_shards
from tiny_trainer import make_trainer, tiny_stories

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, '..', 'shared', 'data')
TINY = ['--n_embd', '16', '--n_head', '2', '--n_layer', '2', '--n_batch', '4',
        '--update_batch', '8', '--lr', '1e-3', '--lr_warmup', '0.1']


def test_transform_roc_hand_worked():
    encoder = {'_start_': 50, '_delimiter_': 51, '_classify_': 52}
    X, M = train.transform_roc([[1, 2, 3]], [[4]], [[5, 6]], encoder, n_ctx=9, max_len=2,
                               clf_token=52, n_vocab_special=53)
    assert X[0, 0, :, 0].tolist() == [50, 1, 2, 51, 4, 52, 0, 0, 0]
    assert X[0, 1, :, 0].tolist() == [50, 1, 2, 51, 5, 6, 52, 0, 0]
    assert M[0].tolist() == [[1] * 6 + [0] * 3, [1] * 7 + [0] * 2]
    assert (X[..., 1] == np.arange(53, 62)).all()


def test_update_batch_from_openais_n_gpu_or_the_papers_32(capsys):
    assert train.parse_args([]).update_batch == 32
    assert train.parse_args(['--n_batch', '4']).update_batch == 32
    assert train.parse_args(['--n_batch', '4', '--n_gpu', '2']).update_batch == 8
    assert train.parse_args(['--update_batch', '16', '--n_batch', '8', '--n_gpu', '2']).update_batch == 16
    with pytest.raises(SystemExit):
        train.parse_args(['--update_batch', '32', '--n_batch', '8', '--n_gpu', '2'])
    assert '--update_batch 32 contradicts --n_batch 8 x --n_gpu 2 = 16' in capsys.readouterr().err


def test_n_ctx_as_openai_computes_it():
    splits = [([[1] * 10], [[1] * 3], [[1] * 5]), ([[1] * 4], [[1] * 9], [[1]])]
    assert train.rocstories_n_ctx(splits, 512) == (10 + 5 + 3, 254)
    # max_len = 20 // 2 - 2 = 8 per part: story 1 gives 8 + 5, story 2 gives 4 + 8
    assert train.rocstories_n_ctx(splits, 20) == (8 + 5 + 3, 8)
    # max_len = 5: 5 + 5 and 4 + 5
    assert train.rocstories_n_ctx(splits, 14) == (5 + 5 + 3, 5)


@pytest.fixture
def tiny_run(tmp_path):
    data = train.write_story_cloze(str(tmp_path / 'data'), 40, 12, np.random.default_rng(0))
    encoder_path, bpe_path, n_vocab = train.write_char_vocab(str(tmp_path / 'vocab'))
    base = ['--data_dir', data, '--encoder_path', encoder_path, '--bpe_path', bpe_path,
            '--log_dir', str(tmp_path / 'log'), '--save_dir', str(tmp_path / 'save'),
            '--submission_dir', str(tmp_path / 'sub'), '--cache_dir', str(tmp_path / 'cache'),
            '--n_valid', '8', '--n_iter', '2', '--device', 'cpu', '--n_transfer', '-1'] + TINY
    return tmp_path, base


def run_cli(args, cwd=REPO, timeout=300, check=True):
    res = subprocess.run([sys.executable, 'train.py'] + args, cwd=cwd, capture_output=True,
                         text=True, timeout=timeout)
    if check and res.returncode:
        raise AssertionError(f'train.py failed ({res.returncode}):\n{res.stdout}\n{res.stderr}')
    return res


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_cli_end_to_end_on_tiny_sample(tiny_run):
    tmp, base = tiny_run
    res = run_cli(base + ['--desc', 'tiny', '--submit', '--analysis'])
    lines = read_log(tmp / 'log' / 'tiny.jsonl')
    assert lines[0]['desc'] == 'tiny' and lines[0]['n_valid'] == 8  # the arguments first
    evals = lines[1:]
    # 32 training stories / 8 per update = 4 updates per epoch, logged at each epoch's end
    assert [(l['n_epochs'], l['n_updates']) for l in evals] == [(1, 4), (2, 8)]
    for l in evals:
        printed = '%d %d %.3f %.3f %.2f %.2f' % (l['n_epochs'], l['n_updates'], l['tr_cost'],
                                                 l['va_cost'], l['tr_acc'], l['va_acc'])
        assert printed in res.stdout
        assert 0 <= l['va_acc'] <= 100 and l['va_cost'] > 0
    sub = (tmp / 'sub' / 'ROCStories.tsv').read_text().splitlines()
    assert sub[0] == 'index\tprediction' and len(sub) == 13
    assert all(line.split('\t')[1] in ('0', '1') for line in sub[1:])
    assert 'ROCStories Valid Accuracy: %.2f' % max(l['va_acc'] for l in evals) in res.stdout
    assert 'ROCStories Test Accuracy:' in res.stdout
    meta, state = load_params(tmp / 'save' / 'tiny' / 'best_params.pt')
    model = DoubleHeadModel(train.Config(meta['cfg']), meta['clf_token'], 'multiple_choice',
                            vocab=meta['n_vocab'] + meta['n_special'] + meta['n_ctx'],
                            n_ctx=meta['n_ctx'])
    model.load_state_dict(state)


def test_cli_loads_synthetic_openai_shards(tiny_run):
    """A run through the weight loader: the tiny vocabulary padded to the shards' token
    rows, one block transferred."""
    tmp, base = tiny_run
    encoder_path, bpe_path, n_vocab = train.write_char_vocab(str(tmp / 'vocab'), n_vocab=100)
    arrays = write_shards(tmp / 'model', published_shapes(n_layer=2, n_embd=16, n_vocab=100, n_ctx=128))
    args = base + ['--desc', 'shards', '--n_transfer', '1', '--model_dir', str(tmp / 'model'),
                   '--encoder_path', encoder_path, '--n_iter', '1', '--submit', '--lr', '0']
    run_cli(args)
    _, state = load_params(tmp / 'save' / 'shards' / 'best_params.pt')
    # lr 0: the saved parameters are the loaded ones
    np.testing.assert_array_equal(state['transformer.embed.weight'][:100].numpy(), arrays[1])
    np.testing.assert_array_equal(state['transformer.h.0.attn.c_attn.w'].numpy(), arrays[2][0])


def test_missing_weights_are_named(tiny_run):
    tmp, base = tiny_run
    res = run_cli(base + ['--n_transfer', '12', '--model_dir', str(tmp / 'nothing')], check=False)
    assert res.returncode != 0
    assert f"{tmp / 'nothing' / 'params_shapes.json'}, {tmp / 'nothing' / 'params_0.npy'}" in res.stderr
    assert 'download.py' in res.stderr


def test_smoke_run():
    res = subprocess.run([sys.executable, 'train.py', '--smoke', '--device', 'cpu'], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert 'ROCStories Test Accuracy:' in res.stdout


@pytest.mark.skipif(not os.path.exists(os.path.join(SHARED, 'rocstories', VAL_NAME)),
                    reason='the ROCStories CSVs are not beside the repository (../shared/data/rocstories)')
def test_cli_on_real_csvs(tmp_path):
    openai = os.path.join(SHARED, 'openai-model')
    if not os.path.exists(os.path.join(openai, 'encoder_bpe_40000.json')):
        pytest.skip("OpenAI's vocabulary is not beside the repository (../shared/data/openai-model)")
    args = ['--data_dir', os.path.join(SHARED, 'rocstories'),
            '--encoder_path', os.path.join(openai, 'encoder_bpe_40000.json'),
            '--bpe_path', os.path.join(openai, 'vocab_40000.bpe'), '--desc', 'real',
            '--log_dir', str(tmp_path / 'log'), '--save_dir', str(tmp_path / 'save'),
            '--submission_dir', str(tmp_path / 'sub'), '--cache_dir', str(tmp_path / 'cache'),
            '--n_iter', '1', '--n_transfer', '-1', '--submit', '--analysis', '--device', 'cpu',
            '--n_embd', '8', '--n_head', '2', '--n_layer', '1', '--n_batch', '32',
            # a few training stories: a tiny model's update is its LM head over 40,990 tokens
            '--n_valid', '1775']
    res = run_cli(args)
    sub = (tmp_path / 'sub' / 'ROCStories.tsv').read_text().splitlines()
    assert len(sub) == 1 + 1871
    assert all(line.split('\t') == [str(i), line[-1]] and line[-1] in '01'
               for i, line in enumerate(sub[1:]))
    lines = read_log(tmp_path / 'log' / 'real.jsonl')
    assert [(l['n_epochs'], l['n_updates']) for l in lines[1:]] == [(1, (1871 - 1775) // 32)]
    assert 'ROCStories Valid Accuracy:' in res.stdout and 'ROCStories Test Accuracy:' in res.stdout


@pytest.mark.parametrize('lm_coef', [0.5, 0.0])
def test_fast_paths_give_the_reference_losses_updates_and_logits(lm_coef):
    """Trimmed batches, packed real tokens and LM logits at counted positions only (none
    at all without the LM term), against the full padded batch through the plain model:
    the same loss, the same parameters after two updates, the same evaluation logits."""
    X, M, Y = tiny_stories(16, n_ctx=40)  # most columns padding, which the fast path trims
    # plain SGD: parameters that differ only as their gradients do (Adam would blow up the
    # rounding noise of gradients that are zero in exact arithmetic, as a bias shared by
    # both choices has); OpenAIAdam has its own tests
    fast = make_trainer(40, reference=False, lm_coef=lm_coef)
    ref = make_trainer(40, reference=True, lm_coef=lm_coef)
    assert fast.fast and not ref.fast
    assert fast.batch(X, M, Y, np.arange(8))[0].shape[2] < 40 == ref.batch(X, M, Y, np.arange(8))[0].shape[2]
    for rows in (np.arange(8), np.arange(8, 16)):
        loss_fast, loss_ref = fast.train_step(X, M, Y, rows), ref.train_step(X, M, Y, rows)
        torch.testing.assert_close(loss_fast, loss_ref, rtol=1e-5, atol=0)
    start = make_trainer(40).module.state_dict()
    for name, p in ref.module.state_dict().items():
        torch.testing.assert_close(fast.module.state_dict()[name], p, rtol=1e-5, atol=1e-6, msg=name)
    for name in ('transformer.embed.weight', 'transformer.h.0.attn.c_attn.w'):
        assert (ref.module.state_dict()[name] - start[name]).abs().max() > 1e-4, f'{name} did not move'
    torch.testing.assert_close(fast.logits(X, M), ref.logits(X, M), rtol=1e-5, atol=1e-5)
