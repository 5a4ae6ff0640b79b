"""Pre-training corpora (pretrain.py's): a folder of documents, each plain text, gzip'd
text, JSON lines or parquet, read as a stream of paragraphs in bounded memory whatever
the size of a file or a paragraph; split into training and validation documents; encoded
into token streams, which are cached, checked when they are read again, and found again
at a restart without reading the documents when they have not changed."""
import codecs
import collections
import contextlib
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import zlib

import numpy as np
from tqdm import tqdm

from checkpoints import RunError
from text_utils import TextEncoder
from utils import atomic_write, file_digest, real

# The token file's format and the reading of the documents; a new one makes the cache
# encode the corpus again. 2: paragraphs longer than PARAGRAPH_CHARS are cut.
CORPUS_FORMAT = 2
# Paragraph pieces handed to the encoding processes at a time, and at most this many
# characters of them: pieces of long paragraphs are a thousand times longer than a
# book's paragraph.
CHUNK_PARAGRAPHS = 2000
CHUNK_CHARS = 1 << 20
# A paragraph is encoded as one text, and one text is held whole by the encoder: a
# longer one is cut into pieces of about this many characters (at a line or a space).
PARAGRAPH_CHARS = 1 << 16
# Rows of a parquet file read at a time.
PARQUET_ROWS = 1024
# Bytes of a token file read at a time to check it (a multiple of every id's size).
CHECK_BLOCK = 1 << 24


def add_corpus_flags(p):
    """pretrain.py's flags of the corpus: its folder, how its documents are read, which
    of them are held out for validation."""
    p.add_argument('--corpus', required=True,
                   help='a folder of documents: plain UTF-8 text, .gz (gzip\'d text), '
                        '.jsonl/.json (JSON lines, the text in --text_field; also .gz), '
                        '.parquet (the text in the column --text_field)')
    p.add_argument('--paragraphs', choices=['blank_lines', 'lines'], default='blank_lines',
                   help='what ends a paragraph: a blank line (hard-wrapped text), or every '
                        'line (a paragraph or a sentence a line, as BooksCorpus ships)')
    p.add_argument('--text_field', default='text',
                   help="the JSON lines' field, or the parquet files' column, of the text")
    p.add_argument('--valid_files', type=lambda s: [n for n in s.split(',') if n], default=None,
                   help='documents held out for validation, comma-separated (paths in '
                        '--corpus or file names); default: --valid_share of them')
    p.add_argument('--valid_share', type=real(lambda v: 0 < v < 1, 'a fraction in (0, 1)'),
                   default=0.02, help='share of the documents held out when no --valid_files')


Reading = collections.namedtuple('Reading', 'paragraphs text_field')
Reading.__new__.__defaults__ = ('blank_lines', 'text')


def reading_of(args):
    return Reading(args.paragraphs, args.text_field)


# ---------------------------------------------------------------------------------------
# The documents: every regular file of the folder, by path.

def corpus_files(folder):
    """The documents of folder: every file below it but hidden ones, sorted by path. An
    entry that is no regular file (a FIFO, a socket, a dangling link) is refused: a
    FIFO would be waited on for ever."""
    if not os.path.isdir(folder):
        raise RunError(f'--corpus {folder} is not a folder')
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        found += [os.path.join(root, n) for n in sorted(names) if not n.startswith('.')]
    if not found:
        raise RunError(f'--corpus {folder} holds no file: give a folder of documents (plain '
                       'text, .gz, .jsonl, .parquet), each file one')
    for path in found:
        what = not_a_file(path)
        if what:
            raise RunError(f'--corpus {folder}: {os.path.relpath(path, folder)} is {what}, '
                           'not a file: every entry is read as a document; remove it, or '
                           "hide it (a name starting with '.')")
    return found


