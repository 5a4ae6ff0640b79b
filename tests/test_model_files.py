"""One check of the files every script reads first (text_utils.check_vocabulary,
model_pytorch.check_weights_files):
a malformed vocabulary or params_shapes.json is one line naming the file, exit 1, from
train.py, generate.py and zeroshot.py alike, before the tokenizer, the weights or the data
load."""
import shutil

import numpy as np
import pytest

import datasets
import generate
import model_pytorch
import text_utils
import train
import zeroshot
from conftest import fails, openai_vocab, real_data
from openai_shards import published_shapes, write_shards
from text_utils import write_char_vocab

N_EMBD, N_CTX = 24, 64  # OpenAI's release records no n_head: generate.py takes 12


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    """A tiny model folder in OpenAI's layout whose vocabulary is the character one, and
    ROCStories-shaped data."""
    root = tmp_path_factory.mktemp('files')
    _, _, n_vocab = write_char_vocab(str(root / 'model'))
    write_shards(root / 'model', published_shapes(n_layer=1, n_embd=N_EMBD, n_vocab=n_vocab,
                                                  n_ctx=N_CTX))
    data = datasets.write_story_cloze(str(root / 'data'), 40, 12, np.random.default_rng(0))
    return root / 'model', data


class Heavy(Exception):
    """Work that must come after the files were checked."""


@pytest.fixture
def nothing_heavy(monkeypatch):
    """The tokenizer (spaCy), the weights and train.py's data refuse to load: a check that
    came after them would be met by Heavy."""
    def heavy(*args, **kwargs):
        raise Heavy
    monkeypatch.setattr(text_utils, 'TextEncoder', heavy)
    for module in (generate, zeroshot):
        monkeypatch.setattr(module, 'load_lm', heavy)
    monkeypatch.setattr(train, 'load_task', heavy)


def train_argv(model, data, tmp):
    return ['--data_dir', data, '--model_dir', model, '--encoder_path', f'{model}/encoder.json',
            '--bpe_path', f'{model}/vocab.bpe', '--log_dir', f'{tmp}/log', '--save_dir',
            f'{tmp}/save', '--submission_dir', f'{tmp}/sub', '--cache_dir', f'{tmp}/cache',
            '--n_transfer', '1', '--n_embd', str(N_EMBD), '--n_head', '2', '--n_layer', '1',
            '--n_ctx', str(N_CTX), '--n_batch', '4', '--update_batch', '8', '--n_valid', '8',
            '--device', 'cpu']


def generate_argv(model, data, tmp):
    return ['the', '--model_dir', model, '--encoder_path', f'{model}/encoder.json',
            '--bpe_path', f'{model}/vocab.bpe', '--length', '2', '--device', 'cpu']


def zeroshot_argv(model, data, tmp):
    return ['--task', 'rocstories', '--data_dir', data, '--split', 'test', '--limit', '2',
            '--model_dir', model, '--encoder_path', f'{model}/encoder.json',
            '--bpe_path', f'{model}/vocab.bpe', '--device', 'cpu']


SCRIPTS = {'train.py': (train.main, train_argv), 'generate.py': (generate.main, generate_argv),
           'zeroshot.py': (zeroshot.main, zeroshot_argv)}

MALFORMED = [
    ('encoder.json', b'', 'is not valid JSON (Expecting value'),
    ('encoder.json', b'{"t": 0, "h": 1, "th', 'is not valid JSON (Unterminated string'),
    ('encoder.json', b'["t", "h"]', 'is not a map from BPE tokens to ids'),
    ('encoder.json', b'{"t": 0, "h": "1"}', 'is not a map from BPE tokens to ids'),
    ('encoder.json', b'{"t": 0, "h": 5}', ': its 2 tokens must have the ids 0 to 1, each once'),
    ('vocab.bpe', b'', 'is empty: expected a version header, then one BPE merge a line'),
    ('vocab.bpe', b'#version: 0.2\nt h\nth e</w> x\n', ': line 3 is not a BPE merge (two symbols)'),
    ('vocab.bpe', b'#version: 0.2\n', 'holds no BPE merges'),
    ('vocab.bpe', b't h\nth e</w>\n', ": line 1 is not a version header such as '#version: 0.2'"),
    ('vocab.bpe', b'#version: 0.2\n\xe9 h\n', 'is not UTF-8 text'),
    ('params_shapes.json', b'[[64, 24], [58, 2', 'is not valid JSON'),
    ('params_shapes.json', b'{"shapes": []}', 'is not a list of tensor shapes'),
    ('params_shapes.json', b'[[64, 24], [58, "24"]]', 'is not a list of tensor shapes'),
    ('params_shapes.json', b'[[64, 24], [58, 24], [24]]',
     "does not lay out OpenAI's model: expected [n_ctx, n_embd], [n_vocab, n_embd], then 12 "
     'shapes per block; found 3 shapes, starting [[64, 24], [58, 24]]'),
]


def damaged_copy(source, tmp, name, content):
    model, data = source
    shutil.copytree(model, tmp / 'model')
    if name is not None:
        (tmp / 'model' / name).write_bytes(content)
    return str(tmp / 'model'), data


@pytest.mark.parametrize('script', SCRIPTS)
@pytest.mark.parametrize('name, content, message', MALFORMED,
                         ids=[f'{n}: {c[:24]!r}' for n, c, _ in MALFORMED])
def test_a_malformed_file_is_one_line_naming_it(source, tmp_path, capsys, nothing_heavy,
                                                 script, name, content, message):
    main, argv = SCRIPTS[script]
    model, data = damaged_copy(source, tmp_path, name, content)
    code, out, err = fails(argv(model, data, tmp_path), capsys, main)
    if isinstance(code, str):  # SystemExit(message): Python prints it to stderr, exits 1
        err, code = err + code + '\n', 1
    assert code == 1 and 'Traceback' not in out + err
    errors = [line for line in (out + err).splitlines() if ': error: ' in line]
    assert len(errors) == 1, out + err
    assert errors[0].startswith(f'{script}: error: {model}/{name}') and message in errors[0]


@pytest.mark.parametrize('script', SCRIPTS)
def test_intact_files_pass_the_check(source, tmp_path, nothing_heavy, script):
    """The check lets OpenAI's layout through, to the work the other tests keep from
    running."""
    main, argv = SCRIPTS[script]
    with pytest.raises(Heavy):
        main(argv(*damaged_copy(source, tmp_path, None, None), tmp_path))


def test_params_shapes_json_is_not_read_without_weights(source, tmp_path, nothing_heavy):
    """Training from scratch uses no weights: a broken params_shapes.json is not its
    concern."""
    model, data = damaged_copy(source, tmp_path, 'params_shapes.json', b'')
    argv = train_argv(model, data, tmp_path)
    argv[argv.index('--n_transfer') + 1] = '-1'
    with pytest.raises(Heavy):
        train.main(argv)


def test_openais_files_pass(tmp_path):
    shutil.copy(real_data('openai-model', 'params_shapes.json'), tmp_path)
    assert text_utils.check_vocabulary(*openai_vocab()) == 40478
    model_pytorch.check_weights_files(str(tmp_path))  # raises if it refuses them
