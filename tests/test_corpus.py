"""corpus.py: pre-training corpora in every format read to the same stream, in bounded
memory; a cache that is checked, found again without reading unchanged documents, and
encoded again for another vocabulary; training and validation streams kept apart; bad
input refused in one line through pretrain.py."""
import gzip
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import tracemalloc
import zlib

import numpy as np
import pytest

import corpus
import model_pytorch
import pretrain
import runs
import test_errors
from conftest import REPO
from corpus import Reading, TokenStream
from test_pretrain import TINY, WORDS, write_corpus
from text_utils import TextEncoder, write_char_vocab


def newline_vocab(folder):
    """The character vocabulary with OpenAI's newline token, so that the separator
    between paragraphs shows in the stream."""
    encoder_path, bpe_path, n = write_char_vocab(folder)
    with open(encoder_path) as f:
        encoder = json.load(f)
    encoder['\n</w>'] = n
    with open(encoder_path, 'w') as f:
        json.dump(encoder, f)
    return encoder_path, bpe_path


def expected_ids(paragraphs, encoder):
    """Each paragraph encoded alone, the paragraphs joined by the newline token when the
    vocabulary has one."""
    separator = [encoder.encoder['\n</w>']] if '\n</w>' in encoder.encoder else []
    ids = []
    for text in paragraphs:
        piece = encoder.encode([text], verbose=False)[0]
        if piece:
            ids += (separator if ids else []) + piece
    return ids


def file_paragraphs(files):
    """The paragraphs of blank-line text files, split plainly: on blank lines, each
    paragraph's lines stripped and joined by spaces."""
    found = []
    for path in files:
        with open(path) as f:
            for para in re.split(r'\n\s*\n', f.read()):
                text = ' '.join(line.strip() for line in para.splitlines() if line.strip())
                if text:
                    found.append(text)
    return found


def stream_of(folder, vocab, cache, options=Reading()):
    """The token stream of folder's documents, as load_corpus makes it."""
    files = corpus.corpus_files(folder)
    digests = corpus.document_digests(files, folder, options, cache, verbose=False)
    return TokenStream(**corpus.encoded_corpus('c', files, folder, digests,
                                               corpus.Vocabulary(*vocab), options, cache,
                                               verbose=False))


def test_corpus_encoding_equals_text_encoder_on_the_paragraphs(tmp_path):
    folder = write_corpus(str(tmp_path / 'corpus'), n_files=3, n_paragraphs=12)
    vocab = write_char_vocab(str(tmp_path / 'vocab'))[:2]
    stream = stream_of(folder, vocab, str(tmp_path / 'cache'))
    files = corpus.corpus_files(folder)
    want = expected_ids(file_paragraphs(files), TextEncoder(*vocab))
    assert stream.tokens.tolist() == want and len(want) > 1000
    # a second call reads the cache: the same stream, nothing encoded
    again = stream_of(folder, vocab, str(tmp_path / 'cache'))
    assert again.path == stream.path and again.tokens.tolist() == want


def test_corpus_encoding_with_openai_vocabulary_separates_paragraphs(tmp_path):
    from conftest import openai_vocab
    vocab = openai_vocab()
    folder = write_corpus(str(tmp_path / 'corpus'), n_files=2, n_paragraphs=5)
    with open(os.path.join(folder, 'book1.txt'), 'a') as f:
        f.write('\n“Naïve café—isn’t it?” she said…\n')
    stream = stream_of(folder, vocab, str(tmp_path / 'cache'))
    encoder = TextEncoder(*vocab)
    newline = encoder.encoder['\n</w>']
    assert stream.tokens.tolist() == expected_ids(file_paragraphs(corpus.corpus_files(folder)),
                                                  encoder)
    assert stream.tokens.dtype == np.uint16
    assert (stream.tokens == newline).sum() == 5 + 6 - 1  # between the 11 paragraphs


def paragraphs_of(n, seed):
    rng = np.random.default_rng(seed)
    return [' '.join(WORDS[j] + '.' for j in rng.integers(0, len(WORDS), rng.integers(2, 6)))
            for _ in range(n)]


