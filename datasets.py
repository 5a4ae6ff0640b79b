"""The data of every task in the GPT-1 paper: ROCStories (Story Cloze Test) as OpenAI's
finetune-transformer-lm loaded it, plus an on-disk cache of its BPE ids; one loader per
GLUE task (cola, sst2, mrpc, qqp, stsb, mnli with GLUE's diagnostic set, qnli, rte, wnli),
snli, scitail and race, each reading the files as their authors ship them and returning
{split name: Split}; and user_csv for a user's own CSV or TSV."""
import csv
import hashlib
import itertools
import json
import os
import re
import sys
from typing import NamedTuple

import numpy as np

from utils import Ragged, cached, file_digest


seed = 3535999445
VAL_NAME = 'cloze_test_val__spring2016 - cloze_test_ALL_val.csv'
TEST_NAME = 'cloze_test_test__spring2016 - cloze_test_ALL_test.csv'
SOURCE = ('The Story Cloze Test CSVs of ROCStories come from '
          'https://cs.rochester.edu/nlp/rocstories/; put them, named as they are there, '
          'in the folder given as --data_dir')
# Columns: InputStoryid, four sentences, two endings, and in labelled files
# AnswerRightEnding (1 or 2).
CSV_HEADER = ['InputStoryid', 'InputSentence1', 'InputSentence2', 'InputSentence3',
              'InputSentence4', 'RandomFifthSentenceQuiz1', 'RandomFifthSentenceQuiz2',
              'AnswerRightEnding']
N_UNLABELLED, N_LABELLED = 7, 8
# Changing how splits are read or encoded must change this, so old caches go stale.
CACHE_VERSION = 2


