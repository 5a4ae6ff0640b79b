"""TextEncoder against hand-worked cases on a tiny vocabulary, and against a deliberately
plain reference encoder (a direct transcription of OpenAI's algorithm, no caches or
shortcuts) on random text and on every ROCStories field when the real files are here."""
import csv
import json
import os
import random
import re
import signal
import string

import ftfy
import pytest
import spacy

import conftest
import datasets
import text_utils
from text_utils import TextEncoder, fix_text, text_standardize

ROC_FILES = [datasets.VAL_NAME, datasets.TEST_NAME]


# ---- the plain reference -------------------------------------------------------------

# Every character class of OpenAI's pattern spelled out as its own alternative.
REF_PUNCT = re.compile('(' + '|'.join(re.escape(c) + '+' for c in '-~!";?+,)(/*[]}{|_') + ')')


def ref_standardize(text):
    for old, new in (('—', '-'), ('–', '-'), ('―', '-'), ('…', '...'), ('´', "'")):
        text = text.replace(old, new)
    text = REF_PUNCT.sub(r' \1 ', text)
    text = re.sub(r'\s*\n\s*', ' \n ', text)
    text = re.sub(r'[^\S\n]+', ' ', text)
    return text.strip()


def ref_bpe(token, ranks):
    word = list(token[:-1]) + [token[-1] + '</w>']
    while len(word) > 1:
        pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
        best = min(pairs, key=lambda p: ranks.get(p, float('inf')))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(word):
            if word[i:i + 2] == list(best):
                merged.append(best[0] + best[1])
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    joined = ' '.join(word)
    return '\n</w>' if joined == '\n  </w>' else joined


class RefEncoder:
    def __init__(self, encoder_path, bpe_path):
        self.nlp = spacy.blank('en')
        with open(encoder_path, encoding='utf-8') as f:
            self.encoder = json.load(f)
        with open(bpe_path, encoding='utf-8') as f:
            lines = f.read().split('\n')[1:-1]
        self.ranks = dict(zip([tuple(line.split()) for line in lines], range(len(lines))))
        self.bpe_cache = {}

    def tokens(self, text):
        return [t.text for t in self.nlp(ref_standardize(ftfy.fix_text(text)))]

    def bpe(self, token):
        if token not in self.bpe_cache:
            self.bpe_cache[token] = ref_bpe(token, self.ranks)
        return self.bpe_cache[token]

    def encode(self, texts, verbose=False):
        return [[self.encoder.get(piece, 0)
                 for token in self.tokens(text)
                 for piece in self.bpe(token.lower()).split(' ')]
                for text in texts]


# ---- a tiny vocabulary ---------------------------------------------------------------

MERGES = [('h', 'e'), ('l', 'l'), ('he', 'll'), ('hell', 'o</w>'), ('a', 'b</w>')]
PIECES = (['.</w>', 'h', 'e', 'l', 'o', 'a', 'b', 'c', 'he', 'll', 'hell', 'l</w>',
           'o</w>', 'b</w>', 'c</w>', 'hello</w>', 'ab</w>', '\n</w>', "'</w>", 'é</w>',
           '&</w>', ',</w>', '!!</w>', '!</w>', '-</w>', '...</w>', 's</w>', 'x</w>'])
ID = {piece: i for i, piece in enumerate(PIECES)}


@pytest.fixture(scope='module')
def tiny_vocab(tmp_path_factory):
    folder = tmp_path_factory.mktemp('vocab')
    encoder_path, bpe_path = folder / 'encoder.json', folder / 'vocab.bpe'
    encoder_path.write_text(json.dumps(ID), encoding='utf-8')
    bpe_path.write_text('#version: 0.2\n' + ''.join(f'{a} {b}\n' for a, b in MERGES),
                        encoding='utf-8')
    return str(encoder_path), str(bpe_path)


@pytest.fixture(scope='module')
def tiny(tiny_vocab):
    return TextEncoder(*tiny_vocab)


@pytest.fixture(scope='module')
def tiny_ref(tiny_vocab):
    return RefEncoder(*tiny_vocab)


def encode1(encoder, text):
    return encoder.encode([text], verbose=False)[0]


