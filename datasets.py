"""The data of every task in the GPT-1 paper: ROCStories (Story Cloze Test) as OpenAI's
finetune-transformer-lm loaded it, plus an on-disk cache of its BPE ids; one loader per
GLUE task (cola, sst2, mrpc, qqp, stsb, mnli with GLUE's diagnostic set, qnli, rte, wnli),
snli, scitail and race, each reading the files as their authors ship them and returning
{split name: Split}; and user_csv for a user's own CSV or TSV."""
import csv
import hashlib
import json
import os
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
        stories, endings1, endings2, labels, lines = [], [], [], [], {}
        for row in rows:
            check_row(row, labelled, path, rows.line_num)
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
    from sklearn.model_selection import train_test_split  # slow import, needed only here
    val_path = csv_path(data_dir, VAL_NAME)
    storys, comps1, comps2, ys = read_stories(val_path)
    if ys is None:
        raise ValueError(f'{val_path}: expected the AnswerRightEnding column in its header')
    teX1, teX2, teX3, _ = read_stories(csv_path(data_dir, TEST_NAME))
    if not 0 < n_valid < len(storys):
        raise ValueError(f'--n_valid {n_valid}: {val_path} holds {len(storys)} stories, so '
                         f'between 1 and {len(storys) - 1} can be held out for validation')
    (trX1, vaX1, trX2, vaX2, trX3, vaX3, trY, vaY) = train_test_split(
        storys, comps1, comps2, ys, test_size=n_valid, random_state=seed)
    return ((trX1, trX2, trX3, np.asarray(trY, dtype=np.int32)),
            (vaX1, vaX2, vaX3, np.asarray(vaY, dtype=np.int32)),
            (teX1, teX2, teX3))


def rocstories_test_labels(data_dir):
    """The test CSV's right endings as 0/1, or None when it has no label column."""
    labels = read_stories(csv_path(data_dir, TEST_NAME))[3]
    return None if labels is None else np.asarray(labels, dtype=np.int32)


def rocstories_splits(data_dir, n_valid=374):
    """rocstories() as {'train', 'dev', 'test'} splits of (story, ending 1, ending 2),
    labels 0 where ending 1 is right; the test labels where the test CSV has them."""
    train, dev, (teX1, teX2, teX3) = rocstories(data_dir, n_valid=n_valid)
    return {'train': Split(train[:3], train[3], None), 'dev': Split(dev[:3], dev[3], None),
            'test': Split((teX1, teX2, teX3), rocstories_test_labels(data_dir), None)}


SAMPLE_NAMES = ['anna', 'ben', 'cleo', 'dan', 'eve', 'finn', 'gus', 'hana', 'ivan', 'jo']
SAMPLE_PLACES = ['park', 'beach', 'store', 'lake', 'zoo', 'farm']


def write_story_cloze(folder, n_val, n_test, rng):
    """A tiny Story Cloze Test in the two CSV files, for --smoke and the tests, with a
    learnable rule: the right ending names the story's hero."""
    os.makedirs(folder, exist_ok=True)
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
                label = int(rng.integers(1, 3))
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


def cola(data_dir, splits=None):
    """CoLA: (sentence,), labels 0 unacceptable / 1 acceptable."""
    return load_glue('cola', data_dir, splits)


def sst2(data_dir, splits=None):
    """SST-2: (sentence,), labels 0 negative / 1 positive."""
    return load_glue('sst2', data_dir, splits)


def mrpc(data_dir, splits=None):
    """MRPC: (string 1, string 2), labels 1 when they are paraphrases."""
    return load_glue('mrpc', data_dir, splits)


def qqp(data_dir, splits=None):
    """QQP: (question 1, question 2), labels 1 when they are duplicates."""
    return load_glue('qqp', data_dir, splits)


def stsb(data_dir, splits=None):
    """STS-B: (sentence 1, sentence 2), labels float similarity scores from 0 to 5."""
    return load_glue('stsb', data_dir, splits)


def mnli(data_dir, splits=None):
    """MNLI: (sentence 1, sentence 2) of train, dev_matched, dev_mismatched, test_matched,
    test_mismatched, and GLUE's diagnostic set (AX, scored by an MNLI model), which lies
    in the GLUE folder's diagnostic/ beside MNLI/."""
    return load_glue('mnli', data_dir, splits)


def qnli(data_dir, splits=None):
    """QNLI: (question, sentence), labels entailment / not_entailment."""
    return load_glue('qnli', data_dir, splits)


def rte(data_dir, splits=None):
    """RTE: (sentence 1, sentence 2), labels entailment / not_entailment."""
    return load_glue('rte', data_dir, splits)


def wnli(data_dir, splits=None):
    """WNLI: (sentence 1, sentence 2), labels 1 when sentence 2 follows."""
    return load_glue('wnli', data_dir, splits)


def load_glue(task, data_dir, splits):
    """{split: Split} of a GLUE task; data_dir is the GLUE folder or the task's own."""
    spec = GLUE[task]
    parse_label = stsb_score if task == 'stsb' else class_id(LABELS[task])
    paths = {}
    for split in requested(task, spec.files, splits):
        folder, name = os.path.split(spec.files[split])
        # The diagnostic set is the one file outside its task's folder: when data_dir is
        # MNLI/ itself, it is in the sibling folder.
        sibling = [os.path.join(data_dir, '..', folder, name)] if split == 'diagnostic' else []
        paths[split] = find(data_dir, folder, name, GLUE_SOURCE, sibling)
    loaded = {}
    for split, path in paths.items():
        if split in UNLABELLED:
            loaded[split] = read_tsv(path, spec.text, index=spec.index)
        else:
            loaded[split] = read_tsv(path, spec.text, spec.label, parse_label,
                                     names=spec.no_header)
    return loaded


