"""Text to BPE ids exactly as OpenAI's finetune-transformer-lm TextEncoder produced them.

Per text: ftfy.fix_text, text_standardize, spaCy's English tokenizer, then lowercase BPE
with the </w> end-of-word marker; pieces missing from the vocabulary become id 0.
Only the speed differs from OpenAI's code: work that provably changes nothing is
skipped, each distinct space-separated span is tokenized and turned into ids once (see
TextEncoder), and large inputs are spread over worker processes (encode_chunks).
"""
import contextlib
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import traceback
import weakref

from tqdm import tqdm

from utils import load_json, read_bpe_merges

# OpenAI pads every run of one of these characters with spaces. Their pattern wrote
# `\\+` in a non-raw string, which reaches the regex as `\+` (the plus sign again), so
# backslashes are left alone. A run is one repeated character: `!?` is two runs.
PUNCT_RUN = re.compile(r'([-~!";?+,)(/*\[\]}{|_])\1*')
NEWLINE = re.compile(r'\s*\n\s*')
SPACES = re.compile(r'[^\S\n]+')
DASHES = str.maketrans({'—': '-', '–': '-', '―': '-', '…': '...', '´': "'"})

# Text made only of these characters is returned unchanged by ftfy.fix_text: it is ASCII
# (so no mojibake, ligature, width, quote or C1 fix applies), has no '&' (so no HTML
# entity), no ESC (terminal escapes), no '\r' (line breaks) and no other control
# character that ftfy removes.
FTFY_NOOP = re.compile(r"[\t\n -%'-~]*")

# New spans tokenized by one spaCy call.
SPAN_BATCH = 1000
# Below this many texts, starting worker processes costs more than it saves.
PARALLEL_MIN = 20000


def fix_text(text):
    """ftfy.fix_text, skipped where it cannot change the text."""
    if FTFY_NOOP.fullmatch(text):
        return text
    import ftfy  # imported on first use, as spaCy is by TextEncoder
    return ftfy.fix_text(text)


def text_standardize(text):
    """OpenAI's clean-up for the spaCy tokenizer: dashes and ellipses, spaces around
    punctuation runs, each newline as ' \\n ', other whitespace runs as one space."""
    text = text.translate(DASHES)
    text = PUNCT_RUN.sub(r' \g<0> ', text)
    if '\n' in text:
        text = NEWLINE.sub(' \n ', text)
    return SPACES.sub(' ', text).strip()


def merge_pair(word, first, second):
    """word with every occurrence of first followed by second fused, left to right."""
    merged = []
    i, n = 0, len(word)
    while i < n:
        if i < n - 1 and word[i] == first and word[i + 1] == second:
            merged.append(first + second)
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return tuple(merged)


def special_case_joins(tokenizer):
    """Where spaCy could match a special case over tokens from two spans: for each special
    case, split as spaCy splits it without special cases (the tokens its matcher looks
    for), each run of its first tokens joined -> the tokens that may come next."""
    from spacy.tokenizer import Tokenizer
    plain = Tokenizer(tokenizer.vocab, prefix_search=tokenizer.prefix_search,
                      suffix_search=tokenizer.suffix_search,
                      infix_finditer=tokenizer.infix_finditer,
                      token_match=tokenizer.token_match, url_match=tokenizer.url_match)
    joins = {}
    for rule in tokenizer.rules:
        tokens = [token.text for token in plain(rule)]
        for j in range(1, len(tokens)):
            joins.setdefault(''.join(tokens[:j]), set()).add(tokens[j])
    return joins


def newline_separates(tokenizer, joins):
    """Whether ' \\n ' between two pieces becomes one token of its own that no special
    case of several tokens contains."""
    if [token.text for token in tokenizer('a \n a')] != ['a', '\n ', 'a']:
        return False
    return not any(c.isspace() for start, nexts in joins.items()
                   for token in (start, *nexts) for c in token)


# ---------------------------------------------------------------------------------------
# The vocabulary's two files: found in a model folder, checked before anything loads.

OPENAI_VOCAB = ('encoder_bpe_40000.json', 'vocab_40000.bpe')
HUB_VOCAB = ('vocab.json', 'merges.txt')  # the same files in a transformers checkpoint
# sha256 of the content of OpenAI's two vocabulary files as read (vocabulary_differs)
OPENAI_VOCAB_DIGESTS = ('6a1f32449609d80364e647a36444eabe00de4ded14fa83f665aa2773c525509a',
                        'a104c2252490e85ad085c6b67dafd4ee2770d77cde757290157652e1e1b2dde3')