def test_vocabulary_files_read_as_openai_did(tiny):
    assert tiny.encoder == ID
    assert tiny.decoder == {i: p for p, i in ID.items()}
    assert tiny.bpe_ranks == {pair: rank for rank, pair in enumerate(MERGES)}


def test_bpe_merges_by_rank_until_none_applies(tiny):
    # h e l l o</w> -> he l l o</w> -> he ll o</w> -> hell o</w> -> hello</w>
    assert tiny.bpe('hello') == 'hello</w>'
    # 'l l</w>' is not the pair 'l l', so only h e merges
    assert tiny.bpe('hell') == 'he l l</w>'
    assert tiny.bpe('ab') == 'ab</w>'
    assert tiny.bpe('cab') == 'c ab</w>'
    assert tiny.bpe('x') == 'x</w>'
    # after a pair merges, left to right, overlapping occurrences do not
    assert tiny.bpe('llll') == 'll l l</w>'


def test_encode_lowercases_and_maps_unknown_pieces_to_zero(tiny):
    assert encode1(tiny, 'Hello') == [ID['hello</w>']]
    assert encode1(tiny, 'HELLO ab.') == [ID['hello</w>'], ID['ab</w>'], ID['.</w>']]
    # 'z' and 'q' are in no piece: OpenAI's encoder.get(piece, 0)
    assert encode1(tiny, 'zq') == [0, 0]
    assert encode1(tiny, 'cz') == [ID['c'], 0]
    assert encode1(tiny, '') == []
    assert tiny.encode(['ab', 'Hello'], verbose=False) == [[ID['ab</w>']], [ID['hello</w>']]]


def test_newline_token_keeps_its_own_id(tiny):
    # spaCy makes '\n ' one token; its BPE '\n  </w>' becomes OpenAI's '\n</w>'
    assert tiny.bpe('\n ') == '\n</w>'
    expected = [ID['hello</w>'], ID['\n</w>'], ID['ab</w>']]
    assert encode1(tiny, 'hello\nab') == expected
    assert encode1(tiny, 'hello \n\n \r\n  ab') == expected


@pytest.mark.parametrize('text, expected', [
    ('a—b', 'a - b'), ('a–b', 'a - b'), ('a―b', 'a - b'),
    ('wait…', 'wait...'), ('it´s', "it's"),
    ('what?!!', 'what ? !!'), ('a--b', 'a -- b'), ('so...', 'so...'),
    ('and/or', 'and / or'), ('x=(1+2)*3', 'x= ( 1 + 2 ) * 3'), ('[a]{b}', '[ a ] { b }'),
    ('a|b_c~d', 'a | b _ c ~ d'), ('"hi";', '" hi " ;'),
    ('a\\b', 'a\\b'), ("a'b:c&d.", "a'b:c&d."),
    ('  a \t b  ', 'a b'), ('a\n\nb', 'a \n b'), ('a \r\n \n  b\n', 'a \n b'),
    ('a\u00a0\u2003b', 'a b'), ('!!!', '!!!'), ('', ''),
])
def test_text_standardize_rules(text, expected):
    assert text_standardize(text) == expected


def test_text_standardize_pads_each_punctuation_run():
    for c in '-~!";?+,)(/*[]}{|_':
        assert text_standardize(f'x{c}{c}y{c}') == f'x {c}{c} y {c}'


def test_text_standardize_matches_reference_on_random_text():
    rng = random.Random(0)
    alphabet = (list('-~!";?+,)(/*[]}{|_\\.\'&:ab ')
                + ['\n', '\t', '\r', '—', '…', '´', '\u00a0'])
    for _ in range(3000):
        text = ''.join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        assert text_standardize(text) == ref_standardize(text), repr(text)


@pytest.mark.parametrize('text, expected', [
    ('cafÃ©', 'café'), ('a &amp; b', 'a & b'), ('don&#39;t', "don't"),
    ('ﬁne', 'fine'), ('ＬＯＵＤ', 'LOUD'), ('“hi”', '"hi"'), ('a\r\nb', 'a\nb'),
    ('a\x1b[31mb', 'ab'), ('a\x00b', 'ab'), ('plain text, no change.', 'plain text, no change.'),
])
def test_ftfy_fixes_apply(text, expected):
    assert fix_text(text) == expected


