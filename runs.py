"""What train.py (fine-tuning) and pretrain.py (pre-training) share: their processes
under torchrun, SIGTERM and Ctrl-C, the optimizer update with accumulation and mixed
precision, a run's checkpoints and resumption, and the entry point's exit codes.

Exit codes: 0 finished; 1 an error, said in one line; 2 a bad flag; 75 interrupted by
SIGTERM or Ctrl-C (after a checkpoint once training has begun: add --resume to go on).
"""
import contextlib
import dataclasses
import errno
import importlib.util
import os
import random
import re
import signal
import sys
import time

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn as nn

from checkpoints import (Interrupted, Progress, RunError, RunFolder, RunStop, check_finite,
                         check_settings, rng_state, set_rng_state)
from model_pytorch import Config
from opt import SCHEDULES, OpenAIAdam
from utils import (NON_NEGATIVE, PROBABILITY, ResultLogger, count, keep_freed_memory, real,
                   unwritable)

EXIT_INTERRUPTED = 75  # sysexits' EX_TEMPFAIL: try again (with --resume)


def add_training_flags(p):
    """The flags of the model, its update and its schedule, as both training scripts take
    them; each script sets its own defaults (p.set_defaults), shown by --help."""
    p.add_argument('--desc', help="names the run and its files")
    model = p.add_argument_group('the model')
    model.add_argument('--n_layer', type=count(1), help='transformer blocks')
    model.add_argument('--n_embd', type=count(1), help="the model's width")
    model.add_argument('--n_head', type=count(1), help='attention heads per block')
    model.add_argument('--n_ctx', type=count(3), help="the model's positions: the tokens it "
                       'reads at once')
    model.add_argument('--afn', choices=['gelu', 'relu', 'swish'],
                       help="the blocks' activation function")
    model.add_argument('--embd_pdrop', type=PROBABILITY, help='dropout of the embeddings')
    model.add_argument('--attn_pdrop', type=PROBABILITY, help='dropout of the attention weights')
    model.add_argument('--resid_pdrop', type=PROBABILITY,
                       help='dropout of the residual branches')
    model.add_argument('--encoder_path',
                       help="the vocabulary's tokens (default: encoder_bpe_40000.json, or the "
                            "Hub's vocab.json, in the model folder the weights come from)")
    model.add_argument('--bpe_path', help="its BPE merges (default: vocab_40000.bpe, or the "
                       "Hub's merges.txt, beside them)")
    update = p.add_argument_group("the update: OpenAI's Adam and its schedule")
    update.add_argument('--update_batch', type=count(1),
                        help='examples (pre-training: windows) per optimizer update, over all '
                             'processes')
    update.add_argument('--n_batch', type=count(1),
                        help='examples per process per forward pass; gradient accumulation '
                             'makes up the rest of an update')
    update.add_argument('--n_batch_eval', type=count(1), help='examples per evaluation pass')
    update.add_argument('--n_iter', type=count(1), help='epochs')
    update.add_argument('--lr', type=NON_NEGATIVE, help="Adam's learning rate at the "
                        "schedule's peak")
    update.add_argument('--lr_schedule', choices=sorted(SCHEDULES),
                        help='after the warmup: down to 0 linearly, down as a cosine, or '
                             'constant')
    update.add_argument('--l2', type=NON_NEGATIVE,
                        help="weight decay: l2 x the weight added to Adam's step, for matrices")
    update.add_argument('--vector_l2', action='store_true',
                        help='apply --l2 to vectors (biases, gains) too')
    update.add_argument('--max_grad_norm', type=real(lambda v: True, 'a number'),
                        help="clips the gradients' global norm to this; 0 or below turns "
                             "clipping off, as in OpenAI's code")
    update.add_argument('--b1', type=PROBABILITY, help="Adam's beta1")
    update.add_argument('--b2', type=PROBABILITY, help="Adam's beta2")
    update.add_argument('--e', '--adam_eps', type=NON_NEGATIVE,
                        help="Adam's epsilon; under torchrun, whose parser takes --e for its "
                             'own, give it as --adam_eps')
    update.add_argument('--seed', type=count(0, 2 ** 32 - 1),
                        help="seeds Python's, numpy's and torch's random numbers: the "
                             "weights, the data's order and dropout (numpy's range: 0 to "
                             '2^32 - 1)')
    p.set_defaults(afn='gelu', embd_pdrop=0.1, attn_pdrop=0.1, resid_pdrop=0.1, n_batch=8,
                   l2=0.01, max_grad_norm=1, b1=0.9, b2=0.999, e=1e-8, seed=42)


