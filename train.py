"""Fine-tunes GPT-1 on the Story Cloze Test (ROCStories), as OpenAI's train.py does.

    python train.py --dataset rocstories --desc rocstories --submit --analysis --data_dir data/

Runs on one device (CUDA when present, else the CPU) or on several through torchrun, with
an effective batch of 32 stories per update on any number of devices (OpenAI: 4 GPUs x 8).
Checkpoints are written atomically and `--resume` continues a run bit for bit.
"""
import argparse
import contextlib
import csv
import glob
import json
import os
import random
import signal
import sys
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

from datasets import TEST_NAME, VAL_NAME, encoded_rocstories
from download import DownloadError, download_openai_model, missing_files
from loss import MultipleChoiceLossCompute
from model_pytorch import (SHARD_NAMES, Config, DoubleHeadModel, Packing,
                           load_openai_pretrained_model, load_params, save_params)
from opt import OpenAIAdam
from utils import ResultLogger, atomic_write

# OpenAI logs at these updates of the first epoch, and at each epoch's end.
OPENAI_LOG_UPDATES = (1000, 2000, 4000, 8000, 16000, 32000)

# Settings that may change between a run and its resumption: where things go, not what
# is computed.
RESUMABLE_CHANGES = {'desc', 'log_dir', 'save_dir', 'data_dir', 'submission_dir', 'submit',
                     'analysis', 'resume', 'save_every', 'keep_checkpoints', 'device',
                     'cache_dir', 'download', 'model_dir', 'encoder_path', 'bpe_path',
                     'smoke', 'n_batch_eval'}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    # OpenAI's flags and defaults
    p.add_argument('--desc', type=str, default='rocstories')
    p.add_argument('--dataset', type=str, default='rocstories', choices=['rocstories'])
    p.add_argument('--log_dir', type=str, default='log/')
    p.add_argument('--save_dir', type=str, default='save/')
    p.add_argument('--data_dir', type=str, default='data/')
    p.add_argument('--submission_dir', type=str, default='submission/')
    p.add_argument('--submit', action='store_true')
    p.add_argument('--analysis', action='store_true')
    p.add_argument('--seed', type=int, default=42)
    p.add_argument('--n_iter', type=int, default=3)
    p.add_argument('--n_batch', type=int, default=8, help='stories per device per forward pass')
    p.add_argument('--max_grad_norm', type=float, default=1)
    p.add_argument('--lr', type=float, default=6.25e-5)
    p.add_argument('--lr_warmup', type=float, default=0.002)
    p.add_argument('--n_ctx', type=int, default=512)
    p.add_argument('--n_embd', type=int, default=768)
    p.add_argument('--n_head', type=int, default=12)
    p.add_argument('--n_layer', type=int, default=12)
    p.add_argument('--embd_pdrop', type=float, default=0.1)
    p.add_argument('--attn_pdrop', type=float, default=0.1)
    p.add_argument('--resid_pdrop', type=float, default=0.1)
    p.add_argument('--clf_pdrop', type=float, default=0.1)
    p.add_argument('--l2', type=float, default=0.01)
    p.add_argument('--vector_l2', action='store_true')
    p.add_argument('--opt', type=str, default='adam', choices=['adam'])
    p.add_argument('--afn', type=str, default='gelu', choices=['gelu', 'relu', 'swish'])
    p.add_argument('--lr_schedule', type=str, default='warmup_linear',
                   choices=['warmup_linear', 'warmup_cosine', 'warmup_constant'])
    p.add_argument('--encoder_path', type=str, default='model/encoder_bpe_40000.json')
    p.add_argument('--bpe_path', type=str, default='model/vocab_40000.bpe')
    p.add_argument('--n_transfer', type=int, default=12,
                   help='pretrained blocks to load; -1 trains from scratch with no weights')
    p.add_argument('--lm_coef', type=float, default=0.5)
    p.add_argument('--b1', type=float, default=0.9)
    p.add_argument('--b2', type=float, default=0.999)
    p.add_argument('--e', type=float, default=1e-8)
    p.add_argument('--n_valid', type=int, default=374)
    p.add_argument('--n_gpu', type=int, default=None,
                   help="OpenAI's: n_batch x n_gpu stories per update (its runs: 8 x 4); "
                        'here it sets --update_batch, on however many devices are used')
    # this port's additions
    p.add_argument('--update_batch', type=int, default=None,
                   help='stories per optimizer update, over all devices (default 32, the paper\'s)')
    p.add_argument('--n_batch_eval', type=int, default=32, help='stories per evaluation pass')
    p.add_argument('--model_dir', type=str, default='model/', help="OpenAI's weight shards")
    p.add_argument('--download', action='store_true',
                   help="fetch OpenAI's model/ folder into --model_dir first")
    p.add_argument('--cache_dir', type=str, default='cache/', help='encoded datasets')
    p.add_argument('--device', type=str, default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--amp', type=str, default='none', choices=['none', 'bf16', 'fp16'],
                   help='mixed precision; weights and optimizer state stay float32')
    p.add_argument('--compile', action='store_true', help='torch.compile the model')
    p.add_argument('--reference', action='store_true',
                   help='turn the exact fast paths off (padding kept, full LM head)')
    p.add_argument('--save_every', type=int, default=0,
                   help='write a checkpoint every N updates (and at each epoch end)')
    p.add_argument('--keep_checkpoints', type=int, default=2)
    p.add_argument('--resume', action='store_true', help='continue from the newest checkpoint')
    p.add_argument('--smoke', action='store_true',
                   help='run the whole pipeline on a tiny generated dataset and model')
    args = p.parse_args(argv)
    if args.n_gpu is not None:
        implied = args.n_batch * args.n_gpu
        if args.update_batch not in (None, implied):
            p.error(f'--update_batch {args.update_batch} contradicts --n_batch {args.n_batch} x '
                    f'--n_gpu {args.n_gpu} = {implied}; give one or the other')
        args.update_batch = implied
    elif args.update_batch is None:
        args.update_batch = 32
    return args


