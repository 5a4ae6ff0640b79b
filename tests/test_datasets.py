"""The ROCStories loader on small CSVs written here (and on the real files when present),
its errors, and the encoded-dataset cache."""
import csv
import json
import os

import numpy as np
import pytest

import text_utils
from conftest import openai_vocab, rocstories_dir
from datasets import (CSV_HEADER as HEADER, TEST_NAME as TEST, VAL_NAME as VAL, encoded,
                      rocstories, rocstories_splits, rocstories_test_labels)


def row(i, label='1'):
    return [f'id{i}', f'S{i} one.', 'Two.', 'Three.', 'Four.', f'E{i} a.', f'E{i} b.', label]


def write(path, rows, header=HEADER):
    with open(path, 'w', newline='', encoding='utf-8') as f:
        csv.writer(f).writerows([header] + rows)


@pytest.fixture
def data_dir(tmp_path):
    write(tmp_path / VAL, [row(i, '1' if i % 3 else '2') for i in range(10)])
    write(tmp_path / TEST, [row(100 + i, '2') for i in range(4)])
    return tmp_path


def test_stories_joined_labels_zero_based_and_split(data_dir):
    (trX1, trX2, trX3, trY), (vaX1, vaX2, vaX3, vaY), (teX1, teX2, teX3) = \
        rocstories(data_dir, n_valid=3)
    assert (len(trX1), len(vaX1), len(teX1)) == (7, 3, 4)
    assert teX1[0] == 'S100 one. Two. Three. Four.'
    assert (teX2[0], teX3[0]) == ('E100 a.', 'E100 b.')
    stories = {f'S{i} one. Two. Three. Four.': i for i in range(10)}
    assert sorted(stories[s] for s in trX1 + vaX1) == list(range(10))
    for X1, X2, X3, Y in ((trX1, trX2, trX3, trY), (vaX1, vaX2, vaX3, vaY)):
        assert Y.dtype == np.int32
        for s, e1, e2, y in zip(X1, X2, X3, Y):
            i = stories[s]
            assert (e1, e2, y) == (f'E{i} a.', f'E{i} b.', 0 if i % 3 else 1)


def test_test_labels(data_dir, tmp_path):
    assert rocstories_test_labels(data_dir).tolist() == [1, 1, 1, 1]
    write(data_dir / TEST, [row(7)[:7]], header=HEADER[:7])
    assert rocstories_test_labels(data_dir) is None
    assert rocstories(data_dir, n_valid=3)[2][1] == ['E7 a.']


def test_missing_file_names_it_and_where_rocstories_comes_from(data_dir):
    os.remove(data_dir / VAL)
    with pytest.raises(FileNotFoundError) as err:
        rocstories(data_dir)
    message = str(err.value)
    assert f"'{VAL}'" in message and str(data_dir) in message
    assert 'https://cs.rochester.edu/nlp/rocstories/' in message and '--data_dir' in message


def test_short_row_names_file_and_line(data_dir):
    rows = [row(0), row(1)[:6], row(2)]
    write(data_dir / VAL, rows)
    with pytest.raises(ValueError, match=r'ALL_val\.csv, line 3: expected 8 fields .* found 6'):
        rocstories(data_dir, n_valid=1)


def test_line_numbers_count_lines_inside_quoted_fields(data_dir):
    first = row(0)
    first[1] = 'A story\nover two lines.'
    write(data_dir / TEST, [first, row(1, '0')])
    with pytest.raises(ValueError, match=r'ALL_test\.csv, line 4: AnswerRightEnding must be '
                                         r"1 or 2, found '0'"):
        rocstories_test_labels(data_dir)


@pytest.mark.parametrize('label', ['3', 'x', '1.0'])
def test_label_outside_one_two(data_dir, label):
    write(data_dir / VAL, [row(0), row(1, label)])
    with pytest.raises(ValueError, match=f'line 3: AnswerRightEnding must be 1 or 2, '
                                         f'found {label!r}'):
        rocstories(data_dir, n_valid=1)


def test_bad_header_and_empty_file(data_dir):
    write(data_dir / VAL, [row(0)], header=HEADER[:5])
    with pytest.raises(ValueError, match='line 1: expected the header InputStoryid, .*found '
                                         'InputStoryid, .*, InputSentence4; it lacks '
                                         'RandomFifthSentenceQuiz1, RandomFifthSentenceQuiz2$'):
        rocstories(data_dir)
    # a missing second ending is named, not taken for an unlabelled file
    write(data_dir / VAL, [row(0)[:7]], header=HEADER[:6] + HEADER[7:])
    with pytest.raises(ValueError, match='it lacks RandomFifthSentenceQuiz2$'):
        rocstories(data_dir)
    (data_dir / VAL).write_text('')
    with pytest.raises(ValueError, match='line 1: .*found an empty file$'):
        rocstories(data_dir)
    write(data_dir / VAL, [], header=HEADER)
    with pytest.raises(ValueError, match='ALL_val.csv holds a header but no stories'):
        rocstories(data_dir)
    write(data_dir / VAL, [row(0)[:7]], header=HEADER[:7])
    with pytest.raises(ValueError, match='AnswerRightEnding column'):
        rocstories(data_dir)


