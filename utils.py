"""Helpers from OpenAI's finetune-transformer-lm utils.py that do not need TensorFlow, the
one way this project writes a file (atomic_write), and a verified on-disk cache for
encoded datasets. Needs only numpy, so that model_pytorch can use it."""
import argparse
import contextlib
import ctypes
import hashlib
import itertools
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
import warnings

import numpy as np


class Parser(argparse.ArgumentParser):
    """The scripts' command lines: a bad flag is one line, not argparse's usage block."""

    def error(self, message):
        # under torchrun every process parses the same flags: the first one alone says why
        said = int(os.environ.get('RANK', 0)) == 0
        self.exit(2, f'{self.prog}: error: {message} (--help lists the flags)\n' if said else None)


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def keep_freed_memory():
    """Has glibc's malloc keep freed memory for the process's next allocations rather than
    return it to the system. Returns whether it could (False without glibc).

    By default glibc maps each block of over 32 MB afresh (on the CPU: the embedding
    matrix, its dropout mask, its gradient, the LM logits) and unmaps it when freed, so
    that every training update faults each of those pages back in, zeroed by the
    kernel: a fifth of a bf16 update on the CPU went to that. The cost is that the
    process keeps its peak footprint until it exits, which training reaches anyway.
    """
    if platform.libc_ver()[0] != 'glibc':
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))


class DefaultsShown(argparse.HelpFormatter):
    """--help with each flag's default, where it has one its help does not already name."""

    def _get_help_string(self, action):
        text = action.help or ''
        if (action.default in (None, (), argparse.SUPPRESS) or isinstance(action.default, bool)
                or 'default' in text):
            return text
        return f'{text} (default: %(default)s)'


def count(minimum, maximum=None):
    """An argparse type: a whole number >= minimum (and <= maximum, when given)."""
    want = (f'a whole number >= {minimum}' if maximum is None
            else f'a whole number from {minimum} to {maximum}')

    def parse(text):
        whole = re.fullmatch(r'[+-]?\d+', text.strip())
        if not whole or int(text) < minimum or (maximum is not None and int(text) > maximum):
            raise argparse.ArgumentTypeError(f'expected {want}, got {text!r}')
        return int(text)
    return parse


def real(within, want):
    """An argparse type: a finite number for which within(number) holds."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and within(value)):
            raise argparse.ArgumentTypeError(f'expected {want}, got {text!r}')
        return value
    return parse


def columns(text):
    """An argparse type: comma-separated column names."""
    names = tuple(name.strip() for name in text.split(','))
    if not all(names):
        raise argparse.ArgumentTypeError(f'expected column names separated by commas, got {text!r}')
    return names


PROBABILITY = real(lambda v: 0 <= v < 1, 'a probability in [0, 1)')
NON_NEGATIVE = real(lambda v: v >= 0, 'a number >= 0')


def encode_dataset(*splits, encoder, verbose=True):
    """splits[0] is a sequence of splits, each a sequence of fields; fields of strings are
    encoded to id lists, the others (labels) kept as they are."""
    encoded_splits = []
    for split in splits[0]:
        fields = []
        for field in split:
            if len(field) and isinstance(field[0], str):
                field = encoder.encode(field, verbose=verbose)
            fields.append(field)
        encoded_splits.append(fields)
    return encoded_splits


def stsb_label_encoding(labels, nclass=6):
    """A similarity score y in [0, nclass - 1] as a distribution over the two classes
    around it (Tai, Socher and Manning's Tree-LSTM paper)."""
    labels = np.asarray(labels, dtype=np.float64)
    Y = np.zeros((len(labels), nclass), dtype=np.float32)
    low = np.floor(labels).astype(int)
    rows = np.arange(len(labels))
    Y[rows, low] = low - labels + 1
    upper = low + 1 < nclass
    Y[rows[upper], low[upper] + 1] = (labels - low)[upper]
    return Y


def np_softmax(x, t=1):
    x = x / t
    x = x - np.max(x, axis=-1, keepdims=True)
    ex = np.exp(x)
    return ex / np.sum(ex, axis=-1, keepdims=True)


def make_path(f):
    """f, after creating the folder it goes in."""
    d = os.path.dirname(f)
    if d:
        os.makedirs(d, exist_ok=True)
    return f


def unwritable(folder):
    """Why files cannot be written in folder, or None: found by making the folders that
    are missing and a file in it, all removed again, since asking first misleads (root
    passes os.access's permission bits, which /proc and /sys refuse anyway)."""
    path, missing = os.path.abspath(folder), []
    while not os.path.lexists(path):
        path, missing = os.path.dirname(path), [path] + missing
    if not os.path.isdir(path):
        return f'{path} is not a folder'
    made = []
    try:
        for part in missing:
            os.mkdir(part)
            made.append(part)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return f'{err.filename or folder} cannot be written ({err.strerror})'
    finally:
        for part in reversed(made):
            with contextlib.suppress(OSError):
                os.rmdir(part)
    return None


def load_json(path):
    """The JSON in path; ValueError naming it where that is not JSON (or not UTF-8)."""
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f'{path} is not valid JSON ({err})') from None


