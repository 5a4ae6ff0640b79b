"""pretrain.py: the corpus as a token stream, the windows, the loss, runs that stop and
resume, the model folder it writes, and its refusals of bad input."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import generate
import pretrain
import test_errors
import train
from conftest import REPO, fails, read_log, terminated_at
from corpus import TokenStream, corpus_files, split_documents
from model_pytorch import Config, LMModel, load_openai_pretrained_model
from text_utils import write_char_vocab

WORDS = ('the cat sat on a mat', 'a dog ran far', 'then it rained', 'we went home',
         'the end came soon', 'she sang', 'he hid the key')


def write_corpus(folder, n_files=4, n_paragraphs=30, seed=0):
    """Books of hard-wrapped paragraphs separated by blank lines."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(n_files):
        paras = []
        for _ in range(n_paragraphs):
            sentences = [WORDS[j] + '.' for j in rng.integers(0, len(WORDS), rng.integers(2, 6))]
            text = ' '.join(sentences)
            paras.append('\n'.join(text[k:k + 30] for k in range(0, len(text), 30)))
        with open(os.path.join(folder, f'book{i}.txt'), 'w') as f:
            f.write('\n\n'.join(paras) + '\n')
    return folder


TINY = ['--n_layer', '2', '--n_embd', '16', '--n_head', '2', '--n_ctx', '16',
        '--update_batch', '4', '--n_batch', '2', '--n_batch_eval', '4', '--n_valid_windows', '4',
        '--warmup_updates', '2', '--lr', '1e-3', '--device', 'cpu']


@pytest.fixture
def corpus_run(tmp_path):
    """(tmp_path, argv): a tiny pre-training run on four written books (one held out)
    with the character vocabulary, all its files under tmp_path."""
    corpus = write_corpus(str(tmp_path / 'corpus'))
    encoder_path, bpe_path, _ = write_char_vocab(str(tmp_path / 'vocab'))
    argv = ['--corpus', corpus, '--valid_files', 'book3.txt', '--encoder_path', encoder_path,
            '--bpe_path', bpe_path, '--log_dir', str(tmp_path / 'log'),
            '--save_dir', str(tmp_path / 'save'), '--cache_dir', str(tmp_path / 'cache'),
            '--max_updates', '6', '--log_every', '3', '--desc', 'tiny'] + TINY
    return tmp_path, argv


def test_windows_are_contiguous_inside_the_stream_and_reproducible(tmp_path):
    path = tmp_path / 'stream.tokens'
    np.arange(1000, dtype=np.uint16).tofile(path)
    stream = TokenStream(str(path), 1000, 'uint16')
    starts = pretrain.update_starts(7, 3, 64, 1000, 50)
    assert ((starts >= 0) & (starts <= 950)).all()
    windows = stream.windows(starts, 50)
    # the stream counts up, so a contiguous window is its start and the 49 after it
    assert (windows == starts[:, None] + np.arange(50)).all()
    assert (pretrain.update_starts(7, 3, 64, 1000, 50) == starts).all()
    assert not (pretrain.update_starts(7, 4, 64, 1000, 50) == starts).all()
    assert not (pretrain.update_starts(8, 3, 64, 1000, 50) == starts).all()
    # the last window may end at the stream's last token, and no later
    ends = np.concatenate([pretrain.update_starts(0, n, 64, 60, 50) for n in range(1, 50)])
    assert ends.max() == 10 and ends.min() == 0


