"""What several test files share: where the repository is, where the real data files are
looked for, and tiny runs of train.py in this process."""
import json
import os
import signal

import numpy as np
import pytest

import datasets
import train
from text_utils import write_char_vocab

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The real files (OpenAI's vocabulary, ROCStories, the other tasks) are looked for in the
# first of these that has them, each laid out as ../shared/data is (openai-model/,
# rocstories/, tasks/glue/<TASK>/, tasks/RACE/, ...):
#   $GPT1_TEST_DATA;
#   the repository's model/ and data/, where the README tells users to put them
#     (model/ holds openai-model's files, data/ the CSVs and the tasks' folders);
#   ../shared/data beside the repository.
DATA_ENV = 'GPT1_TEST_DATA'
IN_REPO = {'openai-model': 'model', 'rocstories': 'data', 'tasks': 'data'}


def data_candidates(kind, *parts):
    found = []
    if os.environ.get(DATA_ENV):
        found.append(os.path.join(os.environ[DATA_ENV], kind, *parts))
    found.append(os.path.join(REPO, IN_REPO[kind], *parts))
    found.append(os.path.join(REPO, '..', 'shared', 'data', kind, *parts))
    return found


def real_data(kind, *parts):
    """The path of a real data file or folder (kind: openai-model, rocstories or tasks),
    skipping the test when none of the places above has it."""
    candidates = data_candidates(kind, *parts)
    for path in candidates:
        if os.path.exists(path):
            return path
    pytest.skip(f'needs the real file {os.path.join(kind, *parts)}, absent from '
                f'{", ".join(os.path.normpath(p) for p in candidates)} (a fresh clone has none)')


def openai_vocab():
    """(encoder_path, bpe_path) of OpenAI's vocabulary, or a skip."""
    return (real_data('openai-model', 'encoder_bpe_40000.json'),
            real_data('openai-model', 'vocab_40000.bpe'))


def rocstories_dir():
    return os.path.dirname(real_data('rocstories', datasets.VAL_NAME))


TINY = ['--n_embd', '16', '--n_head', '2', '--n_layer', '2', '--n_batch', '4',
        '--update_batch', '8', '--lr', '1e-3', '--lr_warmup', '0.1']


@pytest.fixture
def tiny_run(tmp_path):
    """(tmp_path, argv): a tiny from-scratch run on 40 written stories (32 to train, 8 to
    validate, 12 to test) and the character vocabulary, all its files under tmp_path."""
    data = datasets.write_story_cloze(str(tmp_path / 'data'), 40, 12, np.random.default_rng(0))
    encoder_path, bpe_path, _ = write_char_vocab(str(tmp_path / 'vocab'))
    argv = ['--data_dir', data, '--encoder_path', encoder_path, '--bpe_path', bpe_path,
            '--log_dir', str(tmp_path / 'log'), '--save_dir', str(tmp_path / 'save'),
            '--submission_dir', str(tmp_path / 'sub'), '--cache_dir', str(tmp_path / 'cache'),
            '--n_valid', '8', '--n_iter', '2', '--device', 'cpu', '--n_transfer', '-1'] + TINY
    return tmp_path, argv


def fails(argv, capsys, main=train.main):
    """(exit code, stdout, stderr) of main(argv), which must exit."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    out, err = capsys.readouterr()
    return stop.value.code, out, err


def terminated_at(n, update=None):
    """A stand-in for an update method (train.Trainer.update by default; any whose last
    argument numbers the update) that sends this process SIGTERM during update n, as a
    scheduler would, and otherwise updates."""
    update = update or train.Trainer.update

    def terminated(self, *args):
        if args[-1] == n:
            signal.raise_signal(signal.SIGTERM)
        return update(self, *args)
    return terminated


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f]