def model_config(args, clf_pdrop=0.0):
    """The model's settings from the flags; clf_pdrop: the task head's dropout."""
    return Config(n_embd=args.n_embd, n_head=args.n_head, n_layer=args.n_layer, afn=args.afn,
                  embd_pdrop=args.embd_pdrop, attn_pdrop=args.attn_pdrop,
                  resid_pdrop=args.resid_pdrop, clf_pdrop=clf_pdrop)


def default_note(p, **notes):
    """Says in --help, for flags whose default is None, what stands in for it."""
    for action in p._actions:
        if action.dest in notes:
            action.help = f'{action.help} (default: {notes[action.dest]})'


def add_run_flags(p, saves, save_minutes=0):
    """The flags of a run's files, device and lifecycle, as every training script takes
    them; saves says what save/{desc}/ holds beside the checkpoints, save_minutes is the
    script's default for --save_minutes."""
    p.add_argument('--log_dir', type=str, default='log/',
                   help='the log {desc}.jsonl and the learning curves {desc}.png')
    p.add_argument('--save_dir', type=str, default='save/',
                   help=f'{{desc}}/: {saves} and the checkpoints')
    p.add_argument('--cache_dir', type=str, default='cache/',
                   help='encoded data, shared by runs')
    p.add_argument('--device', type=str, default='cuda' if torch.cuda.is_available() else 'cpu',
                   help='cpu, cuda or cuda:N')
    p.add_argument('--amp', type=str, default='none', choices=['none', 'bf16', 'fp16'],
                   help='mixed precision; weights and optimizer state stay float32')
    p.add_argument('--compile', action='store_true', help='torch.compile the model')
    p.add_argument('--save_every', type=count(0), default=0,
                   help='write a checkpoint every N updates (0: none) and at the end')
    p.add_argument('--save_minutes', type=real(lambda v: v >= 0, 'a number >= 0'),
                   default=save_minutes, help='and once this many minutes have passed since '
                   'the last one (0: never): what a crash can lose')
    p.add_argument('--keep_checkpoints', type=count(1), default=2,
                   help='the newest checkpoints kept; older ones are deleted')
    p.add_argument('--tensorboard', metavar='DIR',
                   help='also write what the log holds, as scalars for TensorBoard, in '
                        'DIR/{desc}/ (needs the tensorboard package)')
    p.add_argument('--resume', action='store_true',
                   help="continue this --desc's newest checkpoint")
    p.add_argument('--overwrite', action='store_true',
                   help='delete the files of an earlier run of this --desc and start afresh')


def check_run_flags(p, args):
    """What add_run_flags' flags, --desc and the update's split must agree on."""
    if args.resume and args.overwrite:
        p.error('--resume continues the earlier run, --overwrite deletes it: give one')
    if args.n_embd and args.n_head and args.n_embd % args.n_head:  # None: --init_from's
        p.error(f'--n_embd {args.n_embd} must be a multiple of --n_head {args.n_head}')
    if args.tensorboard and importlib.util.find_spec('tensorboard') is None:
        p.error('--tensorboard needs the tensorboard package: pip install tensorboard')
    if not good_desc(args.desc):
        p.error(f'--desc {args.desc!r}: use letters, digits, _, - and . (it names files)')
    device = re.fullmatch(r'cpu|cuda(:\d+)?', args.device)
    if not device:
        p.error(f'--device {args.device!r}: expected cpu, cuda or cuda:N')
    if args.device.startswith('cuda'):
        if not torch.cuda.is_available():
            p.error(f'--device {args.device}: no CUDA device is available here; use --device cpu')
        if device.group(1) and int(device.group(1)[1:]) >= torch.cuda.device_count():
            p.error(f'--device {args.device}: this machine has {torch.cuda.device_count()} '
                    'CUDA device(s)')
        index = int(device.group(1)[1:]) if device.group(1) else 0
        # bf16 matrix products came with compute capability 8.0 (A100); before it, torch
        # emulates them slowly or fails deep inside a kernel
        if args.amp == 'bf16' and torch.cuda.get_device_capability(index) < (8, 0):
            p.error(f'--amp bf16: {torch.cuda.get_device_name(index)} (compute capability '
                    f'{".".join(map(str, torch.cuda.get_device_capability(index)))}) has no '
                    'bf16 arithmetic; use --amp fp16')
    elif args.amp == 'fp16':
        p.error('--amp fp16 needs a CUDA device; use --amp bf16 on the CPU')
    check_split(p, args)