def not_a_file(path):
    """What path is when it is no regular file (or a link to one), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if os.path.islink(path):
            return f'a symbolic link to {os.readlink(path)}, which cannot be read ({err.strerror})'
        return f'unreadable ({err.strerror})'
    if stat.S_ISREG(mode):
        return None
    return ('a FIFO (named pipe)' if stat.S_ISFIFO(mode) else 'a socket' if stat.S_ISSOCK(mode)
            else 'a device')


def split_documents(files, folder, valid_files, valid_share):
    """(train, valid): the documents named by valid_files (paths relative to folder, or
    file names), or else a valid_share of them chosen by a digest of their names (the
    same documents, however the corpus grows), never fewer than one."""
    rel = [os.path.relpath(f, folder) for f in files]
    if valid_files:
        chosen = set()
        for name in valid_files:
            hits = [i for i, r in enumerate(rel) if name in (r, os.path.basename(r))]
            if not hits:
                raise RunError(f'--valid_files: {name} is not a file of --corpus {folder}')
            chosen.update(hits)
    else:
        if len(files) < 2:
            raise RunError(f'--corpus {folder} holds one document: a validation document '
                           'needs another; add files, or name one in --valid_files')
        rank = sorted(range(len(files)), key=lambda i: hashlib.sha256(rel[i].encode()).digest())
        chosen = set(rank[:max(1, round(valid_share * len(files)))])
    if len(chosen) == len(files):
        raise RunError('--valid_files names every document of --corpus: none is left to '
                       'train on')
    return ([f for i, f in enumerate(files) if i not in chosen],
            [f for i, f in enumerate(files) if i in chosen])


# ---------------------------------------------------------------------------------------
# Reading: a document's paragraphs as pieces of at most about PARAGRAPH_CHARS, whatever
# its format, and whatever the length of its lines.

def document_format(path):
    name = path.lower().removesuffix('.gz')
    if name.endswith('.parquet'):
        return 'parquet'
    return 'jsonl' if name.endswith(('.jsonl', '.json')) else 'text'


def open_text(path):
    """The document's text, decompressed from a .gz."""
    if path.lower().endswith('.gz'):
        return gzip.open(path, 'rt', encoding='utf-8')
    return open(path, encoding='utf-8')


@contextlib.contextmanager
def reading(path):
    """A failure to read path said in one line that names it."""
    try:
        yield
    except EOFError:
        raise RunError(f'{path}: the gzip file is cut short (it ends before its end-of-stream '
                       'marker): fetch or compress it again') from None
    except gzip.BadGzipFile as err:
        raise RunError(f'{path}: not a gzip file ({err}): a name ending in .gz must be '
                       'gzip-compressed') from None
    except zlib.error as err:
        raise RunError(f'{path}: corrupt gzip data ({err}): fetch or compress it again') from None
    except UnicodeDecodeError as err:
        raise RunError(f'{path}: not UTF-8 text ({err.reason}): save it as UTF-8') from None
    except OSError as err:
        raise RunError(f'{path}: cannot be read ({err.strerror or err})') from None


def line_pieces(f):
    """The lines of the text stream f as (piece, ends_line) pairs, no piece longer than
    PARAGRAPH_CHARS: a longer line comes in pieces cut after a space (anywhere where it
    has none), so that no line is held whole."""
    carry = ''
    while True:
        block = f.readline(PARAGRAPH_CHARS - len(carry))
        if not block:
            break
        text = carry + block
        if text.endswith('\n'):
            carry = ''
            yield text, True
            continue
        cut = text.rfind(' ') + 1 or len(text)
        text, carry = text[:cut], text[cut:]
        yield text, False
    if carry:
        yield carry, True


def paragraph_pieces(f, by_line):
    """The paragraphs of the text stream f as (text, begins) pairs, a paragraph in one
    piece or, beyond PARAGRAPH_CHARS, in several (begins: the piece is a paragraph's
    first). A blank line ends a paragraph, or every line does (by_line); a paragraph's
    lines are stripped and joined by spaces."""
    parts, size, begins, blank = [], 0, True, True  # blank: the line so far
    for piece, ends_line in line_pieces(f):
        text = piece.strip()
        if text and parts and size + len(text) > PARAGRAPH_CHARS:
            yield ' '.join(parts), begins
            parts, size, begins = [], 0, False
        if text:
            parts.append(text)
            size += len(text) + 1
            blank = False
        if ends_line and (by_line or blank):
            if parts:
                yield ' '.join(parts), begins
            parts, size, begins = [], 0, True
        blank = blank or ends_line
    if parts:
        yield ' '.join(parts), begins