def write_as(folder, fmt, paragraphs):
    """The paragraphs as one document of the format fmt; returns how to read it."""
    os.makedirs(folder)
    path = os.path.join(folder, 'doc')
    if fmt in ('text', 'text.gz'):  # hard-wrapped, blank lines between paragraphs
        text = '\n\n'.join('\n'.join(textwrap.wrap(p, 30)) for p in paragraphs) + '\n'
        with (gzip.open(path + '.txt.gz', 'wt') if fmt == 'text.gz'
              else open(path + '.txt', 'w')) as f:
            f.write(text)
    elif fmt == 'lines':
        with open(path + '.txt', 'w') as f:
            f.write('\n'.join(paragraphs) + '\n')
        return Reading('lines')
    elif fmt in ('jsonl', 'jsonl.gz'):  # a record of two paragraphs, a null, a field beside
        records = [{'id': 0, 'body': '\n\n'.join(paragraphs[:2])}, {'body': None}] + \
            [{'body': p, 'id': i} for i, p in enumerate(paragraphs[2:])]
        with (gzip.open if fmt == 'jsonl.gz' else open)(path + '.' + fmt, 'wt') as f:
            f.write('\n'.join(json.dumps(r) for r in records) + '\n')
        return Reading('blank_lines', 'body')
    else:
        pa, pq = pytest.importorskip('pyarrow'), pytest.importorskip('pyarrow.parquet')
        pq.write_table(pa.table({'n': list(range(len(paragraphs))), 'body': paragraphs}),
                       path + '.parquet', row_group_size=7)
        return Reading('blank_lines', 'body')
    return Reading()


@pytest.mark.parametrize('fmt', ['text', 'text.gz', 'lines', 'jsonl', 'jsonl.gz', 'parquet'])
def test_every_format_gives_the_paragraphs_joined_by_newlines(tmp_path, fmt):
    paragraphs = paragraphs_of(30, seed=1)
    options = write_as(str(tmp_path / 'corpus'), fmt, paragraphs)
    vocab = newline_vocab(str(tmp_path / 'vocab'))
    stream = stream_of(str(tmp_path / 'corpus'), vocab, str(tmp_path / 'cache'), options)
    assert stream.tokens.tolist() == expected_ids(paragraphs, TextEncoder(*vocab))


def test_a_paragraph_beyond_the_limit_is_cut_at_spaces_and_encodes_as_whole(tmp_path,
                                                                            monkeypatch):
    """A file without newlines, and a paragraph of many lines, each far beyond the
    limit on a paragraph: cut into pieces at spaces, no word split, and no newline token
    between the pieces of one paragraph."""
    monkeypatch.setattr(corpus, 'PARAGRAPH_CHARS', 50)
    monkeypatch.setattr(corpus, 'CHUNK_CHARS', 200)
    words = ' '.join(paragraphs_of(40, seed=2))
    folder = tmp_path / 'corpus'
    folder.mkdir()
    (folder / 'a.txt').write_text(words)  # no newline at all
    (folder / 'b.txt').write_text('\n'.join(textwrap.wrap(words, 20)) + '\n\nthe end.\n')
    pieces = list(corpus.document_pieces(str(folder / 'a.txt'), Reading()))
    assert len(pieces) > 20 and max(len(t) for t, _ in pieces) <= 50
    assert [b for _, b in pieces] == [True] + [False] * (len(pieces) - 1)
    assert ' '.join(t for t, _ in pieces) == words
    vocab = newline_vocab(str(tmp_path / 'vocab'))
    stream = stream_of(str(folder), vocab, str(tmp_path / 'cache'))
    # b.txt's hard-wrapped lines join with spaces: its first paragraph is a.txt's text
    assert stream.tokens.tolist() == expected_ids([words, words, 'the end.'], TextEncoder(*vocab))


def traced_peak(fn):
    """The peak of Python's allocations while fn() runs, in bytes."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def read_all(files):
    """Reads files as the encoding does, keeping nothing; the longest piece's length."""
    longest = 0
    for chunk in corpus.chunks_of(corpus.corpus_pieces(files, Reading())):
        longest = max([longest] + [len(t) for t, _ in chunk])
    return longest