def csv_path(data_dir, name):
    path = os.path.join(data_dir, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ROCStories file '{name}' not found in {data_dir}. {SOURCE}.")
    return path


def read_stories(path):
    """(stories, endings 1, endings 2, labels) of one CSV, labels 0/1 or None when the
    file has no AnswerRightEnding column. The header row is skipped, as OpenAI did."""
    try:
        return _read_stories(path)
    except UnicodeDecodeError:
        for _ in read_lines(path):  # names the line of the first byte that is not UTF-8
            pass
        raise


def _read_stories(path):
    # Default newline handling, as OpenAI's loader opened the file: it decides how a line
    # break inside a quoted field reads, and so the ids.
    with open(path, encoding='utf-8') as f:
        rows = csv.reader(f)
        labelled = check_header(next(rows, None), path)
        texts = TextCheck(official=True)
        stories, endings1, endings2, labels, lines = [], [], [], [], {}
        for row in rows:
            check_row(row, labelled, path, rows.line_num)
            texts(row[1:7], CSV_HEADER[1:7], f'{path}, line {rows.line_num}')
            if row[0] in lines:
                raise ValueError(f'{path}, line {rows.line_num}: story {row[0]!r} again, first '
                                 f'on line {lines[row[0]]}; remove one of them')
            lines[row[0]] = rows.line_num
            stories.append(' '.join(row[1:5]))
            endings1.append(row[5])
            endings2.append(row[6])
            if labelled:
                labels.append(int(row[7]) - 1)
    if not stories:
        raise ValueError(f'{path} holds a header but no stories')
    texts.warn()
    return stories, endings1, endings2, (labels if labelled else None)


def check_header(header, path):
    """Whether the file is labelled, from a header that must name the Story Cloze
    columns, AnswerRightEnding last where labelled."""
    if header in (CSV_HEADER, CSV_HEADER[:N_UNLABELLED]):
        return len(header) == N_LABELLED
    missing = [c for c in CSV_HEADER[:N_UNLABELLED] if c not in (header or [])]
    found = 'an empty file' if header is None else ', '.join(header)
    raise ValueError(f'{path}, line 1: expected the header {", ".join(CSV_HEADER)} '
                     f'(AnswerRightEnding only where labelled), found {found}'
                     + (f'; it lacks {", ".join(missing)}' if missing and header else ''))


def check_row(row, labelled, path, line):
    expected = N_LABELLED if labelled else N_UNLABELLED
    if len(row) != expected:
        raise ValueError(f'{path}, line {line}: expected {expected} fields '
                         f'({", ".join(CSV_HEADER[:expected])}), found {len(row)}')
    empty = [column for column, value in zip(CSV_HEADER, row) if not value.strip()]
    if empty:
        raise ValueError(f'{path}, line {line}: {", ".join(empty)} is empty')
    if labelled and row[7].strip() not in ('1', '2'):
        raise ValueError(f'{path}, line {line}: AnswerRightEnding must be 1 or 2, '
                         f'found {row[7]!r}')


def rocstories(data_dir, n_train=1497, n_valid=374):
    """((trX1, trX2, trX3, trY), (vaX1, vaX2, vaX3, vaY), (teX1, teX2, teX3)): the
    labelled validation CSV split at random into train and valid exactly as OpenAI did,
    and the test CSV. X1 is the story, X2 and X3 the endings, Y 0 when X2 is right.
    n_train is kept from OpenAI's signature; there too train is what valid leaves."""
    train, valid = rocstories_train_valid(data_dir, n_valid)
    teX1, teX2, teX3, _ = read_stories(csv_path(data_dir, TEST_NAME))
    return train, valid, (teX1, teX2, teX3)


def rocstories_train_valid(data_dir, n_valid):
    """The labelled validation CSV split at random as OpenAI did: (X1, X2, X3, Y) of
    train and of valid."""
    from sklearn.model_selection import train_test_split  # slow import, needed only here
    val_path = csv_path(data_dir, VAL_NAME)
    storys, comps1, comps2, ys = read_stories(val_path)
    if ys is None:
        raise ValueError(f'{val_path}: expected the AnswerRightEnding column in its header')
    if not 0 < n_valid < len(storys):
        raise ValueError(f'--n_valid {n_valid}: {val_path} holds {len(storys)} stories, so '
                         f'between 1 and {len(storys) - 1} can be held out for validation')
    (trX1, vaX1, trX2, vaX2, trX3, vaX3, trY, vaY) = train_test_split(
        storys, comps1, comps2, ys, test_size=n_valid, random_state=seed)
    return ((trX1, trX2, trX3, np.asarray(trY, dtype=np.int32)),
            (vaX1, vaX2, vaX3, np.asarray(vaY, dtype=np.int32)))


def rocstories_test_labels(data_dir):
    """The test CSV's right endings as 0/1, or None when it has no label column."""
    labels = read_stories(csv_path(data_dir, TEST_NAME))[3]
    return None if labels is None else np.asarray(labels, dtype=np.int32)


def rocstories_splits(data_dir, n_valid=374, optional=()):
    """rocstories() as {'train', 'dev', 'test'} splits of (story, ending 1, ending 2),
    labels 0 where ending 1 is right; the test labels where the test CSV has them.
    optional: 'test' to leave the test split out when its CSV is missing."""
    train, dev = rocstories_train_valid(data_dir, n_valid)
    splits = {'train': Split(train[:3], train[3], None), 'dev': Split(dev[:3], dev[3], None)}
    for split, path in located(['test'], lambda _: csv_path(data_dir, TEST_NAME),
                               optional).items():
        *fields, labels = read_stories(path)
        splits[split] = Split(tuple(fields),
                              None if labels is None else np.asarray(labels, dtype=np.int32), None)
    return splits


SAMPLE_NAMES = ['anna', 'ben', 'cleo', 'dan', 'eve', 'finn', 'gus', 'hana', 'ivan', 'jo']
SAMPLE_PLACES = ['park', 'beach', 'store', 'lake', 'zoo', 'farm']


def write_story_cloze(folder, n_val, n_test, rng, labels=None):
    """A tiny Story Cloze Test in the two CSV files, for --smoke and the tests, with a
    learnable rule: the right ending names the story's hero. labels: the AnswerRightEnding
    ('1' or '2') of each story in turn, else drawn at random."""
    os.makedirs(folder, exist_ok=True)
    given = itertools.cycle(labels) if labels else None
    for name, split, n in ((VAL_NAME, 'val', n_val), (TEST_NAME, 'test', n_test)):
        with open(os.path.join(folder, name), 'w', newline='') as f:
            rows = csv.writer(f)
            rows.writerow(CSV_HEADER)
            for i in range(n):
                hero, other = rng.choice(SAMPLE_NAMES, 2, replace=False)
                place = rng.choice(SAMPLE_PLACES)
                story = [f'{hero} went to the {place}.', f'{hero} met a friend.',
                         'they talked for a while.', 'it got late.']
                right, wrong = f'{hero} went home happy.', f'{other} went home happy.'
                label = int(rng.integers(1, 3)) if given is None else int(next(given))
                endings = [right, wrong] if label == 1 else [wrong, right]
                rows.writerow([f'{split}{i}', *story, *endings, label])
    return folder


def texts_digest(splits):
    """sha256 of every text of every split, in order: the cache key of their encoding."""
    h = hashlib.sha256()
    for name, split in splits.items():
        h.update(f'{name} {len(split.fields)}\0'.encode())
        for field in split.fields:
            h.update(f'{len(field)}\0'.encode())
            for text in field:
                h.update(text.encode())
                h.update(b'\0')
    return h.hexdigest()


def encoded(name, splits, encoder_path, bpe_path, cache_dir='cache/', verbose=True,
            digest=None):
    """splits ({split name: Split}) with every text field as its BPE ids (utils.Ragged),
    read from cache_dir when the same texts were encoded with the same vocabulary.
    digest: texts_digest(splits), where the caller has already computed it."""
    key_parts = [f'{name} v{CACHE_VERSION}', digest or texts_digest(splits),
                 file_digest(encoder_path), file_digest(bpe_path)]

    def build():
        from text_utils import TextEncoder  # loads spaCy: only when encoding is needed
        encoder = TextEncoder(encoder_path, bpe_path)
        # each field flattened as soon as it is encoded: lists of Python ints take ten
        # times the memory, and only one field's are alive at a time
        return [[Ragged.from_lists(encoder.encode(field, verbose=verbose))
                 for field in split.fields] for split in splits.values()]

    fields = cached(name, key_parts, build, cache_dir, verbose=verbose)
    return {k: split._replace(fields=tuple(f)) for (k, split), f in zip(splits.items(), fields)}


class Split(NamedTuple):
    """One split of a task. fields: one list of str per text field, all of one length;
    labels: class ids (indices into LABELS[task]) or STS-B's float scores, None when the
    file has no labels; index: the ids GLUE's submission files expect (its test files'
    index or id column), else None; group: RACE's 'middle' or 'high' per question."""
    fields: tuple
    labels: list | None
    index: list | None
    group: list | None = None


# Label strings in class-id order; STS-B's labels are float scores instead.
LABELS = {
    'cola': ['0', '1'],
    'sst2': ['0', '1'],
    'mrpc': ['0', '1'],
    'qqp': ['0', '1'],
    'mnli': ['entailment', 'neutral', 'contradiction'],
    'qnli': ['entailment', 'not_entailment'],
    'rte': ['entailment', 'not_entailment'],
    'wnli': ['0', '1'],
    'snli': ['entailment', 'neutral', 'contradiction'],
    'scitail': ['entails', 'neutral'],
    'race': ['A', 'B', 'C', 'D'],
}

GLUE_SOURCE = ('GLUE comes from https://gluebenchmark.com/tasks; download_glue_data.py in '
               'https://github.com/nyu-mll/GLUE-baselines writes this layout, one folder per '
               'task (CoLA, SST-2, ..., diagnostic)')
SNLI_SOURCE = ('SNLI comes from https://nlp.stanford.edu/projects/snli/ (snli_1.0.zip, whose '
               'folder snli_1.0 holds the .jsonl files)')
SCITAIL_SOURCE = ('SciTail comes from https://allenai.org/data/scitail (SciTailV1.1.zip, whose '
                  'folder SciTailV1.1/tsv_format holds the .tsv files)')
RACE_SOURCE = ('RACE comes from https://www.cs.cmu.edu/~glai1/data/race/ (RACE.tar.gz, whose '
               'folder RACE holds {train,dev,test}/{middle,high}/*.txt)')


class Glue(NamedTuple):
    """Where a GLUE task's files are and which of their columns a Split takes."""
    files: dict            # split name -> path under the GLUE folder
    text: tuple            # names of the text columns, in the order of Split.fields
    label: str             # name of the label column of train and dev files
    index: str = 'index'   # name of the id column of test files
    no_header: tuple = None  # column names of the labelled files, which have no header row


def glue_files(folder, *splits):
    """GLUE's usual file names, folder/<split>.tsv."""
    return {split: f'{folder}/{split}.tsv' for split in splits}


GLUE = {
    'cola': Glue(glue_files('CoLA', 'train', 'dev', 'test'), ('sentence',), 'label',
                 no_header=('source', 'label', 'original_label', 'sentence')),
    'sst2': Glue(glue_files('SST-2', 'train', 'dev', 'test'), ('sentence',), 'label'),
    'mrpc': Glue(glue_files('MRPC', 'train', 'dev', 'test'), ('#1 String', '#2 String'),
                 'Quality'),
    'qqp': Glue(glue_files('QQP', 'train', 'dev', 'test'), ('question1', 'question2'),
                'is_duplicate', index='id'),
    'stsb': Glue(glue_files('STS-B', 'train', 'dev', 'test'), ('sentence1', 'sentence2'),
                 'score'),
    'mnli': Glue({**glue_files('MNLI', 'train', 'dev_matched', 'dev_mismatched',
                               'test_matched', 'test_mismatched'),
                  'diagnostic': 'diagnostic/diagnostic.tsv'},
                 ('sentence1', 'sentence2'), 'gold_label'),
    'qnli': Glue(glue_files('QNLI', 'train', 'dev', 'test'), ('question', 'sentence'), 'label'),
    'rte': Glue(glue_files('RTE', 'train', 'dev', 'test'), ('sentence1', 'sentence2'), 'label'),
    'wnli': Glue(glue_files('WNLI', 'train', 'dev', 'test'), ('sentence1', 'sentence2'),
                 'label'),
}
# GLUE keeps these labels for its server; the files have no label column.
UNLABELLED = ('test', 'test_matched', 'test_mismatched', 'diagnostic')


def cola(data_dir, splits=None, optional=()):
    """CoLA: (sentence,), labels 0 unacceptable / 1 acceptable."""
    return load_glue('cola', data_dir, splits, optional)


def sst2(data_dir, splits=None, optional=()):
    """SST-2: (sentence,), labels 0 negative / 1 positive."""
    return load_glue('sst2', data_dir, splits, optional)


def mrpc(data_dir, splits=None, optional=()):
    """MRPC: (string 1, string 2), labels 1 when they are paraphrases."""
    return load_glue('mrpc', data_dir, splits, optional)


def qqp(data_dir, splits=None, optional=()):
    """QQP: (question 1, question 2), labels 1 when they are duplicates."""
    return load_glue('qqp', data_dir, splits, optional)


def stsb(data_dir, splits=None, optional=()):
    """STS-B: (sentence 1, sentence 2), labels float similarity scores from 0 to 5."""
    return load_glue('stsb', data_dir, splits, optional)


def mnli(data_dir, splits=None, optional=()):
    """MNLI: (sentence 1, sentence 2) of train, dev_matched, dev_mismatched, test_matched,
    test_mismatched, and GLUE's diagnostic set (AX, scored by an MNLI model), which lies
    in the GLUE folder's diagnostic/ beside MNLI/."""
    return load_glue('mnli', data_dir, splits, optional)


def qnli(data_dir, splits=None, optional=()):
    """QNLI: (question, sentence), labels entailment / not_entailment."""
    return load_glue('qnli', data_dir, splits, optional)


def rte(data_dir, splits=None, optional=()):
    """RTE: (sentence 1, sentence 2), labels entailment / not_entailment."""
    return load_glue('rte', data_dir, splits, optional)


def wnli(data_dir, splits=None, optional=()):
    """WNLI: (sentence 1, sentence 2), labels 1 when sentence 2 follows."""
    return load_glue('wnli', data_dir, splits, optional)


def load_glue(task, data_dir, splits, optional=()):
    """{split: Split} of a GLUE task; data_dir is the GLUE folder or the task's own.
    optional: splits left out when their file is missing (every loader takes it)."""
    spec = GLUE[task]
    parse_label = stsb_score if task == 'stsb' else class_id(LABELS[task])

    def path_of(split):
        folder, name = os.path.split(spec.files[split])
        # The diagnostic set is the one file outside its task's folder: when data_dir is
        # MNLI/ itself, it is in the sibling folder.
        sibling = [os.path.join(data_dir, '..', folder, name)] if split == 'diagnostic' else []
        return find(data_dir, folder, name, GLUE_SOURCE, sibling)

    loaded = {}
    for split, path in located(requested(task, spec.files, splits), path_of, optional).items():
        if split in UNLABELLED:
            loaded[split] = read_tsv(path, spec.text, index=spec.index)
        else:
            loaded[split] = read_tsv(path, spec.text, spec.label, parse_label,
                                     names=spec.no_header)
    return loaded


def snli(data_dir, splits=None, optional=()):
    """SNLI: (sentence 1, sentence 2) of train, dev and test, whose labels are public.
    Pairs whose gold_label is '-' (the annotators reached no majority) are left out, as
    SNLI's README asks for classification, and their number is printed."""
    paths = located(requested('snli', ('train', 'dev', 'test'), splits),
                    lambda split: find(data_dir, 'snli_1.0', f'snli_1.0_{split}.jsonl',
                                       SNLI_SOURCE), optional)
    return {split: read_snli(path) for split, path in paths.items()}


def scitail(data_dir, splits=None, optional=()):
    """SciTail: (premise, hypothesis) of train, dev and test, labels entails / neutral."""
    paths = located(requested('scitail', ('train', 'dev', 'test'), splits),
                    lambda split: find(data_dir, os.path.join('SciTailV1.1', 'tsv_format'),
                                       f'scitail_1.0_{split}.tsv', SCITAIL_SOURCE), optional)
    return {split: read_tsv(path, ('premise', 'hypothesis'), 'label',
                            class_id(LABELS['scitail']),
                            names=('premise', 'hypothesis', 'label'))
            for split, path in paths.items()}


RACE_LEVELS = ('middle', 'high')
RACE_FIELDS = ('article', 'question', 'option A', 'option B', 'option C', 'option D')


def race(data_dir, splits=None, optional=()):
    """RACE: one example per question, fields (article, question, option A, B, C, D),
    labels the answer's letter as 0-3, group its level. Each split has the middle-school
    files, then the high-school ones, each level in order of file name."""
    folders = located(requested('race', ('train', 'dev', 'test'), splits),
                      lambda split: [(level, find(data_dir, 'RACE', os.path.join(split, level),
                                                  RACE_SOURCE)) for level in RACE_LEVELS],
                      optional)
    return {split: read_race(levels) for split, levels in folders.items()}


def user_csv(path, text_columns, label_column=None):
    """Split of a user's own data: a CSV, or a TSV when path ends in .tsv, with a header
    row and standard csv quoting. fields are the named text columns, labels the label
    column's strings as written (None without label_column)."""
    text_columns = (text_columns,) if isinstance(text_columns, str) else tuple(text_columns)
    delimiter = '\t' if os.fspath(path).lower().endswith('.tsv') else ','
    reader = csv.reader(read_lines(path), delimiter=delimiter)
    # Blank lines are skipped, as csv.DictReader skips them.
    rows = ((reader.line_num, row) for row in reader if row)
    try:
        return read_table(path, rows, text_columns, label_column, label_in(label_column),
                          official=False)
    except csv.Error as err:
        raise ValueError(f'{path}, line {reader.line_num}: {err}') from None


def label_in(column):
    """A user's label as written, which must not be blank (it would become a class '')."""
    def parse(value):
        if not value.strip():
            raise ValueError(f'expected a label in {column!r}, found {value!r}')
        return value
    return parse


def requested(task, available, splits):
    """The split names asked for, all of the task's by default."""
    if splits is None:
        return list(available)
    splits = [splits] if isinstance(splits, str) else list(splits)
    unknown = [split for split in splits if split not in available]
    if unknown:
        raise ValueError(f'{task} has no split {", ".join(map(repr, unknown))}; its splits '
                         f'are {", ".join(available)}')
    return splits


def find(data_dir, folder, name, source, also=()):
    """data_dir/folder/name, the official layout, or data_dir/name when data_dir is the
    task's folder itself, or one of the paths in also."""
    candidates = [os.path.join(data_dir, folder, name), os.path.join(data_dir, name), *also]
    for path in candidates:
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f'{os.path.join(folder, name)} not found: looked for '
                            f'{" and ".join(candidates)}. {source}.')