def document_texts(path, field):
    """The texts of a document, each a stream that ends a paragraph: the file, or the
    text of each of its records (JSON lines, parquet)."""
    kind = document_format(path)
    if kind == 'text':
        with open_text(path) as f:
            yield f
    else:
        for text in (json_texts if kind == 'jsonl' else parquet_texts)(path, field):
            yield io.StringIO(text)


def document_pieces(path, options):
    """The paragraph pieces (text, begins) of the document path, read as options say."""
    with reading(path):
        for f in document_texts(path, options.text_field):
            yield from paragraph_pieces(f, options.paragraphs == 'lines')


def json_texts(path, field):
    """The field of each JSON line of path (a null one as no text). A JSON line is read
    whole: the format has no place to cut one."""
    with open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as err:
                raise RunError(f'{path}: line {n} is not JSON ({err.msg}, column {err.colno}): '
                               'expected one JSON object a line') from None
            text = record.get(field, ...) if isinstance(record, dict) else ...
            if not isinstance(text, str) and text is not None:
                raise RunError(f'{path}: line {n} has no "{field}" string: expected JSON '
                               f'objects with their text in "{field}" (--text_field)')
            yield text or ''


def parquet_texts(path, field):
    """The column field of each row of path, PARQUET_ROWS rows at a time (a null one as
    no text)."""
    table = parquet_file(path, field)
    try:
        for batch in table.iter_batches(batch_size=PARQUET_ROWS, columns=[field]):
            for text in batch.column(0).to_pylist():
                yield text or ''
    except ValueError as err:  # pyarrow's ArrowInvalid: damaged data
        raise RunError(f'{path}: a damaged parquet file ({err})') from None


def parquet_file(path, field):
    """pyarrow's ParquetFile of path, whose column field must hold strings."""
    try:
        import pyarrow.parquet as pq
        import pyarrow.types as pa_types
    except ImportError:
        raise RunError(f'{path}: reading parquet files needs the package pyarrow: '
                       'pip install pyarrow') from None
    try:
        table = pq.ParquetFile(path)
    except ValueError as err:
        raise RunError(f'{path}: not a parquet file that pyarrow can read ({err})') from None
    schema = table.schema_arrow
    if field not in schema.names:
        raise RunError(f'{path}: no column "{field}" (it has {", ".join(schema.names)}): name '
                       'the column of the text with --text_field')
    kind = schema.field(field).type
    if not (pa_types.is_string(kind) or pa_types.is_large_string(kind)):
        raise RunError(f'{path}: column "{field}" holds {kind}, not strings: name the column '
                       'of the text with --text_field')
    return table


# ---------------------------------------------------------------------------------------
# Checking: every document is read through once before any encoding starts, so that bad
# input is said at once, not an hour into an encoding.

def check_document(path, field):
    """Refuses, in one line naming path and where, a document that is not what its name
    says: text that is not UTF-8 or holds a NUL byte, a cut or corrupt gzip file, a JSON
    line that is not JSON or lacks the field, a parquet file without the column."""
    kind = document_format(path)
    if kind == 'parquet':
        with reading(path):
            parquet_file(path, field)
        return
    gz = path.lower().endswith('.gz')
    with reading(path), (gzip.open if gz else open)(path, 'rb') as f:
        check_utf8(path, iter(lambda: f.read(1 << 20), b''),
                   ' of its decompressed text' if gz else '')
    if kind == 'jsonl':
        with reading(path):
            collections.deque(json_texts(path, field), maxlen=0)