def test_each_process_takes_its_own_share_of_an_update(corpus_run):
    class Share:  # what PretrainRun.starts reads of the run
        def __init__(self, rank, world):
            self.args = type('A', (), dict(seed=1, update_batch=8, n_ctx=16))
            self.dist = type('D', (), dict(rank=rank))
            self.trainer = type('T', (), dict(per_device=8 // world))
            self.train_stream = type('S', (), dict(n_tokens=500))
    one = pretrain.PretrainRun.starts(Share(0, 1), 5)
    halves = [pretrain.PretrainRun.starts(Share(r, 2), 5) for r in (0, 1)]
    assert (np.concatenate(halves) == one).all() and len(halves[0]) == 4


def test_loss_equals_the_plain_lm_loss_over_every_position_of_the_windows():
    """Windows of n_ctx + 1 tokens: every one of the model's n_ctx positions predicts the
    token after it, the last one included, in the fused loss and the plain one."""
    torch.manual_seed(0)
    cfg = Config(n_embd=16, n_head=2, n_layer=2, afn='gelu', embd_pdrop=0.1, attn_pdrop=0.1,
                 resid_pdrop=0.1, clf_pdrop=0.0)
    model = LMModel(cfg, vocab=30 + 12, n_ctx=12).eval()
    windows = torch.randint(0, 30, (5, 13))
    x, targets = map(torch.from_numpy, pretrain.window_batch(windows.numpy(), 30))
    assert (x[..., 1] == 30 + torch.arange(12)).all() and (x[..., 0] == windows[:, :-1]).all()
    logits = model(x).double()  # (5, 12, vocab): each position predicts the next token
    want = F.cross_entropy(logits.reshape(-1, logits.size(-1)), windows[:, 1:].reshape(-1))
    for fused in (True, False):
        loss = pretrain.lm_loss(model, x, targets, fused)
        assert torch.allclose(loss.double(), want, atol=1e-6)
        # the last position's output counts: its target changed, the loss changes
        later = windows.clone()
        later[:, -1] = (later[:, -1] + 1) % 30
        other = pretrain.lm_loss(model, x, later[:, 1:], fused)
        assert not torch.allclose(other, loss)


def params_of(save_dir, desc='tiny'):
    from safetensors.torch import load_file
    return load_file(os.path.join(save_dir, desc, 'model', 'model.safetensors'))


def test_a_run_writes_a_model_folder_that_every_loader_takes(corpus_run, capsys):
    tmp, argv = corpus_run
    pretrain.main(argv)
    log = read_log(tmp / 'log' / 'tiny.jsonl')
    assert [r['n_updates'] for r in log[1:]] == [3, 6]
    assert all(r['va_ppl'] == pytest.approx(np.exp(r['va_loss'])) for r in log[1:])
    assert log[2]['va_loss'] < log[1]['va_loss']  # it learns
    assert (tmp / 'log' / 'tiny.png').stat().st_size > 0
    folder = str(tmp / 'save' / 'tiny' / 'model')
    assert sorted(os.listdir(folder)) == ['config.json', 'merges.txt', 'model.safetensors',
                                          'vocab.json']
    # our loader and transformers' give the same next-token logits
    import transformers
    hf = transformers.OpenAIGPTLMHeadModel.from_pretrained(folder).eval()
    ours = LMModel(Config(n_embd=16, n_head=2, n_layer=2, afn='gelu', embd_pdrop=0,
                          attn_pdrop=0, resid_pdrop=0, clf_pdrop=0), vocab=58 + 16, n_ctx=16)
    load_openai_pretrained_model(ours.transformer, n_ctx=16, n_special=0, n_transfer=2,
                                 n_embd=16, path=folder)
    tokens = torch.randint(0, 58, (2, 16))
    x = torch.from_numpy(pretrain.window_inputs(tokens.numpy(), 58))
    with torch.no_grad():
        # ours has a column for each position row too, which the head never predicts
        assert torch.allclose(ours.eval()(x)[..., :58], hf(tokens).logits, atol=1e-5)
    # generate.py samples from it, train.py fine-tunes from it
    generate.main(['the cat', '--model_dir', folder, '--length', '5', '--device', 'cpu'])
    assert 'the cat' in capsys.readouterr().out
    # train.py fine-tunes from it: its vocabulary comes from the folder, as OpenAI's does
    from conftest import TINY as TRAIN_TINY
    import datasets
    data = datasets.write_story_cloze(str(tmp / 'stories'), 40, 12, np.random.default_rng(0))
    tiny = [a for a in TRAIN_TINY]
    tiny[tiny.index('--n_embd') + 1] = '16'
    train.main(['--data_dir', data, '--model_dir', folder, '--n_transfer', '2',
                '--n_ctx', '16', '--log_dir', str(tmp / 'log'), '--save_dir', str(tmp / 'save'),
                '--submission_dir', str(tmp / 'sub'), '--cache_dir', str(tmp / 'cache'),
                '--n_valid', '8', '--n_iter', '1', '--device', 'cpu', '--desc', 'fine'] + tiny)
    assert read_log(tmp / 'log' / 'fine.jsonl')[-1]['n_updates'] == 4


def without_times(log):
    return [{k: v for k, v in r.items() if k not in ('time', 'tokens_per_s')} for r in log]


def test_sigterm_then_resume_ends_as_an_uninterrupted_run(corpus_run, capsys, monkeypatch):
    tmp, argv = corpus_run
    pretrain.main(argv + ['--desc', 'whole', '--save_every', '2'])
    monkeypatch.setattr(pretrain.LMTrainer, 'update',
                        terminated_at(5, pretrain.LMTrainer.update))
    code, _, err = fails(argv + ['--desc', 'cut', '--save_every', '2'], capsys, pretrain.main)
    assert code == 75 and 'stopped at update 5' in err and '--resume' in err
    monkeypatch.undo()
    pretrain.main(argv + ['--desc', 'cut', '--save_every', '2', '--resume'])
    whole, cut = params_of(str(tmp / 'save'), 'whole'), params_of(str(tmp / 'save'), 'cut')
    assert whole.keys() == cut.keys()
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    assert without_times(read_log(tmp / 'log' / 'cut.jsonl'))[1:] == \
        without_times(read_log(tmp / 'log' / 'whole.jsonl'))[1:]


def one_error(argv, capsys, *words):
    """The one error line of pretrain.py, exit 1, which names words."""
    code, line = test_errors.one_error(pretrain.main, argv, capsys)
    assert code == 1 and all(w in line for w in words), line
    return line


def test_refuses_an_empty_corpus_folder(corpus_run, capsys):
    tmp, argv = corpus_run
    (tmp / 'empty').mkdir()
    one_error(argv + ['--corpus', str(tmp / 'empty'), '--valid_files', ''], capsys,
              str(tmp / 'empty'), 'no file')


@pytest.mark.parametrize('content, where', [(b'plain text\nand \x00 a NUL', 'byte 15'),
                                            (b'caf\xe9 au lait', 'byte 3')])
def test_refuses_a_binary_or_non_utf8_file_naming_the_byte(corpus_run, capsys, content, where):
    tmp, argv = corpus_run
    bad = tmp / 'corpus' / 'book1.txt'
    bad.write_bytes(bad.read_bytes() + content)
    offset = len(bad.read_bytes()) - len(content) + int(where.split()[1])
    one_error(argv, capsys, str(bad), f'byte {offset}')
    assert not (tmp / 'save' / 'tiny').exists()


def test_refuses_a_corpus_or_validation_set_shorter_than_a_window(corpus_run, capsys):
    tmp, argv = corpus_run
    (tmp / 'corpus' / 'book3.txt').write_text('the end.\n')
    one_error(argv, capsys, 'validation documents hold', '--n_ctx 16')
    one_error(argv + ['--valid_files', 'book2.txt', '--n_ctx', '4000'], capsys,
              'training documents hold', '--n_ctx 4000')


def test_init_from_must_agree_with_the_flags_and_vocabulary(corpus_run, capsys):
    tmp, argv = corpus_run
    pretrain.main(argv)
    folder = str(tmp / 'save' / 'tiny' / 'model')
    cont = argv + ['--init_from', folder, '--desc', 'more']
    one_error(cont + ['--n_embd', '32'], capsys, '--n_embd 32', 'has 16')
    one_error(cont + ['--n_ctx', '32'], capsys, '--n_ctx 32', '16 positions')
    other, _, _ = write_char_vocab(str(tmp / 'other'), n_vocab=80)
    one_error(cont + ['--encoder_path', other], capsys, other, '80 tokens', 'embeds 58')
    # with its own vocabulary and shape it starts from the weights: at learning rate 0
    # it stays there, the same validation loss as where the first run ended
    pretrain.main(cont + ['--max_updates', '3', '--lr', '0'])
    ended = read_log(tmp / 'log' / 'tiny.jsonl')[-1]['va_loss']
    assert read_log(tmp / 'log' / 'more.jsonl')[1]['va_loss'] == pytest.approx(ended, abs=1e-6)


def test_snapshots_and_a_time_limit_end_with_model_folders(corpus_run, capsys):
    tmp, argv = corpus_run
    pretrain.main(argv + ['--max_updates', '30', '--snapshot_every', '10',
                          '--max_minutes', '1e-9'])
    # the deadline is looked at every 10 updates: the run ends at the first look
    assert 'stopped at update 10 of the 30 planned' in capsys.readouterr().out
    save = tmp / 'save' / 'tiny'
    assert sorted(os.listdir(save / 'snapshots')) == ['update_00000010']
    final, snapshot = params_of(str(tmp / 'save')), load_file_of(save / 'snapshots' /
                                                                 'update_00000010')
    assert all(torch.equal(final[k], snapshot[k]) for k in final)
    assert read_log(tmp / 'log' / 'tiny.jsonl')[-1]['n_updates'] == 10


def load_file_of(folder):
    from safetensors.torch import load_file
    return load_file(os.path.join(folder, 'model.safetensors'))


def test_two_processes_under_torchrun_equal_one(corpus_run):
    """Each process its half of every update's windows: without dropout (whose masks
    differ per process) the same run as one process's, to float32's rounding."""
    tmp, argv = corpus_run
    argv = argv + ['--embd_pdrop', '0', '--attn_pdrop', '0', '--resid_pdrop', '0']
    pretrain.main(argv + ['--desc', 'one'])
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node',
                           '2', '--master_port', str(29500 + os.getpid() % 1000),
                           os.path.join(REPO, 'pretrain.py')] + argv + ['--desc', 'two',
                                                                         '--n_batch', '1'],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = params_of(str(tmp / 'save'), 'one'), params_of(str(tmp / 'save'), 'two')
    assert all(torch.allclose(one[k], two[k], atol=1e-6) for k in one)
    logs = [without_times(read_log(tmp / 'log' / f'{d}.jsonl'))[1:] for d in ('one', 'two')]
    assert [r['n_updates'] for r in logs[1]] == [3, 6]
    for a, b in zip(*logs):
        assert a['va_loss'] == pytest.approx(b['va_loss'], abs=1e-5)
        assert a['tr_loss'] == pytest.approx(b['tr_loss'], abs=1e-5)


def test_validation_documents_are_never_trained_on(tmp_path):
    corpus = write_corpus(str(tmp_path / 'corpus'), n_files=6, n_paragraphs=1)
    files = corpus_files(corpus)
    train_docs, valid_docs = split_documents(files, corpus, ['book2.txt'], 0.5)
    assert [os.path.basename(f) for f in valid_docs] == ['book2.txt']
    assert sorted(train_docs + valid_docs) == files and not set(train_docs) & set(valid_docs)
    # a share: the same documents each time, at least one, none in both
    shares = [split_documents(files, corpus, None, 0.34) for _ in range(2)]
    assert shares[0] == shares[1] and len(shares[0][1]) == 2
    assert not set(shares[0][0]) & set(shares[0][1])
    assert len(split_documents(files, corpus, None, 0.01)[1]) == 1


def test_a_run_that_would_train_nothing_is_refused_and_lr_0_is_warned_of(corpus_run, capsys):
    """One update is the warmup's first, at learning rate 0, as train.py refuses it;
    --lr 0 trains nothing either: said, and the weights stay where they started."""
    tmp, argv = corpus_run
    line = one_error(argv + ['--max_updates', '1'], capsys, '1 update(s) planned',
                     'none has a learning rate above 0', 'raise --max_updates')
    assert not (tmp / 'save' / 'tiny').exists(), line
    pretrain.main(argv + ['--desc', 'still', '--lr', '0', '--max_updates', '2'])
    assert 'pretrain.py: warning: --lr 0: the weights will not change' in capsys.readouterr().err


@pytest.mark.parametrize('flags, words', [
    (['--n_embd', '33', '--n_head', '2'], ['--n_embd 33 must be a multiple of --n_head 2']),
    (['--corpus', '.', '--desc', None], ['--corpus .', 'give --desc']),
])
def test_flag_errors_exit_2_naming_the_flags_given(corpus_run, capsys, flags, words):
    tmp, argv = corpus_run
    argv = list(argv)
    for flag, value in zip(flags[::2], flags[1::2]):
        i = argv.index(flag) if flag in argv else None
        if value is None:
            del argv[i:i + 2]
        elif i is None:
            argv += [flag, value]
        else:
            argv[i + 1] = value
    code, line = test_errors.one_error(pretrain.main, argv, capsys)
    assert code == 2 and all(w in line for w in words) and "--desc '.'" not in line, line


def test_resume_skips_a_file_that_is_no_checkpoint(corpus_run, capsys):
    """A loadable .pt of another kind in the checkpoint folder (not one of this script's
    states) is skipped with a word, as a damaged one is; with no other, one line."""
    tmp, argv = corpus_run
    pretrain.main(argv + ['--save_every', '3'])
    folder = tmp / 'save' / 'tiny' / 'checkpoints'
    torch.save({'weights': torch.zeros(2)}, folder / 'update_00000009.pt')
    pretrain.main(argv + ['--save_every', '3', '--resume'])
    err = capsys.readouterr().err
    assert f'skipping {folder / "update_00000009.pt"}: not a checkpoint' in err
    for path in folder.glob('update_0000000[36].pt'):
        path.unlink()
    one_error(argv + ['--save_every', '3', '--resume'], capsys, '--resume: no readable '
              'checkpoint')


def test_a_run_releases_only_its_own_lock(corpus_run, capsys, monkeypatch):
    """While a run goes on, its lock file in the log folder is removed (a user cleaning up)
    and a second run of the same --desc (saving elsewhere) takes the lock there: the
    first, ending, leaves that lock alone (a third run is still refused beside the
    second), and its own lock file gone is no error."""
    from checkpoints import RunFolder
    tmp, argv = corpus_run
    second, elsewhere = {}, argv + ['--save_dir', str(tmp / 'save2')]

    def cleaned_up_during_the_run(run, stop_request):
        os.remove(tmp / 'log' / '.tiny.lock')
        os.remove(tmp / 'save' / 'tiny' / '.lock')  # gone, and taken by none
        second['folder'] = RunFolder(pretrain.parse_args(elsewhere))
        second['folder'].lock()
        return fit(run, stop_request)
    fit = pretrain.PretrainRun.fit
    monkeypatch.setattr(pretrain.PretrainRun, 'fit', cleaned_up_during_the_run)
    pretrain.main(argv)  # ends without error, its model written
    assert (tmp / 'save' / 'tiny' / 'model' / 'model.safetensors').exists()
    monkeypatch.undo()
    lock = tmp / 'log' / '.tiny.lock'
    assert lock.exists()  # the second run's, still held
    with pytest.raises(Exception, match='another run'):
        RunFolder(pretrain.parse_args(elsewhere)).lock()
    second['folder'].unlock()
    assert not lock.exists()


@pytest.mark.parametrize('folder', ['model', 'snapshots/update_00000003'])
def test_a_model_folder_is_written_whole_or_not_at_all(corpus_run, capsys, monkeypatch, folder):
    """The disk fills up after the folder's first file reached it: no folder at its path
    (a half-written one would load as a model), and the run says how to go on."""
    tmp, argv = corpus_run
    fsync, calls = os.fsync, []

    def full_after_one_file(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, 'No space left on device')
        return fsync(fd)
    write = pretrain.write_model_folder

    def failing(path, *args):
        if path.endswith(folder):
            monkeypatch.setattr(os, 'fsync', full_after_one_file)
        return write(path, *args)
    monkeypatch.setattr(pretrain, 'write_model_folder', failing)
    one_error(argv + ['--snapshot_every', '3', '--save_every', '3'], capsys,
              'No space left on device')
    assert len(calls) == 2
    path = tmp / 'save' / 'tiny' / folder
    assert not path.exists() and not list(path.parent.glob(f'*{path.name}*'))


def test_a_kill_9_at_a_random_moment_then_resume_ends_as_an_uninterrupted_run(corpus_run,
                                                                              capsys):
    """A real SIGKILL (no handler runs) at a moment drawn anew each time, twice; then the
    run goes on as its files say: --resume from its newest checkpoint, or, killed before
    the first, afresh with --overwrite. Each ends bit for bit as the uninterrupted run."""
    tmp, argv = corpus_run
    argv = argv + ['--max_updates', '24', '--save_every', '3', '--log_every', '6']
    pretrain.main(argv + ['--desc', 'whole'])
    whole = params_of(str(tmp / 'save'), 'whole')
    script = os.path.join(REPO, 'pretrain.py')
    for i, delay in enumerate(np.random.default_rng().uniform(0.5, 5.0, size=2)):
        desc = f'killed{i}'
        proc = subprocess.Popen([sys.executable, script] + argv + ['--desc', desc],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            pretrain.main(argv + ['--desc', desc, '--resume'])
        except SystemExit:  # no checkpoint yet: what the message advises
            pretrain.main(argv + ['--desc', desc, '--overwrite'])
        killed = params_of(str(tmp / 'save'), desc)
        assert all(torch.equal(whole[k], killed[k]) for k in whole), f'killed after {delay} s'
        assert without_times(read_log(tmp / 'log' / f'{desc}.jsonl'))[1:] == \
            without_times(read_log(tmp / 'log' / 'whole.jsonl'))[1:], f'killed after {delay} s'


def test_curves_are_drawn_at_every_log_line_and_tensorboard_gets_the_same_scalars(
        corpus_run, capsys, monkeypatch):
    """The PNG is there after the first log line, before the run ends; --tensorboard
    writes the log's numbers as scalars at their updates, those a stopped run logged after
    its checkpoint purged when it resumes."""
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tmp, argv = corpus_run
    png = tmp / 'log' / 'tiny.png'
    seen = []
    log = pretrain.PretrainRun.log

    def logged(run):
        log(run)
        seen.append(png.exists())
    monkeypatch.setattr(pretrain.PretrainRun, 'log', logged)
    monkeypatch.setattr(pretrain.LMTrainer, 'update', terminated_at(5, pretrain.LMTrainer.update))
    argv = argv + ['--tensorboard', str(tmp / 'tb'), '--log_every', '2', '--save_every', '3']
    code, _, _ = fails(argv, capsys, pretrain.main)  # logs at 2 and 4, stops at 5 after 3's
    assert code == 75 and seen == [True, True]
    monkeypatch.setattr(pretrain.LMTrainer, 'update', terminated_at(99, pretrain.LMTrainer.update))
    pretrain.main(argv + ['--resume'])
    events = EventAccumulator(str(tmp / 'tb' / 'tiny'))
    events.Reload()
    records = read_log(tmp / 'log' / 'tiny.jsonl')[1:]
    for name in ('tr_loss', 'va_loss', 'va_ppl', 'lr', 'n_tokens'):
        scalars = events.Scalars(name)
        assert [s.step for s in scalars] == [2, 4, 6] == [r['n_updates'] for r in records]
        assert [s.value for s in scalars] == pytest.approx([r[name] for r in records])


def test_tensorboard_without_its_package_is_one_line(corpus_run, capsys, monkeypatch):
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: None if name == 'tensorboard' else find_spec(name, *a))
    tmp, argv = corpus_run
    code, line = test_errors.one_error(pretrain.main, argv + ['--tensorboard', str(tmp)], capsys)
    assert code == 2 and 'pip install tensorboard' in line