def located(splits, path_of, optional=()):
    """{split: path_of(split)} for each of splits; a split in optional whose files are
    missing (path_of raising FileNotFoundError) is left out, any other is an error."""
    paths = {}
    for split in splits:
        try:
            paths[split] = path_of(split)
        except FileNotFoundError:
            if split not in optional:
                raise
    return paths


def read_lines(path):
    """The lines of a UTF-8 file, line ends kept and a byte-order mark dropped (MRPC's
    header has one). Decoded one line at a time so that a bad byte names its line."""
    with open(path, 'rb') as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode('utf-8-sig' if number == 1 else 'utf-8')
            except UnicodeDecodeError as err:
                raise ValueError(f'{path}, line {number}: expected UTF-8 text, found byte '
                                 f'0x{raw[err.start]:02x} at byte {err.start + 1} of the '
                                 'line') from None
            if NUL in line:  # in any column, and in a header, which no text check sees
                raise ValueError(nul_found(f'{path}, line {number}', 'the line',
                                           line.index(NUL)))
            yield line


def read_tsv(path, text, label=None, parse_label=None, index=None, names=None):
    """Split of a tab-separated file whose header row (or names, for a file without one)
    names its columns. Read without quote processing, as GLUE wrote its files: MRPC,
    STS-B, QNLI and RTE hold unbalanced '"'."""
    rows = ((number, line.rstrip('\r\n').split('\t'))
            for number, line in enumerate(read_lines(path), 1))
    return read_table(path, rows, text, label, parse_label, index, names)


