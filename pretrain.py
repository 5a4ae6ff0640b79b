"""Pre-trains GPT-1's language model on a folder of documents (text, JSON lines, parquet,
gzip'd: corpus.py): the paper's first stage (section 4.1), which OpenAI did not release.

    python pretrain.py --corpus books/ --desc books

Its defaults are the paper's recipe: 12 layers, 768 wide, 12 heads; updates of 64
windows of 512 positions, each predicting the token after it; Adam at 2.5e-4, raised
linearly over the first 2000 updates, then annealed to 0 on a cosine; L2 0.01 on every
matrix; 100 epochs. A checkpoint every 10 minutes (--save_minutes). The
result, save/{desc}/model/, is a model folder that train.py --model_dir, generate.py,
zeroshot.py and transformers' OpenAIGPTLMHeadModel.from_pretrained load.

Exit codes as train.py's: 0 finished; 1 an error, said in one line; 2 a bad flag; 75
interrupted by SIGTERM or Ctrl-C (after a checkpoint once training has begun: add
--resume to go on).
"""
import dataclasses
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import runs
from checkpoints import Progress, RunError, settings
from corpus import add_corpus_flags, load_corpus
from export import model_files, write_folder
from loss import linear_cross_entropy
from model_pytorch import (LMModel, check_weights_files, load_openai_pretrained_model,
                           pretrained_settings)
from text_utils import check_vocabulary, find_vocabulary
from utils import DefaultsShown, Parser, atomic_write, count, file_digest, real

# The paper's model, when neither the flags nor --init_from give its shape.
PAPER_SHAPE = dict(n_layer=12, n_embd=768, n_head=12)
# Model FLOP/s of a GPU's dense bf16/fp16 matrix products, by a part of its name.
GPU_PEAK_FLOPS = {'H200': 989e12, 'H100': 989e12, 'A100': 312e12, 'L40S': 362e12,
                  'A10': 125e12, 'V100': 125e12, 'RTX 4090': 165e12, 'RTX 3090': 71e12}


# ---------------------------------------------------------------------------------------
# Windows: each update's are drawn from (seed, update), so a run needs no data state to
# resume, and every process draws the same ones and takes its own share. A window is
# n_ctx + 1 tokens: the model reads the first n_ctx, and each of its n_ctx positions
# predicts the token after it, the last position included (generate.py samples there).

def update_starts(seed, n_update, n_windows, n_tokens, length):
    """The first tokens of update n_update's n_windows windows of length tokens, uniform
    over the stream."""
    rng = np.random.default_rng([seed, n_update])
    return rng.integers(0, n_tokens - length + 1, size=n_windows)