def good_desc(desc):
    """A --desc that can name files: letters, digits, _, - and ., not leading."""
    return bool(re.fullmatch(r'[\w.-]+', desc)) and not desc.startswith('.')


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
            torch_dist.init_process_group('nccl' if cuda else 'gloo')

    @property
    def main(self):
        return self.rank == 0

    def close(self, together):
        """The process group's end; `together` when every process ends here at the same
        point (the run done, or stopped at an agreed update): a barrier then lets the
        slowest finish its last collective before any process shuts Python down."""
        if self.world > 1 and torch_dist.is_initialized():
            if together:
                try:
                    torch_dist.barrier()
                except RuntimeError:  # another process failed after its work; it says why
                    pass
            torch_dist.destroy_process_group()

    def gather(self, obj):
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        torch_dist.all_gather_object(out, obj)
        return out

    def broadcast(self, tensor):
        if self.world > 1:
            torch_dist.broadcast(tensor, src=0)

    def reduce(self, n, op):
        """The whole number n of every process combined by op ('MAX', 'MIN'), on each."""
        if self.world == 1:
            return n
        t = torch.tensor([n], device=self.device)
        torch_dist.all_reduce(t, op=getattr(torch_dist.ReduceOp, op))
        return int(t.item())

    def any(self, flag):
        """True on every rank when flag is True on any: ranks stop at the same update."""
        return bool(self.reduce(int(flag), 'MAX'))

    def earliest(self, n):
        """The smallest n of the processes' that is not -1 (none), or -1; on every process."""
        none = 2 ** 62
        smallest = self.reduce(n if n >= 0 else none, 'MIN')
        return -1 if smallest == none else smallest

    def on_first(self, fn):
        """fn() on the first process alone, its result returned on every process (it must
        pickle). Whatever fn raises there, every process stops with the same line."""
        if self.world == 1:
            return fn()
        outcome = [None, None]  # fn's result, or the line of its error
        if self.main:
            try:
                outcome[0] = fn()
            except RunError as err:
                outcome[1] = str(err)
            except RunStop:
                raise
            except Exception as err:  # an OSError or MemoryError would leave the others waiting
                outcome[1] = f'the first process failed: {type(err).__name__}: {err}'
        torch_dist.broadcast_object_list(outcome, src=0)
        if outcome[1] is not None:
            raise RunError(outcome[1], together=True)
        return outcome[0]


