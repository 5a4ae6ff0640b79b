"""train.py under torchrun with a fault in the second process alone (tests/test_faults.py):
`sigterm`, SIGTERM during update 5, as from a scheduler whose signal reached one node; or
`nan`, a non-finite loss in update 9, as its own share of the data could give."""
import itertools
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]

import train  # noqa: E402
from conftest import terminated_at  # noqa: E402


def non_finite_at(n):
    """A stand-in for train.Trainer.step (one per update here) whose loss in update n is
    nan; its gradients are left finite, so that no other process sees it."""
    step, calls = train.Trainer.step, itertools.count(1)

    def poisoned(self, *args):
        loss = step(self, *args)
        return loss * float('nan') if next(calls) == n else loss
    return poisoned


fault, argv = sys.argv[1], sys.argv[2:]
if os.environ['RANK'] == '1':
    if fault == 'sigterm':
        train.Trainer.update = terminated_at(5)
    else:
        train.Trainer.step = non_finite_at(9)
train.main(argv)
