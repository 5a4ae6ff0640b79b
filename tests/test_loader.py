"""load_openai_pretrained_model on shards written in OpenAI's exact format."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, real_data
from model_pytorch import (Config, DoubleHeadModel, TransformerModel,
                           block_param_names, load_openai_pretrained_model)
from openai_shards import published_shapes, write_shards

TINY = Config(n_embd=16, n_head=2, n_layer=3, embd_pdrop=0.1, attn_pdrop=0.1,
              resid_pdrop=0.1, clf_pdrop=0.1, afn='gelu')
TINY_VOCAB, TINY_CTX = 30, 20


@pytest.fixture
def tiny_shards(tmp_path):
    shapes = published_shapes(n_layer=3, n_embd=16, n_vocab=TINY_VOCAB, n_ctx=TINY_CTX)
    return str(tmp_path) + '/', write_shards(tmp_path, shapes)


def tiny_model(n_special, n_ctx, n_layer=3):
    cfg = Config(TINY, n_layer=n_layer)
    return TransformerModel(cfg, vocab=TINY_VOCAB + n_special + n_ctx, n_ctx=n_ctx)


def load_tiny(model, path, **kw):
    load_openai_pretrained_model(model, n_embd=16, path=path, **kw)


def test_every_tensor_lands_in_its_module(tiny_shards):
    path, arrays = tiny_shards
    model = tiny_model(n_special=3, n_ctx=7)
    np.random.seed(11)
    load_tiny(model, path, n_ctx=7, n_special=3)
    we = model.embed.weight.detach().numpy()
    np.testing.assert_array_equal(we[:TINY_VOCAB], arrays[1])
    np.testing.assert_array_equal(we[TINY_VOCAB + 3:], arrays[0][:7])
    # special rows: N(0, 0.02) from numpy's generator, as TF's train.py drew them
    np.random.seed(11)
    np.testing.assert_array_equal(we[TINY_VOCAB:TINY_VOCAB + 3],
                                  (np.random.randn(3, 16) * 0.02).astype(np.float32))
    params = dict(model.named_parameters())
    for name, array in zip(block_param_names(3), arrays[2:]):
        np.testing.assert_array_equal(params[name].detach().numpy(), array.reshape(params[name].shape))
        if name.endswith('.w'):
            assert array.shape[0] == 1 and params[name].shape == array.shape[1:]


def test_defaults_keep_all_positions_and_no_special_rows(tiny_shards):
    path, arrays = tiny_shards
    model = tiny_model(n_special=0, n_ctx=TINY_CTX)
    load_tiny(model, path)
    np.testing.assert_array_equal(model.embed.weight[TINY_VOCAB:].detach().numpy(), arrays[0])


@pytest.mark.parametrize('n_transfer', [0, 2])
def test_n_transfer_loads_first_blocks_only(tiny_shards, n_transfer):
    path, arrays = tiny_shards
    model = tiny_model(n_special=0, n_ctx=5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    load_tiny(model, path, n_ctx=5, n_transfer=n_transfer)
    np.testing.assert_array_equal(model.embed.weight[:TINY_VOCAB].detach().numpy(), arrays[1])
    loaded = set(block_param_names(3)[:12 * n_transfer])
    for name, p in model.named_parameters():
        if name.startswith('h.'):
            assert torch.equal(p, before[name]) == (name not in loaded), name


def test_n_transfer_minus_one_loads_nothing(tmp_path):
    model = tiny_model(n_special=0, n_ctx=5)
    before = [p.detach().clone() for p in model.parameters()]
    load_openai_pretrained_model(model, n_transfer=-1, path=str(tmp_path / 'absent'))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize('n_transfer', [-1, 2])
def test_special_rows_consume_numpys_generator_as_openai_does(tiny_shards, n_transfer):
    """OpenAI's train.py draws randn(n_special, n_embd) from numpy's global generator
    before its first shuffle, whatever n_transfer is: the shuffles that follow depend on it."""
    path, _ = tiny_shards
    model = tiny_model(n_special=3, n_ctx=5)
    np.random.seed(42)
    load_openai_pretrained_model(model, n_ctx=5, n_special=3, n_transfer=n_transfer,
                                 n_embd=16, path=path)
    after_load = np.random.permutation(100)
    np.random.seed(42)
    np.random.randn(3, 16)
    np.testing.assert_array_equal(after_load, np.random.permutation(100))


def test_loads_through_double_head_model(tiny_shards):
    path, arrays = tiny_shards
    model = DoubleHeadModel(TINY, 31, 'multiple_choice', vocab=TINY_VOCAB + 3 + 9, n_ctx=9)
    load_tiny(model, path, n_ctx=9, n_special=3)
    np.testing.assert_array_equal(model.transformer.embed.weight[:TINY_VOCAB].detach().numpy(), arrays[1])
    assert model.lm_head.decoder.weight is model.transformer.embed.weight


def test_missing_folder_and_shard(tiny_shards, tmp_path):
    model = tiny_model(n_special=0, n_ctx=5)
    with pytest.raises(FileNotFoundError, match="nowhere.*finetune-transformer-lm"):
        load_tiny(model, str(tmp_path / 'nowhere'), n_ctx=5)
    path, _ = tiny_shards
    os.remove(os.path.join(path, 'params_6.npy'))
    with pytest.raises(FileNotFoundError, match=r"params_6\.npy.*model/ folder of OpenAI"):
        load_tiny(model, path, n_ctx=5)


def test_truncated_and_corrupt_shards(tiny_shards):
    path, _ = tiny_shards
    model = tiny_model(n_special=0, n_ctx=5)
    shard = os.path.join(path, 'params_4.npy')
    data = open(shard, 'rb').read()
    with open(shard, 'wb') as f:
        f.write(data[:-8])
    with pytest.raises(ValueError, match=r'params_4\.npy is truncated or corrupt'):
        load_tiny(model, path, n_ctx=5)
    with open(shard, 'wb') as f:
        f.write(b'<html>rate limited</html>' + data[25:])
    with pytest.raises(ValueError, match=r'params_4\.npy is not a valid \.npy'):
        load_tiny(model, path, n_ctx=5)
    np.save(shard, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r'shards .* hold .* values \(.*params_4.npy: 3.*\), '
                                         'but params_shapes.json lays out'):
        load_tiny(model, path, n_ctx=5)


def test_shape_mismatch_names_parameter(tiny_shards):
    path, _ = tiny_shards
    wide = TransformerModel(Config(TINY, n_embd=24, n_head=2), vocab=TINY_VOCAB + 5, n_ctx=5)
    with pytest.raises(ValueError, match='n_embd=16 but the model is 24 wide'):
        load_tiny(wide, path, n_ctx=5)
    with pytest.raises(ValueError, match=r'embed.weight: the model has shape \(35, 16\), the weights give \(38, 16\)'):
        load_tiny(tiny_model(n_special=0, n_ctx=5), path, n_ctx=5, n_special=3)
    shapes = json.load(open(os.path.join(path, 'params_shapes.json')))
    shapes[2], shapes[3] = [1, 16, 50], [16]  # same total, other split
    json.dump(shapes, open(os.path.join(path, 'params_shapes.json'), 'w'))
    with pytest.raises(ValueError, match=r'h\.0\.attn\.c_attn\.w: the model has shape \(16, 48\), params_shapes.json gives \[1, 16, 50\]'):
        load_tiny(tiny_model(n_special=0, n_ctx=5), path, n_ctx=5)


def test_n_ctx_above_pretrained_positions(tiny_shards):
    path, _ = tiny_shards
    with pytest.raises(ValueError, match='n_ctx=600: the pretrained model has 20 positions'):
        load_tiny(tiny_model(n_special=0, n_ctx=5), path, n_ctx=600)


def test_published_shapes_match_openai_release():
    with open(real_data('openai-model', 'params_shapes.json')) as f:
        assert json.load(f) == published_shapes()


LOAD_FULL = '''
import resource, sys, numpy as np, torch
torch.set_num_threads(1)
from model_pytorch import DEFAULT_CONFIG, DoubleHeadModel, load_openai_pretrained_model
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model = DoubleHeadModel(DEFAULT_CONFIG, 40480, 'multiple_choice', vocab=40478 + 3 + 77, n_ctx=77)
load_openai_pretrained_model(model, n_ctx=77, n_special=3, path=sys.argv[1])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
w = model.transformer.embed.weight
print((peak - base) * 1024, sum(p.numel() * 4 for p in model.parameters()))
np.save(sys.argv[2], np.stack([w[0, :4].detach().numpy(), w[-1, :4].detach().numpy(),
                               model.transformer.h[11].ln_2.b[-4:].detach().numpy()]))
'''


def test_full_published_shapes_in_bounded_memory(tmp_path):
    """The loader at the real size: values in place, and the peak memory of building and
    loading the model stays under twice the weights' size (shards are streamed)."""
    arrays = write_shards(tmp_path / 'model', published_shapes())
    out = tmp_path / 'probe.npy'
    res = subprocess.run([sys.executable, '-c', LOAD_FULL, str(tmp_path / 'model'), str(out)],
                         cwd=REPO, capture_output=True, text=True, check=True)
    grown, weights = map(int, res.stdout.split())
    assert grown < 2 * weights, f'loading grew memory by {grown} bytes for {weights} of weights'
    probe = np.load(out)
    np.testing.assert_array_equal(probe[0], arrays[1][0, :4])
    np.testing.assert_array_equal(probe[1], arrays[0][76, :4])
    np.testing.assert_array_equal(probe[2], arrays[-1][-4:])