def valid_starts(n_tokens, length, n_windows):
    """A fixed set of held-out windows of length tokens: as many as asked that do not
    overlap, spread evenly over the validation stream."""
    n = min(n_windows, n_tokens // length)
    return np.linspace(0, n_tokens - length, n).round().astype(np.int64)


def window_batch(windows, n_vocab):
    """(inputs, targets) of windows of n_ctx + 1 token ids: the inputs of the first n_ctx
    (window_inputs), and the n_ctx tokens that follow each position."""
    return window_inputs(windows[:, :-1], n_vocab), windows[:, 1:]


def window_inputs(tokens, n_vocab):
    """OpenAI's (N, seq, 2) inputs of windows of token ids: each token with its position's
    id, the row n_vocab + i of the embedding (pre-training has no special tokens)."""
    positions = n_vocab + np.arange(tokens.shape[1])
    return np.stack([tokens, np.broadcast_to(positions, tokens.shape)], -1)


# ---------------------------------------------------------------------------------------
# The model folder: transformers' layout (config.json, model.safetensors, vocab.json,
# merges.txt), which load_openai_pretrained_model reads as it reads the Hub's copy.

def model_meta(args, n_vocab):
    return dict(cfg=dict(runs.model_config(args)), n_vocab=n_vocab, n_special=0,
                n_ctx=args.n_ctx)


def write_model_folder(path, model, meta, encoder_path, bpe_path):
    """The model as a transformers checkpoint with its vocabulary, the folder path
    written whole or not at all (export.write_folder); an earlier one there is replaced."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return os.path.dirname(write_folder(path, model_files(meta, state, encoder_path, bpe_path),
                                        overwrite=True)[0])


# ---------------------------------------------------------------------------------------
# Training

def lm_loss(model, x, targets, fused=True):
    """The mean next-token loss of every position of the inputs x (N, n_ctx, 2), whose
    next tokens are targets (N, n_ctx); the softmax over every row of the embedding, as
    OpenAI's fine-tuning LM loss takes it. Fused, the LM head is computed with the
    cross-entropy (loss.LinearCrossEntropy): no float32 copy of the logits. Under fp16 it
    is not (the scaler needs the logits' gradient in fp16)."""
    targets = targets.reshape(-1)
    if fused:
        rows = model(x, lm='rows')
        return linear_cross_entropy(rows.h, rows.we, targets).mean()
    logits = model(x)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets)


class LMTrainer(runs.Updater):
    """The language model's updates over windows of the token stream (runs.Updater)."""

    def __init__(self, settings, dist, model, n_updates_total, n_vocab, n_ctx):
        super().__init__(settings, dist, model, n_updates_total)
        self.n_vocab, self.n_ctx = n_vocab, n_ctx
        self.fused = self.amp_dtype != torch.float16  # see lm_loss

    def windows(self, stream, starts):
        """Device tensors (inputs, targets) of the windows at starts."""
        batch = window_batch(stream.windows(starts, self.n_ctx + 1), self.n_vocab)
        return [torch.from_numpy(np.ascontiguousarray(a)).to(self.device, non_blocking=True)
                for a in batch]

    def update(self, stream, starts, n_update):
        """One optimizer update from this process's share starts of the update's windows;
        n_update numbers it for the non-finite check."""
        return self.accumulate(starts, lambda part: self.windows(stream, part), n_update)

    def forward_loss(self, x, targets):
        return lm_loss(self.model, x, targets, self.fused)

    def valid_loss(self, stream, starts):
        """The mean token loss on the windows starts, each process scoring its share."""
        def summed(part):
            x, targets = self.windows(stream, part)
            return lm_loss(self.module, x, targets, self.fused).item() * len(x)
        return sum(sum(share, 0.0) for share in self.evaluate(starts, summed)) / len(starts)


def model_flops_per_token(cfg, n_vocab, n_ctx):
    """Training FLOPs of one token: 6 per weight of the matrix products (the blocks and
    the tied LM head), and attention's scores and mixing (PaLM's appendix B count)."""
    body = 12 * cfg.n_layer * cfg.n_embd ** 2
    return 6 * (body + n_vocab * cfg.n_embd) + 12 * cfg.n_layer * n_ctx * cfg.n_embd


def peak_flops(device, amp):
    """The GPU's dense half-precision peak, when it is known and the run uses it."""
    if not device.startswith('cuda') or amp == 'none':
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for part, peak in GPU_PEAK_FLOPS.items() if part in name), None)


@dataclasses.dataclass
class PretrainProgress(Progress):
    """Progress, and the training loss summed since the last log (so that a resumed
    run logs what an uninterrupted one logs)."""
    loss_sum: float = 0.0
    loss_n: int = 0

    def add_loss(self, loss):
        self.loss_sum, self.loss_n = self.loss_sum + loss, self.loss_n + 1

    def take_loss(self):
        mean = float(self.loss_sum) / self.loss_n
        self.loss_sum, self.loss_n = 0.0, 0
        return mean


