"""Pre-training corpora: a folder of documents read, split into training and validation
documents, encoded into token streams and cached (pretrain.py's corpus)."""
import codecs
import contextlib
import hashlib
import json
import os

import numpy as np
from tqdm import tqdm

from checkpoints import RunError
from text_utils import TextEncoder
from utils import atomic_write, file_digest

# The token file's format; a new one makes the cache encode the corpus again.
CORPUS_FORMAT = 1
# Paragraphs handed to the encoding processes at a time.
CHUNK_PARAGRAPHS = 2000


# ---------------------------------------------------------------------------------------
# The corpus: every file a document, its paragraphs encoded and joined into one stream.

def corpus_files(folder):
    """The documents of folder: every file below it but hidden ones, sorted by path."""
    if not os.path.isdir(folder):
        raise RunError(f'--corpus {folder} is not a folder')
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        found += [os.path.join(root, n) for n in sorted(names) if not n.startswith('.')]
    if not found:
        raise RunError(f'--corpus {folder} holds no file: give a folder of plain-text files '
                       '(each one a document)')
    return found


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


def paragraphs(path):
    """The paragraphs of a text file (checked by text_digest): a blank line ends one, and
    the single line breaks of hard-wrapped text inside it become spaces."""
    lines = []
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if line:
                lines.append(line)
            elif lines:
                yield ' '.join(lines)
                lines = []
    if lines:
        yield ' '.join(lines)


def chunks_of(files, size, bar=None):
    """The paragraphs of files in order, size at a time, read as they are needed (a
    file is never held whole); bar counts the bytes read."""
    chunk = []
    for path in files:
        for paragraph in paragraphs(path):
            chunk.append(paragraph)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if bar is not None:
            bar.update(os.path.getsize(path))
    if chunk:
        yield chunk


def documents_digest(files, folder):
    """sha256 over the documents' names (relative to folder) and contents, in order;
    every one is checked to be text on the way (text_digest)."""
    h = hashlib.sha256()
    for path in files:
        h.update(json.dumps([os.path.relpath(path, folder), text_digest(path)]).encode())
    return h.hexdigest()


def text_digest(path):
    """sha256 of a file's bytes, which must be UTF-8 text: a NUL byte or bytes that are
    not UTF-8 are a RunError naming the file and the byte's offset, found before any
    encoding starts."""
    h, decoder, offset = hashlib.sha256(), codecs.getincrementaldecoder('utf-8')(), 0
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
            if b'\0' in block:
                raise RunError(f'{path}: a NUL byte at byte {offset + block.index(0)}: a '
                               'binary file, not text; remove it from --corpus')
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                raise RunError(f'{path}: byte {offset - pending + err.start} is not UTF-8: save '
                               'the file as UTF-8 text, or remove it from --corpus') from None
            offset += len(block)
    try:
        decoder.decode(b'', final=True)
    except UnicodeDecodeError:
        raise RunError(f'{path}: the file ends inside a UTF-8 character (byte {offset}): '
                       'save it as UTF-8 text') from None
    return h.hexdigest()


class TokenStream:
    """An encoded corpus as one flat file of token ids (uint16: GPT-1's 40478 fit),
    mapped from disk, never read whole."""

    def __init__(self, path, n_tokens, dtype):
        self.path, self.n_tokens = path, n_tokens
        self.tokens = np.memmap(path, dtype=dtype, mode='r', shape=(n_tokens,))

    def windows(self, starts, n_ctx):
        """The windows of n_ctx tokens at starts, as an int64 array (len(starts), n_ctx)."""
        return np.stack([self.tokens[s:s + n_ctx] for s in starts]).astype(np.int64)