def find_vocabulary(model_dir, encoder_path=None, bpe_path=None):
    """(encoder_path, bpe_path): each one given, else found in model_dir: OpenAI's two
    files, or, where the first is absent and the Hub's vocab.json is there, vocab.json and
    merges.txt (as transformers, export.py and pretrain.py write them). OpenAI's names
    when neither is there, so that a message names what is missing."""
    hub = (not os.path.isfile(os.path.join(model_dir, OPENAI_VOCAB[0]))
           and os.path.isfile(os.path.join(model_dir, HUB_VOCAB[0])))
    found = [os.path.join(model_dir, name) for name in (HUB_VOCAB if hub else OPENAI_VOCAB)]
    return encoder_path or found[0], bpe_path or found[1]


def check_vocabulary(encoder_path, bpe_path):
    """The vocabulary's size, once both files are checked. Raises FileNotFoundError naming
    a missing file and where a vocabulary comes from, ValueError naming a malformed one
    (and its line), OSError when one cannot be read."""
    for path in (encoder_path, bpe_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f'{path} not found: give the vocabulary with --encoder_path and --bpe_path, '
                "or a model folder that holds it (OpenAI's encoder_bpe_40000.json and "
                'vocab_40000.bpe, from `python download.py`, or the vocab.json and '
                'merges.txt that transformers, export.py and pretrain.py write)')
    n_vocab = check_encoder(encoder_path)
    check_bpe(bpe_path)
    return n_vocab


def check_encoder(path):
    """A JSON object from BPE tokens to the ids 0..n-1, each once (the embedding's rows);
    returns n."""
    encoder = load_json(path)
    if not (isinstance(encoder, dict) and encoder
            and all(type(v) is int for v in encoder.values())):
        raise ValueError(f'{path} is not a map from BPE tokens to ids (a JSON object of '
                         'whole numbers)')
    if sorted(encoder.values()) != list(range(len(encoder))):
        raise ValueError(f'{path}: its {len(encoder)} tokens must have the ids 0 to '
                         f'{len(encoder) - 1}, each once (the rows of the embedding)')
    return len(encoder)


def check_bpe(path):
    """A version header, then one merge of two symbols per line."""
    try:
        with open(path, encoding='utf-8') as f:
            header = f.readline()
        merges = read_bpe_merges(path)
    except UnicodeDecodeError as err:
        raise ValueError(f'{path} is not UTF-8 text ({err})') from None
    if not header:
        raise ValueError(f'{path} is empty: expected a version header, then one BPE merge '
                         'a line')
    # The first line is skipped as the header, whatever it holds: a merge there is lost.
    if not header.startswith('#'):
        raise ValueError(f"{path}: line 1 is not a version header such as '#version: 0.2' "
                         '(the first line is skipped)')
    if not merges:
        raise ValueError(f'{path} holds no BPE merges (a header line, then one merge a line)')
    bad = next((i for i, merge in enumerate(merges, 2) if len(merge) != 2), None)
    if bad is not None:
        raise ValueError(f'{path}: line {bad} is not a BPE merge (two symbols)')


def vocabulary_differs(encoder_path, bpe_path):
    """None when the two files hold OpenAI's vocabulary (under any name and formatting,
    such as the Hub's vocab.json and merges.txt); else one line saying how they differ:
    another vocabulary gives other token ids than the pretrained weights learned."""
    with open(encoder_path, encoding='utf-8') as f:
        encoder = json.load(f)
    merges = read_bpe_merges(bpe_path)
    found = (_digest(sorted(encoder.items())), _digest(merges))
    if found == OPENAI_VOCAB_DIGESTS:
        return None
    sizes = (len(encoder), len(merges))
    how = ' and other content' if sizes == (40478, 40000) else ''
    return (f'{encoder_path} ({sizes[0]} tokens) and {bpe_path} ({sizes[1]} merges) are not '
            f"OpenAI's vocabulary (40478 tokens and 40000 merges{how}): token ids differ "
            'from those the pretrained weights were trained on')


def _digest(items):
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()


