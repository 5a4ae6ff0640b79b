"""A tiny Story Cloze Test in the original CSV format, and a tiny BPE vocabulary, for
tests that must run without the real files."""
import csv
import json
import os

VAL_NAME = 'cloze_test_val__spring2016 - cloze_test_ALL_val.csv'
TEST_NAME = 'cloze_test_test__spring2016 - cloze_test_ALL_test.csv'
HEADER = ['InputStoryid', 'InputSentence1', 'InputSentence2', 'InputSentence3',
          'InputSentence4', 'RandomFifthSentenceQuiz1', 'RandomFifthSentenceQuiz2',
          'AnswerRightEnding']
PEOPLE = ['Kim', 'Lou', 'Max', 'Ned', 'Ola', 'Pat', 'Ray', 'Sue']
THINGS = ['cake', 'kite', 'book', 'lamp', 'bike']


def story(i):
    """Story i: the right ending brings back the story's person."""
    who, other = PEOPLE[i % len(PEOPLE)], PEOPLE[(i * 3 + 1) % len(PEOPLE)]
    if other == who:
        other = PEOPLE[(i + 1) % len(PEOPLE)]
    thing = THINGS[i % len(THINGS)]
    sentences = [f'{who} wanted a {thing}.', f'{who} saved money for weeks.',
                 'The store had one left.', f'{who} bought the {thing}.']
    right, wrong = f'{who} was happy.', f'{other} was sad.'
    label = 1 + i % 2
    endings = [right, wrong] if label == 1 else [wrong, right]
    return [f'id{i}'] + sentences + endings + [str(label)]


def write_csvs(folder, n_val=40, n_test=12):
    os.makedirs(folder, exist_ok=True)
    for name, start, n in ((VAL_NAME, 0, n_val), (TEST_NAME, 1000, n_test)):
        with open(os.path.join(folder, name), 'w', newline='') as f:
            w = csv.writer(f)
            w.writerow(HEADER)
            w.writerows(story(start + i) for i in range(n))
    return folder


def write_vocab(folder, n_vocab=None):
    """Character-level BPE: every lowercase letter and punctuation mark, alone or ending a
    word, plus two merges, in OpenAI's file formats. Padded to n_vocab entries if given."""
    chars = sorted(set('abcdefghijklmnopqrstuvwxyz.,!?\''))
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