def check_utf8(path, blocks, where):
    """Refuses a NUL byte, or bytes that are not UTF-8, in the bytes of blocks, naming
    the byte's offset."""
    decoder, offset = codecs.getincrementaldecoder('utf-8')(), 0
    for block in blocks:
        if b'\0' in block:
            raise RunError(f'{path}: a NUL byte at byte {offset + block.index(0)}{where}: a '
                           'binary file, not text; remove it from --corpus')
        pending = len(decoder.getstate()[0])
        try:
            decoder.decode(block)
        except UnicodeDecodeError as err:
            raise RunError(f'{path}: byte {offset - pending + err.start}{where} is not UTF-8: '
                           'save the file as UTF-8 text, or remove it from --corpus') from None
        offset += len(block)
    try:
        decoder.decode(b'', final=True)
    except UnicodeDecodeError:
        raise RunError(f'{path}: the file ends inside a UTF-8 character (byte {offset}'
                       f'{where}): save it as UTF-8 text') from None


def document_digests(files, folder, options, cache_dir, verbose=True):
    """{path relative to folder: sha256 of the file's bytes}, each document checked
    (check_document) when it is first seen. A document whose size, modification and
    change times are those it had when it was last checked is not read again: they are
    kept in cache_dir beside the corpus' token files (the change time cannot be set back
    by a tool that restores a modification time)."""
    where = hashlib.sha256(os.path.realpath(folder).encode()).hexdigest()[:16]
    memo_path = os.path.join(cache_dir, f'corpus-{corpus_name(folder)}-{where}.documents.json')
    memo = read_json(memo_path)
    memo, seen = memo if isinstance(memo, dict) else {}, {}
    with tqdm(total=len(files), ncols=80, leave=False, disable=not verbose,
              desc='checking') as bar:
        for path in files:
            rel = os.path.relpath(path, folder)
            with reading(path):
                st = os.stat(path)
            state = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, check_kind(path, options)]
            entry = memo.get(rel)
            if not (isinstance(entry, list) and entry[:-1] == state):
                check_document(path, options.text_field)
                with reading(path):
                    entry = state + [file_digest(path)]
            seen[rel] = entry
            bar.update()
    if seen != memo:
        with atomic_write(memo_path, 'w') as f:
            json.dump(seen, f)
    return {rel: entry[-1] for rel, entry in seen.items()}


def check_kind(path, options):
    """What check_document checked a document for."""
    kind = document_format(path)
    return kind if kind == 'text' else f'{kind}:{options.text_field}'


def read_json(path):
    """The JSON of path, or None where it is absent or damaged."""
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def corpus_name(folder):
    return os.path.basename(os.path.normpath(folder)) or 'corpus'


# ---------------------------------------------------------------------------------------
# Encoding, and the cache of token streams.

class TokenStream:
    """An encoded corpus as one flat file of token ids (uint16: GPT-1's 40478 fit),
    mapped from disk, never read whole."""

    def __init__(self, path, n_tokens, dtype):
        self.path, self.n_tokens = path, n_tokens
        self.tokens = np.memmap(path, dtype=dtype, mode='r', shape=(n_tokens,))

    def windows(self, starts, n_ctx):
        """The windows of n_ctx tokens at starts, as an int64 array (len(starts), n_ctx)."""
        return np.stack([self.tokens[s:s + n_ctx] for s in starts]).astype(np.int64)


def chunks_of(pieces):
    """The pieces, CHUNK_PARAGRAPHS at a time, or fewer where they reach CHUNK_CHARS."""
    chunk, size = [], 0
    for piece in pieces:
        chunk.append(piece)
        size += len(piece[0])
        if len(chunk) == CHUNK_PARAGRAPHS or size >= CHUNK_CHARS:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def corpus_pieces(files, options, bar=None):
    """The paragraph pieces of files in order, read as they are needed; bar counts the
    bytes read."""
    for path in files:
        yield from document_pieces(path, options)
        if bar is not None:
            bar.update(os.path.getsize(path))