def write_char_vocab(folder, n_vocab=None):
    """A character-level BPE vocabulary in OpenAI's two files, for --smoke and the tests:
    each letter and '.' ',' alone or ending a word, and the merges t+h, th+e</w>; padded
    with unused entries to n_vocab if given. Returns (encoder_path, bpe_path, size)."""
    chars = sorted('abcdefghijklmnopqrstuvwxyz.,')
    pieces = chars + [c + '</w>' for c in chars] + ['th', 'the</w>']
    pieces += [f'unused{i}' for i in range((n_vocab or 0) - len(pieces))]
    os.makedirs(folder, exist_ok=True)
    encoder_path = os.path.join(folder, 'encoder.json')
    bpe_path = os.path.join(folder, 'vocab.bpe')
    with open(encoder_path, 'w') as f:
        json.dump({p: i for i, p in enumerate(pieces)}, f)
    with open(bpe_path, 'w') as f:
        f.write('#version: 0.2\nt h\nth e</w>\n')
    return encoder_path, bpe_path, len(pieces)


def blank_english():
    """spaCy's blank English pipeline, for its tokenizer."""
    # Imported here, not with the module: a run whose encoded data are cached, and the
    # vocabulary helpers above, need neither spaCy nor its 2 s of loading.
    import spacy
    nlp = spacy.blank('en')
    # Lexeme attributes (shape, stop word, ...) never change where the tokenizer
    # splits, and computing them for each new word was half of spaCy's time.
    nlp.vocab.lex_attr_getters = {}
    return nlp


def load_bpe_ranks(bpe_path):
    """Merge -> rank; a repeated merge keeps its last rank, as OpenAI read it."""
    return {merge: rank for rank, merge in enumerate(read_bpe_merges(bpe_path))}


