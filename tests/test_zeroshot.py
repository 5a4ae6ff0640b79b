"""zeroshot.py on a tiny random language model and the character vocabulary: each
heuristic against a plain computation (every sequence alone through LMModel.forward),
batching, the left cut, and the command line."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import analysis
import datasets
import generate
import zeroshot
from conftest import REPO, openai_vocab
from model_pytorch import Config, LMModel
from openai_shards import published_shapes, write_shards
from text_utils import TextEncoder, write_char_vocab

CFG = Config(n_embd=16, n_head=2, n_layer=2, embd_pdrop=0.1, attn_pdrop=0.1,
             resid_pdrop=0.1, clf_pdrop=0.1, afn='gelu')
N_CTX = 40  # shorter than a story and its ending: the cut is exercised


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """Many tiny forward passes: a second thread only waits, and on a busy machine its
    spinning made this file ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def vocab(tmp_path_factory):
    """(encoder_path, bpe_path, n_vocab) of the character vocabulary."""
    return write_char_vocab(str(tmp_path_factory.mktemp('vocab')))


@pytest.fixture(scope='module')
def text_encoder(vocab):
    return TextEncoder(*vocab[:2])


@pytest.fixture(scope='module')
def model(vocab):
    torch.manual_seed(1)  # a model whose SST-2 choice differs between SENTENCES
    lm = LMModel(CFG, vocab=vocab[2] + N_CTX, n_ctx=N_CTX).eval()
    # Wider than the N(0, 0.02) init, so that the next token depends on the context.
    torch.nn.init.normal_(lm.transformer.embed.weight, std=1.0)
    return lm


def language_model(model, vocab, n_batch=7):
    return zeroshot.LanguageModel(model, vocab[2], n_batch)


def encode_fields(text_encoder, split):
    return split._replace(fields=tuple(text_encoder.encode(f, verbose=False)
                                       for f in split.fields))


@pytest.fixture(scope='module')
def stories(tmp_path_factory, text_encoder):
    folder = datasets.write_story_cloze(str(tmp_path_factory.mktemp('data')), 12, 30,
                                        np.random.default_rng(0))
    split = datasets.rocstories_splits(folder, n_valid=4)['test']
    return {'test': encode_fields(text_encoder, split)}


def plain_log_probs(model, n_vocab, ids, n):
    """log p of each of the last n ids given all before it: the sequence alone through
    LMModel.forward, positions from 0."""
    x = torch.tensor([[[t, n_vocab + i] for i, t in enumerate(ids)]])
    with torch.no_grad():
        logp = model(x)[0, :, :n_vocab].double().log_softmax(-1)
    return [logp[t - 1, ids[t]].item() for t in range(len(ids) - n, len(ids))]


def plain_mean(model, n_vocab, context, answer):
    """The answer's mean token log-probability after the context's last tokens that fit."""
    window = (list(context) + list(answer))[-N_CTX:]
    return np.mean(plain_log_probs(model, n_vocab, window, len(answer)))


def test_story_cloze_picks_the_ending_of_highest_mean_log_prob(model, vocab, stories):
    story, *endings = stories['test'].fields
    assert all(len(s) + len(e) > N_CTX for s, e in zip(story, endings[0]))  # all cut
    expected = np.array([[plain_mean(model, vocab[2], s, e) for e in ends]
                         for s, ends in zip(story, zip(*endings))])
    lm = language_model(model, vocab)
    preds, _ = zeroshot.story_cloze(lm, stories, 'test', None)
    np.testing.assert_array_equal(preds, expected.argmax(1))
    assert 0 < preds.sum() < len(preds)  # a test that a constant answer could not pass
    scores = lm.scores(list(zip(story, zip(*endings))), np.mean)
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_race_conditions_on_article_and_question(model, vocab):
    rng = np.random.default_rng(1)
    n_vocab = vocab[2]

    def text(low, high):
        return rng.integers(0, n_vocab, rng.integers(low, high)).tolist()
    n = 6
    fields = ([text(5, 45) for _ in range(n)], [text(2, 6) for _ in range(n)],
              *([text(1, 8) for _ in range(n)] for _ in range(4)))
    data = {'dev': datasets.Split(fields, [0] * n, None, ['middle'] * n)}
    article, question, *options = fields
    expected = np.array([[plain_mean(model, n_vocab, a + q, o) for o in opts]
                         for a, q, opts in zip(article, question, zip(*options))]).argmax(1)
    preds, _ = zeroshot.race(language_model(model, vocab), data, 'dev', None)
    np.testing.assert_array_equal(preds, expected)
    assert len(set(preds.tolist())) > 1