def test_reading_memory_is_bounded_by_the_paragraph_limit_not_the_file(tmp_path):
    """A 100 MB file without a newline, and 1000 small files: what is held at once stays
    a few MB (a paragraph piece, a chunk of them), not the 100 MB a file held whole takes."""
    big = tmp_path / 'big.txt'
    block = ('the cat sat on a mat. ' * 4096).encode()
    with open(big, 'wb') as f:
        for _ in range(100 * 2 ** 20 // len(block)):
            f.write(block)
    assert big.stat().st_size > 99 * 2 ** 20
    longest = []
    peak = traced_peak(lambda: longest.append(read_all([str(big)])))
    assert longest[0] <= corpus.PARAGRAPH_CHARS and peak < 8 * 2 ** 20, peak
    small = tmp_path / 'small'
    small.mkdir()
    text = '\n\n'.join(paragraphs_of(20, seed=3))
    for i in range(1000):
        (small / f'{i:04d}.txt').write_text(text)
    files = sorted(str(p) for p in small.iterdir())
    assert traced_peak(lambda: read_all(files)) < 8 * 2 ** 20


# ---- the cache: checked, found again cheaply, keyed by the vocabulary ---------------------

@pytest.fixture
def run_args(tmp_path):
    """argv(*more): pretrain.py's arguments for a tiny run on four written books (one
    held out) with the character vocabulary, all its files under tmp_path."""
    folder = write_corpus(str(tmp_path / 'corpus'), n_paragraphs=12)
    encoder_path, bpe_path, _ = write_char_vocab(str(tmp_path / 'vocab'))

    def argv(*more):
        return ['--corpus', folder, '--valid_files', 'book3.txt', '--encoder_path',
                encoder_path, '--bpe_path', bpe_path, '--log_dir', str(tmp_path / 'log'),
                '--save_dir', str(tmp_path / 'save'), '--cache_dir', str(tmp_path / 'cache'),
                '--max_updates', '2', '--log_every', '2', '--desc', 'tiny', *TINY, *more]
    return argv


def load(argv):
    """load_corpus in this one process, the token lists of its two streams."""
    streams = corpus.load_corpus(pretrain.parse_args(argv), runs.Distributed('cpu'))
    return [s.tokens.tolist() for s in streams], streams


@pytest.mark.parametrize('damage', ['zeroed', 'garbage', 'cut', 'index'])
def test_a_damaged_cache_entry_is_encoded_again_not_used(run_args, capsys, damage):
    want, streams = load(run_args())
    path = streams[0].path
    index_path = path[:-len('.tokens')] + '.json'
    with open(index_path) as f:
        index = json.load(f)
    size = os.path.getsize(path)
    if damage == 'zeroed':
        open(path, 'wb').write(bytes(size))
    elif damage == 'garbage':  # ids beyond the vocabulary, with an index that agrees
        garbage = np.full(size // 2, 60000, np.uint16).tobytes()
        open(path, 'wb').write(garbage)
        index['crc32'] = zlib.crc32(garbage)
        open(index_path, 'w').write(json.dumps(index))
    elif damage == 'cut':
        open(path, 'r+b').truncate(size - 2)
    else:
        open(index_path, 'w').write('{"key": ')
    capsys.readouterr()
    got, _ = load(run_args())
    warned = capsys.readouterr().err
    assert got == want
    assert ('not the index' if damage == 'index' else path) in warned
    assert 'encoding the corpus again' in warned
    assert {'zeroed': 'checksum', 'garbage': 'id 60000, outside the vocabulary of 58',
            'cut': f'holds {size - 2} bytes', 'index': 'not the index'}[damage] in warned


def test_a_restart_reads_no_unchanged_document_and_each_changed_one(run_args, monkeypatch):
    want, _ = load(run_args())
    folder, read = run_args()[1], []
    digest = corpus.file_digest
    monkeypatch.setattr(corpus, 'file_digest', lambda p: read.append(p) or digest(p))
    monkeypatch.setattr(corpus, 'encode_entry', lambda *a: pytest.fail('encoded again'))

    def documents_read():
        return [p for p in read if p.startswith(folder)]
    assert load(run_args())[0] == want and documents_read() == []
    # the same bytes with a new modification time: read again, the same key
    book = os.path.join(folder, 'book0.txt')
    os.utime(book, ns=(1, 1))
    assert load(run_args())[0] == want and documents_read() == [book]
    # other bytes of the same size: read again and encoded again, with its new text
    with open(book, 'r+') as f:
        text = f.read()
        f.seek(0)
        f.write(text.replace('cat', 'hat'))
    monkeypatch.undo()
    changed, _ = load(run_args())
    assert changed[0] != want[0] and changed[1] == want[1]
    assert len(changed[0]) == len(want[0])


def test_another_vocabulary_encodes_the_corpus_again_with_its_ids(run_args, tmp_path):
    (train, valid), _ = load(run_args())
    encoder_path, bpe_path = (str(tmp_path / 'vocab' / n) for n in ('encoder.json', 'vocab.bpe'))
    with open(encoder_path) as f:
        encoder = json.load(f)
    n = len(encoder)
    # the same tokens with their ids reversed: every id of the stream becomes n - 1 - id
    with open(encoder_path, 'w') as f:
        json.dump({k: n - 1 - v for k, v in encoder.items()}, f)
    (train2, valid2), _ = load(run_args())
    assert train2 == [n - 1 - i for i in train] and valid2 == [n - 1 - i for i in valid]
    # without the merge th+e</w>, "the" is two tokens where it was one
    the, th, e = (n - 1 - encoder[k] for k in ('the</w>', 'th', 'e</w>'))
    with open(bpe_path, 'w') as f:
        f.write('#version: 0.2\nt h\n')
    (train3, _), _ = load(run_args())
    assert the in train2 and the not in train3
    assert len(train3) == len(train2) + train2.count(the)
    assert train3.count(th) == train2.count(th) + train2.count(the)
    assert train3.count(e) == train2.count(e) + train2.count(the)


def test_training_sees_only_training_documents_and_validation_only_its_own(run_args,
                                                                           tmp_path,
                                                                           monkeypatch):
    """The held-out book has letters that no training book has (j, q, x, z), and lacks
    some that they all have (t, h): no training window holds the first, no validation
    window the second; each sees its own."""
    (tmp_path / 'corpus' / 'book3.txt').write_text('jazz quiz box. ' * 40)
    encoder = json.load(open(tmp_path / 'vocab' / 'encoder.json'))
    only_valid = {encoder[c] for c in 'jqxz'} | {encoder[c + '</w>'] for c in 'jqxz'}
    only_train = {encoder[c] for c in 'th'} | {encoder[c + '</w>'] for c in 'th'} \
        | {encoder['th'], encoder['the</w>']}
    seen = {True: set(), False: set()}  # by the model's training mode
    forward = model_pytorch.LMModel.forward

    def spy(self, x, *args, **kwargs):
        seen[self.training].update(x[..., 0].flatten().tolist())
        return forward(self, x, *args, **kwargs)
    monkeypatch.setattr(model_pytorch.LMModel, 'forward', spy)
    pretrain.main(run_args())
    training, validation = seen[True], seen[False]
    assert training & only_train and not training & only_valid
    assert validation & only_valid and not validation & only_train


# ---- bad input: one line through pretrain.py, naming the file and what is expected ---------

def one_error(argv, capsys, *words):
    code, line = test_errors.one_error(pretrain.main, argv, capsys)
    assert code == 1 and all(w in line for w in words), line
    return line


def truncated_gzip(path):
    data = gzip.compress(b'the cat sat.\n' * 2000)
    path.with_suffix('.txt.gz').write_bytes(data[:len(data) // 2])
    return path.with_suffix('.txt.gz'), 'gzip file is cut short'


def not_json(path):
    path.with_suffix('.jsonl').write_text('{"text": "the cat"}\n{"text": "a dog"}\n'
                                          '{"text": the end}\n')
    return path.with_suffix('.jsonl'), 'line 3 is not JSON'


def json_without_field(path):
    path.with_suffix('.jsonl').write_text('{"text": "the cat"}\n{"body": "a dog"}\n')
    return path.with_suffix('.jsonl'), 'line 2 has no "text" string'


def parquet_without_column(path):
    pa, pq = pytest.importorskip('pyarrow'), pytest.importorskip('pyarrow.parquet')
    pq.write_table(pa.table({'body': ['the cat sat.']}), str(path.with_suffix('.parquet')))
    return path.with_suffix('.parquet'), 'no column "text" (it has body)'


def dangling_link(path):
    os.symlink(path.with_name('gone.txt'), path)
    return path, 'a symbolic link to'


def fifo(path):
    os.mkfifo(path)
    return path, 'a FIFO'


@pytest.mark.parametrize('write', [truncated_gzip, not_json, json_without_field,
                                   parquet_without_column, dangling_link, fifo])
def test_bad_documents_are_refused_in_one_line_naming_the_file(run_args, capsys, tmp_path,
                                                             write):
    (tmp_path / 'corpus' / 'book1.txt').unlink()
    bad, words = write(tmp_path / 'corpus' / 'book1.txt')
    line = one_error(run_args(), capsys, words)
    assert os.path.relpath(bad, tmp_path / 'corpus') in line
    assert not (tmp_path / 'save' / 'tiny').exists()


def test_parquet_without_pyarrow_is_one_line_naming_the_package(run_args, capsys, tmp_path,
                                                              monkeypatch):
    (tmp_path / 'corpus' / 'book1.parquet').write_bytes(b'PAR1')
    for name in ('pyarrow', 'pyarrow.parquet', 'pyarrow.types'):  # their import fails
        monkeypatch.setitem(sys.modules, name, None)
    one_error(run_args(), capsys, 'book1.parquet', 'needs the package pyarrow',
              'pip install pyarrow')


def test_an_error_in_the_first_process_s_corpus_work_stops_both_in_one_line(run_args,
                                                                          tmp_path):
    """Under torchrun, an OSError (a disk's, not a refusal of the input) in the first
    process as it encodes the corpus: both processes stop with the same one line, while
    the second waits for the first's corpus."""
    with socket.socket() as s:  # a port free now, for the rendezvous
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS='1', TMPDIR=str(tmp_path))
    res = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
                          '--master_addr=127.0.0.1', f'--master_port={port}',
                          'tests/corpus_fault.py'] + run_args(),
                         cwd=REPO, env=env, timeout=120, capture_output=True, text=True)
    assert res.returncode != 0
    line = ('pretrain.py: error: the first process failed: OSError: [Errno 5] Input/output '
            'error')
    assert res.stderr.count(line) == 2, res.stderr[-3000:]
    # torchrun's own report of the failed processes is the one traceback
    assert res.stderr.count('Traceback (most recent call last)') == 1, res.stderr[-3000:]
