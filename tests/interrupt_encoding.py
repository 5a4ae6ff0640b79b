"""The driver of test_faults.py's test of interrupts while train.py encodes its texts in
worker processes:

    python tests/interrupt_encoding.py FOLDER TRIALS SEED

writes a --dataset csv of random sentences (enough for the worker processes) and the
character vocabulary in FOLDER, then runs train.main on them TRIALS times, each in a
process of its own forked from this one (on two CPUs: two workers), and interrupts
each at a random moment after its first worker process has appeared: SIGINT and SIGTERM in turn, sent to the run's
process alone (as `kill` does) or to its process group (as Ctrl-C in a terminal does).
Prints one JSON line per run: the signal, where it went, the delay, the workers seen,
the exit code (None where it had not ended 5 s after the signal, when it is killed),
the seconds it took to end, its stderr, and the processes of its group still there once
it has ended (none should be: the run reaps its workers)."""
import atexit
import csv
import json
import os
import random
import signal
import sys
import time
import traceback

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]

import numpy as np  # noqa: E402
import spacy  # noqa: E402,F401  imported here once, not by each run
import train  # noqa: E402
from text_utils import PARALLEL_MIN, write_char_vocab  # noqa: E402

HANG = 5  # seconds after the signal


def write_data(folder, seed):
    """train.csv with enough random sentences to go to the worker processes, and a tiny
    valid.csv: 60 random letters and spaces each (a space one character in five), whose
    words are new to the encoder's caches, so that encoding them takes some seconds."""
    rng = np.random.default_rng(seed)
    chars = np.frombuffer(b'abcdefghijklmnopqrstuvwxyz', np.uint8)
    for name, n in (('train.csv', PARALLEL_MIN + 4000), ('valid.csv', 40)):
        text = chars[rng.integers(0, len(chars), (n, 60))]
        text[rng.random(text.shape) < 0.2] = ord(' ')
        with open(os.path.join(folder, name), 'w', newline='') as f:
            csv.writer(f).writerows([['text', 'label']] + [[row.tobytes().decode(), i % 2]
                                                          for i, row in enumerate(text)])


def run_argv(folder, trial):
    encoder_path, bpe_path = (os.path.join(folder, 'vocab', name)
                              for name in ('encoder.json', 'vocab.bpe'))
    out = os.path.join(folder, f'run{trial}')
    return ['--dataset', 'csv', '--train_file', os.path.join(folder, 'train.csv'),
            '--valid_file', os.path.join(folder, 'valid.csv'), '--text_columns', 'text',
            '--label_column', 'label', '--encoder_path', encoder_path, '--bpe_path', bpe_path,
            '--n_transfer', '-1', '--device', 'cpu', '--n_embd', '16', '--n_head', '2',
            '--n_layer', '1', '--cache_dir', os.path.join(out, 'cache'),
            '--log_dir', os.path.join(out, 'log'), '--save_dir', os.path.join(out, 'save'),
            '--submission_dir', os.path.join(out, 'sub')]


def start(argv, stderr_path):
    """The pid of a forked process, leading a process group of its own, that runs
    train.main(argv) as `python train.py` would, its stderr to stderr_path."""
    pid = os.fork()
    if pid:
        os.setpgid(pid, pid)
        return pid
    code = 1
    try:
        os.setpgid(0, 0)
        # two CPUs, so two workers and some seconds of encoding on any machine
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
        os.dup2(os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        train.main(argv)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    except BaseException:
        traceback.print_exc()
    finally:
        atexit._run_exitfuncs()  # what the interpreter does at its exit
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def processes():
    """(pid, parent pid, process group) of every process."""
    found = []
    for name in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{name}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except (OSError, IndexError):
            continue
        found.append((int(name), int(fields[1]), int(fields[2])))
    return found


def children(pid):
    return [p for p, parent, _ in processes() if parent == pid]


def wait_exit(pid, seconds):
    """The exit code of pid, or None if it is still running after seconds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    return None


def trial(folder, i, rng):
    """Run i, interrupted in the first 0.6 s after its first worker appeared (its
    encoding lasts seconds), and what became of it."""
    sig = (signal.SIGINT, signal.SIGTERM)[i % 2]
    to = ('group', 'process')[i // 2 % 2]
    stderr_path = os.path.join(folder, f'stderr{i}')
    pid = start(run_argv(folder, i), stderr_path)
    workers, deadline = [], time.monotonic() + 30
    while not workers and time.monotonic() < deadline:
        workers = children(pid)
        time.sleep(0.01)
    delay = rng.uniform(0, 0.6)
    time.sleep(delay)
    workers = sorted(set(workers + children(pid)))
    sent = time.monotonic()
    if to == 'group':
        os.killpg(pid, sig)
    else:
        os.kill(pid, sig)
    code = wait_exit(pid, HANG)
    seconds = time.monotonic() - sent
    if code is None:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    left = [p for p, _, group in processes() if group == pid]
    for p in left:  # what the test reports, it does not leave behind
        os.kill(p, signal.SIGKILL)
    with open(stderr_path, newline='') as f:  # tqdm's \r kept
        stderr = f.read()
    return dict(signal=sig.name, to=to, delay=round(delay, 3), workers=workers, code=code,
                seconds=round(seconds, 3), stderr=stderr, left=left)


def main(folder, trials, seed):
    rng = random.Random(seed)
    write_data(folder, seed)
    write_char_vocab(os.path.join(folder, 'vocab'))
    for i in range(trials):
        print(json.dumps(trial(folder, i, rng)), flush=True)


if __name__ == '__main__':
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