def encode_stream(pieces, encoder, separator, f):
    """Writes the ids of the paragraph pieces (text, begins) to the binary file f,
    separator (a list of ids) between paragraphs, as the encoding processes return them;
    a paragraph that encodes to no token is left out. Returns (count, crc32 of f)."""
    begins = collections.deque()  # of the chunks sent and not yet returned

    def texts():
        for chunk in chunks_of(pieces):
            begins.append([b for _, b in chunk])
            yield [text for text, _ in chunk]

    n, crc, due, dtype = 0, 0, False, token_dtype(len(encoder.encoder))
    with contextlib.closing(encoder.encode_chunks(texts())) as results:
        for encoded in results:
            ids = []
            for para, first in zip(encoded, begins.popleft()):
                due = due or (first and (n > 0 or len(ids) > 0))
                if para:
                    ids += (separator if due else []) + para
                    due = False
            data = np.asarray(ids, dtype=dtype).tobytes()
            f.write(data)
            crc = zlib.crc32(data, crc)
            n += len(ids)
    return n, crc


def token_dtype(n_vocab):
    return np.uint16 if n_vocab <= 1 << 16 else np.uint32


def paragraph_separator(encoder):
    """The vocabulary's newline token, which ends every paragraph of OpenAI's texts; none
    in a vocabulary without one."""
    return [encoder.encoder['\n</w>']] if '\n</w>' in encoder.encoder else []


class Vocabulary:
    """The vocabulary's files, their digests and size; its encoder loaded when needed."""

    def __init__(self, encoder_path, bpe_path):
        self.encoder_path, self.bpe_path = encoder_path, bpe_path
        self.digests = [file_digest(encoder_path), file_digest(bpe_path)]
        with open(encoder_path, encoding='utf-8') as f:
            self.size = len(json.load(f))

    def encoder(self):
        return TextEncoder(self.encoder_path, self.bpe_path)


def encoded_corpus(name, files, folder, digests, vocabulary, options, cache_dir,
                   verbose=True):
    """The token stream of files, as dict(path, n_tokens, dtype) for TokenStream: encoded
    once and kept in cache_dir under a key of their paths in folder and digests (by
    those paths, as document_digests gives them), how they are read and the
    vocabulary's; a .tokens file, then a .json beside it that says it is complete and
    what its checksum is."""
    rel = [os.path.relpath(f, folder) for f in files]
    structured = any(document_format(r) != 'text' for r in rel)
    key = hashlib.sha256(json.dumps([
        CORPUS_FORMAT, [[r, digests[r]] for r in rel], vocabulary.digests,
        options.paragraphs, options.text_field if structured else None]).encode()).hexdigest()
    base = os.path.join(cache_dir, f'corpus-{name}-{key[:16]}')
    found = trusted_index(base, key, vocabulary.size)
    if found is None:
        found = encode_entry(base, key, files, vocabulary, options, verbose)
        if verbose:
            print(f'{name}: {len(files)} documents, {found["n_tokens"]} tokens, cached in '
                  f'{base}.tokens')
    return dict(path=base + '.tokens', n_tokens=found['n_tokens'], dtype=found['dtype'])


def encode_entry(base, key, files, vocabulary, options, verbose):
    """Encodes files into base.tokens, then writes its index base.json; returns it."""
    encoder = vocabulary.encoder()
    total = sum(os.path.getsize(p) for p in files)
    with tqdm(total=total, unit='B', unit_scale=True, ncols=80, leave=False,
              disable=not verbose, desc='encoding') as bar, \
            atomic_write(base + '.tokens') as f:
        n, crc = encode_stream(corpus_pieces(files, options, bar), encoder,
                               paragraph_separator(encoder), f)
    index = dict(key=key, n_tokens=n, dtype=np.dtype(token_dtype(vocabulary.size)).name,
                 documents=len(files), n_vocab=vocabulary.size, crc32=crc)
    with atomic_write(base + '.json', 'w') as f:
        json.dump(index, f)
    return index


