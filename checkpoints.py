"""A run's folder and its resumable checkpoints: what train.py saves so that `--resume`
continues a run bit for bit, and the guards that keep one run from touching another's
files.

A run is named by --desc and owns log/{desc}.jsonl (and .png), save/{desc}/ (best
parameters, checkpoints/) and submission/{desc}/. While it runs it holds a lock on them.
"""
import contextlib
import dataclasses
import glob
import os
import random
import sys

import numpy as np
import torch

from utils import atomic_write

try:
    import fcntl
except ImportError:  # Windows: runs are not locked there
    fcntl = None

# Settings that may change between a run and its resumption: where files are and what is
# reported, not what is computed. What the data and vocabulary hold is compared apart.
RESUMABLE_CHANGES = {'desc', 'log_dir', 'save_dir', 'data_dir', 'submission_dir', 'submit',
                     'analysis', 'resume', 'overwrite', 'save_every', 'keep_checkpoints',
                     'device', 'cache_dir', 'download', 'model_dir', 'encoder_path',
                     'bpe_path', 'smoke', 'n_batch_eval', 'train_file', 'valid_file',
                     'test_file', 'save_minutes', 'tensorboard',
                     # pretrain.py's: its corpus's content and --init_from's weights are in
                     # the checkpoint's inputs and state
                     'corpus', 'init_from', 'snapshot_every', 'max_minutes'}


# What a checkpoint holds (runs.Run.checkpoint writes it, Run.start reads it).
CHECKPOINT_KEYS = {'settings', 'model', 'optimizer', 'scaler', 'rng', 'progress', 'meta'}


class RunStop(Exception):
    """A run's end before its last update. `together`: every process raised it at the same
    point (under torchrun they then end together)."""

    def __init__(self, message, together=False):
        super().__init__(message)
        self.together = together


class RunError(RunStop):
    """A run cannot start or go on as asked; the message says why and what to do."""


class Interrupted(RunStop):
    """SIGTERM or Ctrl-C: the run stopped at a checkpoint and can be resumed."""


@dataclasses.dataclass
class Progress:
    """Where a run is: what a checkpoint needs beside the model and optimizer (each
    script's Run adds its own fields in a subclass)."""
    n_updates: int = 0
    log_bytes: int = 0        # the log's length at the checkpoint, to resume it there


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


def settings(args, world, inputs):
    """What a checkpoint must agree with to be resumed: the flags that change what is
    computed, the number of processes, and inputs (digests of the data and vocabulary,
    the model's shape)."""
    s = {k: v for k, v in vars(args).items() if k not in RESUMABLE_CHANGES}
    return dict(s, world_size=world, **inputs)


def check_settings(saved, current, path):
    diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if diff:
        listed = ', '.join(f'{k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}'
                           for k in diff)
        raise RunError(f'{path} was written by a run with other settings or inputs '
                       f'({listed}); resume with the same ones, or start afresh with '
                       '--overwrite')