class StopRequest:
    """SIGTERM and Ctrl-C while it is entered: before training they stop the run at once;
    during training they are noted, and the loop stops at its next chance with a
    checkpoint. The previous handlers come back on exit."""

    def __enter__(self):
        self.requested = self.training = False
        self.previous = {sig: signal.signal(sig, self) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def __call__(self, signum, frame):
        if not self.training:
            raise Interrupted('interrupted before training began: nothing to resume; run the '
                              'same command again')
        self.requested = True


def check_split(p, args):
    """The update's examples split evenly over torchrun's processes (WORLD_SIZE) and into
    --n_batch passes on each: checked with the flags, so that it is said once, not by
    every process after its start."""
    world = int(os.environ.get('WORLD_SIZE', 1))
    step = world * args.n_batch
    if args.update_batch % step == 0:
        return
    below = args.update_batch // step * step
    nearest = ' or '.join(str(n) for n in (below, below + step) if n)
    p.error(f'--update_batch {args.update_batch} must split into {world} process(es) x '
            f'--n_batch {args.n_batch} x a whole number of steps: use --update_batch '
            f'{nearest} (a multiple of {step}), or change --n_batch')


def check_output_dirs(args, folder):
    """Every folder the run writes in can be written, or made: said before any work,
    where a write would otherwise fail at its time (--submission_dir's after training)."""
    dirs = [('log_dir', args.log_dir), ('save_dir', folder.checkpoints.dir),
            ('cache_dir', args.cache_dir)]
    if getattr(args, 'submit', False):
        dirs.append(('submission_dir', folder.submission_dir))
    if args.tensorboard:
        dirs.append(('tensorboard', args.tensorboard))
    for flag, path in dirs:
        why = unwritable(path)
        if why:
            raise RunError(f'--{flag} {getattr(args, flag)}: {why}; give a folder this run can '
                           'write in')


def check_schedule(prog, updates, total, schedule, warmup, ramp, more, lr, main):
    """Refuses a run none of whose total updates has a learning rate above 0 (update t
    has lr x schedule((t - 1) / total), as in OpenAIAdam: the warmup starts from 0), and
    warns where lr 0 leaves the weights as they are, or the warmup (ramp: the flag that
    sets it and its value) takes half the updates or more. updates says how total came
    about; more: the flag changes that give more updates."""
    x = torch.arange(total, dtype=torch.float64) / total
    moving = int((SCHEDULES[schedule](x, warmup) > 0).sum())
    flag, value = ramp
    if lr > 0 and moving == 0:
        raise RunError(f'{updates}: none has a learning rate above 0 (the {flag} ramp '
                       f'starts from 0), so nothing would be trained; {" or ".join(more)}')
    if not main:
        return
    in_ramp = int((x <= warmup).sum())
    if lr == 0:
        print(f'{prog}: warning: --lr 0: the weights will not change', file=sys.stderr)
    elif 2 * in_ramp >= total:
        print(f'{prog}: warning: {updates}: {in_ramp} of them in the {flag} {value} ramp, the '
              f'first at learning rate 0; to train past the warmup, {", ".join(more)} or lower '
              f'{flag}', file=sys.stderr)


def seed_all(seed):
    """Python's, numpy's and torch's generators, as OpenAI's scripts seed them."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclasses.dataclass(frozen=True)
class UpdateSettings:
    """What an Updater takes of the flags: OpenAIAdam's settings, its schedule's warmup as a
    fraction of the updates, the precision and the batches."""
    lr: float
    schedule: str
    warmup: float
    b1: float
    b2: float
    e: float
    l2: float
    vector_l2: bool
    max_grad_norm: float
    amp: str
    compile: bool
    update_batch: int
    n_batch: int
    n_batch_eval: int

    @classmethod
    def from_flags(cls, args, warmup):
        return cls(lr=args.lr, schedule=args.lr_schedule, warmup=warmup, b1=args.b1,
                   b2=args.b2, e=args.e, l2=args.l2, vector_l2=args.vector_l2,
                   max_grad_norm=args.max_grad_norm, amp=args.amp, compile=args.compile,
                   update_batch=args.update_batch, n_batch=args.n_batch,
                   n_batch_eval=args.n_batch_eval)


class Updater:
    """The model on this process (`module`), what runs it (`model`: DDP-wrapped under
    torchrun, compiled with --compile), and OpenAIAdam over n_updates_total updates, as
    the UpdateSettings say. A subclass says what one pass computes (forward_loss)."""

    def __init__(self, settings, dist, model, n_updates_total):
        self.settings, self.dist = settings, dist
        self.device = torch.device(dist.device)
        self.amp_dtype = {'none': None, 'bf16': torch.bfloat16,
                          'fp16': torch.float16}[settings.amp]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=settings.amp == 'fp16')
        self.per_device = settings.update_batch // dist.world  # check_split saw that it divides
        self.accum = self.per_device // settings.n_batch
        self.module = model
        self.model = nn.parallel.DistributedDataParallel(model) if dist.world > 1 else model
        if settings.compile:
            self.model = torch.compile(self.model, dynamic=True)
        self.opt = OpenAIAdam(model.parameters(), lr=settings.lr, schedule=settings.schedule,
                              warmup=settings.warmup, t_total=n_updates_total, b1=settings.b1,
                              b2=settings.b2, e=settings.e, l2=settings.l2,
                              vector_l2=settings.vector_l2,
                              max_grad_norm=settings.max_grad_norm)
        self.first_bad = torch.full((), -1, device=self.device)  # the first non-finite update

    def autocast(self):
        """Mixed precision for the forward passes of one update or evaluation: within one
        region autocast casts each weight once, however many passes it makes."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def full_precision(self):
        """The loss and backward in float32, as outside autocast, inside its region."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, enabled=False)

    def accumulate(self, examples, batch, n_update):
        """One optimizer update from this process's share of the update's examples: self.accum
        passes of n_batch, the k-th on batch(its examples) (the arguments of forward_loss),
        each pass's loss counting 1/accum, so that the gradients sum to the mean's; then
        the optimizer's step. n_update numbers it for the non-finite check. Returns the
        update's loss, on the device."""
        total, n = torch.zeros((), device=self.device), self.settings.n_batch
        with self.autocast():
            for k in range(self.accum):
                last = k == self.accum - 1
                # DDP averages gradients across processes on the last pass only
                alone = self.dist.world > 1 and not last
                with self.model.no_sync() if alone else contextlib.nullcontext():
                    loss = self.forward_loss(*batch(examples[k * n:(k + 1) * n]))
                    with self.full_precision():
                        loss = loss.float() / self.accum
                        self.scaler.scale(loss).backward()
                total += loss.detach()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(total), n_update,
                                     self.first_bad)
        return total

    @torch.no_grad()
    def evaluate(self, items, each):
        """each(batch) over this process's contiguous share of items, n_batch_eval at a
        time, in eval mode under autocast; returns every process's list of results."""
        self.module.eval()
        share = np.array_split(items, self.dist.world)[self.dist.rank]
        n = self.settings.n_batch_eval
        with self.autocast():
            out = [each(share[i:i + n]) for i in range(0, len(share), n)]
        self.module.train()
        return self.dist.gather(out)

    def forward_loss(self, *batch):
        """The mean loss of one pass over a batch, as a float32 scalar to differentiate."""
        raise NotImplementedError

    def current_lr(self):
        """The scheduled learning rate of the last update, as OpenAIAdam computed it."""
        group = self.opt.param_groups[0]
        x = (group['t'] - 1) / group['t_total']
        return float(group['lr'] * SCHEDULES[group['schedule']](x, group['warmup']))

    def check_finite_loss(self, newest_checkpoint):
        """A host sync: done at log and save points and every 10 updates only. Every
        process stops, where any one's share of the loss was non-finite."""
        bad = self.dist.earliest(int(self.first_bad.item()))
        if bad >= 0:
            raise RunError(f'non-finite loss at update {bad}: training stopped. The last good '
                           f'checkpoint is {newest_checkpoint or "none written yet"}; lower '
                           '--lr, check the data, or use --amp none', together=True)


