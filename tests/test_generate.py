"""generate.py on a tiny random model and a tiny BPE vocabulary in OpenAI's format."""
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import export
import generate
from conftest import REPO, fails
from model_pytorch import Config, DoubleHeadModel, save_params
from openai_shards import published_shapes, write_shards

CFG = Config(n_embd=16, n_head=2, n_layer=2, embd_pdrop=0.1, attn_pdrop=0.1,
             resid_pdrop=0.1, clf_pdrop=0.1, afn='gelu')
LETTERS = 'abcdefgh'
# OpenAI's format: pieces inside a word, pieces ending one ('</w>'), and merged pieces.
PIECES = (list(LETTERS) + [c + '</w>' for c in LETTERS] + ['ab', 'ab</w>'])
N_VOCAB, N_SPECIAL, N_CTX = len(PIECES), 3, 6
CLF_TOKEN = N_VOCAB + 2
PROMPT = [0, 9, 2]  # a b</w> c: three tokens, so that ten more overflow n_ctx


@pytest.fixture(scope='module')
def double_head():
    torch.manual_seed(0)
    model = DoubleHeadModel(CFG, CLF_TOKEN, 'multiple_choice',
                            vocab=N_VOCAB + N_SPECIAL + N_CTX, n_ctx=N_CTX).eval()
    # Wider than the N(0, 0.02) init, so that the next token depends on the context.
    torch.nn.init.normal_(model.transformer.embed.weight, std=1.0)
    return model


@pytest.fixture(scope='module')
def checkpoint(double_head, tmp_path_factory):
    path = str(tmp_path_factory.mktemp('save') / 'best_params.safetensors')
    save_params(path, double_head, cfg=dict(CFG), n_vocab=N_VOCAB, n_special=N_SPECIAL,
                n_ctx=N_CTX, clf_token=CLF_TOKEN, task_head_type='multiple_choice')
    return path


def write_vocab(folder, pieces=PIECES):
    encoder_path, bpe_path = str(folder / 'encoder.json'), str(folder / 'vocab.bpe')
    with open(encoder_path, 'w') as f:
        json.dump({piece: i for i, piece in enumerate(pieces)}, f)
    with open(bpe_path, 'w') as f:
        f.write('#version: 0.2\na b\n')
    return encoder_path, bpe_path


@pytest.fixture(scope='module')
def vocab(tmp_path_factory):
    return write_vocab(tmp_path_factory.mktemp('vocab'))


@pytest.fixture
def lm(checkpoint):
    return generate.load_lm(checkpoint)


def window_input(window):
    """(1, seq, 2): the tokens of window and their positions, numbered from 0."""
    return torch.tensor([[[t, N_VOCAB + N_SPECIAL + i] for i, t in enumerate(window)]])


