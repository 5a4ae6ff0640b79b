"""Every script that takes a model folder takes the two kinds users bring besides OpenAI's:
the one pretrain.py writes and one that transformers' save_pretrained writes (model and
tokenizer), each with its vocabulary inside, found the same way (text_utils.find_vocabulary)."""
import os
import shutil

import numpy as np
import pytest

import datasets
import experiments
import generate
import pretrain
import train
import zeroshot
from conftest import TINY as TRAIN_TINY, read_log
from test_errors import one_error
from test_pretrain import TINY as PRETRAIN_TINY, write_corpus
from text_utils import find_vocabulary, write_char_vocab

N_EMBD, N_CTX = 16, 64


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    """{kind: save folder holding model/}: pretrain.py's save/{desc}/ after 2 updates
    (model/ and checkpoints/, no snapshots/), and transformers' save_pretrained output
    as model/ of a folder without checkpoints; stories to fine-tune on and to score."""
    root = tmp_path_factory.mktemp('folders')
    encoder_path, bpe_path, n_vocab = write_char_vocab(str(root / 'vocab'))
    corpus = write_corpus(str(root / 'corpus'))
    pretrain.main(['--corpus', corpus, '--valid_files', 'book3.txt', '--encoder_path',
                   encoder_path, '--bpe_path', bpe_path, '--log_dir', str(root / 'log'),
                   '--save_dir', str(root / 'save'), '--cache_dir', str(root / 'cache'),
                   '--max_updates', '2', '--desc', 'books'] + PRETRAIN_TINY + ['--n_ctx', str(N_CTX)])
    import transformers
    hub = root / 'hub'
    config = transformers.OpenAIGPTConfig(vocab_size=n_vocab, n_positions=N_CTX, n_embd=N_EMBD,
                                          n_layer=2, n_head=2)
    transformers.OpenAIGPTLMHeadModel(config).save_pretrained(str(hub / 'model'))
    # the vocabulary beside it as the Hub's copy has it (transformers 5's tokenizers
    # save tokenizer.json alone)
    shutil.copy(encoder_path, hub / 'model' / 'vocab.json')
    shutil.copy(bpe_path, hub / 'model' / 'merges.txt')
    rng = np.random.default_rng(0)
    stories = datasets.write_story_cloze(str(root / 'stories'), 40, 12, rng)
    # zeroshot.py's ROCStories holds out OpenAI's 374 validation stories
    cloze = datasets.write_story_cloze(str(root / 'cloze' / 'rocstories'), 380, 12, rng)
    return dict(pretrain=root / 'save' / 'books', hub=hub, stories=stories, cloze=cloze,
                root=root)


@pytest.mark.parametrize('kind', ['pretrain', 'hub'])
def test_every_script_finds_the_vocabulary_in_the_folder(folders, kind, tmp_path, capsys):
    save, model_dir = folders[kind], str(folders[kind] / 'model')
    assert find_vocabulary(model_dir) == (os.path.join(model_dir, 'vocab.json'),
                                          os.path.join(model_dir, 'merges.txt'))
    generate.main(['the cat', '--model_dir', model_dir, '--length', '3', '--device', 'cpu'])
    assert capsys.readouterr().out.startswith('the cat')
    scores, _ = zeroshot.main(['--task', 'rocstories', '--split', 'test', '--data_dir',
                               folders['cloze'], '--model_dir', model_dir, '--device', 'cpu'])
    assert 0 <= scores['acc'] <= 100
    tiny = list(TRAIN_TINY)
    tiny[tiny.index('--n_embd') + 1] = str(N_EMBD)
    train.main(['--data_dir', folders['stories'], '--model_dir', model_dir, '--n_transfer', '2',
                '--n_ctx', str(N_CTX), '--log_dir', str(tmp_path / 'log'), '--save_dir',
                str(tmp_path / 'save'), '--submission_dir', str(tmp_path / 'sub'),
                '--cache_dir', str(tmp_path / 'cache'), '--n_valid', '8', '--n_iter', '1',
                '--device', 'cpu', '--desc', 'fine'] + tiny)
    assert read_log(tmp_path / 'log' / 'fine.jsonl')[-1]['n_updates'] == 4
    pretrain.main(['--corpus', str(folders['root'] / 'corpus'), '--valid_files', 'book3.txt',
                   '--init_from', model_dir, '--log_dir', str(tmp_path / 'log'),
                   '--save_dir', str(tmp_path / 'save'), '--cache_dir', str(tmp_path / 'cache'),
                   '--max_updates', '2', '--desc', 'more'] + PRETRAIN_TINY + ['--n_ctx', str(N_CTX)])
    assert read_log(tmp_path / 'log' / 'more.jsonl')[-1]['n_updates'] == 2
    # experiments.py scores save/{desc}/model/ without snapshots/: pretrain.py's update
    # count comes from its checkpoint, the other's from --final_updates
    argv = ['zeroshot', '--snapshots', str(save), '--data_dir', str(folders['root'] / 'cloze'),
            '--tasks', 'rocstories', '--split', 'test', '--out', str(tmp_path / 'exp'),
            '--device', 'cpu'] + (['--final_updates', '9'] if kind == 'hub' else [])
    experiments.main(argv)
    found = experiments.Ledger(str(tmp_path / 'exp')).read(
        'zeroshot-rocstories-update_' + ('00000002' if kind == 'pretrain' else '00000009'))
    assert found['scores'] == scores


def test_a_damaged_snapshot_is_refused_before_any_scoring(folders, tmp_path, capsys,
                                                          monkeypatch):
    save = tmp_path / 'save'
    shutil.copytree(folders['pretrain'], save)
    snapshot = save / 'snapshots' / 'update_00000001'
    shutil.copytree(save / 'model', snapshot)
    weights = snapshot / 'model.safetensors'
    weights.write_bytes(weights.read_bytes()[:200])
    monkeypatch.setattr(zeroshot, 'evaluate', lambda *a: pytest.fail('scored'))
    _, line = one_error(experiments.main, [
        'zeroshot', '--snapshots', str(save), '--data_dir', str(folders['root'] / 'cloze'),
        '--tasks', 'rocstories', '--out', str(tmp_path / 'exp'), '--device', 'cpu'], capsys)
    assert str(weights) in line
