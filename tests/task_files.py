"""Tiny copies of every task's files in their official layouts (GLUE's folders and
headers, SNLI's jsonl, SciTail's header-less tsv, RACE's JSON files, the Story Cloze
CSVs), written from the character vocabulary's letters, for end-to-end runs."""
import itertools
import json
import os

import numpy as np

import datasets

# GLUE files: (folder, header of the labelled files or None, header of the test files);
# columns named 'text' take sentences, 'label' the label, anything else a filler.
GLUE = {
    'cola': ('CoLA', None, ['index', 'sentence']),
    'sst2': ('SST-2', ['sentence', 'label'], ['index', 'sentence']),
    'mrpc': ('MRPC', ['Quality', '#1 ID', '#2 ID', '#1 String', '#2 String'],
             ['index', '#1 ID', '#2 ID', '#1 String', '#2 String']),
    'qqp': ('QQP', ['id', 'qid1', 'qid2', 'question1', 'question2', 'is_duplicate'],
            ['id', 'question1', 'question2']),
    'stsb': ('STS-B', ['index', 'genre', 'filename', 'year', 'old_index', 'source1', 'source2',
                       'sentence1', 'sentence2', 'score'],
             ['index', 'genre', 'filename', 'year', 'old_index', 'source1', 'source2',
              'sentence1', 'sentence2']),
    'mnli': ('MNLI', ['index', 'promptID', 'pairID', 'genre', 'sentence1_binary_parse',
                      'sentence2_binary_parse', 'sentence1_parse', 'sentence2_parse',
                      'sentence1', 'sentence2', 'label1', 'gold_label'],
             ['index', 'promptID', 'pairID', 'genre', 'sentence1_binary_parse',
              'sentence2_binary_parse', 'sentence1_parse', 'sentence2_parse', 'sentence1',
              'sentence2']),
    'qnli': ('QNLI', ['index', 'question', 'sentence', 'label'], ['index', 'question', 'sentence']),
    'rte': ('RTE', ['index', 'sentence1', 'sentence2', 'label'], ['index', 'sentence1', 'sentence2']),
    'wnli': ('WNLI', ['index', 'sentence1', 'sentence2', 'label'], ['index', 'sentence1', 'sentence2']),
}
TEXT_COLUMNS = {'sentence', '#1 String', '#2 String', 'question1', 'question2', 'sentence1',
                'sentence2', 'question'}
LABEL_COLUMNS = {'label', 'Quality', 'is_duplicate', 'score', 'gold_label'}
COLA_COLUMNS = ['source', 'label', 'original_label', 'sentence']


def sentence(rng, n_words=(2, 6)):
    words = [''.join(rng.choice(list('abcdefghij'), rng.integers(1, 5)))
             for _ in range(rng.integers(*n_words))]
    return ' '.join(words) + '.'


def labeller(task, rng, labels=None):
    """The label string of each next example: labels in turn, or else drawn at random."""
    if labels:
        return itertools.cycle(labels).__next__
    if task == 'stsb':
        return lambda: f'{rng.uniform(0, 5):.3f}'
    return lambda: str(rng.choice(datasets.LABELS[task]))


def glue_rows(label, header, n, rng, labelled):
    rows = []
    for i in range(n):
        row = []
        for column in header:
            if column in TEXT_COLUMNS:
                row.append(sentence(rng))
            elif column in LABEL_COLUMNS and labelled:
                row.append(label())
            else:
                row.append(str(i))
        rows.append(row)
    return rows


def write_tsv(path, rows, header=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.writelines('\t'.join(row) + '\n' for row in ([header] if header else []) + rows)


def write_glue(task, folder, sizes, rng, label):
    name, header, test_header = GLUE[task]
    splits = {'mnli': ('train', 'dev_matched', 'dev_mismatched')}.get(task, ('train', 'dev'))
    for split, n in zip(splits, (sizes[0], sizes[1], sizes[1])):
        rows = glue_rows(label, header or COLA_COLUMNS, n, rng, labelled=True)
        write_tsv(os.path.join(folder, name, f'{split}.tsv'), rows, header)
    tests = ('test_matched', 'test_mismatched') if task == 'mnli' else ('test',)
    for split in tests:
        write_tsv(os.path.join(folder, name, f'{split}.tsv'),
                  glue_rows(label, test_header, sizes[2], rng, labelled=False), test_header)
    if task == 'mnli':
        diagnostic = ['index', 'sentence1', 'sentence2']
        write_tsv(os.path.join(folder, 'diagnostic', 'diagnostic.tsv'),
                  glue_rows(label, diagnostic, sizes[2], rng, labelled=False), diagnostic)


def write_snli(folder, sizes, rng, label):
    for split, n in zip(('train', 'dev', 'test'), sizes):
        path = os.path.join(folder, 'snli_1.0', f'snli_1.0_{split}.jsonl')
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w', encoding='utf-8') as f:
            for _ in range(n):
                f.write(json.dumps({'gold_label': label(), 'sentence1': sentence(rng),
                                    'sentence2': sentence(rng)}) + '\n')
            f.write(json.dumps({'gold_label': '-', 'sentence1': 'a.', 'sentence2': 'b.'}) + '\n')


def write_scitail(folder, sizes, rng, label):
    for split, n in zip(('train', 'dev', 'test'), sizes):
        write_tsv(os.path.join(folder, 'SciTailV1.1', 'tsv_format', f'scitail_1.0_{split}.tsv'),
                  [[sentence(rng), sentence(rng), label()] for _ in range(n)])


def write_race(folder, sizes, rng, label):
    """Two questions per article, articles split between the two levels."""
    for split, n in zip(('train', 'dev', 'test'), sizes):
        for k in range(0, n, 2):
            level = ('middle', 'high')[k // 2 % 2]
            path = os.path.join(folder, 'RACE', split, level, f'{k}.txt')
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'w', encoding='utf-8') as f:
                json.dump({'answers': [label() for _ in range(2)],
                           'options': [[sentence(rng, (1, 3)) for _ in range(4)] for _ in range(2)],
                           'questions': [sentence(rng) for _ in range(2)],
                           'article': ' '.join(sentence(rng) for _ in range(3)),
                           'id': f'{level}{k}.txt'}, f)


def write_task(task, folder, sizes=(16, 8, 6), seed=0, labels=None):
    """The task's files in folder as its official distribution unpacks them, with
    sizes (train, dev, test) examples, so that --data_dir folder loads them; labels:
    the label strings to write in turn, as the files spell them (default: at random)."""
    rng = np.random.default_rng(seed)
    label = labeller(task, rng, labels)
    if task in GLUE:
        write_glue(task, folder, sizes, rng, label)
    elif task == 'rocstories':  # OpenAI splits the labelled CSV into train and dev
        datasets.write_story_cloze(folder, sizes[0] + sizes[1], sizes[2], rng, labels)
    else:
        writer = {'snli': write_snli, 'scitail': write_scitail, 'race': write_race}[task]
        writer(folder, sizes, rng, label)
    return folder