def test_ftfy_shortcut_changes_nothing_ftfy_would_change():
    rng = random.Random(1)
    alphabet = (list('ab &;#39x<>amp\t\n\r\x1b[m') + [chr(i) for i in range(32)]
                + ['\x7f', 'Ã', '©', '’', 'ﬁ', '\u2028', '\x85'])
    for _ in range(3000):
        text = ''.join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert fix_text(text) == ftfy.fix_text(text), repr(text)


def test_ftfy_fixes_reach_the_ids(tiny):
    # café: c a f é</w>, and 'f' is no piece
    assert encode1(tiny, 'Ab &amp; cafÃ©') == [ID['ab</w>'], ID['&</w>'], ID['c'], ID['a'], 0,
                                              ID['é</w>']]


def test_regex_whitespace_is_str_whitespace():
    # spaCy splits on str.isspace(); text_standardize on the regex \s. The span cache
    # relies on the two agreeing, so a standardized text splits on single spaces only.
    assert all(bool(re.match(r'\s', chr(i))) == chr(i).isspace() for i in range(0x3000 + 1))


SPECIAL_WORDS = ["can't", "won't", "I'm", "a.m.", "p.m.", ':)', ':-)', '<3', 'Mr.', 'U.S.',
                 "'s", "n't", "'ll", 'e.g.', 'o.O', ':', ')', '(', "'", '-', '.', 'hello',
                 'ab', 'cab', 'Hello!!', '\n', '...', 'Dr', 'etc.', ':(', '=)', "''", 'xD',
                 "y'all", "ma'am", "o'clock", '^_^', '¯\\(ツ)/¯', 'c.', 'b.']


def test_matches_reference_on_special_cases_and_their_neighbours(tiny, tiny_ref):
    rng = random.Random(2)
    texts = [' '.join(rng.choice(SPECIAL_WORDS) for _ in range(rng.randint(1, 8)))
             for _ in range(1500)]
    texts += [''.join(rng.choice(SPECIAL_WORDS) for _ in range(rng.randint(1, 4)))
              for _ in range(500)]
    texts += [': )', ': - )', 'a . m .', "can ' t", 'hello : ) ab']
    assert tiny.encode(texts, verbose=False) == tiny_ref.encode(texts)


@pytest.fixture(scope='module')
def char_vocab(tmp_path_factory):
    """Every character alone and ending a word, no merges: the ids spell out the
    (lowercased) tokens and where each one ends."""
    chars = set(string.printable) | {c for rule in spacy.blank('en').tokenizer.rules
                                     for c in rule.lower()}
    pieces = sorted(chars) + sorted(c + '</w>' for c in chars)
    folder = tmp_path_factory.mktemp('chars')
    (folder / 'encoder.json').write_text(json.dumps({p: i for i, p in enumerate(pieces)}))
    (folder / 'vocab.bpe').write_text('#version: 0.2\n')
    return str(folder / 'encoder.json'), str(folder / 'vocab.bpe')


def test_same_tokens_as_spacy_on_whole_text_around_special_cases(char_vocab):
    # Special cases cut anywhere by spaces, next to each other and to words: wherever
    # spaCy's special-case matcher could act across a space, the span cache must not.
    rules = sorted(spacy.blank('en').tokenizer.rules)
    rng = random.Random(4)
    words = rules + ['a', 'I', 'did', 'he', 's', '.', ':', ')', '(', "'", 'x', '-', '_']

    def cut(rule):
        i = rng.randint(0, len(rule))
        return rule[:i] + ' ' + rule[i:] if rng.random() < 0.7 else rule
    texts = [' '.join(cut(rng.choice(words)) for _ in range(rng.randint(1, 6)))
             for _ in range(4000)]
    ours, ref = TextEncoder(*char_vocab), RefEncoder(*char_vocab)
    assert ours.encode(texts, verbose=False) == ref.encode(texts)


# Standardized texts where spaCy's special cases act across a space: the tokens of the
# whole text are not those of its spans taken one by one.
ACROSS_SPACES = ['( o:x', 'x:o )', 'It’s ) :3pm', 'v. ) :3am', '( - 8 ) :1am',
                 'Theyll ( x:o )']