def test_empty_field_duplicate_story_and_non_utf8_byte_are_named(data_dir):
    empty = row(1)
    empty[6] = ' '
    write(data_dir / VAL, [row(0), empty])
    with pytest.raises(ValueError, match='ALL_val.csv, line 3: RandomFifthSentenceQuiz2 is empty'):
        rocstories(data_dir, n_valid=1)
    write(data_dir / VAL, [row(0), row(1), row(0)])
    with pytest.raises(ValueError, match="line 4: story 'id0' again, first on line 2"):
        rocstories(data_dir, n_valid=1)
    write(data_dir / VAL, [row(i) for i in range(3)])
    (data_dir / VAL).write_bytes((data_dir / VAL).read_bytes().replace(b'S1 one', b'S1 \xff'))
    with pytest.raises(ValueError, match=r'ALL_val.csv, line 3: expected UTF-8 text, found byte 0xff'):
        rocstories(data_dir, n_valid=1)


def test_nul_is_an_error_and_other_controls_a_warning(data_dir, capsys):
    """The Story Cloze CSVs are official files: a NUL is refused, naming its line; a control
    character that ftfy deletes is read, with one warning naming the first."""
    nul = row(1)
    nul[2] = 'T\x00wo.'
    write(data_dir / VAL, [row(0), nul])
    with pytest.raises(ValueError, match=r"ALL_val\.csv, line 3: 'InputSentence2' holds a NUL "
                                         r'character \(U\+0000\) at character 2'):
        rocstories(data_dir, n_valid=1)
    bell = row(1)
    bell[5] = 'E1\x07 a.'
    write(data_dir / VAL, [row(0), bell, row(2)])
    train, valid, _ = rocstories(data_dir, n_valid=1)
    assert sorted(train[1] + valid[1]) == ['E0 a.', 'E1\x07 a.', 'E2 a.']
    assert capsys.readouterr().err.splitlines() == [(f"warning: {data_dir / VAL}, line 3: 'RandomFifthSentenceQuiz1' holds the "
                      "control character U+0007 at character 3, which ftfy deletes, as in the "
                      "paper's runs (1 such text(s) in all)")]


def test_the_test_csv_is_needed_only_where_not_optional(data_dir):
    os.remove(data_dir / TEST)
    splits = rocstories_splits(str(data_dir), 3, optional=('test',))
    assert list(splits) == ['train', 'dev'] and len(splits['train'].labels) == 7
    with pytest.raises(FileNotFoundError, match=f"'{TEST}' not found"):
        rocstories_splits(str(data_dir), 3)


def test_splits_hold_the_test_csv_and_its_labels(data_dir):
    test = rocstories_splits(str(data_dir), 3, optional=('test',))['test']
    assert test.fields[0][0] == 'S100 one. Two. Three. Four.' and test.labels.tolist() == [1] * 4
    assert test.labels.dtype == np.int32


@pytest.mark.parametrize('n_valid', [0, 10, 11])
def test_n_valid_must_leave_training_stories(data_dir, n_valid):
    with pytest.raises(ValueError, match=f'--n_valid {n_valid}: .* holds 10 stories, so between '
                                         '1 and 9 can be held out'):
        rocstories(data_dir, n_valid=n_valid)


# ---- the cache ---------------------------------------------------------------------

@pytest.fixture
def vocab(tmp_path):
    pieces = [c + end for c in 'abeinostw.0123456789' for end in ('', '</w>')]
    encoder_path, bpe_path = tmp_path / 'encoder.json', tmp_path / 'vocab.bpe'
    encoder_path.write_text(json.dumps({p: i for i, p in enumerate(pieces)}))
    bpe_path.write_text('#version: 0.2\no n\nt w\n')
    return str(encoder_path), str(bpe_path)


def run_cached(data_dir, vocab, cache_dir, n_valid=3):
    return encoded('rocstories', rocstories_splits(str(data_dir), n_valid), *vocab,
                   cache_dir=str(cache_dir), verbose=False)


def plain_encoding(data_dir, vocab, n_valid=3):
    """{split: [ids of each field]}, encoded directly."""
    enc = text_utils.TextEncoder(*vocab)
    return {name: [enc.encode(field, verbose=False) for field in split.fields]
            for name, split in rocstories_splits(str(data_dir), n_valid).items()}


def as_lists(splits):
    return {name: [field.tolist() for field in split.fields] for name, split in splits.items()}


def assert_same(got, expected):
    """got: encoded splits; expected: {split: [ids of each field]}."""
    assert as_lists(got) == expected