def transform_roc(X1, X2, X3, encoder, n_ctx, max_len, clf_token, n_vocab_special):
    """[start] story [delimiter] ending [classify] for both endings, zero-padded to n_ctx,
    with a mask of real positions and OpenAI's position ids."""
    xmb = np.zeros((len(X1), 2, n_ctx, 2), dtype=np.int64)
    mmb = np.zeros((len(X1), 2, n_ctx), dtype=np.float32)
    start, delimiter = encoder['_start_'], encoder['_delimiter_']
    for i, (x1, x2, x3) in enumerate(zip(X1, X2, X3)):
        for j, ending in enumerate((x2, x3)):
            x = [start] + x1[:max_len] + [delimiter] + ending[:max_len] + [clf_token]
            xmb[i, j, :len(x), 0] = x
            mmb[i, j, :len(x)] = 1
    xmb[..., 1] = np.arange(n_vocab_special, n_vocab_special + n_ctx)
    return xmb, mmb


def rocstories_n_ctx(splits, n_ctx):
    """OpenAI's context size: the longest story plus ending (each cut to max_len) and
    the three special tokens, at most n_ctx."""
    max_len = n_ctx // 2 - 2
    longest = max(len(x1[:max_len]) + max(len(x2[:max_len]), len(x3[:max_len]))
                  for X1, X2, X3 in splits for x1, x2, x3 in zip(X1, X2, X3))
    return min(longest + 3, n_ctx), max_len