def trusted_index(base, key, n_vocab):
    """The index of the complete cache entry base of key, when its token file is as it
    was written; None where there is none, and a warning where there is one that cannot
    be trusted (it is then encoded again)."""
    index = read_json(base + '.json')
    if index is None or index.get('key') != key:
        if os.path.exists(base + '.json'):
            warn(f'{base}.json is not the index of this cache entry')
        return None
    problem = token_file_problem(base + '.tokens', index, n_vocab)
    if problem:
        warn(f'{base}.tokens {problem}')
        return None
    return index


def token_file_problem(path, index, n_vocab):
    """What is wrong with the token file path against its index, or None: its size, its
    checksum, an id outside the vocabulary of n_vocab tokens."""
    try:
        dtype = np.dtype(index['dtype'])
        size, want = os.path.getsize(path), index['n_tokens'] * dtype.itemsize
        if index['n_vocab'] != n_vocab:
            return f"was encoded for a vocabulary of {index['n_vocab']} tokens, not {n_vocab}"
        if size != want:
            return f'holds {size} bytes, where {want} were written'
        crc, top = token_checksum(path, dtype)
    except (OSError, KeyError, TypeError, ValueError) as err:
        return f'cannot be checked ({err})'
    if crc != index['crc32']:
        return 'does not match the checksum written with it: it changed since'
    if top >= n_vocab:
        return f'holds the id {top}, outside the vocabulary of {n_vocab} tokens'
    return None


def token_checksum(path, dtype):
    """(crc32 of the token file's bytes, its largest id), in one pass. A checksum is all
    that is asked here (a damaged file, not an attack), and it is cheaper: bench.py
    --corpus checks a 2 GB token file in 0.86 s from memory, where its sha256 alone takes
    1.24 s."""
    crc, top = 0, -1
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(CHECK_BLOCK), b''):
            crc = zlib.crc32(block, crc)
            top = max(top, int(np.frombuffer(block, dtype).max()))
    return crc, top


def warn(message):
    print(f'warning: {message}: encoding the corpus again', file=sys.stderr)


# ---------------------------------------------------------------------------------------
# The corpus of a run: found, or encoded, by the first process alone.

def load_corpus(args, dist):
    """The training and validation streams. The first process lists, checks and splits
    the documents and finds their streams in the cache, or encodes them there; the others
    are told where the streams are, and read nothing else."""
    found = dist.on_first(lambda: cached_streams(args))
    train_stream, valid_stream = (TokenStream(**s) for s in found['streams'])
    for stream, what, flag in ((train_stream, 'training', '--corpus'),
                               (valid_stream, 'validation', '--valid_files')):
        if stream.n_tokens < args.n_ctx + 1:
            raise RunError(f'the {what} documents hold {stream.n_tokens} tokens, fewer than '
                           f'one window of --n_ctx {args.n_ctx} (and the token after it): '
                           f'give more text ({flag}) or a smaller --n_ctx')
    if dist.main:
        valid = found['valid']
        print(f"{found['n_train']} training documents ({train_stream.n_tokens} tokens), "
              f'{len(valid)} validation documents ({valid_stream.n_tokens} tokens): '
              + ', '.join(valid[:5]) + (', ...' if len(valid) > 5 else ''))
    return train_stream, valid_stream


def cached_streams(args):
    """What load_corpus needs to know on every process: the streams (as dict(path,
    n_tokens, dtype)), the count of training documents, the validation documents."""
    files = corpus_files(args.corpus)
    train_files, valid_files = split_documents(files, args.corpus, args.valid_files,
                                               args.valid_share)
    options = reading_of(args)
    digests = document_digests(files, args.corpus, options, args.cache_dir)
    vocabulary = Vocabulary(args.encoder_path, args.bpe_path)
    name = corpus_name(args.corpus)
    streams = [encoded_corpus(f'{name}-{split}', docs, args.corpus, digests, vocabulary,
                              options, args.cache_dir)
               for split, docs in (('train', train_files), ('valid', valid_files))]
    return dict(streams=streams, n_train=len(train_files),
                valid=[os.path.relpath(f, args.corpus) for f in valid_files])