def read_bpe_merges(path):
    """The merges of a BPE vocabulary file as OpenAI's text_utils read them: the first
    line is a version header, the file ends with a newline, and each line in between
    holds a merge whose pieces are split on any whitespace."""
    with open(path, encoding='utf-8') as f:
        return [tuple(line.split()) for line in f.read().split('\n')[1:-1]]


def fsync_dir(folder):
    """Makes a rename inside folder durable; Windows cannot open folders for this."""
    if not hasattr(os, 'O_DIRECTORY'):
        return
    fd = os.open(folder or '.', os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_file(tmp, path):
    """Puts a complete, flushed file in place under its final name, durably."""
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))


@contextlib.contextmanager
def atomic_write(path, mode='wb', **open_kwargs):
    """A file object for writing path. What is written lands under a unique temporary
    name beside path, reaches the disk, and only then takes path's name: a crash or an
    error mid-write leaves any older file at path intact and removes the temporary, and
    writers running at once never share a temporary file."""
    make_path(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or '.',
                               prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from others
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        commit_file(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None:
            err.filename = path  # a full disk names the file it was writing
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def flatten(outer):
    return [el for inner in outer for el in inner]


def iter_data(*datas, n_batch=128, truncate=False, verbose=False, max_batches=float('inf')):
    """Batches of n_batch rows of each of datas (a tuple when there are several).
    truncate drops a last, smaller batch; verbose shows progress on stderr."""
    n = len(datas[0])
    if truncate:
        n = (n // n_batch) * n_batch
    n = int(min(n, max_batches * n_batch))
    starts = range(0, n, n_batch)
    from tqdm import tqdm  # here, so that model_pytorch's use of utils needs only numpy
    for i in tqdm(starts, total=len(starts), file=sys.stderr, ncols=80, leave=False,
                  disable=not verbose):
        if len(datas) == 1:
            yield datas[0][i:i + n_batch]
        else:
            yield tuple(d[i:i + n_batch] for d in datas)


class ResultLogger:
    """A JSON-lines log: the first line holds the run's settings, then one line per log()
    call. Each line is flushed at once, so a killed run loses nothing it logged.
    resume_at (a byte count taken from an earlier run of this log) keeps the log up to
    there and appends after it."""

    def __init__(self, path, resume_at=None, **kwargs):
        make_path(path)
        if resume_at is None:
            self.f_log = open(path, 'w')
            self.log(**kwargs)
            return
        if not os.path.isfile(path) or os.path.getsize(path) < resume_at:
            raise ValueError(f'cannot resume the log {path}: expected at least {resume_at} '
                             f'bytes from the earlier run')
        with open(path, 'r+') as f:
            f.truncate(resume_at)
        self.f_log = open(path, 'a')

    def log(self, **kwargs):
        if 'time' not in kwargs:
            kwargs['time'] = time.time()
        self.f_log.write(json.dumps(kwargs) + '\n')
        self.f_log.flush()

    def close(self):
        self.f_log.close()


def file_digest(path):
    """sha256 of a file's bytes, in hex."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


class Ragged:
    """A sequence of int sequences (the encoded texts of a split) held as one flat int32
    array and offsets: MNLI's 393k pairs take about 60 MB this way, several GB as lists
    of Python ints. Item i is a read-only int32 array."""

    def __init__(self, values, offsets):
        self.values, self.offsets = values, offsets

    @classmethod
    def from_lists(cls, lists):
        values = np.fromiter(itertools.chain.from_iterable(lists), np.int32)
        return cls(values, np.cumsum([0] + [len(x) for x in lists], dtype=np.int64))

    def __len__(self):
        return len(self.offsets) - 1

    def __getitem__(self, i):
        if not -len(self) <= i < len(self):
            raise IndexError(f'index {i} out of range for {len(self)} sequences')
        i %= len(self)
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    def lengths(self):
        return np.diff(self.offsets)

    def tolist(self):
        values, offsets = self.values.tolist(), self.offsets.tolist()
        return [values[a:b] for a, b in zip(offsets, offsets[1:])]

    def __eq__(self, other):
        other = other.tolist() if isinstance(other, Ragged) else other
        return self.tolist() == other

    __hash__ = None


def cached(name, key_parts, build, cache_dir, verbose=True):
    """build(), or what an earlier build() with the same key_parts (strings) stored in
    cache_dir. build() returns nested lists of leaves: numeric numpy arrays, or Ragged or
    lists of int lists (such as encoded texts), which come back as Ragged on a cache hit
    and a miss alike. An entry that cannot be read, or whose key or checksum is wrong, is
    rebuilt with a warning."""
    key = hashlib.sha256(json.dumps(list(key_parts)).encode()).hexdigest()
    path = os.path.join(cache_dir, f'{name}-{key[:16]}.npz')
    if os.path.exists(path):
        try:
            return load_entry(path, key)
        except Exception as err:  # whatever is wrong with the file, it is not trusted
            warnings.warn(f'cache entry {path} not used ({err}); rebuilding it')
    arrays = {}
    layout = pack(build(), arrays)
    save_entry(path, key, layout, arrays)
    if verbose:
        print(f'{name}: cached in {path}')
    return unpack(layout, arrays)


def pack(node, arrays, prefix='a'):
    """The layout (nested lists of 'array' and 'ragged') of node; its leaves go to
    arrays, named by their place in the tree."""
    if isinstance(node, np.ndarray) and not node.dtype.hasobject:
        arrays[prefix] = node
        return 'array'
    if not isinstance(node, (list, tuple, Ragged)):
        raise TypeError(f'cannot cache a {type(node).__name__}: expected nested lists of '
                        'numeric numpy arrays and lists of int lists')
    if not isinstance(node, Ragged) and all(
            isinstance(x, (list, tuple)) and all(isinstance(i, (int, np.integer)) for i in x)
            for x in node):
        node = Ragged.from_lists(node)
    if isinstance(node, Ragged):
        arrays[prefix + 'v'], arrays[prefix + 'o'] = node.values, node.offsets
        return 'ragged'
    return [pack(child, arrays, f'{prefix}_{i}') for i, child in enumerate(node)]


def unpack(layout, arrays, prefix='a'):
    if layout == 'array':
        return arrays[prefix]
    if layout == 'ragged':
        return Ragged(arrays[prefix + 'v'], arrays[prefix + 'o'])
    return [unpack(child, arrays, f'{prefix}_{i}') for i, child in enumerate(layout)]


def digest(arrays):
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(f'{name} {arrays[name].dtype.str} {arrays[name].shape}'.encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()


def as_bytes(text):
    return np.frombuffer(text.encode(), dtype=np.uint8)


def save_entry(path, key, layout, arrays):
    """Written atomically: several ranks may write the same entry at once."""
    arrays = dict(arrays, layout=as_bytes(json.dumps(layout)))
    meta = {'key': as_bytes(key), 'digest': as_bytes(digest(arrays))}
    with atomic_write(path) as f:
        np.savez(f, **arrays, **meta)


def load_entry(path, key):
    with np.load(path, allow_pickle=False) as z:
        if bytes(z['key']).decode() != key:
            raise ValueError('stale: made from other files')
        arrays = {name: z[name] for name in z.files if name not in ('key', 'digest')}
        stored = bytes(z['digest']).decode()
    if digest(arrays) != stored:
        raise ValueError('corrupt: checksum mismatch')
    return unpack(json.loads(bytes(arrays['layout'])), arrays)
