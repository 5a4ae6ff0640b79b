"""experiments.py on tiny models and data: each experiment's results against its runs' own
logs (or zeroshot.py's own scores), an experiment stopped by SIGTERM and started again,
and bad input refused before any run."""
import json
import os
import signal

import numpy as np
import pytest
import torch

import datasets
import experiments
import pretrain
import train
import zeroshot
from conftest import TINY, read_log
from model_pytorch import Config, LMModel
from task_files import write_task
from text_utils import write_char_vocab

CFG = Config(n_embd=16, n_head=2, n_layer=2, embd_pdrop=0.1, attn_pdrop=0.1,
             resid_pdrop=0.1, clf_pdrop=0.1, afn='gelu')
METRICS = {'rocstories': 'acc', 'cola': 'mcc'}  # the paper's, as Table 5 names them


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """Tiny models: a second thread only waits, on a machine other work shares."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_model(folder, vocab, n_ctx, seed=0):
    """A tiny pretrained language model's folder, as pretrain.py writes it."""
    torch.manual_seed(seed)
    model = LMModel(CFG, vocab=vocab[2] + n_ctx, n_ctx=n_ctx)
    meta = dict(cfg=dict(CFG), n_vocab=vocab[2], n_special=0, n_ctx=n_ctx)
    return pretrain.write_model_folder(folder, model, meta, *vocab[:2])


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """A data folder laid out as the shared data are (rocstories/ CSVs, tasks/glue/CoLA/),
    a 2-block model folder with the character vocabulary, and the train.py flags of a
    tiny run whose encoded data every test shares."""
    root = tmp_path_factory.mktemp('world')
    vocab = write_char_vocab(str(root / 'vocab'))
    data = root / 'data'
    datasets.write_story_cloze(str(data / 'rocstories'), 40, 12, np.random.default_rng(0))
    write_task('cola', str(data / 'tasks' / 'glue'), sizes=(16, 8, 6))
    flags = TINY + ['--n_ctx', '64', '--n_valid', '8', '--n_iter', '2', '--device', 'cpu',
                    '--cache_dir', str(root / 'cache')]
    return dict(root=root, data=str(data), model=write_model(str(root / 'model'), vocab, 64),
                vocab=vocab, flags=flags)


def command(world, experiment, tasks, out, *train_flags):
    return [experiment, '--tasks', tasks, '--data_dir', world['data'], '--model_dir',
            world['model'], '--out', str(out), '--', *world['flags'], *train_flags]


def results(out, experiment):
    with open(os.path.join(out, f'{experiment}.json')) as f:
        return json.load(f)


def best_of_log(path, metric):
    """(validation, training score) of the log's first evaluation of the highest
    validation score, read here from the log's lines."""
    lines = [r for r in read_log(path)[1:] if 'n_updates' in r]
    best = max(lines, key=lambda r: r[f'va_{metric}'])  # max keeps the first of equals
    return best[f'va_{metric}'], best[f'tr_{metric}']


@pytest.fixture(scope='module')
def ablations(world):
    out = world['root'] / 'ablations'
    experiments.main(command(world, 'ablations', 'rocstories,cola', out))
    return out, results(out, 'ablations')


def test_ablation_scores_are_each_runs_best_validation_evaluation(ablations):
    out, found = ablations
    variants = {'full': (12, 0.5), 'no_pretraining': (-1, 0.5), 'no_aux_lm': (12, 0.0)}
    assert [(r['task'], r['key']) for r in found['runs']] == \
        [(t, v) for t in ('rocstories', 'cola') for v in variants]
    for run in found['runs']:
        log = out / 'log' / f"{run['task']}-{run['key']}.jsonl"
        settings = read_log(log)[0]
        assert settings['dataset'] == run['task']
        assert (settings['n_transfer'], settings['lm_coef']) == variants[run['key']]
        assert run['metric'] == METRICS[run['task']]
        valid, _ = best_of_log(log, METRICS[run['task']])
        assert run['state'] == 'done' and found['scores'][run['key']][run['task']] == valid
    assert found['complete']


