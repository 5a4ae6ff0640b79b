"""Weights across tools: transformers' OpenAIGPT checkpoints in (load_openai_pretrained_model)
and out (export.py), the safetensors files of save_params, the Hub's vocabulary files."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import text_utils
import export
import model_pytorch as mp
from model_pytorch import (Config, DoubleHeadModel, TransformerModel, block_param_names,
                           load_openai_pretrained_model, load_params, save_params,
                           weights_layout)
from conftest import fails
from openai_shards import published_shapes, write_shards

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = Config(n_embd=32, n_head=4, n_layer=2, embd_pdrop=0.1, attn_pdrop=0.1,
               resid_pdrop=0.1, clf_pdrop=0.1, afn='gelu')
SIZES = {'small': (SMALL, 103, 16), 'default': (mp.DEFAULT_CONFIG, 40478, 512)}
HEADS = ['OpenAIGPTModel', 'OpenAIGPTLMHeadModel', 'OpenAIGPTDoubleHeadsModel']


@pytest.fixture(scope='module')
def tm():
    """test_model, whose helpers compare against transformers: the tests that take it
    skip without transformers, as test_model does."""
    pytest.importorskip('transformers')
    import test_model
    return test_model


def hf_model(tm, cls, cfg, n_tok, n_ctx, seed=0):
    """A transformers model of class cls, in eval mode, its weights far from their start
    (test_model.randomize)."""
    torch.manual_seed(seed)
    config = tm.transformers.OpenAIGPTConfig(
        vocab_size=n_tok, n_positions=n_ctx, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, afn=cfg.afn, num_labels=1)
    model = getattr(tm.transformers, cls)(config).eval()
    tm.randomize(model)
    return model


def save_hf(model, folder, weights='model.safetensors'):
    """save_pretrained, or for pytorch_model.bin (which transformers 5 no longer writes)
    its config and torch.save of its state_dict, as earlier versions wrote it."""
    if weights == 'model.safetensors':
        model.save_pretrained(folder)
    else:
        model.config.save_pretrained(folder)
        torch.save(model.state_dict(), os.path.join(folder, weights))
    return str(folder)


def hf_outputs(hf, ids, clf_pos):
    """Hidden states, and the logits of the model's heads, for (batch, choices, seq) ids."""
    flat = ids.view(-1, ids.size(-1))
    body = getattr(hf, 'transformer', hf)
    out = {'h': body(input_ids=flat).last_hidden_state}
    if hasattr(hf, 'lm_head'):
        out['lm'] = hf(input_ids=flat).logits
    if hasattr(hf, 'multiple_choice_head'):
        out['mc'] = hf(input_ids=ids, mc_token_ids=clf_pos).mc_logits
    return out


def assert_same_function(tm, ours, hf, n_tok, n_ctx):
    """Our DoubleHeadModel against a transformers model, on a batch of stories whose
    classify token is the last BPE id (our model then has no special rows)."""
    x, ids, clf_pos = tm.story_batch(n_tok, n_ctx, n_tok - 1)
    with torch.no_grad():
        expected = hf_outputs(hf, ids, clf_pos)
        h = ours.transformer(x)
        lm_logits, mc_logits = ours(x)
    tm.assert_rel_close(h, expected['h'])
    if 'lm' in expected:
        tm.assert_rel_close(lm_logits[:, :n_tok],
                            expected['lm'][:, :-1].reshape(-1, n_tok))
    if 'mc' in expected:
        tm.assert_rel_close(mc_logits, expected['mc'])


@pytest.mark.parametrize('size, weights', [('small', 'model.safetensors'),
                                           ('small', 'pytorch_model.bin'),
                                           ('default', 'model.safetensors')])