def test_special_cases_across_spaces_are_real_and_handled(char_vocab):
    nlp = spacy.blank('en')
    for text in ACROSS_SPACES:
        assert text_standardize(text) == text
        spans = [t.text for piece in text.split(' ') for t in nlp(piece)]
        assert [t.text for t in nlp(text)] != spans, text
    ours, ref = TextEncoder(*char_vocab), RefEncoder(*char_vocab)
    texts = ACROSS_SPACES + [f'a {text} b' for text in ACROSS_SPACES]
    assert ours.encode(texts, verbose=False) == ref.encode(texts)


def test_special_case_across_a_space_goes_through_whole_text(tiny, monkeypatch):
    whole = []
    monkeypatch.setattr(tiny, 'tokenize', lambda text, f=tiny.tokenize:
                        whole.append(text) or f(text))
    encode1(tiny, 'ab : ) ab')
    assert 'ab : ) ab' in whole


def test_new_spans_tokenized_in_batches_or_alone_alike(tiny_vocab, tiny_ref):
    rng = random.Random(5)
    texts = [' '.join(rng.choice(SPECIAL_WORDS) for _ in range(6)) for _ in range(800)]
    batched, alone = TextEncoder(*tiny_vocab), TextEncoder(*tiny_vocab)
    assert batched.batchable
    alone.batchable = False
    assert batched.encode(texts, verbose=False) == alone.encode(texts, verbose=False) \
        == tiny_ref.encode(texts)
    assert batched.spans == alone.spans


def test_two_processes_give_the_same_ids(tiny, tiny_ref, monkeypatch):
    monkeypatch.setattr(text_utils, 'PARALLEL_MIN', 10)
    monkeypatch.setattr(text_utils, 'usable_cpus', lambda: 2)
    rng = random.Random(3)
    texts = [' '.join(rng.choice(SPECIAL_WORDS) for _ in range(5)) for _ in range(2500)]
    assert tiny.encode(texts, verbose=False) == tiny_ref.encode(texts)


def children():
    """The pids of this process's child processes, zombies included."""
    found = set()
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/stat') as f:
                if int(f.read().rsplit(')', 1)[1].split()[1]) == os.getpid():
                    found.add(int(pid))
        except (OSError, IndexError):
            pass
    return found


def test_encode_chunks_streams_in_order_reading_ahead_a_bounded_window(tiny, monkeypatch):
    """Three workers: each chunk's ids as encode_serial gives them, in input order, with
    the input read as the workers need it: never more than 2 chunks per worker taken
    and not yet yielded (multiprocessing.Pool.imap would read them all at once)."""
    monkeypatch.setattr(text_utils, 'usable_cpus', lambda: 3)
    rng = random.Random(6)
    chunks = [[' '.join(rng.choice(SPECIAL_WORDS) for _ in range(5))
               for _ in range(rng.randint(0, 40))] for _ in range(30)]
    taken, results = [], []

    def stream():
        for chunk in chunks:
            taken.append(chunk)
            yield chunk
    for ids in tiny.encode_chunks(stream()):
        results.append(ids)
        assert len(taken) - (len(results) - 1) <= 2 * 3  # the one just yielded included
    assert results == [tiny.encode_serial(chunk, verbose=False) for chunk in chunks]


def test_encode_chunks_workers_ignore_signals_and_are_reaped_when_closed(tiny, monkeypatch):
    """SIGINT and SIGTERM sent to the workers change nothing: what to do about them is the
    parent's business (and its handlers, inherited by fork, are not theirs to run).
    Closing the stream early kills and reaps them: no child is left, not even a zombie."""
    monkeypatch.setattr(text_utils, 'usable_cpus', lambda: 2)
    before = children()
    expected = tiny.encode_serial(['hello ab'] * 10, verbose=False)
    stream = tiny.encode_chunks(['hello ab'] * 10 for _ in range(40))
    assert next(stream) == expected
    workers = children() - before
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
    assert [next(stream) for _ in range(20)] == [expected] * 20
    assert children() - before == workers
    stream.close()
    assert children() - before == set()