def read_table(path, rows, text, label=None, parse_label=None, index=None, names=None,
               official=True):
    """Split of rows, each (line number, list of str), whose columns are named by names or,
    when names is None, by the first row; text, label and index name the columns to take,
    parse_label turning a label string into the label. official: a file as its authors
    ship it, whose stray control characters are warned of (TextCheck)."""
    header = names is None
    if header:
        number, names = next(rows, (1, []))
        wanted = [*text, *(column for column in (label, index) if column is not None)]
        check_header_names(names, wanted, f'{path}, line {number}')
    text_at = [names.index(column) for column in text]
    label_at = None if label is None else names.index(label)
    index_at = None if index is None else names.index(index)
    fields, labels, ids = tuple([] for _ in text), [], []
    texts = TextCheck(official)
    for number, row in rows:
        where = f'{path}, line {number}'
        if len(row) != len(names):
            raise ValueError(f'{where}: expected {len(names)} fields ({", ".join(names)}), '
                             f'found {len(row)}')
        values = [row[i] for i in text_at]
        texts(values, text, where)
        for field, value in zip(fields, values):
            field.append(value)
        if label_at is not None:
            labels.append(parsed(parse_label, row[label_at], where))
        if index_at is not None:
            ids.append(row[index_at])
    if not fields[0]:
        raise ValueError(f'{path} holds {"a header but " if header else ""}no rows')
    texts.warn()
    return Split(fields, None if label is None else labels, None if index is None else ids)


