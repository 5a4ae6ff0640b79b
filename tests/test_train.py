"""train.py end to end with tiny models, in this process, against independent
recomputations; and the Trainer's update against hand-made expectations."""
import os

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import datasets
import train
from conftest import TINY, fails, openai_vocab, read_log, rocstories_dir
from datasets import rocstories, rocstories_test_labels
from model_pytorch import Config, DoubleHeadModel, load_params
from openai_shards import published_shapes, write_shards
from text_utils import TextEncoder, write_char_vocab
from tiny_trainer import make_trainer, tiny_stories


def test_update_batch_from_openais_n_gpu_or_the_papers_32(capsys):
    assert train.parse_args([]).update_batch == 32
    assert train.parse_args(['--n_batch', '4']).update_batch == 32
    assert train.parse_args(['--n_batch', '4', '--n_gpu', '2']).update_batch == 8
    assert train.parse_args(['--update_batch', '16', '--n_batch', '8', '--n_gpu', '2']).update_batch == 16
    with pytest.raises(SystemExit):
        train.parse_args(['--update_batch', '32', '--n_batch', '8', '--n_gpu', '2'])
    assert '--update_batch 32 contradicts --n_batch 8 x --n_gpu 2 = 16' in capsys.readouterr().err


def openai_inputs(stories, endings1, endings2, encoder_path, bpe_path, n_ctx):
    """OpenAI's encode and transform_roc, written out plainly: ids padded to n_ctx."""
    enc = TextEncoder(encoder_path, bpe_path)
    n_vocab = len(enc.encoder)
    start, delimiter, clf = n_vocab, n_vocab + 1, n_vocab + 2
    X1, X2, X3 = (enc.encode(texts, verbose=False) for texts in (stories, endings1, endings2))
    x = np.zeros((len(X1), 2, n_ctx, 2), dtype=np.int64)
    for i, (x1, x2, x3) in enumerate(zip(X1, X2, X3)):
        for j, ending in enumerate((x2, x3)):
            seq = [start] + x1[:254] + [delimiter] + ending[:254] + [clf]
            x[i, j, :len(seq), 0] = seq
    x[..., 1] = np.arange(n_vocab + 3, n_vocab + 3 + n_ctx)
    return torch.from_numpy(x)


def plain_model(meta, state):
    model = DoubleHeadModel(Config(meta['cfg']), meta['clf_token'], meta['task_head_type'],
                            vocab=meta['n_vocab'] + meta['n_special'] + meta['n_ctx'],
                            n_ctx=meta['n_ctx'])
    model.load_state_dict(state)
    return model.eval()


def cross_entropy(logits, labels):
    """Mean cross-entropy in float64."""
    z = logits.double().numpy()
    log_norm = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    return float(np.mean(log_norm - z[np.arange(len(labels)), labels]))