def test_encode_chunks_raises_a_worker_s_error_or_death(tiny, monkeypatch):
    monkeypatch.setattr(text_utils, 'usable_cpus', lambda: 2)
    before = children()

    def encode_serial(texts, verbose):  # runs in the workers
        if texts == ['bad']:
            raise ValueError('a bad text')
        if texts == ['exit']:
            os._exit(3)
        return [[1]] * len(texts)
    monkeypatch.setattr(tiny, 'encode_serial', encode_serial)
    with pytest.raises(RuntimeError, match='ValueError: a bad text'):
        list(tiny.encode_chunks([['a'], ['bad'], ['c']]))
    with pytest.raises(RuntimeError, match=r'ended unexpectedly \(exit status 3\)'):
        list(tiny.encode_chunks([['a'], ['exit'], ['c']]))
    assert children() == before


def test_encode_chunks_forgets_caches_grown_past_the_bound(tiny, tiny_ref, monkeypatch):
    """Over a stream, an encoder's caches (which grow with each new word) are dropped
    once past STREAM_CACHE_SPANS, before the next chunk, here and in the workers alike;
    the ids stay the reference's."""
    monkeypatch.setattr(text_utils, 'STREAM_CACHE_SPANS', 60)
    rng = random.Random(7)
    chunks = [[' '.join(''.join(rng.choice('abcehlo') for _ in range(6)) for _ in range(5))
               for _ in range(10)] for _ in range(6)]  # about 50 new spans each
    expected = [tiny_ref.encode(chunk) for chunk in chunks]
    monkeypatch.setattr(text_utils, 'usable_cpus', lambda: 1)
    sizes = []
    for ids, chunk in zip(tiny.encode_chunks(chunks), expected):
        assert ids == chunk
        sizes.append(len(tiny.spans))
    assert max(sizes) <= 60 + 50 and any(b < a for a, b in zip(sizes, sizes[1:])), sizes
    monkeypatch.setattr(text_utils, 'usable_cpus', lambda: 2)
    assert list(tiny.encode_chunks(chunks)) == expected


def test_verbose_shows_progress(tiny, capsys):
    tiny.encode(['hello'] * 3, verbose=True)
    assert '/3 [' in capsys.readouterr().err
    tiny.encode(['hello'] * 3, verbose=False)
    assert capsys.readouterr().err == ''


# ---- OpenAI's vocabulary and ROCStories ------------------------------------------------

@pytest.fixture(scope='module')
def openai_vocab():
    return conftest.openai_vocab()


@pytest.fixture(scope='module')
def real(openai_vocab):
    return TextEncoder(*openai_vocab)


@pytest.mark.parametrize('text, pieces', [
    ('I decided to rent a movie when friends came over last night.',
     ['i</w>', 'decided</w>', 'to</w>', 'rent</w>', 'a</w>', 'movie</w>', 'when</w>',
      'friends</w>', 'came</w>', 'over</w>', 'last</w>', 'night</w>', '.</w>']),
    ("Jackson didn't drink—ever…",
     ['jackson</w>', 'did</w>', "n't</w>", 'drink</w>', '-</w>', 'ever</w>', '...</w>']),
    ('Hello\nworld', ['hello</w>', '\n</w>', 'world</w>']),
    ('cafÃ© &amp; tea', ['café</w>', '&</w>', 'tea</w>']),
])
def test_hand_checked_real_encodings(real, text, pieces):
    assert [real.decoder[i] for i in encode1(real, text)] == pieces


def test_newline_is_openais_last_id(real):
    assert encode1(real, 'a\nb')[1] == real.encoder['\n</w>'] == 40477


def rocstories_fields():
    fields = []
    for path in (os.path.join(conftest.rocstories_dir(), name) for name in ROC_FILES):
        with open(path, encoding='utf-8') as f:
            rows = list(csv.reader(f))[1:]
        fields += [' '.join(r[1:5]) for r in rows] + [r[5] for r in rows] + [r[6] for r in rows]
    return fields


def test_every_rocstories_field_matches_reference_and_decodes_back(real, openai_vocab):
    fields = rocstories_fields()
    assert len(fields) == 11226
    ref = RefEncoder(*openai_vocab)
    ids = real.encode(fields, verbose=False)
    assert ids == ref.encode(fields)
    for text, text_ids in zip(fields, ids):
        if 0 in text_ids:  # an unknown piece cannot decode back
            continue
        decoded = ''.join(real.decoder[i] for i in text_ids).replace('</w>', ' ').strip()
        assert decoded == ' '.join(t.lower() for t in ref.tokens(text)), text