SENTENCES = ['it is a fine film .', 'a dull , sad mess .', 'the best of the year .',
             'bad acting , worse plot .', 'charming and warm .', 'i hated it .']


def test_sst2_picks_the_more_probable_word_after_very(model, vocab, text_encoder):
    n_vocab = vocab[2]

    def encode(text):
        return text_encoder.encode([text], verbose=False)[0]

    def word_probability(prefix, word):
        """The word's probability read off the next-token distributions, one token at a
        time: each token's probability after the prefix and the word's tokens before it."""
        p, ids = 1.0, list(prefix)
        for token in word:
            x = torch.tensor([[[t, n_vocab + i] for i, t in enumerate(ids)]])
            with torch.no_grad():
                p *= model(x)[0, -1, :n_vocab].double().softmax(-1)[token].item()
            ids.append(token)
        return p

    words = [encode(w) for w in ('negative', 'positive')]
    assert min(map(len, words)) > 1  # several tokens each in this vocabulary
    split = datasets.Split((SENTENCES,), [0] * len(SENTENCES), None)
    data = {'dev': encode_fields(text_encoder, split)}
    prefixes = [s + encode('very') for s in data['dev'].fields[0]]
    expected = [int(word_probability(p, words[1]) > word_probability(p, words[0]))
                for p in prefixes]
    preds, _ = zeroshot.sst2(language_model(model, vocab), data, 'dev', encode)
    assert preds.tolist() == expected
    assert 0 < sum(expected) < len(expected)


def test_sst2_words_are_single_tokens_of_openais_vocabulary():
    encoder = TextEncoder(*openai_vocab())
    ids = encoder.encode([zeroshot.SST2_PROMPT, *zeroshot.SST2_WORDS], verbose=False)
    assert [len(x) for x in ids] == [1, 1, 1]


def test_cola_threshold_comes_from_train_and_scores_dev(model, vocab, text_encoder):
    n_vocab = vocab[2]
    train = encode_fields(text_encoder, datasets.Split(
        (SENTENCES + ['so it goes .', 'a b c d .'],), [1, 0, 1, 0, 1, 0, 1, 0], None))
    dev = encode_fields(text_encoder, datasets.Split(
        (['what a film .', 'the end .', 'no no no .', 'it is fine .'],), [1, 0, 0, 1], None))
    data = {'train': train, 'dev': dev}

    def plain_scores(split):
        # every token after the first, given all before it
        return np.array([np.mean(plain_log_probs(model, n_vocab, s, len(s) - 1))
                         for s in split.fields[0]])
    train_scores, dev_scores = plain_scores(train), plain_scores(dev)
    lm = language_model(model, vocab)
    np.testing.assert_allclose(zeroshot.sentence_scores(lm, dev.fields[0]), dev_scores,
                               rtol=1e-5)
    preds, details = zeroshot.cola(lm, data, 'dev', None)
    threshold = details['threshold']
    assert threshold == pytest.approx(brute_force_threshold(train_scores, train.labels),
                                      rel=1e-5)
    np.testing.assert_array_equal(preds, dev_scores >= threshold - 1e-6)
    scores = zeroshot.tasks.score(zeroshot.tasks.TASKS['cola'], preds, np.array(dev.labels))
    assert scores == {'mcc': analysis.matthews_corrcoef(preds, dev.labels)}


def brute_force_threshold(scores, labels):
    """The lowest t of any of the best splits: every score tried as the lowest accepted."""
    results = []
    for t in scores:
        preds = [int(s >= t) for s in scores]
        results.append((-analysis.matthews_corrcoef(preds, labels), t))
    return min(results)[1]


@pytest.mark.parametrize('scores, labels, expected', [
    ([-3.0, -1.0, -2.0, -0.5], [0, 1, 0, 1], -1.0),   # separable: the lowest acceptable
    ([-1.0, -2.0, -3.0], [0, 0, 0], -3.0),            # MCC 0 everywhere: the lowest
    ([-1.0, -2.0, -2.0, -4.0], [1, 0, 1, 0], -2.0),   # a tie in scores goes one way
])
def test_best_threshold(scores, labels, expected):
    assert zeroshot.best_threshold(np.array(scores), labels) == expected
    assert zeroshot.best_threshold(np.array(scores), labels) == \
        brute_force_threshold(scores, labels)