def encode_stream(files, encoder, separator, f, verbose):
    """Writes the ids of files' paragraphs to the binary file f, separator (a list of
    ids) between paragraphs, as the encoding processes return them; returns the count."""
    n, dtype, first = 0, token_dtype(len(encoder.encoder)), True
    total = sum(os.path.getsize(p) for p in files)
    with tqdm(total=total, unit='B', unit_scale=True, ncols=80, leave=False,
              disable=not verbose, desc='encoding') as bar:
        with contextlib.closing(encoder.encode_chunks(
                chunks_of(files, CHUNK_PARAGRAPHS, bar))) as results:
            for encoded in results:
                ids = []
                for para in encoded:
                    if para:
                        ids += ([] if first else separator) + para
                        first = False
                f.write(np.asarray(ids, dtype=dtype).tobytes())
                n += len(ids)
    return n


def token_dtype(n_vocab):
    return np.uint16 if n_vocab <= 1 << 16 else np.uint32


def paragraph_separator(encoder):
    """The vocabulary's newline token, which ends every paragraph of OpenAI's texts; none
    in a vocabulary without one."""
    return [encoder.encoder['\n</w>']] if '\n</w>' in encoder.encoder else []


def encoded_corpus(name, files, folder, encoder_path, bpe_path, cache_dir, verbose=True):
    """The TokenStream of files, encoded once and kept in cache_dir under a key of their
    names and contents and the vocabulary's: a .tokens file, then a .json beside it that
    says it is complete."""
    key = hashlib.sha256(json.dumps([
        CORPUS_FORMAT, documents_digest(files, folder), file_digest(encoder_path),
        file_digest(bpe_path)]).encode()).hexdigest()
    base = os.path.join(cache_dir, f'corpus-{name}-{key[:16]}')
    found = read_index(base + '.json', key)
    if found is None:
        encoder = TextEncoder(encoder_path, bpe_path)
        dtype = token_dtype(len(encoder.encoder))
        with atomic_write(base + '.tokens') as f:
            n = encode_stream(files, encoder, paragraph_separator(encoder), f, verbose)
        found = dict(key=key, n_tokens=n, dtype=np.dtype(dtype).name, documents=len(files))
        with atomic_write(base + '.json', 'w') as f:
            json.dump(found, f)
        if verbose:
            print(f'{name}: {len(files)} documents, {n} tokens, cached in {base}.tokens')
    return TokenStream(base + '.tokens', found['n_tokens'], found['dtype'])


def read_index(path, key):
    """The index of a complete cache entry, or None (absent, or not this key's)."""
    try:
        with open(path) as f:
            index = json.load(f)
        size = os.path.getsize(path[:-len('.json')] + '.tokens')
    except (OSError, ValueError):
        return None
    if index.get('key') != key or size != index['n_tokens'] * np.dtype(index['dtype']).itemsize:
        return None
    return index


def load_corpus(args, dd):
    """The training and validation streams, encoded by the first process (the others
    then find them in the cache)."""
    train_files, valid_files = split_documents(corpus_files(args.corpus), args.corpus,
                                               args.valid_files, args.valid_share)

    name = os.path.basename(os.path.normpath(args.corpus)) or 'corpus'

    def streams(verbose):
        return [encoded_corpus(f'{name}-{split}', docs, args.corpus, args.encoder_path,
                               args.bpe_path, args.cache_dir, verbose)
                for split, docs in (('train', train_files), ('valid', valid_files))]
    # the first process encodes (or finds the cache); the others then read the cache
    found = []
    dd.on_first(lambda: found.extend(streams(verbose=True)))
    train_stream, valid_stream = found or streams(verbose=False)
    for stream, what, flag in ((train_stream, 'training', '--corpus'),
                               (valid_stream, 'validation', '--valid_files')):
        if stream.n_tokens < args.n_ctx + 1:
            raise RunError(f'the {what} documents hold {stream.n_tokens} tokens, fewer than '
                           f'one window of --n_ctx {args.n_ctx} (and the token after it): '
                           f'give more text ({flag}) or a smaller --n_ctx')
    if dd.main:
        print(f'{len(train_files)} training documents ({train_stream.n_tokens} tokens), '
              f'{len(valid_files)} validation documents ({valid_stream.n_tokens} tokens): '
              + ', '.join(os.path.relpath(f, args.corpus) for f in valid_files[:5])
              + (', ...' if len(valid_files) > 5 else ''))
    return train_stream, valid_stream