class Distributed:
    """Rank and world size under torchrun, or a single process."""

    def __init__(self, device):
        self.world = int(os.environ.get('WORLD_SIZE', 1))
        self.rank = int(os.environ.get('RANK', 0))
        self.device = device
        if self.world > 1:
            cuda = device.startswith('cuda')
            if cuda:
                self.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
                torch.cuda.set_device(self.device)
            dist.init_process_group('nccl' if cuda else 'gloo')

    @property
    def main(self):
        return self.rank == 0

    def gather(self, obj):
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, tensor):
        if self.world > 1:
            dist.broadcast(tensor, src=0)

    def close(self):
        # Without this a rank can abort at exit ("terminate called without an active
        # exception"), and torchrun reports the finished job as failed.
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def any(self, flag):
        """True on every rank when flag is True on any: ranks stop at the same update."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())


def rng_state():
    np_state = np.random.get_state()
    state = {'python': random.getstate(), 'torch': torch.get_rng_state(),
             'numpy': (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                       *map(float, np_state[2:]))}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state['python'])
    torch.set_rng_state(state['torch'])
    name, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), gauss))
    if 'cuda' in state:
        torch.cuda.set_rng_state_all(state['cuda'])


class Checkpoints:
    """save/{desc}/checkpoints/update_NNNNNNNN.pt, written atomically, the newest kept."""

    def __init__(self, args):
        self.dir = os.path.join(args.save_dir, args.desc, 'checkpoints')
        self.keep = args.keep_checkpoints

    def paths(self):
        return sorted(glob.glob(os.path.join(self.dir, 'update_*.pt')))

    def save(self, state, n_updates):
        os.makedirs(self.dir, exist_ok=True)
        path = os.path.join(self.dir, f'update_{n_updates:08d}.pt')
        with atomic_write(path) as f:
            torch.save(state, f)
        for old in self.paths()[:-self.keep]:
            os.remove(old)
        return path

    def newest(self):
        for path in reversed(self.paths()):
            try:
                return path, torch.load(path, map_location='cpu', weights_only=True)
            except Exception as err:  # a file that is not ours or was damaged later
                print(f'skipping unreadable checkpoint {path}: {err}', file=sys.stderr)
        return None, None


def settings(args, world):
    s = {k: v for k, v in vars(args).items() if k not in RESUMABLE_CHANGES}
    s['world_size'] = world
    return s


def check_settings(saved, current, path):
    diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if diff:
        listed = ', '.join(f'{k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}'
                           for k in diff)
        raise SystemExit(f'{path} was written by a run with other settings ({listed}); '
                         'resume with the same settings or start afresh without --resume')


def check_model_files(args):
    """Names every missing file of OpenAI's model/ folder this run needs: the vocabulary
    always, the weight shards unless training from scratch."""
    missing = [p for p in (args.encoder_path, args.bpe_path) if not os.path.isfile(p)]
    if args.n_transfer != -1:
        missing += [os.path.join(args.model_dir, f) for f in missing_files(args.model_dir)
                    if f in SHARD_NAMES or f == 'params_shapes.json']
    if missing:
        raise SystemExit(
            f"missing: {', '.join(missing)}. These are OpenAI's pretrained model files, the "
            "model/ folder of https://github.com/openai/finetune-transformer-lm: run "
            "`python download.py` (or add --download), or, for the weights, train from "
            "scratch with --n_transfer -1.")


def model_config(args):
    return Config(n_embd=args.n_embd, n_head=args.n_head, n_layer=args.n_layer, afn=args.afn,
                  embd_pdrop=args.embd_pdrop, attn_pdrop=args.attn_pdrop,
                  resid_pdrop=args.resid_pdrop, clf_pdrop=args.clf_pdrop)


class Trainer:
    """The model on this rank (`module`), what runs it (`model`: DDP-wrapped under
    torchrun, compiled with --compile), OpenAIAdam over n_updates_total updates and the
    losses, all from args."""

    def __init__(self, args, dd, model, n_updates_total):
        self.args, self.dd = args, dd
        self.device = torch.device(dd.device)
        self.fast = not args.reference
        self.amp_dtype = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[args.amp]
        if args.amp == 'fp16' and self.device.type != 'cuda':
            raise SystemExit('--amp fp16 needs a CUDA device; use --amp bf16 on the CPU')
        self.scaler = torch.amp.GradScaler('cuda', enabled=args.amp == 'fp16')
        per_device = args.update_batch // dd.world
        if args.update_batch % dd.world or per_device % args.n_batch:
            raise SystemExit(f'--update_batch {args.update_batch} must split into {dd.world} '
                             f'device(s) x --n_batch {args.n_batch} x a whole number of steps')
        self.per_device, self.accum = per_device, per_device // args.n_batch
        self.module = model
        self.model = nn.parallel.DistributedDataParallel(model) if dd.world > 1 else model
        if args.compile:
            self.model = torch.compile(self.model, dynamic=True)
        self.opt = OpenAIAdam(model.parameters(), lr=args.lr, schedule=args.lr_schedule,
                              warmup=args.lr_warmup, t_total=n_updates_total, b1=args.b1,
                              b2=args.b2, e=args.e, l2=args.l2, vector_l2=args.vector_l2,
                              max_grad_norm=args.max_grad_norm)
        self.compute_loss = MultipleChoiceLossCompute(nn.CrossEntropyLoss(reduction='none'),
                                                      nn.CrossEntropyLoss(reduction='none'),
                                                      args.lm_coef)
        self.stop_requested = False

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def batch(self, X, M, Y, idx):
        """Device tensors for the stories idx. Fast path: padding columns no story of the
        batch uses are dropped (causal attention: real positions never see them), and the
        real-token count is read here, on the host, to spare the device a sync."""
        x, m = X[idx], M[idx]
        n_real = None
        if self.fast:
            n = int(m.sum(-1).max())
            x, m, n_real = x[..., :n, :], m[..., :n], int(m.sum())
        to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device, non_blocking=True)
        return to(x), to(m), (to(Y[idx]) if Y is not None else None), n_real

    def train_step(self, X, M, Y, idx):
        """One update from this device's share idx of the global batch; the loss tensor
        is returned without a host sync."""
        total = torch.zeros((), device=self.device)
        for k in range(self.accum):
            mb = idx[k * self.args.n_batch:(k + 1) * self.args.n_batch]
            x, m, y, n_real = self.batch(X, M, Y, mb)
            last = k == self.accum - 1
            sync = contextlib.nullcontext() if last or self.dd.world == 1 else self.model.no_sync()
            with sync:
                with self.autocast():
                    if self.fast:  # no LM head where its loss does not count (TF: lm_coef 0)
                        lm_logits, clf_logits = self.model(x, m, n_real, lm=self.args.lm_coef > 0)
                    else:
                        lm_logits, clf_logits = self.model(x)
                lm_logits = None if lm_logits is None else lm_logits.float()
                loss = self.compute_loss(x, y, m, clf_logits.float(), lm_logits) / self.accum
                self.scaler.scale(loss).backward()
            total += loss.detach()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        return total

    @torch.no_grad()
    def logits(self, X, M):
        """Classifier logits for every story, this rank's contiguous share evaluated here
        and the shares gathered."""
        self.module.eval()
        n = len(X)
        share = np.array_split(np.arange(n), self.dd.world)[self.dd.rank]
        out = []
        for i in range(0, len(share), self.args.n_batch_eval):
            x, m, _, n_real = self.batch(X, M, None, share[i:i + self.args.n_batch_eval])
            with self.autocast():
                if self.fast:  # the LM head is not needed to classify
                    packing = Packing(m.reshape(-1, m.size(-1)), n_real)
                    clf = self.module.task_head(self.module.transformer(x, packing=packing), x)
                else:
                    clf = self.module(x)[1]
            out.append(clf.float().cpu())
        self.module.train()
        mine = torch.cat(out) if out else torch.zeros(0, X.shape[1])
        return torch.cat(self.dd.gather(mine))

    def evaluate(self, X, M, Y):
        logits = self.logits(X, M)
        y = torch.from_numpy(Y).long()
        cost = nn.functional.cross_entropy(logits, y, reduction='sum').item() / len(Y)
        acc = (logits.argmax(1) == y).double().mean().item() * 100
        return logits, cost, acc


def main(argv=None):
    args = parse_args(argv)
    if args.smoke:
        args = smoke_args(args)
    dd = Distributed(args.device)
    try:
        return train(args, dd)
    finally:
        dd.close()


def train(args, dd):
    if dd.main:
        print(args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    if args.download and dd.main:
        try:
            download_openai_model(args.model_dir)
        except (DownloadError, ValueError) as err:
            raise SystemExit(f'--download failed: {err}')
    check_model_files(args)

    splits = encoded_rocstories(args.data_dir, args.encoder_path, args.bpe_path,
                                cache_dir=args.cache_dir, n_valid=args.n_valid, verbose=dd.main)
    (trX1, trX2, trX3, trY), (vaX1, vaX2, vaX3, vaY), (teX1, teX2, teX3) = splits
    with open(args.encoder_path) as f:
        encoder = json.load(f)
    n_vocab = len(encoder)
    for name in ('_start_', '_delimiter_', '_classify_'):
        encoder[name] = len(encoder)
    clf_token, n_special = encoder['_classify_'], 3
    n_ctx, max_len = rocstories_n_ctx([(trX1, trX2, trX3), (vaX1, vaX2, vaX3), (teX1, teX2, teX3)],
                                      args.n_ctx)
    roc = lambda X1, X2, X3: transform_roc(X1, X2, X3, encoder, n_ctx, max_len, clf_token,
                                           n_vocab + n_special)
    trX, trM = roc(trX1, trX2, trX3)
    vaX, vaM = roc(vaX1, vaX2, vaX3)
    teX, teM = roc(teX1, teX2, teX3)
    trY, vaY = np.asarray(trY, dtype=np.int64), np.asarray(vaY, dtype=np.int64)

    cfg = model_config(args)
    meta = dict(cfg=dict(cfg), n_vocab=n_vocab, n_special=n_special, n_ctx=n_ctx,
                clf_token=clf_token, task_head_type='multiple_choice')
    model = DoubleHeadModel(cfg, clf_token, 'multiple_choice', vocab=n_vocab + n_special + n_ctx,
                            n_ctx=n_ctx)
    load_openai_pretrained_model(model, n_ctx=n_ctx, n_special=n_special,
                                 n_transfer=args.n_transfer, n_embd=args.n_embd,
                                 path=args.model_dir)
    model.to(dd.device)
    # dropout masks differ per rank; data order and weights (numpy, model init) do not
    torch.manual_seed(args.seed + dd.rank)

    n_train = len(trY)
    n_updates_total = (n_train // args.update_batch) * args.n_iter
    trainer = Trainer(args, dd, model, n_updates_total)
    if dd.main:
        print(f'{n_train} training stories, n_ctx {n_ctx}; effective batch {args.update_batch} = '
              f'{args.n_batch} per forward x {trainer.accum} accumulation step(s) x {dd.world} '
              f'device(s); {n_updates_total} updates on {dd.device}'
              f'{"" if args.amp == "none" else " with " + args.amp + " autocast"}')
    return run(args, dd, trainer, meta, (trX, trM, trY), (vaX, vaM, vaY), (teX, teM))


def run(args, dd, trainer, meta, train, valid, test):
    trX, trM, trY = train
    vaX, vaM, vaY = valid
    log_path = os.path.join(args.log_dir, f'{args.desc}.jsonl')
    best_path = os.path.join(args.save_dir, args.desc, 'best_params.pt')
    ckpts = Checkpoints(args)
    current = settings(args, dd.world)
    progress = dict(n_updates=0, n_epochs=0, batch=0, perm=None, best_score=0.0, log_bytes=0)

    if args.resume:
        path, state = ckpts.newest()
        if state is None:
            raise SystemExit(f'--resume: no checkpoint in {ckpts.dir}')
        check_settings(state['settings'], current, path)
        trainer.module.load_state_dict(state['model'])
        trainer.opt.load_state_dict(state['optimizer'])
        trainer.scaler.load_state_dict(state['scaler'])
        set_rng_state(state['rng'][dd.rank])
        progress = state['progress']
        if dd.main:
            print(f'resuming from {path} at update {progress["n_updates"]}')
    logger = ResultLogger(log_path, resume_at=progress['log_bytes'] if args.resume else None,
                          **vars(args)) if dd.main else None

    def checkpoint():
        rngs = dd.gather(rng_state())
        # an overflowing gradient can spoil the weights before any loss shows it
        bad = [n for n, p in trainer.module.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise SystemExit(f'non-finite parameters after update {progress["n_updates"]} '
                             f'({", ".join(bad[:3])}): training stopped, no checkpoint '
                             'written; lower --lr, check the data, or use --amp none')
        if dd.main:
            progress['log_bytes'] = os.path.getsize(log_path)
            state = dict(settings=current, model=trainer.module.state_dict(),
                         optimizer=trainer.opt.state_dict(), scaler=trainer.scaler.state_dict(),
                         rng=rngs, progress=progress, meta=meta)
            ckpts.save(state, progress['n_updates'])

    def log():
        tr = trainer.evaluate(trX[:args.n_valid], trM[:args.n_valid], trY[:args.n_valid])
        va = trainer.evaluate(vaX, vaM, vaY)
        if not dd.main:
            return
        logger.log(n_epochs=progress['n_epochs'], n_updates=progress['n_updates'],
                   tr_cost=tr[1], va_cost=va[1], tr_acc=tr[2], va_acc=va[2])
        tqdm.write('%d %d %.3f %.3f %.2f %.2f' % (progress['n_epochs'], progress['n_updates'],
                                                tr[1], va[1], tr[2], va[2]))
        if args.submit and va[2] > progress['best_score']:
            progress['best_score'] = va[2]
            save_params(best_path, trainer.module, **meta)

    def on_signal(signum, frame):
        trainer.stop_requested = True
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    if args.submit and dd.main and not args.resume:
        save_params(best_path, trainer.module, **meta)
    n_batches = len(trY) // args.update_batch
    first_bad = torch.full((), -1, device=trainer.device)
    while progress['n_epochs'] < args.n_iter:
        if progress['perm'] is None:
            progress['perm'] = torch.from_numpy(np.random.permutation(len(trY)))
        perm = progress['perm'].numpy()
        bar = tqdm(range(progress['batch'], n_batches), initial=progress['batch'],
                   total=n_batches, ncols=100, leave=False, disable=not dd.main,
                   desc=f'epoch {progress["n_epochs"] + 1}/{args.n_iter}')
        started, seen = time.time(), 0
        for b in bar:
            rows = perm[b * args.update_batch:(b + 1) * args.update_batch]
            mine = rows[dd.rank * trainer.per_device:(dd.rank + 1) * trainer.per_device]
            loss = trainer.train_step(trX, trM, trY, mine)
            progress['n_updates'] += 1
            progress['batch'] = b + 1
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss),
                                    progress['n_updates'], first_bad)
            seen += args.update_batch
            due = progress['n_epochs'] == 0 and progress['n_updates'] in OPENAI_LOG_UPDATES
            save_due = args.save_every and progress['n_updates'] % args.save_every == 0
            sync_point = progress['n_updates'] % 10 == 0 or due or save_due or b == n_batches - 1
            if sync_point:
                check_finite(first_bad, ckpts)  # the only host syncs: every 10 updates
                bar.set_postfix(loss=f'{loss.item():.3f}',
                                stories_per_s=f'{seen / (time.time() - started):.1f}')
            if due:
                log()
            if save_due:
                checkpoint()
            if dd.world == 1:
                stop = trainer.stop_requested
            else:  # ranks agree at sync points only: all_reduce waits for the device
                stop = sync_point and dd.any(trainer.stop_requested)
            if stop:
                check_finite(first_bad, ckpts)
                checkpoint()
                if dd.main:
                    print(f'stopped at update {progress["n_updates"]}: checkpoint written to '
                          f'{ckpts.dir}; continue with the same command and --resume')
                return None
        bar.close()
        progress.update(n_epochs=progress['n_epochs'] + 1, batch=0, perm=None)
        log()
        checkpoint()

    if args.submit:
        if dd.main:
            trainer.module.load_state_dict(load_params(best_path, map_location=trainer.device)[1])
        for p in trainer.module.state_dict().values():
            dd.broadcast(p)
        predictions = trainer.logits(*test).argmax(1).numpy()
        if dd.main:
            tsv = write_submission(args.submission_dir, 'ROCStories.tsv', predictions)
            if args.analysis:
                from analysis import rocstories as rocstories_analysis
                rocstories_analysis(args.data_dir, tsv, log_path)
    return progress


def check_finite(first_bad, ckpts):
    bad = int(first_bad.item())
    if bad >= 0:
        newest = ckpts.paths()[-1] if ckpts.paths() else 'none written yet'
        raise SystemExit(f'non-finite loss at update {bad}: training stopped. The last good '
                         f'checkpoint is {newest}; lower --lr, check the data, or use --amp none')


def write_submission(submission_dir, filename, predictions):
    path = os.path.join(submission_dir, filename)
    with atomic_write(path, 'w') as f:
        f.write('index\tprediction\n')
        f.writelines(f'{i}\t{p}\n' for i, p in enumerate(predictions))
    return path


SMOKE_NAMES = ['anna', 'ben', 'cleo', 'dan', 'eve', 'finn', 'gus', 'hana', 'ivan', 'jo']
SMOKE_PLACES = ['park', 'beach', 'store', 'lake', 'zoo', 'farm']
CSV_HEADER = ['InputStoryid', 'InputSentence1', 'InputSentence2', 'InputSentence3',
              'InputSentence4', 'RandomFifthSentenceQuiz1', 'RandomFifthSentenceQuiz2',
              'AnswerRightEnding']


def write_story_cloze(folder, n_val, n_test, rng):
    """A tiny Story Cloze Test in the real CSV files, with a learnable rule: the right
    ending names the story's hero."""
    os.makedirs(folder, exist_ok=True)
    for name, split, n in ((VAL_NAME, 'val', n_val), (TEST_NAME, 'test', n_test)):
        with open(os.path.join(folder, name), 'w', newline='') as f:
            rows = csv.writer(f)
            rows.writerow(CSV_HEADER)
            for i in range(n):
                hero, other = rng.choice(SMOKE_NAMES, 2, replace=False)
                place = rng.choice(SMOKE_PLACES)
                story = [f'{hero} went to the {place}.', f'{hero} met a friend.',
                         'they talked for a while.', 'it got late.']
                right, wrong = f'{hero} went home happy.', f'{other} went home happy.'
                label = int(rng.integers(1, 3))
                endings = [right, wrong] if label == 1 else [wrong, right]
                rows.writerow([f'{split}{i}', *story, *endings, label])
    return folder