def check_header_names(names, wanted, where):
    """A header must name each wanted column, and once: names.index would silently take
    the first of two."""
    if any(column not in names for column in wanted):
        raise ValueError(f'{where}: expected a header naming {", ".join(wanted)}, found {names}')
    for column in dict.fromkeys(wanted):
        places = [i + 1 for i, name in enumerate(names) if name == column]
        if len(places) > 1:
            raise ValueError(f'{where}: the header names {column!r} {len(places)} times '
                             f'(columns {", ".join(map(str, places))}); rename all but one')


def read_snli(path):
    """Split of one SNLI .jsonl file, leaving out the pairs without a gold label."""
    parse_label = class_id(LABELS['snli'])
    fields, labels, skipped = ([], []), [], 0
    texts = TextCheck(official=True)
    for number, line in enumerate(read_lines(path), 1):
        where = f'{path}, line {number}'
        try:
            pair = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f'{where}: expected a JSON object, {err.msg}') from None
        if not isinstance(pair, dict) or 'gold_label' not in pair:
            raise ValueError(f'{where}: expected a JSON object with sentence1, sentence2 '
                             'and gold_label')
        if pair['gold_label'] == '-':
            skipped += 1
            continue
        values = [pair.get('sentence1'), pair.get('sentence2')]
        texts(values, ('sentence1', 'sentence2'), where)
        for field, value in zip(fields, values):
            field.append(value)
        labels.append(parsed(parse_label, pair['gold_label'], where))
    if not labels:
        raise ValueError(f'{path} holds no pairs with a gold_label')
    if skipped:
        print(f"{path}: skipped {skipped} pairs whose gold_label is '-' (no majority)")
    texts.warn()
    return Split(fields, labels, None)