def test_double_heads_checkpoint_loads_as_the_same_function(tm, tmp_path, size, weights):
    cfg, n_tok, n_ctx = SIZES[size]
    hf = hf_model(tm, 'OpenAIGPTDoubleHeadsModel', cfg, n_tok, n_ctx)
    path = save_hf(hf, tmp_path, weights)
    ours = DoubleHeadModel(cfg, n_tok - 1, 'multiple_choice', vocab=n_tok + n_ctx,
                           n_ctx=n_ctx).eval()
    load_openai_pretrained_model(ours, n_special=0, n_embd=cfg.n_embd, path=path)
    # The loader takes the body, as from OpenAI's release; the task head starts afresh,
    # so the test copies transformers' head to compare the whole function.
    with torch.no_grad():
        ours.task_head.linear.weight.copy_(hf.multiple_choice_head.summary.weight)
        ours.task_head.linear.bias.copy_(hf.multiple_choice_head.summary.bias)
    assert_same_function(tm, ours, hf, n_tok, n_ctx)


@pytest.mark.parametrize('cls', HEADS[:2])
def test_base_and_lm_head_checkpoints_load(tm, tmp_path, cls):
    cfg, n_tok, n_ctx = SIZES['small']
    hf = hf_model(tm, cls, cfg, n_tok, n_ctx)
    path = save_hf(hf, tmp_path)
    ours = DoubleHeadModel(cfg, n_tok - 1, 'multiple_choice', vocab=n_tok + n_ctx,
                           n_ctx=n_ctx).eval()
    load_openai_pretrained_model(ours, n_embd=cfg.n_embd, path=path)
    assert_same_function(tm, ours, hf, n_tok, n_ctx)


@pytest.fixture(scope='module')
def hf_folder(tm, tmp_path_factory):
    """A small OpenAIGPTLMHeadModel saved by transformers, and its tensors by our names."""
    cfg, n_tok, n_ctx = SIZES['small']
    hf = hf_model(tm, 'OpenAIGPTLMHeadModel', cfg, n_tok, n_ctx)
    path = save_hf(hf, tmp_path_factory.mktemp('hf'))
    body = hf.transformer.state_dict()
    tensors = {name: body[mp.transformers_name(name)] for name in block_param_names(2)}
    return path, body['tokens_embed.weight'], body['positions_embed.weight'], tensors