class Speed:
    """Updates and seconds since the last log."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.updates, self.since = 0, time.time()

    def tokens_per_s(self, tokens_per_update):
        return self.updates * tokens_per_update / max(time.time() - self.since, 1e-9)


class PretrainRun(runs.Run):
    """A pre-training run (runs.Run): its windows, its loop, its log (training and
    validation loss and perplexity, tokens per second, MFU on a GPU, the curves redrawn at
    each line), snapshots and the model folder."""

    Progress = PretrainProgress

    def __init__(self, args, dist, trainer, folder, settings, streams, meta, n_updates_total):
        super().__init__(args, dist, trainer, folder, settings, meta)
        self.train_stream, self.valid_stream = streams
        self.n_updates_total = n_updates_total
        self.valid = valid_starts(self.valid_stream.n_tokens, args.n_ctx + 1,
                                  args.n_valid_windows)
        self.tokens_per_update = args.update_batch * args.n_ctx
        self.flops = model_flops_per_token(runs.model_config(args), meta['n_vocab'], args.n_ctx)
        self.peak = peak_flops(dist.device, args.amp)
        self.speed, self.timed_out = Speed(), False

    def starts(self, n_update):
        """This process's share of update n_update's windows."""
        starts = update_starts(self.args.seed, n_update, self.args.update_batch,
                               self.train_stream.n_tokens, self.args.n_ctx + 1)
        per = self.trainer.per_device
        return starts[self.dist.rank * per:][:per]

    def fit(self, stop_request):
        """Updates until the last planned (or --max_minutes' end), logging every
        --log_every and at the end; checkpoints (runs.Run.save_due) and at the end; a
        snapshot every --snapshot_every."""
        args, progress = self.args, self.progress
        deadline = None if args.max_minutes is None else time.time() + 60 * args.max_minutes
        with tqdm(total=self.n_updates_total, initial=progress.n_updates, ncols=80,
                  disable=not self.dist.main, desc='pre-training', leave=False) as self.bar:
            while progress.n_updates < self.n_updates_total:
                n = progress.n_updates + 1
                progress.add_loss(self.trainer.update(self.train_stream, self.starts(n), n))
                progress.n_updates = n
                self.speed.updates += 1
                self.bar.update(1)
                self.timed_out = (deadline is not None and n % 10 == 0
                                  and self.dist.any(time.time() > deadline))
                last = n == self.n_updates_total or self.timed_out
                snapshot = args.snapshot_every and n % args.snapshot_every == 0
                self.after_update(None if last else stop_request,
                                  log=n % args.log_every == 0 or last,
                                  also=self.snapshot if snapshot else None,
                                  save=self.save_due(n) or last)
                if last:
                    break

    def log(self):
        """Training loss since the last log (over every process), validation loss and
        perplexity, speed; the curves drawn again."""
        n = self.progress.n_updates
        train_loss = float(np.mean(self.dist.gather(self.progress.take_loss())))
        va_loss = self.trainer.valid_loss(self.valid_stream, self.valid)
        record = dict(n_updates=n, n_tokens=n * self.tokens_per_update, tr_loss=train_loss,
                      va_loss=va_loss, va_ppl=math.exp(min(va_loss, 700)),
                      lr=self.trainer.current_lr(),
                      tokens_per_s=self.speed.tokens_per_s(self.tokens_per_update))
        if self.peak:
            record['mfu'] = record['tokens_per_s'] * self.flops / (self.peak * self.dist.world)
        self.speed.reset()
        self.bar.set_postfix(valid_loss=f'{va_loss:.3f}')
        if self.dist.main:
            self.record(**record)
            plot_curves(self.folder.log, self.folder.curves)
            tqdm.write(f"update {n}: train loss {train_loss:.4f}, valid loss {va_loss:.4f} "
                       f"(perplexity {record['va_ppl']:.1f}), "
                       f"{record['tokens_per_s']:.0f} tokens/s"
                       + (f", MFU {record['mfu']:.1%}" if 'mfu' in record else ''))

    def snapshot(self):
        if self.dist.main:
            write_model_folder(os.path.join(self.folder.save_dir, 'snapshots',
                                            f'update_{self.progress.n_updates:08d}'),
                               self.trainer.module, self.meta, self.args.encoder_path,
                               self.args.bpe_path)

    def finish(self):
        """The model folder, and where the run ended."""
        if not self.dist.main:
            return
        path = write_model_folder(os.path.join(self.folder.save_dir, 'model'),
                                  self.trainer.module, self.meta, self.args.encoder_path,
                                  self.args.bpe_path)
        print(f'model folder: {path}; learning curves: {self.folder.curves}')
        if self.timed_out:
            print(f'--max_minutes {self.args.max_minutes:g}: stopped at update '
                  f'{self.progress.n_updates} of the {self.n_updates_total} planned')


def plot_curves(log_path, png_path):
    """Training and validation loss against tokens seen, from the log."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    with open(log_path) as f:
        records = [json.loads(line) for line in f][1:]
    if not records:
        return
    tokens = [r['n_tokens'] for r in records]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(tokens, [r['tr_loss'] for r in records], label='training')
    ax.plot(tokens, [r['va_loss'] for r in records], label='validation')
    ax.set_xlabel('tokens seen')
    ax.set_ylabel('loss (nats per token)')
    ax.legend()
    fig.tight_layout()
    with atomic_write(png_path) as f:
        fig.savefig(f, format='png', dpi=100)
    plt.close(fig)


def parse_args(argv=None):
    p = Parser(description=__doc__.split('\n\n')[0], formatter_class=DefaultsShown)
    add_corpus_flags(p)
    runs.add_training_flags(p)
    # the paper's pre-training recipe (section 4.1)
    p.set_defaults(n_ctx=512, update_batch=64, n_batch_eval=16, lr=2.5e-4,
                   lr_schedule='warmup_cosine', n_iter=100)
    runs.default_note(p, desc='the corpus folder\'s name', n_layer="--init_from's, or 12",
                      n_embd="--init_from's, or 768", n_head="--init_from's, or 12")
    p.add_argument('--n_valid_windows', type=count(1), default=64,
                   help='validation windows (fixed, evenly spread, not overlapping)')
    p.add_argument('--init_from', default=None,
                   help="start from a model folder (OpenAI's model/, a transformers "
                        "checkpoint, or this script's output) with this run's schedule: "
                        'domain-adaptive pre-training')
    p.add_argument('--warmup_updates', type=count(1), default=2000,
                   help='updates of the linear ramp of the learning rate from 0')
    p.add_argument('--max_updates', type=count(1), default=None,
                   help='plan the run (and its schedule) over at most this many updates')
    p.add_argument('--max_tokens', type=count(1), default=None,
                   help='plan the run over at most this many training tokens')
    p.add_argument('--max_minutes', type=real(lambda v: v > 0, 'a positive number'),
                   default=None, help='end the run (model folder and all) after this long, '
                   'wherever it is in its schedule; plan one that fits with --max_updates')
    p.add_argument('--log_every', type=count(1), default=100,
                   help='log training and validation loss every N updates (and at the end)')
    p.add_argument('--snapshot_every', type=count(0), default=0,
                   help='keep a model folder every N updates in save/{desc}/snapshots/')
    # a checkpoint every 10 minutes: a crash loses no more, at a cost a 20-minute CPU run
    # and a GPU run of weeks both bear (a 12 x 768 model's state is 1.4 GB)
    runs.add_run_flags(p, saves='model/ (the model folder), snapshots/', save_minutes=10)
    args = p.parse_args(argv)
    check_args(p, args)
    return args


def check_args(p, args):
    if args.desc is None:
        args.desc = os.path.basename(os.path.normpath(args.corpus))
        if not runs.good_desc(args.desc):
            p.error(f'--corpus {args.corpus} names no folder to call the run by: give --desc, '
                    "the run's name (its log, checkpoints and model folder are named by it)")
    if args.init_from is None:
        for name, value in PAPER_SHAPE.items():
            setattr(args, name, getattr(args, name) or value)
    args.encoder_path, args.bpe_path = find_vocabulary(args.init_from or 'model/',
                                                       args.encoder_path, args.bpe_path)
    runs.check_run_flags(p, args)


def adopt_init_shape(args):
    """With --init_from, sets the shape flags (and --afn) to its folder's, which flags
    given must agree with, and returns the vocabulary size of its weights; else None."""
    if args.init_from is None:
        return None
    try:
        cfg, n_vocab, n_positions = pretrained_settings(args.init_from)
    except (OSError, ValueError, KeyError) as err:
        raise RunError(f'--init_from {args.init_from}: {err}') from None
    wrong = [f'--{name} {getattr(args, name)}: --init_from {args.init_from} has {cfg[name]}'
             for name in PAPER_SHAPE if getattr(args, name) not in (None, cfg[name])]
    if args.n_ctx > n_positions:
        wrong.append(f'--n_ctx {args.n_ctx}: --init_from {args.init_from} has {n_positions} '
                     'positions')
    if wrong:
        raise RunError('; '.join(wrong))
    for name in PAPER_SHAPE:
        setattr(args, name, cfg[name])
    args.afn = cfg.afn
    return n_vocab


def plan_updates(args, n_train_tokens):
    """The run's length in updates: --n_iter epochs, cut by --max_updates and
    --max_tokens."""
    per_update = args.update_batch * args.n_ctx
    plan = args.n_iter * max(1, n_train_tokens // per_update)
    if args.max_updates:
        plan = min(plan, args.max_updates)
    if args.max_tokens:
        plan = min(plan, max(1, args.max_tokens // per_update))
    return plan


def build_model(args, n_vocab):
    model = LMModel(runs.model_config(args), vocab=n_vocab + args.n_ctx, n_ctx=args.n_ctx)
    if args.init_from is not None:
        try:
            load_openai_pretrained_model(model.transformer, n_ctx=args.n_ctx, n_special=0,
                                         n_transfer=args.n_layer, n_embd=args.n_embd,
                                         path=args.init_from)
        except (OSError, ValueError) as err:
            raise RunError(f'--init_from {args.init_from}: {err}') from None
    return model


def prepare(args, dist, folder):
    """The run, made ready on all the checks that can come before training: the model's
    shape and vocabulary, --init_from's weights, the corpus, the schedule."""
    n_pretrained_vocab = adopt_init_shape(args)
    try:
        n_vocab = check_vocabulary(args.encoder_path, args.bpe_path)
        if args.init_from is not None:
            check_weights_files(args.init_from)
    except (OSError, ValueError) as err:
        raise RunError(err) from None
    if n_pretrained_vocab is not None and n_pretrained_vocab != n_vocab:
        raise RunError(f'{args.encoder_path} holds {n_vocab} tokens, --init_from '
                       f'{args.init_from} embeds {n_pretrained_vocab}: give the vocabulary '
                       'its weights were trained with')
    streams = load_corpus(args, dist)
    runs.seed_all(args.seed)
    model = build_model(args, n_vocab).to(dist.device)
    torch.manual_seed(args.seed + dist.rank)  # dropout differs per process
    total = plan_updates(args, streams[0].n_tokens)
    warmup = min(1.0, args.warmup_updates / total)
    limits = [f'--{name}' for name in ('max_updates', 'max_tokens') if getattr(args, name)]
    runs.check_schedule('pretrain.py', f'{total} update(s) planned', total, args.lr_schedule,
                        warmup, ('--warmup_updates', args.warmup_updates),
                        ['raise ' + ' or '.join(limits or ['--n_iter'])], args.lr, dist.main)
    trainer = LMTrainer(runs.UpdateSettings.from_flags(args, warmup), dist, model, total,
                        n_vocab, args.n_ctx)
    # windows: a checkpoint of n_ctx-token windows (before every position was trained)
    # computed another loss, and is not resumed
    run_settings = settings(args, dist.world, dict(
        plan=total, lr_warmup=warmup, windows='n_ctx + 1', n_vocab=n_vocab,
        corpus=[os.path.basename(s.path) for s in streams],
        vocabulary=[file_digest(args.encoder_path), file_digest(args.bpe_path)]))
    if dist.main:
        epochs = total * args.update_batch * args.n_ctx / streams[0].n_tokens
        print(f'{total} updates of {args.update_batch} windows of {args.n_ctx} tokens '
              f'({epochs:.2f} epochs) = {args.n_batch} per forward x {trainer.accum} '
              f'accumulation step(s) x {dist.world} process(es), on {dist.device}'
              + ('' if args.amp == 'none' else f' with {args.amp} autocast'))
    return PretrainRun(args, dist, trainer, folder, run_settings, streams,
                       model_meta(args, n_vocab), total)


def main(argv=None):
    args = parse_args(argv)
    return runs.run_main('pretrain.py', lambda: runs.train(args, prepare))


if __name__ == '__main__':
    main()