def read_race(levels):
    """Split of the RACE files in [(level, folder), ...], one example per question."""
    parse_label = class_id(LABELS['race'])
    fields, labels, group = tuple([] for _ in RACE_FIELDS), [], []
    texts = TextCheck(official=True)
    for level, folder in levels:
        for name in sorted(os.listdir(folder)):
            if not name.endswith('.txt'):  # e.g. a .DS_Store left by unpacking on a Mac
                continue
            path = os.path.join(folder, name)
            for number, (values, answer) in enumerate(race_questions(path), 1):
                where = f'{path}, question {number}'
                texts(values, RACE_FIELDS, where)
                for field, value in zip(fields, values):
                    field.append(value)
                labels.append(parsed(parse_label, answer, where))
                group.append(level)
    if not labels:
        raise ValueError(f'{" and ".join(folder for _, folder in levels)} hold no RACE '
                         f'questions (.txt files). {RACE_SOURCE}.')
    texts.warn()
    return Split(fields, labels, None, group)


def race_questions(path):
    """([article, question, 4 options], answer) for each question of one RACE file."""
    try:
        passage = json.loads(''.join(read_lines(path)))
    except json.JSONDecodeError as err:
        raise ValueError(f'{path}, line {err.lineno}: expected one JSON object (answers, '
                         f'options, questions, article, id), {err.msg}') from None
    lists = ('answers', 'options', 'questions')
    if (not isinstance(passage, dict) or not isinstance(passage.get('article'), str)
            or not all(isinstance(passage.get(key), list) for key in lists)):
        raise ValueError(f'{path}: expected a JSON object with the lists answers, options '
                         'and questions and the string article')
    answers, options, questions = (passage[key] for key in lists)
    if not len(answers) == len(options) == len(questions):
        raise ValueError(f'{path}: expected as many answers, options and questions, found '
                         f'{len(answers)}, {len(options)} and {len(questions)}')
    for number, (answer, choices, question) in enumerate(zip(answers, options, questions), 1):
        if not isinstance(choices, list) or len(choices) != 4:
            raise ValueError(f'{path}, question {number}: expected a list of 4 options, '
                             f'found {choices!r}')
        yield [passage['article'], question, *choices], answer