class Run:
    """One training run: its flags, processes, trainer and folder, the settings a
    checkpoint must agree with, where it is (progress, of the class Progress) and its log;
    what it writes, it writes here. A subclass trains (fit), logs what its training
    measures (log) and writes its outputs (finish)."""

    Progress = Progress

    def __init__(self, args, dist, trainer, folder, settings, meta):
        self.args, self.dist, self.trainer = args, dist, trainer
        self.folder, self.settings, self.meta = folder, settings, meta
        self.progress, self.logger, self.board = self.Progress(), None, None
        self.saved_at = time.time()

    def fit(self, stop_request):
        raise NotImplementedError

    def log(self):
        raise NotImplementedError

    def finish(self):
        raise NotImplementedError

    def after_update(self, stop_request, log=False, save=False, sync=False, also=None):
        """What follows an update: at sync points (every tenth update, and where it logs,
        saves or does more: the host waits for the device only there) the loss checked,
        then the log, also(), a checkpoint, and the stop of a SIGTERM or Ctrl-C (none with
        stop_request None)."""
        sync = sync or log or save or also is not None or self.progress.n_updates % 10 == 0
        if sync:
            self.check_finite_loss()
        if log:
            self.log()
        if also is not None:
            also()
        if save:
            self.checkpoint()
        if stop_request is not None:
            self.stop(sync, stop_request)

    def record(self, **fields):
        """A line of the log; with --tensorboard its numbers as scalars at this update."""
        self.logger.log(**fields)
        if self.board is not None:
            for name, value in fields.items():
                if name not in ('n_updates', 'time') and isinstance(value, (int, float)):
                    self.board.add_scalar(name, value, self.progress.n_updates)
            self.board.flush()

    def save_due(self, n_update):
        """A checkpoint every --save_every updates, and at the first tenth update once
        --save_minutes have passed since the last (every process agrees)."""
        if self.args.save_every and n_update % self.args.save_every == 0:
            return True
        if not self.args.save_minutes or n_update % 10:
            return False
        return self.dist.any(time.time() - self.saved_at > 60 * self.args.save_minutes)

    def start(self):
        """Afresh, or from the newest checkpoint with --resume; then the log."""
        if self.args.resume:
            path, state = self.folder.checkpoints.newest()
            if state is None:
                raise RunError(f'--resume: no readable checkpoint in '
                               f'{self.folder.checkpoints.dir}; '
                               f'{self.folder.start_afresh(resume=True)}')
            check_settings(state['settings'], self.settings, path)
            self.trainer.module.load_state_dict(state['model'])
            self.trainer.opt.load_state_dict(state['optimizer'])
            self.trainer.scaler.load_state_dict(state['scaler'])
            set_rng_state(state['rng'][self.dist.rank])
            self.progress = self.Progress(**state['progress'])
            if self.dist.main:
                print(f'resuming from {path} at update {self.progress.n_updates}')
        self.dist.on_first(self.open_log)

    def open_log(self):
        """The log afresh, or with --resume cut back to where the checkpoint left it."""
        resume_at = self.progress.log_bytes if self.args.resume else None
        try:
            self.logger = ResultLogger(self.folder.log, resume_at=resume_at, **vars(self.args))
        except ValueError as err:  # the log was removed or cut after the checkpoint
            raise RunError(f'--resume: {err}; {self.folder.start_afresh(resume=True)}') from None
        if self.args.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            # what a stopped run logged after its checkpoint is logged again: purged
            self.board = SummaryWriter(os.path.join(self.args.tensorboard, self.args.desc),
                                       purge_step=self.progress.n_updates + 1)

    def checkpoint(self):
        """Model, optimizer, scaler, every process's random generators and the progress,
        so that --resume goes on as if never stopped; only finite states are written."""
        rngs = self.dist.gather(rng_state())
        check_finite(self.trainer.module, self.progress.n_updates)
        if self.dist.main:
            self.progress.log_bytes = os.path.getsize(self.folder.log)
            state = dict(settings=self.settings, model=self.trainer.module.state_dict(),
                         optimizer=self.trainer.opt.state_dict(),
                         scaler=self.trainer.scaler.state_dict(), rng=rngs,
                         progress=dataclasses.asdict(self.progress), meta=self.meta)
            self.folder.checkpoints.save(state, self.progress.n_updates)
        self.saved_at = time.time()

    def check_finite_loss(self):
        newest = self.folder.checkpoints.paths()[-1:] or ['none written yet']
        self.trainer.check_finite_loss(newest[0])

    def stop(self, sync, stop_request):
        """After a checkpoint, when SIGTERM or Ctrl-C came: every process stops at the same
        update, agreed at sync points (an all_reduce waits for the device)."""
        if self.dist.world == 1:
            stopping = stop_request.requested
        else:
            stopping = sync and self.dist.any(stop_request.requested)
        if stopping:
            self.checkpoint()
            raise Interrupted(f'stopped at update {self.progress.n_updates}: checkpoint written '
                              f'to {self.folder.checkpoints.dir}; continue with the same '
                              'command and --resume', together=True)