def test_end_to_end_on_tiny_stories_against_plain_recomputation(tiny_run, capsys):
    """The log's costs and accuracies are those the saved parameters give through a plain
    transcription of OpenAI's inputs (the mean loss per story, not a sum); the submission
    is the best parameters' argmax on the test stories; the schedule spans OpenAI's
    (n_train // n_batch_train) * n_iter updates; --analysis prints OpenAI's lines."""
    tmp, argv = tiny_run
    train.main(argv + ['--desc', 'tiny', '--submit', '--analysis', '--keep_checkpoints', '5'])
    out = capsys.readouterr().out
    lines = read_log(tmp / 'log' / 'tiny.jsonl')
    assert lines[0]['desc'] == 'tiny' and lines[0]['n_valid'] == 8  # the arguments first
    evals = [line for line in lines[1:] if 'va_acc' in line]
    # 32 training stories / 8 per update = 4 updates per epoch, logged at each epoch's end
    assert [(e['n_epochs'], e['n_updates']) for e in evals] == [(1, 4), (2, 8)]
    (trX1, trX2, trX3, trY), (vaX1, vaX2, vaX3, vaY), (teX1, teX2, teX3) = \
        rocstories(str(tmp / 'data'), n_valid=8)
    vocab = (str(tmp / 'vocab' / 'encoder.json'), str(tmp / 'vocab' / 'vocab.bpe'))
    ckpts = sorted((tmp / 'save' / 'tiny' / 'checkpoints').glob('update_*.pt'))
    assert [p.name for p in ckpts] == ['update_00000004.pt', 'update_00000008.pt']
    for e, path in zip(evals, ckpts):
        state = torch.load(path, weights_only=True)
        model, n_ctx = plain_model(state['meta'], state['model']), state['meta']['n_ctx']
        with torch.no_grad():
            va = model(openai_inputs(vaX1, vaX2, vaX3, *vocab, n_ctx))[1]
            tr = model(openai_inputs(trX1[:8], trX2[:8], trX3[:8], *vocab, n_ctx))[1]
        assert e['va_cost'] == pytest.approx(cross_entropy(va, vaY), rel=1e-5)
        assert e['tr_cost'] == pytest.approx(cross_entropy(tr, trY[:8]), rel=1e-5)
        assert e['va_acc'] == pytest.approx(100 * np.mean(va.argmax(1).numpy() == vaY))
        assert e['tr_acc'] == pytest.approx(100 * np.mean(tr.argmax(1).numpy() == trY[:8]))
        printed = '%d %d %.3f %.3f %.2f %.2f' % (e['n_epochs'], e['n_updates'], e['tr_cost'],
                                                 e['va_cost'], e['tr_acc'], e['va_acc'])
        assert printed in out
        group = state['optimizer']['param_groups'][0]
        assert group['t_total'] == (32 // 8) * 2 and group['t'] == e['n_updates']
    best_meta, best_state = load_params(tmp / 'save' / 'tiny' / 'best_params.safetensors')
    with torch.no_grad():
        test_logits = plain_model(best_meta, best_state)(
            openai_inputs(teX1, teX2, teX3, *vocab, best_meta['n_ctx']))[1]
    preds = test_logits.argmax(1).numpy()
    sub = (tmp / 'sub' / 'tiny' / 'ROCStories.tsv').read_text().splitlines()
    assert sub == ['index\tprediction'] + [f'{i}\t{p}' for i, p in enumerate(preds)]
    best = max(evals, key=lambda e: e['va_acc'])  # the first of equal ones
    assert f'ROCStories Valid Accuracy: {best["va_acc"]:.2f}' in out
    test_acc = 100 * np.mean(preds == rocstories_test_labels(str(tmp / 'data')))
    assert f'ROCStories Test Accuracy:  {test_acc:.2f}' in out
    assert lines[-1] == {'te_acc': pytest.approx(test_acc), 'time': lines[-1]['time']}
    assert (tmp / 'log' / 'tiny.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_loads_synthetic_openai_shards(tiny_run):
    """A run through the weight loader: the tiny vocabulary padded to the shards' token
    rows, one block transferred."""
    tmp, argv = tiny_run
    encoder_path, _, _ = write_char_vocab(str(tmp / 'vocab'), n_vocab=100)
    arrays = write_shards(tmp / 'model', published_shapes(n_layer=2, n_embd=16, n_vocab=100, n_ctx=128))
    train.main(argv + ['--desc', 'shards', '--n_transfer', '1', '--model_dir', str(tmp / 'model'),
                       '--encoder_path', encoder_path, '--n_iter', '1', '--submit', '--lr', '0',
                       '--n_ctx', '128'])
    _, state = load_params(tmp / 'save' / 'shards' / 'best_params.safetensors')
    # lr 0: the saved parameters are the loaded ones
    np.testing.assert_array_equal(state['transformer.embed.weight'][:100].numpy(), arrays[1])
    np.testing.assert_array_equal(state['transformer.h.0.attn.c_attn.w'].numpy(), arrays[2][0])


def test_missing_weights_are_named(tiny_run, capsys):
    tmp, argv = tiny_run
    code, _, err = fails(argv + ['--n_transfer', '12', '--model_dir', str(tmp / 'nothing')], capsys)
    assert code == 1
    assert f"{tmp / 'nothing' / 'params_shapes.json'}, {tmp / 'nothing' / 'params_0.npy'}" in err
    assert 'download.py' in err


def test_the_main_command_names_all_it_misses_and_its_advice_leads_to_a_run(tmp_path, capsys,
                                                                           monkeypatch):
    """README's command where neither model/ nor data/ is: the data, the vocabulary (with
    its flags) and the weights named at once; with --n_transfer -1, as advised, the data
    and the vocabulary still; with both given, the run."""
    monkeypatch.chdir(tmp_path)
    command = ['--dataset', 'rocstories', '--desc', 'rocstories', '--submit', '--analysis',
               '--data_dir', 'data/']
    code, _, err = fails(command, capsys)
    line = err.strip().splitlines()[-1]
    assert code == 1 and line.startswith('train.py: error: missing: the data: --data_dir data/ is '
                                         'not a folder; the vocabulary (--encoder_path, --bpe_path): '
                                         'model/encoder_bpe_40000.json, model/vocab_40000.bpe; the '
                                         'weights (--model_dir): model/params_shapes.json')
    assert 'cs.rochester.edu' in line and '`python download.py`' in line
    assert '--n_transfer -1 trains from scratch' in line
    command += ['--n_transfer', '-1']
    code, _, err = fails(command, capsys)
    line = err.strip().splitlines()[-1]
    assert code == 1 and 'the data: --data_dir data/ is not a folder' in line
    assert 'the vocabulary (--encoder_path, --bpe_path)' in line and 'weights' not in line
    datasets.write_story_cloze('data', 40, 12, np.random.default_rng(0))
    encoder_path, bpe_path, _ = write_char_vocab('vocab')
    train.main(command + ['--encoder_path', encoder_path, '--bpe_path', bpe_path, '--n_valid', '8',
                          '--n_iter', '1', '--device', 'cpu'] + TINY)
    assert 'ROCStories Test Accuracy:' in capsys.readouterr().out


def test_analysis_without_submit_prints_the_validation_lines_and_draws_the_curves(tiny_run, capsys):
    tmp, argv = tiny_run
    train.main(argv + ['--desc', 'curves', '--analysis', '--n_iter', '1'])
    out = capsys.readouterr().out
    va_acc = read_log(tmp / 'log' / 'curves.jsonl')[-1]['va_acc']
    assert f'ROCStories Valid Accuracy: {va_acc:.2f}' in out and 'Test' not in out
    assert (tmp / 'log' / 'curves.png').read_bytes()[:4] == b'\x89PNG'
    assert not (tmp / 'sub').exists()


def test_every_flag_has_help_and_max_grad_norm_says_how_to_turn_clipping_off(capsys):
    assert [a.option_strings for a in train.parser()._actions if not a.help] == []
    code, out, _ = fails(['--help'], capsys)
    assert code == 0 and '0 or below turns clipping off' in ' '.join(out.split())


def test_smoke_writes_below_the_working_folder(tmp_path, monkeypatch):
    """--smoke's data, vocabulary and outputs go to ./smoke, never the system's temporary
    folder, and a second smoke run replaces the first."""
    monkeypatch.chdir(tmp_path)
    args = train.smoke_args(train.parse_args(['--smoke']))
    for path in (args.data_dir, args.encoder_path, args.bpe_path, args.log_dir, args.save_dir,
                 args.submission_dir, args.cache_dir):
        assert os.path.realpath(path).startswith(str(tmp_path / 'smoke'))
    assert args.overwrite and args.submit and args.analysis and args.n_transfer == -1
    assert sorted(os.listdir(tmp_path / 'smoke')) == [
        'cloze_test_test__spring2016 - cloze_test_ALL_test.csv',
        'cloze_test_val__spring2016 - cloze_test_ALL_val.csv', 'encoder.json', 'vocab.bpe']


def test_on_the_real_csvs(tmp_path, capsys):
    encoder_path, bpe_path = openai_vocab()
    argv = ['--data_dir', rocstories_dir(), '--encoder_path', encoder_path, '--bpe_path', bpe_path,
            '--desc', 'real', '--log_dir', str(tmp_path / 'log'), '--save_dir', str(tmp_path / 'save'),
            '--submission_dir', str(tmp_path / 'sub'), '--cache_dir', str(tmp_path / 'cache'),
            '--n_iter', '1', '--n_transfer', '-1', '--submit', '--analysis', '--device', 'cpu',
            '--n_embd', '8', '--n_head', '2', '--n_layer', '1', '--n_batch', '32',
            # a few training stories: a tiny model's update is its LM head over 40,990 tokens
            '--n_valid', '1775']
    train.main(argv)
    out = capsys.readouterr().out
    sub = (tmp_path / 'sub' / 'real' / 'ROCStories.tsv').read_text().splitlines()
    assert len(sub) == 1 + 1871
    assert all(line.split('\t') == [str(i), line[-1]] and line[-1] in '01'
               for i, line in enumerate(sub[1:]))
    lines = read_log(tmp_path / 'log' / 'real.jsonl')
    assert [(l['n_epochs'], l['n_updates']) for l in lines[1:-1]] == [(1, (1871 - 1775) // 32)]
    assert 'ROCStories Valid Accuracy:' in out and 'ROCStories Test Accuracy:' in out
    # OpenAI's n_ctx: the longest story plus its longer ending, each cut to 254, plus 3
    enc = TextEncoder(encoder_path, bpe_path)
    (*train_split, _), (*dev, _), test = rocstories(rocstories_dir(), n_valid=1775)
    longest = max(len(s[:254]) + max(len(e1[:254]), len(e2[:254]))
                  for X1, X2, X3 in (train_split, dev, test)
                  for s, e1, e2 in zip(*(enc.encode(X, verbose=False) for X in (X1, X2, X3))))
    meta, _ = load_params(tmp_path / 'save' / 'real' / 'best_params.safetensors')
    assert meta['n_ctx'] == longest + 3 and f'n_ctx {longest + 3};' in out


@pytest.mark.parametrize('lm_coef', [0.5, 0.0])
def test_fast_paths_give_the_reference_losses_updates_and_logits(lm_coef):
    """Batches padded to their longest sequence, packed real tokens and LM logits at
    counted positions only (none at all without the LM term), against batches padded to
    n_ctx through the plain model: the same loss, the same parameters after two updates,
    the same evaluation logits."""
    split = tiny_stories(16)
    # plain SGD: parameters that differ only as their gradients do (Adam would blow up the
    # rounding noise of gradients that are zero in exact arithmetic, as a bias shared by
    # both choices has); OpenAIAdam has its own tests
    fast = make_trainer(reference=False, lm_coef=lm_coef)
    ref = make_trainer(reference=True, lm_coef=lm_coef)
    assert fast.fast and not ref.fast
    assert fast.batch(split, np.arange(8))[0].shape[2] < 40 == ref.batch(split, np.arange(8))[0].shape[2]
    for n, rows in enumerate((np.arange(8), np.arange(8, 16)), 1):
        loss_fast, loss_ref = fast.update(split, rows, n), ref.update(split, rows, n)
        torch.testing.assert_close(loss_fast, loss_ref, rtol=1e-5, atol=0)
    start = make_trainer().module.state_dict()
    for name, p in ref.module.state_dict().items():
        torch.testing.assert_close(fast.module.state_dict()[name], p, rtol=1e-5, atol=1e-6, msg=name)
    for name in ('transformer.embed.weight', 'transformer.h.0.attn.c_attn.w'):
        assert (ref.module.state_dict()[name] - start[name]).abs().max() > 1e-4, f'{name} did not move'
    torch.testing.assert_close(fast.logits(split), ref.logits(split), rtol=1e-5, atol=1e-5)


def test_accumulated_update_equals_one_forward_pass_of_the_whole_batch():
    """With plain SGD, an update of 8 stories in two forward passes of 4 moves the
    parameters exactly as one pass of 8: each pass's loss counts 1/steps, so that the
    summed gradient is the whole batch's mean."""
    split = tiny_stories(8)
    two_steps = make_trainer(update_batch=8, n_batch=4)
    one_step = make_trainer(update_batch=8, n_batch=8)
    assert (two_steps.accum, one_step.accum) == (2, 1)
    torch.testing.assert_close(two_steps.update(split, np.arange(8), 1),
                               one_step.update(split, np.arange(8), 1), rtol=1e-6, atol=0)
    for name, p in one_step.module.state_dict().items():
        torch.testing.assert_close(two_steps.module.state_dict()[name], p, rtol=1e-5, atol=1e-7,
                                   msg=name)


def test_a_tie_keeps_the_first_best_parameters(tiny_run, monkeypatch):
    """OpenAI saves the best parameters only when the score beats the best so far: with
    every evaluation scoring the same, the parameters of the first evaluation stay."""
    tmp, argv = tiny_run
    monkeypatch.setattr('tasks.score', lambda task, preds, labels, group=None: {'acc': 50.0})
    train.main(argv + ['--desc', 'tie', '--submit', '--n_iter', '3', '--keep_checkpoints', '3'])
    _, best = load_params(tmp / 'save' / 'tie' / 'best_params.safetensors')
    ckpts = sorted((tmp / 'save' / 'tie' / 'checkpoints').glob('update_*.pt'))
    first, last = (torch.load(p, weights_only=True)['model'] for p in (ckpts[0], ckpts[-1]))
    assert ckpts[0].name == 'update_00000004.pt'
    assert all(torch.equal(best[k], first[k]) for k in best)
    assert not all(torch.equal(best[k], last[k]) for k in best)


def test_bf16_update_casts_each_weight_once_and_computes_what_per_pass_autocast_did():
    """Under --amp bf16 an update of two passes casts c_attn.w to bf16 once, not per pass,
    and its gradients are bit for bit those of autocast entered for each pass alone."""
    split = tiny_stories(8)
    trainer = make_trainer(update_batch=8, n_batch=4)
    trainer.amp_dtype = torch.bfloat16
    reference = make_trainer(update_batch=8, n_batch=4)
    weight = trainer.module.transformer.h[0].attn.c_attn.w

    class Casts(TorchDispatchMode):
        """Counts the casts of weight to bf16."""
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if (func is torch.ops.aten._to_copy.default and kwargs.get('dtype') == torch.bfloat16
                    and args[0].data_ptr() == weight.data_ptr()):
                self.n += 1
            return func(*args, **kwargs)
    with Casts() as casts:
        casts.n = 0
        trainer.update(split, np.arange(8), 1)
    assert casts.n == 1
    for k in (0, 1):  # the same passes, autocast around each forward alone
        x, m, y, n_real = reference.batch(split, np.arange(4 * k, 4 * k + 4))
        with torch.autocast('cpu', dtype=torch.bfloat16):
            lm, clf = reference.model(x, m, n_real, lm='rows')
        (reference.loss(x, y, m, clf.float(), lm, lm_rows='targets') / 2).backward()
    reference.opt.step()
    for name, p in reference.module.state_dict().items():
        assert torch.equal(trainer.module.state_dict()[name], p), name


def test_every_file_a_run_writes_loads_without_pickle(tiny_run):
    """Parameters as safetensors, checkpoints as torch.load(weights_only=True) takes
    them, the rest text or PNG: nothing a run writes needs pickle to read."""
    from safetensors.torch import load_file
    tmp, argv = tiny_run
    train.main(argv + ['--desc', 'files', '--submit', '--analysis', '--n_iter', '1'])
    written = [p for folder in ('save', 'log', 'sub') for p in (tmp / folder).rglob('*') if p.is_file()]
    kinds = {}
    for path in written:
        if path.suffix == '.safetensors':
            assert 'transformer.embed.weight' in load_file(path)
        elif path.suffix == '.pt':
            assert set(torch.load(path, weights_only=True)) >= {'model', 'optimizer', 'rng'}
        elif path.suffix == '.png':
            assert path.read_bytes()[:4] == b'\x89PNG'
        else:
            assert path.suffix in ('.jsonl', '.tsv') and path.read_text(encoding='utf-8')
        kinds[path.suffix] = kinds.get(path.suffix, 0) + 1
    assert kinds == {'.safetensors': 1, '.pt': 1, '.png': 1, '.jsonl': 1, '.tsv': 1}