def check_finite(module, n_updates):
    """An overflowing gradient can spoil the weights before any loss shows it: such a
    state is never checkpointed."""
    bad = [n for n, p in module.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise RunError(f'non-finite parameters after update {n_updates} ({", ".join(bad[:3])}): '
                       'training stopped, no checkpoint written; lower --lr, check the data, '
                       'or use --amp none')


class Checkpoints:
    """folder/update_NNNNNNNN.pt, written atomically, the newest `keep` kept."""

    def __init__(self, folder, keep):
        self.dir, self.keep = folder, keep

    def paths(self):
        return sorted(glob.glob(os.path.join(self.dir, 'update_*.pt')))

    def save(self, state, n_updates):
        path = os.path.join(self.dir, f'update_{n_updates:08d}.pt')
        with atomic_write(path) as f:
            torch.save(state, f)
        for old in self.paths()[:-self.keep]:
            os.remove(old)
        return path

    def newest(self, say=True):
        """(path, state) of the newest readable checkpoint, or (None, None); say: print
        each unreadable one skipped, and each file that loads but is no checkpoint."""
        for path in reversed(self.paths()):
            try:
                state = torch.load(path, map_location='cpu', weights_only=True)
            except Exception as err:  # a file that is not ours or was damaged later
                if say:
                    print(f'skipping unreadable checkpoint {path}: {err}', file=sys.stderr)
                continue
            missing = CHECKPOINT_KEYS - set(state) if isinstance(state, dict) else CHECKPOINT_KEYS
            if not missing:
                return path, state
            if say:
                print(f'skipping {path}: not a checkpoint of train.py or pretrain.py (no '
                      f'{", ".join(sorted(missing))})', file=sys.stderr)
        return None, None


def take_lock(path, desc):
    """An open file holding an exclusive lock on path, which names this process. A lock
    file is removed by its releaser, so one opened just before that is not the one at
    path any more: then the lock is taken again on the new file."""
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    while True:
        f = open(path, 'a+')
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or 'unknown'
            f.close()
            raise RunError(f'another run (process {holder}) is using --desc {desc} ({path}); '
                           'wait for it to end, or choose another --desc') from None
        if os.path.exists(path) and _same_file(os.stat(path), os.fstat(f.fileno())):
            break
        f.close()
    f.truncate(0)
    f.write(f'{os.getpid()}\n')
    f.flush()
    return f


def _same_file(a, b):
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class RunFolder:
    """The files of the run named desc, and the lock that keeps a second run off them."""

    def __init__(self, args):
        self.desc = args.desc
        self.log = os.path.join(args.log_dir, f'{args.desc}.jsonl')
        self.curves = os.path.splitext(self.log)[0] + '.png'
        self.save_dir = os.path.join(args.save_dir, args.desc)
        self.best = os.path.join(self.save_dir, 'best_params.safetensors')
        # pre-training writes no submission
        submissions = getattr(args, 'submission_dir', None)
        self.submission_dir = submissions and os.path.join(submissions, args.desc)
        self.checkpoints = Checkpoints(os.path.join(self.save_dir, 'checkpoints'),
                                       args.keep_checkpoints)
        self.locks = [os.path.join(args.log_dir, f'.{args.desc}.lock'),
                      os.path.join(self.save_dir, '.lock')]
        self._held = []

    def lock(self):
        """Exclusive locks until unlock() or the process's end (a killed run frees them)."""
        if fcntl is None:
            return
        for path in self.locks:
            self._held.append((path, take_lock(path, self.desc)))

    def unlock(self):
        """Releases the locks and removes their files, and the save folder if that holds
        nothing else: a refused run leaves nothing behind."""
        for path, f in self._held:
            # while still held, so whoever opens it next gets a new file; and only while it
            # is this lock's file: the folder may have been removed, and the path taken by
            # another run's lock since
            with contextlib.suppress(FileNotFoundError):
                if _same_file(os.stat(path), os.fstat(f.fileno())):
                    os.unlink(path)
            f.close()
        self._held = []
        with contextlib.suppress(OSError):
            os.rmdir(self.save_dir)

    def earlier_files(self):
        """What an earlier run of this desc left: its log and curves, and every file in
        its save and submission folders (parameters, checkpoints, predictions, and the
        temporary file of a write that was cut short)."""
        found = [p for p in (self.log, self.curves) if os.path.exists(p)]
        for folder in filter(None, (self.save_dir, self.submission_dir)):
            for root, _, names in sorted(os.walk(folder)):
                found += [os.path.join(root, n) for n in sorted(names)
                          if os.path.join(root, n) not in self.locks]
        return found

    def refuse_earlier(self, resume, overwrite):
        """Refuses to start afresh over an earlier run's files unless told to remove them
        (clear() removes them, once the new run has checked all it can)."""
        earlier = self.earlier_files()
        if earlier and not resume and not overwrite:
            raise RunError(f'--desc {self.desc} already has the files of an earlier run '
                           f'({listed(earlier)}): continue it with --resume, choose another '
                           '--desc, or add --overwrite to delete them and start afresh')

    def clear(self):
        """Deletes an earlier run's files (--overwrite) and lists them."""
        earlier = self.earlier_files()
        for path in earlier:
            os.remove(path)
        if earlier:
            print(f'--overwrite: removed the earlier run\'s {len(earlier)} file(s): '
                  f'{", ".join(earlier)}')

    def prepare(self, resume, overwrite):
        """refuse_earlier(), then clear() with --overwrite: for a run that has checked all
        it can before it calls this."""
        self.refuse_earlier(resume, overwrite)
        if overwrite:
            self.clear()

    def start_afresh(self, resume):
        """What to run when no checkpoint can be resumed: the same command with
        --overwrite where files are in the way (they are named), else as it is."""
        earlier = self.earlier_files()
        if earlier:
            return (f'start afresh with the same command and --overwrite'
                    f'{" in place of --resume" if resume else ""}, which deletes '
                    f'{listed(earlier)}')
        return f'run the same command{" without --resume" if resume else ""} again'

    def go_on(self, resume, overwrite):
        """What to run to go on from this run's files as they are now: --resume from a
        readable checkpoint, else start_afresh()."""
        if self.checkpoints.newest(say=False)[0]:
            return ('continue with the same command and --resume'
                    f'{" in place of --overwrite" if overwrite else ""}')
        return self.start_afresh(resume)


def listed(paths, n=3):
    """The first n paths, and how many more."""
    more = f' and {len(paths) - n} more' if len(paths) > n else ''
    return ', '.join(paths[:n]) + more
