"""ROCStories (Story Cloze Test) as OpenAI's finetune-transformer-lm loaded it, plus an
on-disk cache of its BPE ids."""
import csv
import os

import numpy as np

from utils import cached, encode_dataset, file_digest

seed = 3535999445
VAL_NAME = 'cloze_test_val__spring2016 - cloze_test_ALL_val.csv'
TEST_NAME = 'cloze_test_test__spring2016 - cloze_test_ALL_test.csv'
SOURCE = ('The Story Cloze Test CSVs of ROCStories come from '
          'https://cs.rochester.edu/nlp/rocstories/; put them, named as they are there, '
          'in the folder given as --data_dir')
# Columns: InputStoryid, four sentences, two endings, and in labelled files
# AnswerRightEnding (1 or 2).
N_UNLABELLED, N_LABELLED = 7, 8
# Changing how splits are read or encoded must change this, so old caches go stale.
CACHE_VERSION = 1


def csv_path(data_dir, name):
    path = os.path.join(data_dir, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ROCStories file '{name}' not found in {data_dir}. {SOURCE}.")
    return path


def read_stories(path):
    """(stories, endings 1, endings 2, labels) of one CSV, labels 0/1 or None when the
    file has no AnswerRightEnding column. The header row is skipped, as OpenAI did."""
    # Default newline handling, as OpenAI's loader opened the file: it decides how a line
    # break inside a quoted field reads, and so the ids.
    with open(path, encoding='utf-8') as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or len(header) not in (N_UNLABELLED, N_LABELLED):
            raise ValueError(f'{path}, line 1: expected a header of {N_UNLABELLED} or '
                             f'{N_LABELLED} columns (InputStoryid, 4 sentences, 2 endings, '
                             f'AnswerRightEnding where labelled), found '
                             f'{0 if header is None else len(header)}')
        labelled = len(header) == N_LABELLED
        stories, endings1, endings2, labels = [], [], [], []
        for row in rows:
            check_row(row, labelled, path, rows.line_num)
            stories.append(' '.join(row[1:5]))
            endings1.append(row[5])
            endings2.append(row[6])
            if labelled:
                labels.append(int(row[7]) - 1)
    return stories, endings1, endings2, (labels if labelled else None)


def check_row(row, labelled, path, line):
    expected = N_LABELLED if labelled else N_UNLABELLED
    if len(row) != expected:
        columns = 'InputStoryid, 4 sentences, 2 endings' + (', AnswerRightEnding' if labelled
                                                             else '')
        raise ValueError(f'{path}, line {line}: expected {expected} fields ({columns}), '
                         f'found {len(row)}')
    if labelled and row[7].strip() not in ('1', '2'):
        raise ValueError(f'{path}, line {line}: AnswerRightEnding must be 1 or 2, '
                         f'found {row[7]!r}')


def rocstories(data_dir, n_train=1497, n_valid=374):
    """((trX1, trX2, trX3, trY), (vaX1, vaX2, vaX3, vaY), (teX1, teX2, teX3)): the
    labelled validation CSV split at random into train and valid exactly as OpenAI did,
    and the test CSV. X1 is the story, X2 and X3 the endings, Y 0 when X2 is right.
    n_train is kept from OpenAI's signature; there too train is what valid leaves."""
    from sklearn.model_selection import train_test_split  # slow import, needed only here
    val_path = csv_path(data_dir, VAL_NAME)
    storys, comps1, comps2, ys = read_stories(val_path)
    if ys is None:
        raise ValueError(f'{val_path}: expected the AnswerRightEnding column in its header')
    teX1, teX2, teX3, _ = read_stories(csv_path(data_dir, TEST_NAME))
    (trX1, vaX1, trX2, vaX2, trX3, vaX3, trY, vaY) = train_test_split(
        storys, comps1, comps2, ys, test_size=n_valid, random_state=seed)
    return ((trX1, trX2, trX3, np.asarray(trY, dtype=np.int32)),
            (vaX1, vaX2, vaX3, np.asarray(vaY, dtype=np.int32)),
            (teX1, teX2, teX3))


def rocstories_test_labels(data_dir):
    """The test CSV's right endings as 0/1, or None when it has no label column."""
    labels = read_stories(csv_path(data_dir, TEST_NAME))[3]
    return None if labels is None else np.asarray(labels, dtype=np.int32)


def encoded_rocstories(data_dir, encoder_path, bpe_path, cache_dir='cache/', n_valid=374,
                       verbose=True):
    """encode_dataset(rocstories(data_dir, n_valid=n_valid), encoder=TextEncoder(...)),
    read from cache_dir when both CSVs, the vocabulary and n_valid are unchanged."""
    paths = [csv_path(data_dir, VAL_NAME), csv_path(data_dir, TEST_NAME), encoder_path,
             bpe_path]
    key_parts = [f'rocstories v{CACHE_VERSION} n_valid={n_valid}']
    key_parts += [file_digest(path) for path in paths]

    def build():
        from text_utils import TextEncoder  # loads spaCy: only when encoding is needed
        encoder = TextEncoder(encoder_path, bpe_path)
        splits = rocstories(data_dir, n_valid=n_valid)
        return encode_dataset(splits, encoder=encoder, verbose=verbose)

    return cached('rocstories', key_parts, build, cache_dir, verbose=verbose)