def greedy_reference(double_head, prompt, length):
    """Argmax over the text tokens of the LM logits, the last N_CTX tokens in view."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(length):
            h = double_head.transformer(window_input(ids[-N_CTX:]))[0, -1]
            logits = h @ double_head.transformer.embed.weight.T
            ids.append(int(logits[:N_VOCAB].argmax()))
    return ids[len(prompt):]


@pytest.mark.parametrize('top_k, temperature', [(1, 1.0), (1, 0.3), (0, 0), (5, 0)])
@pytest.mark.parametrize('use_cache', [True, False])
def test_greedy_across_the_context_window(lm, double_head, top_k, temperature, use_cache):
    """top_k=1, or temperature 0, is greedy decoding, with or without the cache."""
    model, dims = lm
    assert dims == dict(n_vocab=N_VOCAB, n_special=N_SPECIAL, n_ctx=N_CTX)
    expected = greedy_reference(double_head, PROMPT, 10)
    assert len(set(expected)) > 1  # a test that a constant output could not pass
    got = generate.sample(model, PROMPT, 10, **dims, top_k=top_k, temperature=temperature,
                          use_cache=use_cache)
    assert got == expected


def test_checkpoint_loads_the_lm_parts(lm, double_head):
    model, _ = lm
    assert not model.training
    state = model.state_dict()
    for name, value in double_head.state_dict().items():
        if not name.startswith('task_head.'):
            assert torch.equal(state[name], value), name


@pytest.mark.parametrize('mask_specials, scale', [(True, 100.0), (False, 2.0)])
def test_special_and_position_ids_are_never_sampled(checkpoint, mask_specials, scale):
    """load_lm masks special tokens before the softmax; sample() alone, on a model that
    does not, still draws text only (at a scale where text keeps some float32 mass)."""
    model, dims = generate.load_lm(checkpoint)
    model.pos_emb_mask[N_VOCAB:N_VOCAB + N_SPECIAL] = mask_specials
    with torch.no_grad():
        model.transformer.embed.weight[N_VOCAB:] *= scale
        logits = model.lm_head(model.transformer(window_input(PROMPT)))[0, -1]
    assert logits.softmax(-1)[N_VOCAB:].sum() > 0.99  # what is not text is now most likely
    for seed in range(10):
        for top_k, temperature, top_p in ((0, 1.0, 1.0), (0, 2.0, 1.0), (0, 0.5, 1.0),
                                          (N_VOCAB + 5, 1.0, 1.0), (0, 1.0, 0.9), (0, 0, 1.0)):
            ids = generate.sample(model, PROMPT, 8, **dims, top_k=top_k, temperature=temperature,
                                  top_p=top_p, generator=torch.Generator().manual_seed(seed))
            assert all(0 <= i < N_VOCAB for i in ids), ids


def test_top_k_draws_only_among_the_k_most_likely(lm):
    model, dims = lm
    with torch.no_grad():
        probs = model(window_input(PROMPT))[0, -1, :N_VOCAB]
    top3 = set(probs.topk(3).indices.tolist())
    draws = {generate.sample(model, PROMPT, 1, **dims, top_k=3,
                             generator=torch.Generator().manual_seed(s))[0] for s in range(60)}
    assert draws <= top3 and len(draws) > 1


def test_temperature_is_softmax_of_scaled_logits():
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    gens = [torch.Generator().manual_seed(i) for i in range(4000)]
    counts = np.bincount(generate._draw(probs.log().expand(4000, -1), 0, 0.5, 1.0, gens),
                         minlength=4)
    expected = (probs.double() ** 2 / (probs.double() ** 2).sum()).numpy()
    assert counts[3] == 0
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.03)


def test_same_seed_same_output(lm):
    model, dims = lm

    def run(seed):
        return generate.sample(model, PROMPT, 12, **dims, top_k=0,
                               generator=torch.Generator().manual_seed(seed))
    assert run(0) == run(0)
    assert run(0) != run(1)


def test_sampling_leaves_the_training_mode_as_it_was(lm):
    model, dims = lm
    model.train()
    generate.sample(model, PROMPT, 2, **dims, top_k=1)
    assert model.training


@pytest.mark.parametrize('kwargs, message', [
    (dict(temperature=-0.1), 'temperature'), (dict(temperature=-1.0), 'temperature'),
    (dict(temperature=math.nan), 'temperature'), (dict(temperature=math.inf), 'temperature'),
    (dict(top_k=-1), 'top_k'), (dict(top_k=1.5), 'top_k'), (dict(top_k=True), 'top_k'),
    (dict(length=-1), 'length'), (dict(prompt_ids=[]), 'empty'),
    (dict(prompt_ids=[0, N_VOCAB + N_SPECIAL]), 'prompt ids'),
    (dict(top_p=0), 'top_p'), (dict(top_p=1.5), 'top_p'), (dict(top_p=math.nan), 'top_p'),
    (dict(num_samples=0), 'num_samples'), (dict(num_samples=2.0), 'num_samples'),
    (dict(num_samples=2, generator=[None]), 'generator'), (dict(stop=[[1], []]), 'stop'),
])
def test_argument_validation(lm, kwargs, message):
    model, dims = lm
    args = {**dict(prompt_ids=PROMPT, length=3, top_k=0, temperature=1.0), **kwargs}
    with pytest.raises(ValueError, match=message):
        generate.sample(model, **args, **dims)


def test_pretrained_weights_load_from_model_dir(tmp_path):
    shapes = published_shapes(n_layer=1, n_embd=24, n_vocab=N_VOCAB, n_ctx=8)
    arrays = write_shards(tmp_path, shapes)
    model, dims = generate.load_lm(model_dir=str(tmp_path))
    assert dims == dict(n_vocab=N_VOCAB, n_special=0, n_ctx=8)
    we = model.transformer.embed.weight.detach().numpy()
    np.testing.assert_array_equal(we, np.concatenate([arrays[1], arrays[0]]))
    ids = generate.sample(model, [1, 2], 3, **dims, top_k=1)
    assert len(ids) == 3 and all(0 <= i < N_VOCAB for i in ids)


def test_missing_files_say_how_to_get_them(tmp_path, checkpoint):
    missing = str(tmp_path / 'best_params.safetensors')
    with pytest.raises(FileNotFoundError, match='train.py') as err:
        generate.load_lm(missing)
    assert missing in str(err.value)
    with pytest.raises(FileNotFoundError, match='download.py') as err:
        generate.load_lm(model_dir=str(tmp_path))
    assert os.path.join(str(tmp_path), 'params_shapes.json') in str(err.value)
    save_params(missing, torch.nn.Linear(1, 1), n_vocab=N_VOCAB)
    with pytest.raises(ValueError, match='train.py --submit'):
        generate.load_lm(missing)


def cli_args(checkpoint, vocab, *extra):
    return ['ab c bad', '--checkpoint', checkpoint, '--encoder_path', vocab[0],
            '--bpe_path', vocab[1], '--length', '7', '--seed', '3', '--device', 'cpu', *extra]


def test_cli_prints_prompt_and_seeded_continuation(checkpoint, vocab, capsys):
    from text_utils import TextEncoder
    text_encoder = TextEncoder(*vocab)
    model, dims = generate.load_lm(checkpoint)
    prompt_ids = text_encoder.encode(['ab c bad'], verbose=False)[0]
    new_ids = generate.sample(model, prompt_ids, 7, **dims, top_k=10,
                              generator=torch.Generator().manual_seed(3))
    expected = f'ab c bad {generate.decode(text_encoder.decoder, new_ids)}'
    generate.main(cli_args(checkpoint, vocab))
    assert capsys.readouterr().out.splitlines()[-1] == expected
    out = subprocess.run([sys.executable, 'generate.py', *cli_args(checkpoint, vocab)], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == expected


def test_cli_errors(checkpoint, vocab, tmp_path):
    missing = str(tmp_path / 'none.pt')
    with pytest.raises(SystemExit, match='none.pt not found'):
        generate.main(cli_args(missing, vocab))
    with pytest.raises(SystemExit, match='download.py'):
        generate.main(cli_args(checkpoint, (str(tmp_path / 'encoder.json'), vocab[1])))
    small = tmp_path / 'small.json'
    small.write_text(json.dumps({piece: i for i, piece in enumerate(PIECES[:-1])}))
    with pytest.raises(SystemExit, match=f'model knows {N_VOCAB}'):
        generate.main(cli_args(checkpoint, (str(small), vocab[1])))


def test_decode_turns_word_ends_into_spaces():
    decoder = dict(enumerate(PIECES))
    assert generate.decode(decoder, [16, 10, 13, 17]) == 'abc f ab'


def test_cli_samples_from_a_hub_style_folder_with_its_vocabulary(checkpoint, vocab, tmp_path,
                                                                 capsys):
    """export.py's folder (transformers' layout, vocab.json and merges.txt) as --model_dir,
    no --encoder_path or --bpe_path: the same text as from the checkpoint, whose special
    tokens are masked anyway."""
    folder = str(tmp_path / 'hub')
    export.export(checkpoint, folder, *vocab)
    generate.main(cli_args(checkpoint, vocab))
    expected = capsys.readouterr().out.splitlines()[-1]
    generate.main(['ab c bad', '--model_dir', folder, '--length', '7', '--seed', '3',
                   '--device', 'cpu'])
    assert capsys.readouterr().out.splitlines()[-1] == expected


@pytest.mark.parametrize('damage', [lambda data: data[:len(data) // 2],
                                    lambda data: b'<html>rate limited</html>'],
                         ids=['truncated', 'garbage'])
def test_cli_names_a_broken_checkpoint_in_one_line(checkpoint, vocab, tmp_path, damage):
    broken = tmp_path / 'best_params.safetensors'
    with open(checkpoint, 'rb') as f:
        broken.write_bytes(damage(f.read()))
    done = subprocess.run([sys.executable, 'generate.py', *cli_args(str(broken), vocab)],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 1
    assert re.fullmatch(f'generate.py: error: {re.escape(str(broken))} is not a parameters file of '
                        r'this project \(Error while deserializing header: [^\n]+\)\n',
                        done.stderr)


def test_cli_warns_of_prompt_characters_outside_the_vocabulary(checkpoint, vocab, capsys):
    generate.main(cli_args(checkpoint, vocab)[1:] + ['Ab zq c'])
    out, err = capsys.readouterr()
    assert out.startswith('Ab zq c ')
    assert err.splitlines() == ["generate.py: warning: the vocabulary lacks 'q', 'z' of the "
                                "prompt: the model reads each as token 0 ('a'), not as typed"]
    generate.main(cli_args(checkpoint, vocab))
    assert capsys.readouterr().err == ''


BAD_FLAGS = [
    (['--length', '100000000'], "--length: expected a whole number from 0 to 1024, got "
                                "'100000000'"),
    (['--length', '-1'], "--length: expected a whole number from 0 to 1024, got '-1'"),
    (['--length', '4.5'], "--length: expected a whole number from 0 to 1024, got '4.5'"),
    (['--top_k', '-1'], "--top_k: expected a whole number >= 0, got '-1'"),
    (['--top_k', 'all'], "--top_k: expected a whole number >= 0, got 'all'"),
    (['--temperature', '-0.5'], "--temperature: expected a finite number >= 0, got '-0.5'"),
    (['--temperature', 'inf'], "--temperature: expected a finite number >= 0, got 'inf'"),
    (['--top_p', '0'], "--top_p: expected a number in (0, 1], got '0'"),
    (['--top_p', '1.5'], "--top_p: expected a number in (0, 1], got '1.5'"),
    (['--num_samples', '0'], "--num_samples: expected a whole number from 1 to 64, got '0'"),
    (['--num_samples', '65'], "--num_samples: expected a whole number from 1 to 64, got '65'"),
    (['--dtype', 'fp16'], "--dtype: invalid choice: 'fp16'"),
    (['--seed', str(2 ** 64)], f"--seed: expected a whole number from 0 to {2 ** 64 - 1}"),
    (['--device', 'tpu'], "--device: invalid choice: 'tpu'"),
]
if not torch.cuda.is_available():
    BAD_FLAGS.append((['--device', 'cuda'], '--device cuda: no CUDA device is available here'))


@pytest.mark.parametrize('flags, message', BAD_FLAGS, ids=[' '.join(f) for f, _ in BAD_FLAGS])
def test_bad_flags_exit_2_in_one_line(checkpoint, vocab, capsys, flags, message):
    """Every bad flag value is the parser's: exit 2, as README's table says, one line."""
    code, out, err = fails(cli_args(checkpoint, vocab, *flags), capsys, main=generate.main)
    assert code == 2 and out == '' and len(err.splitlines()) == 1
    assert err.startswith('generate.py: error: ') and message in err


def test_checkpoint_takes_its_vocabulary_from_model_dir(checkpoint, vocab, tmp_path, capsys):
    """As the epilog says: with --checkpoint, --model_dir is where the vocabulary is
    looked for (OpenAI's names there), the parameters coming from the checkpoint."""
    folder = tmp_path / 'vocab'
    folder.mkdir()
    for path, name in zip(vocab, ('encoder_bpe_40000.json', 'vocab_40000.bpe')):
        (folder / name).write_bytes(open(path, 'rb').read())
    generate.main(cli_args(checkpoint, vocab))
    expected = capsys.readouterr().out
    argv = [a for a in cli_args(checkpoint, vocab) if a not in vocab]
    argv = [a for a in argv if a not in ('--encoder_path', '--bpe_path')]
    generate.main(argv + ['--model_dir', str(folder)])
    assert capsys.readouterr().out == expected


@pytest.mark.parametrize('argv, message', [
    ([''], "prompt: expected text to continue, got ''"),
    (['  '], "prompt: expected text to continue, got '  '"),
    (['ab', '--stop', ' '], "--stop ' ': expected text that the vocabulary encodes to at "
                            'least one token'),
], ids=['empty', 'spaces', 'stop_of_nothing'])
def test_bad_input_exits_2_in_one_line(checkpoint, vocab, capsys, argv, message):
    code, out, err = fails(argv[:1] + cli_args(checkpoint, vocab)[1:] + argv[1:], capsys,
                           main=generate.main)
    assert code == 2 and out == '' and len(err.splitlines()) == 1
    assert err.startswith(f'generate.py: error: {message}')


def test_stop_texts_are_read_as_inside_a_text(tmp_path):
    """A newline, typed as \\n or as itself, at either end or alone, is the newline token
    (OpenAI's vocabulary has one)."""
    from text_utils import TextEncoder
    text_encoder = TextEncoder(*write_vocab(tmp_path, PIECES + ['\n</w>']))
    newline = len(PIECES)
    assert generate.stop_ids(text_encoder, '\\n') == [newline]
    assert generate.stop_ids(text_encoder, '\n') == [newline]
    assert generate.stop_ids(text_encoder, 'Ab c\\n') == [PIECES.index('a'), PIECES.index('b</w>'),
                                                         PIECES.index('c</w>'), newline]
    assert generate.stop_ids(text_encoder, ' \\nb') == [newline, PIECES.index('b</w>')]


def test_cli_draws_many_samples_each_from_its_seed_and_cut_at_the_stop(checkpoint, vocab, lm,
                                                                        capsys):
    from text_utils import TextEncoder
    text_encoder = TextEncoder(*vocab)
    model, dims = lm
    prompt_ids = text_encoder.encode(['ab c bad'], verbose=False)[0]
    stop = PIECES.index('f</w>')
    expected, cut = [], 0
    for seed in (3, 4, 5, 6):
        ids = generate.sample(model, prompt_ids, 7, **dims, top_k=10,
                              generator=torch.Generator().manual_seed(seed))
        if stop in ids:
            ids, cut = ids[:ids.index(stop) + 1], cut + 1
        expected += [f'# --seed {seed}', f'ab c bad {generate.decode(text_encoder.decoder, ids)}']
    assert 0 < cut < 4  # some samples stop early, others do not
    generate.main(cli_args(checkpoint, vocab, '--num_samples', '4', '--stop', 'F'))
    assert capsys.readouterr().out.splitlines() == expected


@pytest.mark.parametrize('dtype', ['fp32', 'bf16'])
def test_cli_temperature_0_is_greedy(checkpoint, vocab, lm, capsys, dtype):
    model, dims = lm
    from text_utils import TextEncoder
    text_encoder = TextEncoder(*vocab)
    prompt_ids = text_encoder.encode(['ab c bad'], verbose=False)[0]
    model.to(generate.DTYPES[dtype])
    ids = generate.sample(model, prompt_ids, 7, **dims, top_k=1)
    generate.main(cli_args(checkpoint, vocab, '--temperature', '0', '--dtype', dtype))
    assert capsys.readouterr().out.splitlines() == [
        f'ab c bad {generate.decode(text_encoder.decoder, ids)}']


def test_cli_continues_the_last_n_ctx_tokens_of_a_long_prompt(checkpoint, vocab, lm, capsys):
    from text_utils import TextEncoder
    model, dims = lm
    text_encoder = TextEncoder(*vocab)
    prompt = 'a b c d e f g h'
    prompt_ids = text_encoder.encode([prompt], verbose=False)[0]
    assert len(prompt_ids) == N_CTX + 2
    ids = generate.sample(model, prompt_ids[2:], 7, **dims, top_k=10,
                          generator=torch.Generator().manual_seed(3))
    generate.main([prompt] + cli_args(checkpoint, vocab)[1:])
    out, err = capsys.readouterr()
    assert out.splitlines() == [f'{prompt} {generate.decode(text_encoder.decoder, ids)}']
    assert err.splitlines() == [f'generate.py: warning: the prompt is {N_CTX + 2} tokens and the '
                                f'model reads {N_CTX}: it continues from the last {N_CTX}, '
                                'without the first 2']