def test_batching_and_padding_change_no_score(model, vocab, stories):
    story, *endings = stories['test'].fields
    examples = list(zip(story, zip(*endings)))
    # contexts of many lengths, so that batches pad
    examples = [(s[:(7 * i) % 30 + 1], ends) for i, (s, ends) in enumerate(examples)]
    one = language_model(model, vocab, n_batch=1).scores(examples, np.mean)
    for n_batch in (3, 64):
        many = language_model(model, vocab, n_batch=n_batch).scores(examples, np.mean)
        np.testing.assert_allclose(many, one, rtol=1e-5)


def test_left_cut_keeps_the_answer_whole_and_the_context_end():
    context, answer = np.arange(100, 130), [7, 8, 9]
    ids, n = zeroshot.fit_window(context, answer, 10)
    assert ids.tolist() == list(range(123, 130)) + answer and n == 3
    ids, n = zeroshot.fit_window(context[:4], answer, 10)  # fits: nothing cut
    assert ids.tolist() == list(range(100, 104)) + answer
    ids, _ = zeroshot.fit_window(context, list(range(9)), 10)  # one token of context left
    assert ids.tolist() == [129] + list(range(9))
    with pytest.raises(ValueError, match='10 positions'):
        zeroshot.fit_window(context, list(range(10)), 10)
    with pytest.raises(ValueError, match='nothing to score'):
        zeroshot.fit_window(context, [], 10)
    with pytest.raises(ValueError, match='context of no tokens'):
        zeroshot.fit_window([], answer, 10)


def test_scores_name_the_example_that_cannot_be_scored(model, vocab):
    lm = language_model(model, vocab)
    with pytest.raises(ValueError, match='example 2: an answer of no tokens'):
        lm.scores([([1, 2], [[3]]), ([1, 2], [[]])], np.mean)


def test_scoring_leaves_the_training_mode_as_it_was(model, vocab):
    model.train()
    try:
        language_model(model, vocab).scores([([1, 2], [[3]])], np.mean)
        assert model.training
    finally:
        model.eval()


# The command line, on OpenAI's file layout: tiny weight shards, the character vocabulary
# and each task's files as their authors ship them.

@pytest.fixture(scope='module')
def files(tmp_path_factory, vocab):
    root = tmp_path_factory.mktemp('cli')
    model_dir = str(root / 'model')
    write_shards(model_dir, published_shapes(n_layer=1, n_embd=24, n_vocab=vocab[2], n_ctx=N_CTX))
    data = root / 'data'
    datasets.write_story_cloze(str(data), 380, 10, np.random.default_rng(2))  # 374 to dev
    write_glue(data / 'glue')
    write_race(data / 'RACE' / 'dev')
    return dict(model_dir=model_dir, data=str(data), glue=str(data / 'glue'), race=str(data),
                vocab=vocab)


def write_glue(folder):
    os.makedirs(folder / 'SST-2')
    rows = ''.join(f'{s}\t{i % 2}\n' for i, s in enumerate(SENTENCES))
    (folder / 'SST-2' / 'dev.tsv').write_text('sentence\tlabel\n' + rows)
    (folder / 'SST-2' / 'test.tsv').write_text(
        'index\tsentence\n' + ''.join(f'{i}\t{s}\n' for i, s in enumerate(SENTENCES)))
    os.makedirs(folder / 'CoLA')
    for split in ('train', 'dev'):
        (folder / 'CoLA' / f'{split}.tsv').write_text(
            ''.join(f'src\t{i % 2}\t\t{s}\n' for i, s in enumerate(SENTENCES)))


def write_race(folder):
    for level in ('middle', 'high'):
        os.makedirs(folder / level)
        passage = {'id': f'{level}1.txt', 'article': 'anna went to the park. it got late.',
                   'questions': ['where did anna go?', 'when?'],
                   'options': [['the park', 'the zoo', 'home', 'the lake'],
                               ['early', 'late', 'noon', 'never']],
                   'answers': ['A', 'B']}
        (folder / level / '1.txt').write_text(json.dumps(passage))


def cli(files, task, *extra):
    data_dir = {'rocstories': files['data'], 'race': files['race']}.get(task, files['glue'])
    return ['--task', task, '--data_dir', data_dir, '--model_dir', files['model_dir'],
            '--encoder_path', files['vocab'][0], '--bpe_path', files['vocab'][1],
            '--device', 'cpu', *extra]