class TextEncoder:
    """OpenAI's TextEncoder with spaCy's blank English tokenizer.

    spaCy tokenizes each space-separated span of a text on its own, then matches its
    special cases (contractions, abbreviations, emoticons) over the tokens of the whole
    text. So each distinct span is tokenized and turned into ids once, and a text is the
    concatenation of its spans, unless a special case could start at the end of one span
    and go on into the next: then the whole text goes through spaCy, as in OpenAI's code.
    """

    def __init__(self, encoder_path, bpe_path):
        self.nlp = blank_english()
        with open(encoder_path, encoding='utf-8') as f:
            self.encoder = json.load(f)
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = load_bpe_ranks(bpe_path)
        self.cache = {}
        self.ids_cache = {}
        self.spans = {}
        self.joins = special_case_joins(self.nlp.tokenizer)
        self.longest_join = max(map(len, self.joins), default=0)
        self.batchable = newline_separates(self.nlp.tokenizer, self.joins)

    def bpe(self, token):
        """token's BPE pieces joined by spaces, the last one ending in </w>."""
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + '</w>',)
        while len(word) > 1:
            bigram = self.best_pair(word)
            if bigram is None:
                break
            word = merge_pair(word, *bigram)
        pieces = ' '.join(word)
        # spaCy keeps the space after a newline in the newline's token; OpenAI dropped it.
        if pieces == '\n  </w>':
            pieces = '\n</w>'
        self.cache[token] = pieces
        return pieces

    def best_pair(self, word):
        """The adjacent pair of word merged first, or None when no merge applies."""
        best, best_rank = None, len(self.bpe_ranks)
        for pair in zip(word, word[1:]):
            rank = self.bpe_ranks.get(pair, best_rank)
            if rank < best_rank:
                best, best_rank = pair, rank
        return best

    def token_ids(self, token):
        """The ids of one spaCy token."""
        ids = self.ids_cache.get(token)
        if ids is None:
            pieces = self.bpe(token.lower()).split(' ')
            ids = self.ids_cache[token] = [self.encoder.get(p, 0) for p in pieces]
        return ids

    def tokenize(self, text):
        return [token.text for token in self.nlp.tokenizer(text)]

    def tokens_ids(self, tokens):
        return [i for token in tokens for i in self.token_ids(token)]

    def span(self, piece):
        """The span entry of one piece of a standardized text split on spaces. spaCy
        drops the one space that ends a word, so a newline's span is the newline and
        the space after it."""
        entry = self.spans.get(piece)
        if entry is None:
            tokens = self.tokenize('\n ' if piece == '\n' else piece)
            entry = self.spans[piece] = self.span_entry(piece, tokens)
        return entry

    def span_entry(self, piece, tokens):
        """(ids of the piece's tokens, the tokens that would carry on a special case
        that begins at the end of the piece)."""
        ends = (piece[-k:] for k in range(1, min(len(piece), self.longest_join) + 1))
        nexts = tuple(t for end in ends if end in self.joins for t in self.joins[end])
        return self.tokens_ids(tokens), nexts

    def add_spans(self, pieces):
        """Tokenizes new pieces a batch at a time, joined by newlines: a newline ends a
        spaCy span and is no token of any special case of several tokens, so no special
        case reaches from one piece into the next and each piece gets the tokens it
        gets alone. A newline piece is tokenized alone, as its span is '\\n '."""
        pieces = [p for p in pieces if p != '\n']
        for i in range(0, len(pieces) if self.batchable else 0, SPAN_BATCH):
            batch = pieces[i:i + SPAN_BATCH]
            groups = [[]]
            for token in self.nlp.tokenizer(' \n '.join(batch)):
                if token.text == '\n ':
                    groups.append([])
                else:
                    groups[-1].append(token.text)
            for piece, tokens in zip(batch, groups):
                self.spans[piece] = self.span_entry(piece, tokens)

    def encode_standardized(self, text):
        if not text:
            return []
        ids, nexts, spans = [], (), self.spans
        for piece in text.split(' '):
            if piece.startswith(nexts):
                return self.tokens_ids(self.tokenize(text))
            piece_ids, nexts = spans.get(piece) or self.span(piece)
            ids += piece_ids
        return ids

    def encode(self, texts, verbose=True):
        """A list of id lists, one per text."""
        texts = list(texts)
        if len(texts) >= PARALLEL_MIN and usable_cpus() > 1:
            return self.encode_parallel(texts, verbose)
        return self.encode_serial(texts, verbose)

    def encode_serial(self, texts, verbose):
        if verbose:
            texts = tqdm(texts, ncols=80, leave=False)
        texts = [text_standardize(fix_text(text)) for text in texts]
        spans = self.spans
        self.add_spans(dict.fromkeys(p for text in texts for p in text.split(' ')
                                     if p and p not in spans))
        return [self.encode_standardized(text) for text in texts]

    def forget(self):
        """Drops what the encoder has learnt of the words it has seen: its caches of
        spans, token ids and BPE, and spaCy's (a fresh tokenizer). They only save work,
        and grow by about 1 KB with each new span."""
        self.nlp = blank_english()
        self.cache, self.ids_cache, self.spans = {}, {}, {}

    def encode_parallel(self, texts, verbose):
        """encode() through encode_chunks, CHUNK texts at a time."""
        chunks = [texts[i:i + CHUNK] for i in range(0, len(texts), CHUNK)]
        with contextlib.closing(self.encode_chunks(chunks, verbose)) as results:
            return [ids for chunk in results for ids in chunk]

    def encode_chunks(self, chunks, verbose=False):
        """An iterator over the encodings of a stream of texts: for each list of texts
        that the iterable chunks gives, in its order, the list of their id lists, as
        encode_serial gives them.

        The work is spread over one forked worker process per usable CPU (done here where
        there is one), each with this encoder as it is at the first next(). Memory stays
        bounded however long the stream: chunks is read only as workers free up, at most
        2 chunks per worker are taken from it and not yet yielded, and an encoder whose
        caches outgrow STREAM_CACHE_SPANS forgets them (forget) before its next chunk.

        Interrupting is this process's business: the workers ignore SIGINT and SIGTERM,
        so the exception a handler of this process raises (KeyboardInterrupt, train.py's
        Interrupted) comes out of next() alone. The workers are killed and reaped when
        the iterator ends, raises, or is closed; close one abandoned early
        (contextlib.closing), else they live until it is garbage-collected or this
        process exits. A worker's exception, or its death, raises RuntimeError here."""
        with tqdm(total=len(chunks) if hasattr(chunks, '__len__') else None, ncols=80,
                  leave=False, disable=not verbose) as bar:
            n_workers = usable_cpus()
            if n_workers < 2:
                results = (_encode_chunk(self, chunk) for chunk in chunks)
            else:
                results = _Workers(self, n_workers).ordered(chunks, window=2 * n_workers)
            with contextlib.closing(results):
                for ids in results:
                    bar.update()
                    yield ids