def snli(data_dir, splits=None):
    """SNLI: (sentence 1, sentence 2) of train, dev and test, whose labels are public.
    Pairs whose gold_label is '-' (the annotators reached no majority) are left out, as
    SNLI's README asks for classification, and their number is printed."""
    paths = {split: find(data_dir, 'snli_1.0', f'snli_1.0_{split}.jsonl', SNLI_SOURCE)
             for split in requested('snli', ('train', 'dev', 'test'), splits)}
    return {split: read_snli(path) for split, path in paths.items()}


def scitail(data_dir, splits=None):
    """SciTail: (premise, hypothesis) of train, dev and test, labels entails / neutral."""
    paths = {split: find(data_dir, os.path.join('SciTailV1.1', 'tsv_format'),
                         f'scitail_1.0_{split}.tsv', SCITAIL_SOURCE)
             for split in requested('scitail', ('train', 'dev', 'test'), splits)}
    return {split: read_tsv(path, ('premise', 'hypothesis'), 'label',
                            class_id(LABELS['scitail']),
                            names=('premise', 'hypothesis', 'label'))
            for split, path in paths.items()}


RACE_LEVELS = ('middle', 'high')
RACE_FIELDS = ('article', 'question', 'option A', 'option B', 'option C', 'option D')


def race(data_dir, splits=None):
    """RACE: one example per question, fields (article, question, option A, B, C, D),
    labels the answer's letter as 0-3, group its level. Each split has the middle-school
    files, then the high-school ones, each level in order of file name."""
    folders = {split: [(level, find(data_dir, 'RACE', os.path.join(split, level), RACE_SOURCE))
                       for level in RACE_LEVELS]
               for split in requested('race', ('train', 'dev', 'test'), splits)}
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
        return read_table(path, rows, text_columns, label_column, str)
    except csv.Error as err:
        raise ValueError(f'{path}, line {reader.line_num}: {err}') from None


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


def read_lines(path):
    """The lines of a UTF-8 file, line ends kept and a byte-order mark dropped (MRPC's
    header has one). Decoded one line at a time so that a bad byte names its line."""
    with open(path, 'rb') as f:
        for number, raw in enumerate(f, 1):
            try:
                yield raw.decode('utf-8-sig' if number == 1 else 'utf-8')
            except UnicodeDecodeError as err:
                raise ValueError(f'{path}, line {number}: expected UTF-8 text, found byte '
                                 f'0x{raw[err.start]:02x} at byte {err.start + 1} of the '
                                 'line') from None


def read_tsv(path, text, label=None, parse_label=None, index=None, names=None):
    """Split of a tab-separated file whose header row (or names, for a file without one)
    names its columns. Read without quote processing, as GLUE wrote its files: MRPC,
    STS-B, QNLI and RTE hold unbalanced '"'."""
    rows = ((number, line.rstrip('\r\n').split('\t'))
            for number, line in enumerate(read_lines(path), 1))
    return read_table(path, rows, text, label, parse_label, index, names)


def read_table(path, rows, text, label=None, parse_label=None, index=None, names=None):
    """Split of rows, each (line number, list of str), whose columns are named by names or,
    when names is None, by the first row; text, label and index name the columns to take,
    parse_label turning a label string into the label."""
    if names is None:
        number, names = next(rows, (1, []))
        wanted = [*text, *(column for column in (label, index) if column is not None)]
        if any(column not in names for column in wanted):
            raise ValueError(f'{path}, line {number}: expected a header naming '
                             f'{", ".join(wanted)}, found {names}')
    text_at = [names.index(column) for column in text]
    label_at = None if label is None else names.index(label)
    index_at = None if index is None else names.index(index)
    fields, labels, ids = tuple([] for _ in text), [], []
    for number, row in rows:
        where = f'{path}, line {number}'
        if len(row) != len(names):
            raise ValueError(f'{where}: expected {len(names)} fields ({", ".join(names)}), '
                             f'found {len(row)}')
        values = [row[i] for i in text_at]
        check_text(values, text, where)
        for field, value in zip(fields, values):
            field.append(value)
        if label_at is not None:
            labels.append(parsed(parse_label, row[label_at], where))
        if index_at is not None:
            ids.append(row[index_at])
    return Split(fields, None if label is None else labels, None if index is None else ids)


def read_snli(path):
    """Split of one SNLI .jsonl file, leaving out the pairs without a gold label."""
    parse_label = class_id(LABELS['snli'])
    fields, labels, skipped = ([], []), [], 0
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
        check_text(values, ('sentence1', 'sentence2'), where)
        for field, value in zip(fields, values):
            field.append(value)
        labels.append(parsed(parse_label, pair['gold_label'], where))
    if skipped:
        print(f"{path}: skipped {skipped} pairs whose gold_label is '-' (no majority)")
    return Split(fields, labels, None)


def read_race(levels):
    """Split of the RACE files in [(level, folder), ...], one example per question."""
    parse_label = class_id(LABELS['race'])
    fields, labels, group = tuple([] for _ in RACE_FIELDS), [], []
    for level, folder in levels:
        for name in sorted(os.listdir(folder)):
            if not name.endswith('.txt'):  # e.g. a .DS_Store left by unpacking on a Mac
                continue
            path = os.path.join(folder, name)
            for number, (values, answer) in enumerate(race_questions(path), 1):
                where = f'{path}, question {number}'
                check_text(values, RACE_FIELDS, where)
                for field, value in zip(fields, values):
                    field.append(value)
                labels.append(parsed(parse_label, answer, where))
                group.append(level)
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


def check_text(values, names, where):
    for value, name in zip(values, names):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f'{where}: expected text in {name!r}, found {value!r}')


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