@pytest.mark.parametrize('n_transfer', [0, 1, 2])
def test_n_ctx_n_special_and_n_transfer(hf_folder, n_transfer):
    path, tokens, positions, tensors = hf_folder
    n_tok = tokens.size(0)
    model = TransformerModel(SMALL, vocab=n_tok + 3 + 5, n_ctx=5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    np.random.seed(7)
    load_openai_pretrained_model(model, n_ctx=5, n_special=3, n_transfer=n_transfer,
                                 n_embd=32, path=path)
    we = model.embed.weight.detach()
    np.random.seed(7)
    special = (np.random.randn(3, 32) * 0.02).astype(np.float32)
    assert torch.equal(we[:n_tok], tokens)
    assert torch.equal(we[n_tok:n_tok + 3], torch.from_numpy(special))
    assert torch.equal(we[n_tok + 3:], positions[:5])
    loaded = set(block_param_names(n_transfer))
    for name, p in model.named_parameters():
        if name.startswith('h.'):
            assert torch.equal(p, tensors[name] if name in loaded else before[name]), name


def test_model_with_fewer_blocks_takes_the_first(hf_folder):
    path, _, _, tensors = hf_folder
    model = TransformerModel(Config(SMALL, n_layer=1), vocab=103 + 16, n_ctx=16)
    load_openai_pretrained_model(model, n_embd=32, path=path)
    for name, p in model.named_parameters():
        if name.startswith('h.'):
            assert torch.equal(p, tensors[name]), name


def test_n_transfer_minus_one_loads_nothing_and_draws_the_special_rows(hf_folder):
    path, _, _, _ = hf_folder
    model = TransformerModel(SMALL, vocab=103 + 3 + 16, n_ctx=16)
    before = [p.detach().clone() for p in model.parameters()]
    np.random.seed(3)
    load_openai_pretrained_model(model, n_special=3, n_transfer=-1, n_embd=32, path=path)
    after_load = np.random.rand()
    np.random.seed(3)
    np.random.randn(3, 32)
    assert after_load == np.random.rand()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_config_that_disagrees_names_the_difference(hf_folder):
    path, _, _, _ = hf_folder
    narrow = TransformerModel(Config(SMALL, n_embd=16, n_head=4), vocab=103 + 16, n_ctx=16)
    with pytest.raises(ValueError, match=r'config\.json describes another model: n_embd 32 '
                                         'there, 16 in the model'):
        load_openai_pretrained_model(narrow, n_embd=16, path=path)
    deep = TransformerModel(Config(SMALL, n_layer=3), vocab=103 + 16, n_ctx=16)
    with pytest.raises(ValueError, match=r'n_transfer=12 and the model has 3 blocks, but the '
                                         r'weights in .* hold 2 \(n_layer=2\)'):
        load_openai_pretrained_model(deep, n_embd=32, path=path)
    heads = TransformerModel(Config(SMALL, n_head=2, afn='relu'), vocab=103 + 16, n_ctx=16)
    with pytest.raises(ValueError, match="n_head 4 there, 2 in the model, afn 'gelu' there, "
                                         "'relu' in the model"):
        load_openai_pretrained_model(heads, n_embd=32, path=path)
    load_openai_pretrained_model(heads, n_embd=32, n_transfer=0, path=path)  # no blocks


def test_embedding_size_and_n_ctx_errors(hf_folder):
    path, _, _, _ = hf_folder
    with pytest.raises(ValueError, match=r'embed.weight: the model has shape \(119, 32\), the '
                                         r'weights give \(122, 32\)'):
        load_openai_pretrained_model(TransformerModel(SMALL, vocab=103 + 16, n_ctx=16),
                                     n_special=3, n_embd=32, path=path)
    with pytest.raises(ValueError, match='n_ctx=20: the pretrained model has 16 positions'):
        load_openai_pretrained_model(TransformerModel(SMALL, vocab=103 + 20, n_ctx=20),
                                     n_ctx=20, n_embd=32, path=path)


def test_rows_beyond_the_vocabulary_are_not_bpe_tokens(hf_folder, tmp_path):
    """An export's tokens_embed ends with its special rows: the BPE rows are as many as
    vocab.json has entries, or without one, vocab_size less config.json's n_special."""
    path, tokens, positions, _ = hf_folder
    state = load_file(os.path.join(path, 'model.safetensors'))
    config = json.load(open(os.path.join(path, 'config.json')))
    extra = torch.randn(2, 32)
    state['transformer.tokens_embed.weight'] = torch.cat([tokens, extra])
    save_file(state, str(tmp_path / 'model.safetensors'))
    (tmp_path / 'config.json').write_text(json.dumps({**config, 'vocab_size': 105}))
    (tmp_path / 'vocab.json').write_text(json.dumps({f't{i}': i for i in range(103)}))
    for n_special in (2, 0):
        model = TransformerModel(SMALL, vocab=103 + n_special + 16, n_ctx=16)
        load_openai_pretrained_model(model, n_special=n_special, n_embd=32, path=str(tmp_path))
        assert torch.equal(model.embed.weight[:103].detach(), tokens)
        if n_special:
            assert not torch.equal(model.embed.weight[103:105].detach(), extra)
        assert torch.equal(model.embed.weight[103 + n_special:].detach(), positions)
    os.remove(tmp_path / 'vocab.json')
    (tmp_path / 'config.json').write_text(json.dumps({**config, 'vocab_size': 105,
                                                      'n_special': 2}))
    model = TransformerModel(SMALL, vocab=103 + 16, n_ctx=16)
    load_openai_pretrained_model(model, n_special=0, n_embd=32, path=str(tmp_path))
    assert torch.equal(model.embed.weight[:103].detach(), tokens)
    (tmp_path / 'vocab.json').write_text(json.dumps({f't{i}': i for i in range(106)}))
    with pytest.raises(ValueError, match='vocab.json has 106 tokens, but the checkpoint in '
                                         '.* embeds 105'):
        load_openai_pretrained_model(model, n_embd=32, path=str(tmp_path))


def test_weights_layout(tmp_path):
    def layout():
        found, missing = weights_layout(str(tmp_path))
        return found, [os.path.basename(p) for p in missing]
    openai = ['params_shapes.json'] + mp.SHARD_NAMES
    assert layout() == (None, openai)
    assert weights_layout(str(tmp_path / 'absent'))[0] is None
    (tmp_path / 'config.json').write_text('{}')
    assert layout() == ('transformers', ['model.safetensors'])
    (tmp_path / 'pytorch_model.bin').write_bytes(b'')
    assert layout() == ('transformers', [])
    (tmp_path / 'params_shapes.json').write_text('[]')
    assert layout() == ('transformers', [])  # a complete layout before an incomplete one
    os.remove(tmp_path / 'pytorch_model.bin')
    assert layout() == ('openai', mp.SHARD_NAMES)
    write_shards(tmp_path, published_shapes(n_layer=1, n_embd=8, n_vocab=10, n_ctx=4))
    assert layout() == ('openai', [])


def test_folder_with_neither_layout_names_both(tmp_path):
    (tmp_path / 'notes.txt').write_text('weights elsewhere')
    model = TransformerModel(SMALL, vocab=50, n_ctx=8)
    with pytest.raises(FileNotFoundError) as err:
        load_openai_pretrained_model(model, n_embd=32, path=str(tmp_path))
    message = str(err.value)
    for name in ('params_shapes.json', 'config.json'):
        assert os.path.join(str(tmp_path), name) in message
    assert 'model.safetensors or pytorch_model.bin' in message
    assert 'download.py --from hub' in message and 'finetune-transformer-lm' in message
    (tmp_path / 'config.json').write_text('{}')
    with pytest.raises(FileNotFoundError, match=r'model\.safetensors not found: a transformers'):
        load_openai_pretrained_model(model, n_embd=32, path=str(tmp_path))


def test_checkpoint_that_is_not_openai_gpt(tmp_path):
    (tmp_path / 'config.json').write_text(json.dumps(dict(n_embd=32, n_layer=2, n_head=4)))
    save_file({'wte.weight': torch.zeros(3, 32)}, str(tmp_path / 'model.safetensors'))
    model = TransformerModel(SMALL, vocab=50, n_ctx=8)
    with pytest.raises(ValueError, match=r'model\.safetensors has no tensor tokens_embed\.weight'):
        load_openai_pretrained_model(model, n_embd=32, path=str(tmp_path))
    (tmp_path / 'model.safetensors').write_bytes(b'{"not": "safetensors"}')
    with pytest.raises(ValueError, match=r'model\.safetensors is not a checkpoint of '
                                         'transformers'):
        load_openai_pretrained_model(model, n_embd=32, path=str(tmp_path))
    (tmp_path / 'config.json').write_text('<html>')
    with pytest.raises(ValueError, match=r'config\.json is not the config\.json of a checkpoint'):
        load_openai_pretrained_model(model, n_embd=32, path=str(tmp_path))


# Our fine-tuned model out to transformers.

N_SPECIAL = 3


def fine_tuned(tm, cfg, n_vocab, n_ctx, head='multiple_choice'):
    """A DoubleHeadModel as train.py leaves it, its weights far from their start, and the
    settings train.py records."""
    torch.manual_seed(1)
    clf_token = n_vocab + N_SPECIAL - 1
    model = DoubleHeadModel(cfg, clf_token, head, vocab=n_vocab + N_SPECIAL + n_ctx,
                            n_ctx=n_ctx).eval()
    tm.randomize(model)
    meta = dict(cfg=dict(cfg), n_vocab=n_vocab, n_special=N_SPECIAL, n_ctx=n_ctx,
                clf_token=clf_token, task_head_type=head)
    return model, meta


@pytest.mark.parametrize('size', ['small', 'default'])
def test_export_loads_in_transformers_as_the_same_function(tm, tmp_path, size):
    cfg, n_vocab, n_ctx = SIZES[size]
    ours, meta = fine_tuned(tm, cfg, n_vocab, n_ctx)
    save_params(tmp_path / 'best_params.safetensors', ours, **meta)
    out = str(tmp_path / 'hf')
    export.export(str(tmp_path / 'best_params.safetensors'), out)
    n_tok = n_vocab + N_SPECIAL
    config = json.load(open(os.path.join(out, 'config.json')))
    assert (config['vocab_size'], config['n_positions'], config['n_special']) == (n_tok, n_ctx, 3)
    for cls in HEADS[1:]:
        hf = getattr(tm.transformers, cls).from_pretrained(out).eval()
        assert_same_function(tm, ours, hf, n_tok, n_ctx)


def test_export_with_vocabulary_and_back(tm, tmp_path, capsys):
    """The tokenizer files go alongside; load_openai_pretrained_model takes the export as
    pretrained weights: its BPE rows, positions and blocks, the special rows drawn afresh."""
    cfg, n_vocab, n_ctx = SIZES['small']
    ours, meta = fine_tuned(tm, cfg, n_vocab, n_ctx)
    save_params(tmp_path / 'best.safetensors', ours, **meta)
    encoder = tmp_path / 'encoder.json'
    encoder.write_text(json.dumps({f'p{i}': i for i in range(n_vocab)}))
    bpe = tmp_path / 'vocab.bpe'
    bpe.write_text('#version: 0.2\np 1\n')
    out = tmp_path / 'hf'
    export.main(['--checkpoint', str(tmp_path / 'best.safetensors'), '--out', str(out),
                 '--encoder_path', str(encoder), '--bpe_path', str(bpe)])
    assert (out / 'vocab.json').read_bytes() == encoder.read_bytes()
    assert (out / 'merges.txt').read_bytes() == bpe.read_bytes()
    assert sorted(os.listdir(out)) == ['config.json', 'merges.txt', 'model.safetensors',
                                       'vocab.json']
    assert 'not exported' not in capsys.readouterr().out
    back = DoubleHeadModel(cfg, meta['clf_token'], 'multiple_choice',
                           vocab=n_vocab + N_SPECIAL + n_ctx, n_ctx=n_ctx)
    load_openai_pretrained_model(back, n_special=N_SPECIAL, n_embd=cfg.n_embd, path=str(out))
    we, original = back.transformer.embed.weight, ours.transformer.embed.weight
    assert torch.equal(we[:n_vocab], original[:n_vocab])
    assert torch.equal(we[n_vocab + N_SPECIAL:], original[n_vocab + N_SPECIAL:])
    assert not torch.equal(we[n_vocab:n_vocab + N_SPECIAL], original[n_vocab:n_vocab + N_SPECIAL])
    for name in block_param_names(cfg.n_layer):
        assert torch.equal(back.transformer.get_parameter(name),
                           ours.transformer.get_parameter(name)), name


def test_other_task_heads_export_body_and_lm_head(tm, tmp_path, capsys):
    cfg, n_vocab, n_ctx = SIZES['small']
    ours, meta = fine_tuned(tm, cfg, n_vocab, n_ctx, head='similarity')
    save_params(tmp_path / 'best.safetensors', ours, **meta)
    export.export(str(tmp_path / 'best.safetensors'), str(tmp_path / 'hf'))
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["export.py: task head 'similarity' not exported, since transformers' "
                     "OpenAIGPT models have a multiple-choice head only; the body and the LM "
                     'head are exported']
    hf = tm.transformers.OpenAIGPTLMHeadModel.from_pretrained(str(tmp_path / 'hf')).eval()
    assert_same_function(tm, ours, hf, n_vocab + N_SPECIAL, n_ctx)
    tensors = load_file(str(tmp_path / 'hf' / 'model.safetensors'))
    assert not [name for name in tensors if 'multiple_choice' in name]


def tiny_checkpoint(path, n_vocab=10):
    model = DoubleHeadModel(SMALL, 5, 'multiple_choice', vocab=n_vocab + N_SPECIAL + 8, n_ctx=8)
    save_params(path, model, cfg=dict(SMALL), n_vocab=n_vocab, n_special=N_SPECIAL, n_ctx=8,
                task_head_type='multiple_choice')
    return model


def test_export_errors(tmp_path, capsys):
    model = tiny_checkpoint(tmp_path / 'best.safetensors')
    (tmp_path / 'enc.json').write_text(json.dumps({'a': 0}))
    (tmp_path / 'vocab.bpe').write_text('#version: 0.2\na b\n')
    args = ['--checkpoint', str(tmp_path / 'best.safetensors'), '--out', str(tmp_path / 'hf')]
    with pytest.raises(SystemExit, match='enc.json holds 1 tokens but the model was trained '
                                         'with 10'):
        export.main(args + ['--encoder_path', str(tmp_path / 'enc.json'), '--bpe_path',
                            str(tmp_path / 'vocab.bpe')])
    with pytest.raises(SystemExit, match='vocab.bpe is not valid JSON'):
        export.main(args + ['--encoder_path', str(tmp_path / 'vocab.bpe'), '--bpe_path',
                            str(tmp_path / 'vocab.bpe')])
    code, _, err = fails(args + ['--encoder_path', str(tmp_path / 'enc.json')], capsys,
                         main=export.main)
    assert code == 2 and err == ('export.py: error: --encoder_path and --bpe_path go together: '
                                 'give both (the vocabulary train.py used) or neither (--help '
                                 'lists the flags)\n')
    save_params(tmp_path / 'best.safetensors', model, n_vocab=10)
    with pytest.raises(SystemExit, match=r"lacks the settings \['cfg', 'n_special', 'n_ctx'\]"):
        export.main(args)
    assert not os.path.exists(tmp_path / 'hf')
    done = subprocess.run([sys.executable, 'export.py', '--checkpoint',
                           str(tmp_path / 'nothing.safetensors'), '--out', str(tmp_path / 'hf')],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 1 and 'Traceback' not in done.stderr
    assert done.stderr.strip().endswith(f"No such file or directory: "
                                        f"'{tmp_path / 'nothing.safetensors'}'")


def folder_bytes(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


@pytest.fixture
def earlier_export(tmp_path):
    """(argv, out): an export with its vocabulary and a file of the user's in out, and
    the flags of a new export, without vocabulary, from another checkpoint."""
    tiny_checkpoint(tmp_path / 'old.safetensors', n_vocab=2)
    (tmp_path / 'enc.json').write_text(json.dumps({'a': 0, 'b': 1}))
    (tmp_path / 'vocab.bpe').write_text('#version: 0.2\na b\n')
    out = tmp_path / 'hf'
    export.main(['--checkpoint', str(tmp_path / 'old.safetensors'), '--out', str(out),
                 '--encoder_path', str(tmp_path / 'enc.json'), '--bpe_path',
                 str(tmp_path / 'vocab.bpe')])
    (out / 'notes.txt').write_text('mine')
    tiny_checkpoint(tmp_path / 'new.safetensors')
    return ['--checkpoint', str(tmp_path / 'new.safetensors'), '--out', str(out)], out


def test_export_refuses_a_folder_that_holds_files(earlier_export, capsys):
    argv, out = earlier_export
    before = folder_bytes(out)
    code, _, err = fails(argv, capsys, main=export.main)
    assert code == 'export.py: error: --out {} already holds files (config.json, merges.txt, ' \
                   'model.safetensors, notes.txt, vocab.json): choose another folder, or add ' \
                   '--overwrite to replace it whole'.format(out)
    assert 'Traceback' not in err
    assert folder_bytes(out) == before
    assert sorted(os.listdir(out.parent)) == ['enc.json', 'hf', 'new.safetensors',
                                              'old.safetensors', 'vocab.bpe']


def test_overwrite_replaces_the_folder_whole(earlier_export, capsys):
    """No file of the earlier export stays: its tokenizer would not be the new weights'."""
    argv, out = earlier_export
    export.main(argv + ['--overwrite'])
    assert sorted(os.listdir(out)) == ['config.json', 'model.safetensors']
    assert json.loads((out / 'config.json').read_text())['vocab_size'] == 10 + N_SPECIAL
    assert sorted(os.listdir(out.parent)) == ['enc.json', 'hf', 'new.safetensors',
                                              'old.safetensors', 'vocab.bpe']


def test_a_failed_overwrite_leaves_the_earlier_export(earlier_export, capsys, monkeypatch):
    argv, out = earlier_export
    before = folder_bytes(out)

    def full(fd):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(os, 'fsync', full)
    code, _, _ = fails(argv + ['--overwrite'], capsys, main=export.main)
    assert code == f"export.py: error: [Errno 28] No space left on device: '{out}'"
    assert folder_bytes(out) == before
    assert sorted(os.listdir(out.parent)) == ['enc.json', 'hf', 'new.safetensors',
                                              'old.safetensors', 'vocab.bpe']


def test_export_into_an_empty_folder_or_over_a_file(tmp_path, capsys):
    tiny_checkpoint(tmp_path / 'best.safetensors')
    (tmp_path / 'empty').mkdir()
    argv = ['--checkpoint', str(tmp_path / 'best.safetensors'), '--out']
    export.main(argv + [str(tmp_path / 'empty')])
    assert sorted(os.listdir(tmp_path / 'empty')) == ['config.json', 'model.safetensors']
    (tmp_path / 'file').write_text('x')
    code, _, _ = fails(argv + [str(tmp_path / 'file'), '--overwrite'], capsys, main=export.main)
    assert code == f"export.py: error: --out {tmp_path / 'file'} is a file, not a folder"
    assert (tmp_path / 'file').read_text() == 'x'


# Parameters files.

def tiny_model():
    torch.manual_seed(0)
    return DoubleHeadModel(SMALL, 12, 'multiple_choice', vocab=13 + 8, n_ctx=8)


META = dict(cfg=dict(SMALL), n_vocab=10, n_special=3, n_ctx=8, clf_token=12,
            task_head_type=('classification', 2), note='ünïcode')


def test_save_and_load_params_round_trip(tmp_path):
    model = tiny_model()
    path = tmp_path / 'best_params.safetensors'
    save_params(path, model, **META)
    meta, state = load_params(path)
    assert meta == {**META, 'task_head_type': ['classification', 2]}  # JSON has no tuples
    original = model.state_dict()
    assert state.keys() == original.keys()
    for name, value in original.items():
        assert torch.equal(state[name], value), name
    assert state['lm_head.decoder.weight'] is state['transformer.embed.weight']
    fresh = DoubleHeadModel(SMALL, 12, 'multiple_choice', vocab=13 + 8, n_ctx=8)
    fresh.load_state_dict(state)
    assert fresh.lm_head.decoder.weight is fresh.transformer.embed.weight
    # safetensors alone reads it: the tied decoder is stored once, under the first name
    alone = load_file(path)
    assert alone.keys() == original.keys() - {'lm_head.decoder.weight'}
    assert not [n for n in os.listdir(tmp_path) if n != 'best_params.safetensors']


def test_legacy_torch_file_still_loads(tmp_path):
    model = tiny_model()
    path = tmp_path / 'best_params.pt'
    torch.save({'meta': META, 'model': model.state_dict()}, path)  # what save_params wrote
    meta, state = load_params(path)
    assert meta == META
    assert all(torch.equal(state[n], v) for n, v in model.state_dict().items())


@pytest.mark.parametrize('kind', ['truncated', 'garbage', 'empty', 'truncated torch',
                                  'foreign safetensors'])
def test_broken_parameters_files_name_the_file(tmp_path, kind):
    path = tmp_path / 'best_params.safetensors'
    if kind == 'truncated torch':
        torch.save({'meta': META, 'model': tiny_model().state_dict()}, path)
    else:
        save_params(path, tiny_model(), **META)
    data = path.read_bytes()
    if kind == 'foreign safetensors':
        save_file({'w': torch.zeros(2)}, str(path))
    else:
        path.write_bytes({'truncated': data[:-100], 'truncated torch': data[:-100],
                          'garbage': b'<html>rate limited</html>' * 4, 'empty': b''}[kind])
    with pytest.raises(ValueError) as err:
        load_params(path)
    message = str(err.value)
    assert message.startswith(f'{path} is not a parameters file of this project')
    assert '\n' not in message


def test_missing_parameters_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing.safetensors'):
        load_params(tmp_path / 'nothing.safetensors')


def test_importing_model_pytorch_needs_torch_and_numpy_only():
    code = ('import sys, model_pytorch; '
            'print(sorted(m for m in ("safetensors", "transformers") if m in sys.modules))')
    done = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == '[]'


# The Hub's vocabulary files.

def test_text_encoder_reads_the_hubs_vocab_and_merges(tmp_path):
    """The Hub's vocab.json and merges.txt are OpenAI's encoder_bpe_40000.json and
    vocab_40000.bpe: a JSON map of pieces to ids, and merges after a '#version: 0.2'
    header line, which is no merge."""
    from text_utils import TextEncoder
    pieces = ['t', 'h', 'e', 'the</w>', 'th', 'a</w>', 'e</w>']
    (tmp_path / 'vocab.json').write_text(json.dumps({p: i for i, p in enumerate(pieces)}))
    (tmp_path / 'merges.txt').write_text('#version: 0.2\nt h\nth e</w>\n')
    encoder_path, bpe_path = text_utils.find_vocabulary(str(tmp_path))
    assert (encoder_path, bpe_path) == (str(tmp_path / 'vocab.json'), str(tmp_path / 'merges.txt'))
    text_encoder = TextEncoder(encoder_path, bpe_path)
    assert ('#version:', '0.2') not in text_encoder.bpe_ranks
    assert text_encoder.encode(['the a the'], verbose=False) == [[3, 5, 3]]


def test_vocabulary_paths_prefer_openais_names(tmp_path):
    openai = (str(tmp_path / 'encoder_bpe_40000.json'), str(tmp_path / 'vocab_40000.bpe'))
    assert text_utils.find_vocabulary(str(tmp_path)) == openai  # neither: name OpenAI's
    (tmp_path / 'vocab.json').write_text('{}')
    assert text_utils.find_vocabulary(str(tmp_path))[0] == str(tmp_path / 'vocab.json')
    (tmp_path / 'encoder_bpe_40000.json').write_text('{}')
    assert text_utils.find_vocabulary(str(tmp_path)) == openai


@pytest.mark.parametrize('out', ['.', '..'])
@pytest.mark.parametrize('overwrite', [[], ['--overwrite']])
def test_export_refuses_an_out_that_holds_its_inputs(tmp_path, capsys, out, overwrite):
    """A run's folder, or one above it, as --out: replaced, it would take the checkpoint
    read and the run's other files with it."""
    run = tmp_path / 'save' / 'r'
    run.mkdir(parents=True)
    tiny_checkpoint(run / 'best_params.safetensors')
    (run / 'checkpoints').mkdir()
    (run / 'checkpoints' / 'update_00000004.pt').write_bytes(b'mine')
    files = lambda: {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()}
    before = files()
    target = os.path.normpath(str(run / out))
    code, _, err = fails(['--checkpoint', str(run / 'best_params.safetensors'), '--out', target]
                         + overwrite, capsys, main=export.main)
    assert code.startswith(f'export.py: error: --out {target} holds ') and 'best_params' in code
    assert 'Traceback' not in err and files() == before
