import ctypes
import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from utils import (Ragged, ResultLogger, cached, encode_dataset, flatten, iter_data, make_path,
                   np_softmax, stsb_label_encoding)


class LengthEncoder:
    """Encodes each text as [its length], and records what it was asked."""

    def __init__(self):
        self.calls = []

    def encode(self, texts, verbose=True):
        self.calls.append((list(texts), verbose))
        return [[len(t)] for t in texts]


def test_encode_dataset_encodes_text_fields_only():
    labels = np.array([0, 1], dtype=np.int32)
    encoder = LengthEncoder()
    splits = ((['ab', 'c'], ['defg', ''], labels), (['xyz'],), ([],))
    out = encode_dataset(splits, encoder=encoder, verbose=False)
    assert out[0][:2] == [[[2], [1]], [[4], [0]]]
    assert out[0][2] is labels
    assert out[1:] == [[[[3]]], [[]]]
    assert [verbose for _, verbose in encoder.calls] == [False] * 3


def test_iter_data_batches():
    a, b = list(range(10)), np.arange(10) * 2
    assert list(iter_data(a, n_batch=4)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert list(iter_data(a, n_batch=4, truncate=True)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert list(iter_data(a, n_batch=3, max_batches=2)) == [[0, 1, 2], [3, 4, 5]]
    pairs = list(iter_data(a, b, n_batch=6))
    assert [x for x, _ in pairs] == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9]]
    assert pairs[1][1].tolist() == [12, 14, 16, 18]
    assert list(iter_data(a, n_batch=20, truncate=True)) == []


def test_iter_data_progress_only_when_verbose(capsys):
    list(iter_data(list(range(6)), n_batch=2))
    assert capsys.readouterr().err == ''
    list(iter_data(list(range(6)), n_batch=2, verbose=True))
    assert '/3 [' in capsys.readouterr().err


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_result_logger_writes_flushed_json_lines(tmp_path):
    path = str(tmp_path / 'log' / 'run.jsonl')
    logger = ResultLogger(path, lr=0.1, desc='x')
    first = read_lines(path)  # before close: already on disk
    assert first[0]['lr'] == 0.1 and first[0]['desc'] == 'x' and 'time' in first[0]
    logger.log(n_updates=5, va_acc=80.0)
    logger.log(n_updates=9, time=3.0)
    lines = read_lines(path)
    assert lines[1]['n_updates'] == 5 and lines[1]['va_acc'] == 80.0
    assert lines[2] == {'n_updates': 9, 'time': 3.0}
    logger.close()


def test_result_logger_resumes_where_the_checkpoint_was(tmp_path):
    path = str(tmp_path / 'run.jsonl')
    logger = ResultLogger(path, lr=0.1)
    logger.log(n_updates=1)
    checkpoint_bytes = os.path.getsize(path)
    logger.log(n_updates=2)  # logged after the checkpoint, lost when the run was killed
    logger.close()
    resumed = ResultLogger(path, resume_at=checkpoint_bytes, lr=0.5)
    resumed.log(n_updates=2, time=7.0)
    resumed.close()
    lines = read_lines(path)
    assert [line.get('n_updates') for line in lines] == [None, 1, 2]
    assert lines[0]['lr'] == 0.1 and lines[2]['time'] == 7.0
    with pytest.raises(ValueError, match='cannot resume the log .*run.jsonl'):
        ResultLogger(path, resume_at=10 ** 6)
    with pytest.raises(ValueError, match='missing.jsonl'):
        ResultLogger(str(tmp_path / 'missing.jsonl'), resume_at=0)


def test_make_path_creates_the_folder(tmp_path):
    f = str(tmp_path / 'a' / 'b' / 'c.txt')
    assert make_path(f) == f and os.path.isdir(tmp_path / 'a' / 'b')
    assert make_path('plain.txt') == 'plain.txt'


def test_np_softmax():
    p = np_softmax(np.array([[0.0, np.log(3.0)], [1000.0, 1000.0]]))
    assert np.allclose(p, [[0.25, 0.75], [0.5, 0.5]])
    assert np.allclose(np_softmax(np.array([0.0, 2 * np.log(3.0)]), t=2), [0.25, 0.75])


def test_flatten():
    assert flatten([[1, 2], [], [3]]) == [1, 2, 3]


def test_stsb_label_encoding():
    Y = stsb_label_encoding([2.3, 0.0, 5.0, 4.5])
    expected = np.zeros((4, 6), dtype=np.float32)
    expected[0, 2], expected[0, 3] = 0.7, 0.3
    expected[1, 0] = 1.0
    expected[2, 5] = 1.0
    expected[3, 4], expected[3, 5] = 0.5, 0.5
    assert Y.dtype == np.float32 and np.allclose(Y, expected)