# Texts per chunk that encode() hands to a worker at a time.
CHUNK = 1000
# Distinct spans an encoder keeps in its caches over a stream before it forgets them:
# about 0.5 GB per worker.
STREAM_CACHE_SPANS = 500_000
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class _Worker:
    """A forked process that encodes each list of texts sent to it, one at a time, over a
    pipe of its own: no lock is shared between processes, so stopping any of them at any
    moment leaves none waiting. (multiprocessing.Pool's workers take their tasks from a
    queue behind such a lock, which Pool.terminate() holds while it joins them; its
    workers, running train.py's handlers, took terminate()'s SIGTERM for an exception in
    their task and went on to wait for that lock: parent and workers hung for ever.)"""

    def __init__(self, encoder, others):
        self.conn, theirs = multiprocessing.Pipe()
        # Blocked across the fork, so that a signal cannot reach the worker before it
        # ignores it: it would run the parent's handlers, inherited by fork (train.py's
        # raise Interrupted there, with a traceback, or leave the worker half stopped).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self.pid = os.fork()
            if self.pid == 0:
                _worker_main(encoder, theirs, mask, others + [self])
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        theirs.close()
        self.busy = None  # the index of the chunk it encodes

    def send(self, index, texts):
        self.busy = index
        try:
            self.conn.send(texts)
        except (BrokenPipeError, ConnectionResetError):
            raise self.died() from None

    def receive(self):
        """The index and id lists of the chunk it was sent."""
        try:
            ok, result = self.conn.recv()
        except (EOFError, ConnectionResetError):
            raise self.died() from None
        if not ok:
            raise RuntimeError(f'an encoding worker failed:\n{result}')
        index, self.busy = self.busy, None
        return index, result

    def died(self):
        return RuntimeError(f'an encoding worker (pid {self.pid}) ended unexpectedly '
                            f'({self.reap()})')

    def kill(self):
        self.conn.close()
        if self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)

    def reap(self):
        """Waits for the process's end (no zombie left), saying how it ended."""
        if self.pid is None:
            return 'reaped'
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        code = os.waitstatus_to_exitcode(status)
        return f'killed by signal {-code}' if code < 0 else f'exit status {code}'


def _worker_main(encoder, conn, mask, parent_ends):
    """A worker's whole life, in the forked child: it never returns into the parent's
    code, and its exit runs none of the parent's clean-up (atexit, buffered output)."""
    code = 1
    try:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for worker in parent_ends:  # so that each worker sees EOF once the parent has gone
            worker.conn.close()
        _serve(encoder, conn)
        code = 0
    finally:
        os._exit(code)


def _serve(encoder, conn):
    """Encodes each list of texts received until the parent closes its end (or dies)."""
    while True:
        try:
            texts = conn.recv()
        except EOFError:
            return
        try:
            reply = True, _encode_chunk(encoder, texts)
        except Exception:
            reply = False, traceback.format_exc()
        try:
            conn.send(reply)
        except (BrokenPipeError, ConnectionResetError):
            return


def _encode_chunk(encoder, texts):
    """A stream's chunk through encode_serial, the encoder's caches forgotten first where
    they have grown past STREAM_CACHE_SPANS: a corpus has ever more distinct words."""
    if len(encoder.spans) > STREAM_CACHE_SPANS:
        encoder.forget()
    return encoder.encode_serial(texts, verbose=False)


class _Workers:
    """n _Worker processes, forked from encoder. They are killed and reaped by close(),
    or at this process's exit where an abandoned iterator never closed them."""

    def __init__(self, encoder, n):
        self.workers = []
        self.close = weakref.finalize(self, _stop, self.workers)
        try:
            for _ in range(n):
                self.workers.append(_Worker(encoder, self.workers))
        except BaseException:
            self.close()
            raise

    def ordered(self, chunks, window):
        """The id lists of each chunk in input order, with at most `window` chunks taken
        from chunks and not yet yielded. A worker is sent a chunk only when it has none:
        sending while it sends a result back could leave both waiting on a full pipe."""
        chunks, done, taken, yielded = iter(chunks), {}, 0, 0
        try:
            while True:
                idle = [w for w in self.workers if w.busy is None]
                for worker in idle[:window - (taken - yielded)]:  # as many as there is room
                    texts = next(chunks, _END)
                    if texts is _END:
                        break
                    worker.send(taken, texts)
                    taken += 1
                if yielded in done:
                    yield done.pop(yielded)
                    yielded += 1
                elif taken == yielded:  # no chunk came though workers and room were free
                    return
                else:
                    busy = {w.conn: w for w in self.workers if w.busy is not None}
                    for conn in multiprocessing.connection.wait(list(busy)):
                        index, ids = busy[conn].receive()
                        done[index] = ids
        finally:
            self.close()


_END = object()


def _stop(workers):
    """Kills every worker, then reaps them: a worker's chunk is not waited for."""
    for worker in workers:
        worker.kill()
    while workers:
        workers[-1].reap()
        workers.pop()


def usable_cpus():
    """CPUs this process may run on; fork is needed to share the encoder cheaply."""
    if 'fork' not in multiprocessing.get_all_start_methods():
        return 1
    if hasattr(os, 'sched_getaffinity'):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