def train(args, prepare):
    """A training run from its flags to its end, as both scripts go through it; returns
    its progress. prepare(args, dist, folder) makes the script's checks and its Run.

    The run's processes, folder and signal handling are left as they were found; a full
    disk becomes a RunError whose advice works as the run's files stand. Freed memory is
    kept (keep_freed_memory)."""
    keep_freed_memory()
    dist, folder = Distributed(args.device), RunFolder(args)
    together = False  # where one process fails alone, the others are not at a barrier
    with StopRequest() as stop_request:
        try:
            result = lifecycle(args, dist, folder, stop_request, prepare)
            together = True
            return result
        except RunStop as stop:
            together = stop.together
            raise
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            # before training began, the earlier run's files are as they were
            then = (folder.go_on(args.resume, args.overwrite) if stop_request.training
                    else 'run the same command again')
            raise RunError(f'{err.strerror} while writing {err.filename or "a file"}; nothing '
                           f'was left half-written: free space, then {then}') from None
        finally:
            folder.unlock()
            dist.close(together)


def lifecycle(args, dist, folder, stop_request, prepare):
    """Its folders checked and locked, prepare()'s checks, data and model; then --overwrite's
    deletion, the start (or --resume), fit and finish."""
    dist.on_first(lambda: (check_output_dirs(args, folder), folder.lock(),
                           folder.refuse_earlier(args.resume, args.overwrite)))
    if dist.main:
        print(args)
    run = prepare(args, dist, folder)
    # Training begins: a signal now stops at a checkpoint. Only now, with all checked that
    # can be, may --overwrite delete the earlier run's files.
    stop_request.training = True
    if args.overwrite:
        dist.on_first(folder.clear)
    run.start()
    run.fit(stop_request)
    run.finish()
    return run.progress


def run_main(prog, work):
    """work()'s result, or the exit of a run that stopped: 75 when interrupted, 1 on an
    error, each said in one line."""
    try:
        return work()
    except Interrupted as stop:
        print(stop, file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:  # outside StopRequest's reach: before it, or a second Ctrl-C after
        print(f'{prog}: interrupted', file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except RunError as err:
        print(f'{prog}: error: {err}', file=sys.stderr)
    sys.exit(1)