def write_char_vocab(folder, n_vocab=None):
    """A character-level BPE vocabulary in OpenAI's two files: each letter and '.' ','
    alone or ending a word, and the merges t+h, th+e</w>; padded with unused entries to
    n_vocab if given. Returns (encoder_path, bpe_path, vocabulary size)."""
    chars = sorted('abcdefghijklmnopqrstuvwxyz.,')
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


def smoke_args(args):
    folder = tempfile.mkdtemp(prefix='gpt1-smoke-')
    write_story_cloze(folder, 300, 100, np.random.default_rng(args.seed))
    encoder_path, bpe_path, _ = write_char_vocab(folder)
    print(f'smoke run: tiny data, model and outputs in {folder}')
    smoke = dict(data_dir=folder, encoder_path=encoder_path, bpe_path=bpe_path, n_transfer=-1,
                 n_embd=64, n_head=4, n_layer=2, n_iter=4, n_batch=8, update_batch=16, n_valid=60,
                 lr=1e-3, lr_warmup=0.05, submit=True, analysis=True, desc='smoke',
                 log_dir=os.path.join(folder, 'log'), save_dir=os.path.join(folder, 'save'),
                 submission_dir=os.path.join(folder, 'submission'),
                 cache_dir=os.path.join(folder, 'cache'))
    return argparse.Namespace(**{**vars(args), **smoke})


if __name__ == '__main__':
    main()