def test_table_average_is_the_mean_of_its_columns(ablations):
    out, found = ablations
    with open(out / 'ablations.md') as f:
        lines = f.read().splitlines()
    assert lines[0] == '| Method | Avg. Score | ROCStories (acc) | CoLA (mc) |'
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in lines[2:5]]
    assert [r[0] for r in rows] == ['Transformer w/ aux LM (full)',
                                    'Transformer w/o pre-training', 'Transformer w/o aux LM']
    for row, variant in zip(rows, ('full', 'no_pretraining', 'no_aux_lm')):
        scores = found['scores'][variant]
        assert scores['average'] == pytest.approx((scores['rocstories'] + scores['cola']) / 2)
        assert row[1:] == [f"{scores[k]:.2f}" for k in ('average', 'rocstories', 'cola')]
        assert float(row[1]) == pytest.approx(np.mean([float(c) for c in row[2:]]), abs=0.006)
    assert (out / 'ablations.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def sigterm_in_second_run(monkeypatch, at_update=3):
    """train.Trainer.update, with SIGTERM sent during update at_update of the second run
    (the second Trainer made), as a scheduler would."""
    update, trainers = train.Trainer.update, []

    def patched(self, split, rows, n_update):
        if not any(t is self for t in trainers):
            trainers.append(self)
        if len(trainers) == 2 and n_update == at_update:
            signal.raise_signal(signal.SIGTERM)
        return update(self, split, rows, n_update)
    monkeypatch.setattr(train.Trainer, 'update', patched)


def without_time(records):
    return [{k: v for k, v in r.items() if k != 'time'} for r in records]


def test_a_stopped_experiment_runs_only_what_is_left(world, ablations, tmp_path, monkeypatch,
                                                     capsys):
    out, argv = tmp_path / 'out', command(world, 'ablations', 'cola', tmp_path / 'out')
    sigterm_in_second_run(monkeypatch)
    with pytest.raises(SystemExit) as stop:
        experiments.main(argv)
    assert stop.value.code == 75
    states = {n: json.loads((out / 'runs' / f'cola-{n}.json').read_text())['state']
              for n in ('full', 'no_pretraining')}
    assert states == {'full': 'done', 'no_pretraining': 'stopped'}
    assert not (out / 'runs' / 'cola-no_aux_lm.json').exists()
    assert 'run the same command again' in capsys.readouterr().out
    monkeypatch.undo()
    first_log = (out / 'log' / 'cola-full.jsonl').read_bytes()
    calls, main = [], train.main
    monkeypatch.setattr(train, 'main', lambda a: calls.append(a) or main(a))
    experiments.main(argv)
    # the finished run is not run again; the stopped one goes on from its checkpoint
    assert [(a[a.index('--desc') + 1], '--resume' in a) for a in calls] == \
        [('cola-no_pretraining', True), ('cola-no_aux_lm', False)]
    assert (out / 'log' / 'cola-full.jsonl').read_bytes() == first_log
    reference_out, reference = ablations
    for variant in ('full', 'no_pretraining', 'no_aux_lm'):
        log = f'log/cola-{variant}.jsonl'
        assert without_time(read_log(out / log)[1:]) == \
            without_time(read_log(reference_out / log)[1:])
        assert results(out, 'ablations')['scores'][variant]['cola'] == \
            reference['scores'][variant]['cola']


def test_layers_scores_each_number_of_transferred_blocks(world, tmp_path):
    out = tmp_path / 'out'
    experiments.main(command(world, 'layers', 'cola', out, '--n_layer', '2'))
    found = results(out, 'layers')
    assert found['n_layer'] == 2 and [p['n_transfer'] for p in found['scores']['cola']] == \
        [0, 1, 2]
    for point in found['scores']['cola']:
        log = out / 'log' / f"cola-transfer{point['n_transfer']:02d}.jsonl"
        assert read_log(log)[0]['n_transfer'] == point['n_transfer']
        assert (point['valid'], point['train']) == best_of_log(log, 'mcc')
    table = (out / 'layers.md').read_text().splitlines()
    assert table[0] == '| blocks transferred | CoLA (mc) valid | CoLA (mc) train |'
    assert table[4] == f"| 2 | {found['scores']['cola'][2]['valid']:.2f} | " \
                       f"{found['scores']['cola'][2]['train']:.2f} |"
    assert (out / 'layers.png').read_bytes()[:4] == b'\x89PNG'
    # Scores come from the logs: with other evaluations written in one, the same command
    # runs nothing and takes the first of the highest validation scores (nan never counts)
    log = out / 'log' / 'cola-transfer01.jsonl'
    settings, *_, last = read_log(log)
    values = [(1, 10.0, 1.0), (1, float('nan'), 2.0), (1, 30.0, 3.0), (2, 30.0, 4.0)]
    log.write_text(''.join(json.dumps(r) + '\n' for r in [settings] + [
        dict(last, n_epochs=e, va_mcc=va, tr_mcc=tr) for e, va, tr in values]))
    experiments.main(command(world, 'layers', 'cola', out, '--n_layer', '2'))
    assert results(out, 'layers')['scores']['cola'][1] == dict(n_transfer=1, valid=30.0,
                                                               train=3.0)


@pytest.fixture(scope='module')
def pretraining(world):
    """pretrain.py's save/{desc}/ of a run of 6 updates: snapshots at 2 and 4, the final
    model/ (whose update its newest checkpoint names), and each zero-shot task's data."""
    root = world['root'] / 'pretraining'
    save = root / 'save' / 'tiny'
    for n in (2, 4):
        write_model(str(save / 'snapshots' / f'update_{n:08d}'), world['vocab'], 128, seed=n)
    final = write_model(str(save / 'model'), world['vocab'], 128, seed=6)
    os.makedirs(save / 'checkpoints')
    (save / 'checkpoints' / 'update_00000006.pt').write_bytes(b'')
    data = root / 'data'
    datasets.write_story_cloze(str(data / 'rocstories'), 380, 4, np.random.default_rng(2))
    for task in ('sst2', 'cola'):
        write_task(task, str(data / 'tasks' / 'glue'), sizes=(8, 8, 2))
    write_task('race', str(data / 'tasks'), sizes=(4, 8, 2))
    return dict(save=str(save), final=final, data=str(data))


def test_zeroshot_scores_every_model_folder_as_zeroshot_py_does(pretraining, tmp_path,
                                                                monkeypatch):
    out = tmp_path / 'out'
    argv = ['zeroshot', '--snapshots', pretraining['save'], '--data_dir', pretraining['data'],
            '--out', str(out), '--limit', '6', '--device', 'cpu']
    experiments.main(argv)
    found = results(out, 'zeroshot')
    assert found['updates'] == [2, 4, 6]
    assert found['chance'] == {'rocstories': 50.0, 'race': 25.0, 'sst2': 50.0, 'cola': 0.0}
    data = {'rocstories': 'rocstories', 'race': 'tasks', 'sst2': 'tasks/glue',
            'cola': 'tasks/glue'}
    final = pretraining['final']
    for task, folder in data.items():
        expected, _ = zeroshot.main(
            ['--task', task, '--data_dir', os.path.join(pretraining['data'], folder),
             '--model_dir', final, '--encoder_path', os.path.join(final, 'vocab.json'),
             '--bpe_path', os.path.join(final, 'merges.txt'), '--limit', '6', '--device', 'cpu'])
        assert [p['updates'] for p in found['scores'][task]] == [2, 4, 6]
        last = found['scores'][task][-1]
        assert last['scores'] == expected and last['model_dir'] == final
    assert (out / 'zeroshot.png').read_bytes()[:4] == b'\x89PNG'
    # started again, it scores nothing again and ends with the same results
    monkeypatch.setattr(zeroshot, 'evaluate', lambda *a: pytest.fail('scored again'))
    experiments.main(argv)
    assert results(out, 'zeroshot') == found


def refused(argv, capsys, monkeypatch):
    """(exit code, the one line said) of an experiment that must stop before any run."""
    monkeypatch.setattr(train, 'main', lambda a: pytest.fail(f'a run started: {a}'))
    monkeypatch.setattr(zeroshot, 'evaluate', lambda *a: pytest.fail('a model was scored'))
    with pytest.raises(SystemExit) as stop:
        experiments.main(argv)
    code, err = stop.value.code, capsys.readouterr().err
    said = code if isinstance(code, str) else err
    assert len(said.strip().splitlines()) == 1, said
    return (1 if isinstance(code, str) else code), said


BAD = [  # (experiment's flags changed, train.py flags added, exit code, words said)
    (('--tasks', 'cola,nope'), (), 2, "--tasks: expected tasks among"),
    (('--nope', '1'), (), 2, 'unrecognized arguments: --nope'),
    ((), ('--lr', 'x'), 2, "argument --lr: expected a number >= 0, got 'x'"),
    ((), ('--desc', 'mine'), 2, '--desc after --: experiments.py sets it'),
    ((), ('--data_d', 'elsewhere'), 2, '--data_dir after --'),  # argparse takes prefixes
    (('--tasks', 'cola,sst2'), (), 1, 'no SST-2 data there, nor in its rocstories/'),
    (('--model_dir', 'absent'), (), 1, 'run cola-full: missing: the vocabulary'),
    ((), ('--update_batch', '32', '--n_batch', '8'), 1,
     'run cola-full: 16 training examples make no update of --update_batch 32'),
    (('--data_dir', 'absent'), (), 1, '--data_dir absent: no CoLA data there'),
    # the model holds 2 blocks: the flag given is named, not --n_transfer's default
    ((), ('--n_layer', '3'), 1, 'run cola-full: --n_layer 3: the weights in'),
]


@pytest.mark.parametrize('ours, theirs, code, words', BAD, ids=[b[3] for b in BAD])
def test_bad_input_is_refused_before_any_run(world, tmp_path, capsys, monkeypatch, ours,
                                             theirs, code, words):
    argv = command(world, 'ablations', 'cola', tmp_path / 'out', *theirs)
    for i in range(0, len(ours), 2):
        if ours[i] in argv:
            argv[argv.index(ours[i]) + 1] = ours[i + 1]
        else:
            argv[1:1] = ours[i:i + 2]
    said_code, said = refused(argv, capsys, monkeypatch)
    assert said_code == code and said.startswith('experiments.py') and words in said, said
    assert not (tmp_path / 'out').exists()


def test_runs_recorded_with_other_settings_are_refused(world, ablations, capsys, monkeypatch):
    out, _ = ablations
    code, said = refused(command(world, 'ablations', 'rocstories,cola', out, '--lr', '2e-3'),
                         capsys, monkeypatch)
    assert code == 1 and 'holds run rocstories-full made with other settings (lr: then ' \
                         '0.001, now 0.002)' in said