# Control characters in texts. NUL is never text (a binary file, or text saved as
# UTF-16): an error in every file. The others that ftfy.fix_text deletes (U+0001-U+0008,
# U+000B, U+000E-U+001F, U+007F) can join the words on either side ('two\x0blines' reads
# 'twolines'): an error in a user's file, which can be mended, and a warning in an
# official one, read as the paper's runs read it (GLUE's CoLA train.tsv holds three
# U+0008, its STS-B train.tsv one U+0012). Tab, line feed, carriage return and form feed
# pass, as whitespace to the text pipeline; so do C1 controls (U+0080-U+009F), which ftfy
# reads as the Windows-1252 characters they were meant to be.
NUL = '\0'
CONTROL = re.compile(r'[\x00-\x08\x0b\x0e-\x1f\x7f]')


def nul_found(where, what, at):
    return (f'{where}: {what} holds a NUL character (U+0000) at character {at + 1}: '
            'expected text (a binary file, or text saved as UTF-16? save it as UTF-8)')


class TextCheck:
    """The checks of one file's (or split's) text values: each must be text, not blank,
    and free of the control characters above; official: one that ftfy deletes is
    counted for one warning (warn), once the whole file is read."""

    def __init__(self, official):
        self.official, self.first, self.count = official, None, 0

    def __call__(self, values, names, where):
        for value, name in zip(values, names):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f'{where}: expected text in {name!r}, found {value!r}')
            control = CONTROL.search(value)
            if control:
                self.control(control, repr(name), where)

    def control(self, found, name, where):
        if found.group() == NUL:
            raise ValueError(nul_found(where, name, found.start()))
        said = (f'{where}: {name} holds the control character U+{ord(found.group()):04X} '
                f'at character {found.start() + 1}')
        if not self.official:
            raise ValueError(f'{said}, which the text pipeline (ftfy) deletes, joining what '
                             'is on either side: remove it, or put a space in its place')
        self.count += 1
        self.first = self.first or said

    def warn(self):
        if self.count:
            print(f'warning: {self.first}, which ftfy deletes, as in the paper\'s runs '
                  f'({self.count} such text(s) in all)', file=sys.stderr)


def parsed(parse_label, value, where):
    """parse_label(value), its ValueError naming the file and line."""
    try:
        return parse_label(value)
    except ValueError as err:
        raise ValueError(f'{where}: {err}') from None


def class_id(names):
    """A parser of the label strings names into their class ids."""
    ids = {name: i for i, name in enumerate(names)}

    def parse(value):
        if not isinstance(value, str) or value not in ids:  # JSON may hold any type
            raise ValueError(f'expected a label in {names}, found {value!r}')
        return ids[value]
    return parse


def stsb_score(value):
    try:
        score = float(value)
    except ValueError:
        score = float('nan')  # reported with the scores out of range
    if not 0 <= score <= 5:
        raise ValueError(f'expected a similarity score from 0 to 5, found {value!r}')
    return score