@pytest.mark.parametrize('task, line', [
    ('rocstories', r'ROCStories zero-shot accuracy: \d+\.\d\d \(6 stories\)'),
    ('race', r'RACE zero-shot accuracy: \d+\.\d\d \(4 questions; high \d+\.\d\d; '
             r'middle \d+\.\d\d\)'),
    ('sst2', r'SST-2 zero-shot accuracy: \d+\.\d\d \(6 sentences\)'),
    ('cola', r'CoLA zero-shot matthews correlation: -?\d+\.\d\d \(6 sentences; threshold '
             r'-?\d+\.\d{4} from 6 training sentences\)'),
])
def test_cli_prints_the_score_of_the_pretrained_model(files, task, line, capsys):
    split = 'test' if task == 'rocstories' else 'dev'
    scores, _ = zeroshot.main(cli(files, task, '--split', split, '--limit', '6'))
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(line, out[-1]), out[-1]
    metric = 'mcc' if task == 'cola' else 'acc'
    assert f'{scores[metric]:.2f}' in out[-1]


def test_cli_score_is_the_library_score(files, text_encoder, capsys):
    """The printed accuracy is that of story_cloze on OpenAI's weights, loaded as
    generate.load_lm loads them."""
    zeroshot.main(cli(files, 'rocstories', '--split', 'test', '--n_batch', '3'))
    model, dims = generate.load_lm(model_dir=files['model_dir'])
    split = datasets.rocstories_splits(files['data'])['test']
    data = {'test': encode_fields(text_encoder, split)}
    preds, _ = zeroshot.story_cloze(zeroshot.LanguageModel(model, dims['n_vocab']), data,
                                    'test', None)
    expected = analysis.accuracy(preds, split.labels)
    assert capsys.readouterr().out.splitlines()[-1] == \
        f'ROCStories zero-shot accuracy: {expected:.2f} (10 stories)'


def one_line_error(argv, capsys):
    """(exit code, message) of a main(argv) that must fail in one line."""
    with pytest.raises(SystemExit) as stop:
        zeroshot.main(argv)
    code = stop.value.code
    message = code if isinstance(code, str) else capsys.readouterr().err
    assert len(message.strip().splitlines()) == 1, message
    return (1 if isinstance(code, str) else code), message


CLI_ERRORS = [  # a file: exit 1; a flag: 2, README's codes
    (lambda argv, tmp: argv + ['--model_dir', str(tmp)], 1, 'no pretrained weights in'),
    (lambda argv, tmp: argv + ['--data_dir', str(tmp)], 1, 'not found'),
    (lambda argv, tmp: argv + ['--split', 'test'], 1, 'no labels to score against'),
    (lambda argv, tmp: argv + ['--encoder_path', str(tmp / 'e.json')], 1, 'e.json not found'),
    (lambda argv, tmp: ['--task', 'nope'] + argv[2:], 2, "invalid choice: 'nope'"),
    (lambda argv, tmp: argv + ['--split', 'train'], 2, "--split: invalid choice: 'train'"),
    (lambda argv, tmp: argv + ['--limit', '0'], 2, "--limit: expected a whole number >= 1"),
    (lambda argv, tmp: argv + ['--n_batch', 'x'], 2, "--n_batch: expected a whole number >= 1"),
    (lambda argv, tmp: argv + ['--device', 'tpu'], 2, "--device: invalid choice: 'tpu'"),
]
if not torch.cuda.is_available():
    CLI_ERRORS.append((lambda argv, tmp: argv + ['--device', 'cuda'], 2,
                       '--device cuda: no CUDA device is available here'))


@pytest.mark.parametrize('change, exit_code, message', CLI_ERRORS,
                         ids=[m for _, _, m in CLI_ERRORS])
def test_cli_errors_are_one_line(files, tmp_path, capsys, change, exit_code, message):
    code, said = one_line_error(change(cli(files, 'sst2'), tmp_path), capsys)
    assert code == exit_code and said.startswith('zeroshot.py: error: ') and message in said


def test_cli_error_has_no_traceback(files, tmp_path):
    argv = cli(files, 'rocstories') + ['--model_dir', str(tmp_path / 'model')]
    done = subprocess.run([sys.executable, 'zeroshot.py', *argv], cwd=REPO, capture_output=True,
                          text=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert done.returncode == 1 and 'Traceback' not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"zeroshot.py: error: no pretrained weights in {tmp_path / 'model'}: found "
                           f"neither OpenAI's {tmp_path / 'model' / 'params_shapes.json'}")