def test_cache_hit_equals_encoding_and_needs_no_encoder(data_dir, vocab, tmp_path, monkeypatch):
    cache_dir = tmp_path / 'cache'
    expected = plain_encoding(data_dir, vocab)
    # 'S100 one.': s 1 0 0</w>, then o n e</w> merged to 'on' (no piece: 0) and e</w>,
    # then .</w>; a character's id is twice its place in 'abeinostw.0123456789' (+1 for </w>)
    assert expected['test'][0][0][:6] == [2 * 6, 2 * 11, 2 * 10, 2 * 10 + 1, 0, 2 * 2 + 1]
    got = run_cached(data_dir, vocab, cache_dir)
    assert_same(got, expected)
    assert got['dev'].labels.tolist() == rocstories_splits(str(data_dir), 3)['dev'].labels.tolist()
    assert len(os.listdir(cache_dir)) == 1

    def no_encoder(*args):
        raise AssertionError('TextEncoder built on a cache hit')
    monkeypatch.setattr(text_utils, 'TextEncoder', no_encoder)
    assert_same(run_cached(data_dir, vocab, cache_dir), expected)


def test_changed_inputs_are_encoded_again(data_dir, vocab, tmp_path):
    cache_dir = tmp_path / 'cache'
    first = run_cached(data_dir, vocab, cache_dir, n_valid=3)
    assert len(run_cached(data_dir, vocab, cache_dir, n_valid=4)['dev'].fields[0]) == 4
    write(data_dir / TEST, [row(200)])
    assert run_cached(data_dir, vocab, cache_dir, n_valid=3)['test'].fields[0] != first['test'].fields[0]
    with open(vocab[1], 'a') as f:
        f.write('e </w>\n')
    run_cached(data_dir, vocab, cache_dir, n_valid=3)
    assert len(os.listdir(cache_dir)) == 4


def only_entry(cache_dir):
    (name,) = os.listdir(cache_dir)
    return os.path.join(cache_dir, name)


@pytest.mark.parametrize('damage', ['truncate', 'flip', 'garbage'])
def test_corrupt_entry_is_rebuilt_with_a_warning(data_dir, vocab, tmp_path, damage):
    cache_dir = tmp_path / 'cache'
    expected = as_lists(run_cached(data_dir, vocab, cache_dir))
    path = only_entry(cache_dir)
    with open(path, 'rb') as f:
        raw = bytearray(f.read())
    if damage == 'truncate':
        raw = raw[:len(raw) // 2]
    elif damage == 'flip':
        # the middle of the stored ids: the zip layer may or may not notice, the checksum does
        raw[len(raw) // 3] ^= 0xFF
    else:
        raw = b'not a cache entry'
    with open(path, 'wb') as f:
        f.write(raw)
    with pytest.warns(UserWarning, match='rebuilding'):
        assert_same(run_cached(data_dir, vocab, cache_dir), expected)
    assert_same(run_cached(data_dir, vocab, cache_dir), expected)


def test_stale_entry_under_the_expected_name_is_rebuilt(data_dir, vocab, tmp_path):
    cache_dir = tmp_path / 'cache'
    expected = as_lists(run_cached(data_dir, vocab, cache_dir))
    path = only_entry(cache_dir)
    write(data_dir / TEST, [row(300)])
    run_cached(data_dir, vocab, cache_dir)
    other = [p for p in os.listdir(cache_dir) if os.path.join(cache_dir, p) != path][0]
    os.replace(os.path.join(cache_dir, other), path)  # the new files' entry, old name
    write(data_dir / TEST, [row(100 + i, '2') for i in range(4)])
    with pytest.warns(UserWarning, match='stale'):
        assert_same(run_cached(data_dir, vocab, cache_dir), expected)


# ---- the real files ----------------------------------------------------------------

def test_real_split_as_openai_made_it():
    roc_dir = rocstories_dir()
    (trX1, trX2, _, trY), (vaX1, _, vaX3, vaY), (teX1, _, _) = rocstories(roc_dir)
    assert (len(trX1), len(vaX1), len(teX1)) == (1497, 374, 1871)
    # recorded from OpenAI's own loader on these files
    assert trX1[0].startswith('I decided to rent a movie when friends came over last night.')
    assert trX2[0] == 'I had a hard time falling asleep that night.'
    assert vaX1[0].startswith('Jackson had always avoided drinking anything alcoholic. He k')
    assert vaX3[0] == 'E spit out his beer.'
    assert teX1[0].startswith('My friends all love to go to the club to dance. Th')
    assert trY[:12].tolist() == [0, 1, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0]
    assert vaY[:12].tolist() == [0, 0, 0, 1, 0, 0, 1, 1, 0, 1, 0, 0]
    assert (int(trY.sum()), int(vaY.sum())) == (735, 174)
    labels = rocstories_test_labels(roc_dir)
    assert len(labels) == 1871 and set(labels.tolist()) == {0, 1}


def test_real_cache_hit_reads_what_was_encoded_without_an_encoder(tmp_path, monkeypatch):
    roc_dir, vocab = rocstories_dir(), openai_vocab()
    first = encoded('rocstories', rocstories_splits(roc_dir), *vocab, cache_dir=str(tmp_path),
                    verbose=False)
    assert {name: [len(f) for f in split.fields] for name, split in first.items()} == \
        {'train': [1497] * 3, 'dev': [374] * 3, 'test': [1871] * 3}
    monkeypatch.setattr(text_utils, 'TextEncoder', None)  # a hit must not build one
    again = encoded('rocstories', rocstories_splits(roc_dir), *vocab, cache_dir=str(tmp_path),
                    verbose=False)
    assert_same(again, as_lists(first))
