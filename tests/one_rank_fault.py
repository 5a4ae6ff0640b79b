"""train.py under torchrun with a fault in one process alone (tests/test_faults.py):
`sigterm`, SIGTERM to the second during update 5, as from a scheduler whose signal reached
one node; `nan`, a non-finite loss in the second's share of update 9; `full_disk`, the first
finding the disk full as it writes the submission, after every process has done its work."""
import errno
import itertools
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]

import tasks  # noqa: E402
import train  # noqa: E402
from conftest import terminated_at  # noqa: E402


def non_finite_at(n):
    """A stand-in for train.Trainer.forward_loss (one pass per update here) whose loss in
    update n is nan; its gradients are left finite, so that no other process sees it."""
    forward_loss, calls = train.Trainer.forward_loss, itertools.count(1)

    def poisoned(self, *args):
        loss = forward_loss(self, *args)
        # nan added as a constant: the value is nan, the gradient the loss's own
        return loss + loss.detach() * float('nan') if next(calls) == n else loss
    return poisoned


def full_disk(task, split_name, split, preds, folder):
    raise OSError(errno.ENOSPC, 'No space left on device', os.path.join(folder, 'ROCStories.tsv'))


fault, argv = sys.argv[1], sys.argv[2:]
rank = os.environ['RANK']
if fault == 'sigterm' and rank == '1':
    train.Trainer.update = terminated_at(5)
elif fault == 'nan' and rank == '1':
    train.Trainer.forward_loss = non_finite_at(9)
elif fault == 'full_disk' and rank == '0':
    tasks.write_predictions = full_disk
train.main(argv)