DATA = [[[[1, 2], [], [3]], np.array([0, 1], dtype=np.int32)],
        [[], np.array([0.5, 1.5])],
        [[[7]]]]


def build_counting(calls, data=DATA):
    def build():
        calls.append(1)
        return data
    return build


def assert_same(a, b):
    if isinstance(a, int):
        assert type(b) is int and a == b
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.tolist() == b.tolist()
    elif isinstance(b, Ragged):  # a list of int lists comes back so
        assert b.tolist() == [list(x) for x in a] and b.values.dtype == np.int32
    else:
        assert type(b) is list and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)


def test_cached_round_trip_builds_once(tmp_path):
    calls = []
    assert_same(DATA, cached('t', ['k'], build_counting(calls), str(tmp_path), verbose=False))
    assert_same(DATA, cached('t', ['k'], build_counting(calls), str(tmp_path), verbose=False))
    assert len(calls) == 1
    assert [n for n in os.listdir(tmp_path) if not n.endswith('.npz')] == []  # no temp left
    cached('t', ['k', 'other'], build_counting(calls), str(tmp_path), verbose=False)
    assert len(calls) == 2


def test_cached_rebuilds_a_damaged_entry(tmp_path):
    calls = []
    cached('t', ['k'], build_counting(calls), str(tmp_path), verbose=False)
    (name,) = os.listdir(tmp_path)
    (tmp_path / name).write_bytes(b'')
    with pytest.warns(UserWarning, match=f'{name} not used .*rebuilding'):
        assert_same(DATA, cached('t', ['k'], build_counting(calls), str(tmp_path),
                                 verbose=False))
    assert len(calls) == 2


def test_cached_refuses_what_it_cannot_store(tmp_path):
    with pytest.raises(TypeError, match='cannot cache a str'):
        cached('t', ['k'], build_counting([], [['text']]), str(tmp_path), verbose=False)
    with pytest.raises(TypeError, match='cannot cache a ndarray'):
        cached('t', ['k'], build_counting([], [np.array([{}])]), str(tmp_path), verbose=False)
    assert os.listdir(tmp_path) == []


def test_ragged_holds_sequences_as_one_flat_array():
    lists = [[5, 6, 7], [], [8], [9, 10]]
    r = Ragged.from_lists(lists)
    assert len(r) == 4 and r.values.tolist() == [5, 6, 7, 8, 9, 10]
    assert r.offsets.tolist() == [0, 3, 3, 4, 6] and r.lengths().tolist() == [3, 0, 1, 2]
    assert [r[i].tolist() for i in range(4)] == lists and r[-1].tolist() == [9, 10]
    assert r == lists and r == Ragged.from_lists(lists) and r != lists[:3]
    with pytest.raises(IndexError, match='index 4 out of range for 4 sequences'):
        r[4]


MAPPED_AND_KEPT = """
import ctypes, torch, utils

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks', 'uordblks',
        'fordblks', 'keepcost')]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2

def mapped_and_kept():
    before = libc.mallinfo2().hblkhd
    block = torch.ones(2 ** 24)  # 64 MB, through malloc
    mapped = libc.mallinfo2().hblkhd - before  # bytes mapped apart from the heap for it
    del block
    return mapped, libc.mallinfo2().fordblks  # free bytes the heap holds once it is freed

print(*mapped_and_kept(), utils.keep_freed_memory(), *mapped_and_kept(), *mapped_and_kept())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc' or
                    not hasattr(ctypes.CDLL(None), 'mallinfo2'),
                    reason="mallopt is glibc's, mallinfo2 glibc >= 2.33's")
def test_keep_freed_memory_keeps_a_freed_block_in_the_heap():
    """glibc's defaults map a 64 MB block apart from the heap and unmap it when it is
    freed, so that the next one faults all its pages in afresh; once freed memory is
    kept, such blocks come from the heap, which holds them, free, for the next. In a
    process of its own: the setting is the process's, and this one's may have been made."""
    out = subprocess.run([sys.executable, '-c', MAPPED_AND_KEPT], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split()
    block = 2 ** 26
    default_mapped, default_kept, made, *kept_runs = out
    assert int(default_mapped) >= block and int(default_kept) < block, out
    assert made == 'True', out
    for mapped, kept in zip(kept_runs[::2], kept_runs[1::2]):
        assert int(mapped) == 0 and int(kept) >= block, out
